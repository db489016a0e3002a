"""Group commit in `Store.write`: writers that arrive together share one COMMIT, and still each
commits all of its changes or none, and never returns before they are durable."""

import asyncio
import sqlite3

import pytest

from server.store import MAX_BATCH, Store, StoreError

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "node.db")
    async with store.write() as db:
        await db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await db.execute(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, parent INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    yield store
    await store.close()


def committed(store: Store) -> set[int]:
    """The keys another process would see: read through a connection of our own."""
    with sqlite3.connect(store.path) as other:
        return {k for (k,) in other.execute("SELECT k FROM t")}


async def count_commits(store: Store) -> list[str]:
    statements: list[str] = []
    await store._writer.set_trace_callback(statements.append)
    return statements


async def insert(store: Store, *keys: int, pause: float = 0.0) -> None:
    async with store.write() as db:
        for k in keys:
            await db.execute("INSERT INTO t (k) VALUES (?)", (k,))
        if pause:
            await asyncio.sleep(pause)


async def test_concurrent_writers_share_commits_and_return_only_once_durable(store):
    statements = await count_commits(store)
    seen_at_return: dict[int, bool] = {}

    async def writer(k: int) -> None:
        await insert(store, k, pause=0.001)
        seen_at_return[k] = k in committed(store)

    await asyncio.gather(*[writer(k) for k in range(200)])
    assert committed(store) == set(range(200))
    assert all(seen_at_return.values()) and len(seen_at_return) == 200
    commits = statements.count("COMMIT")
    # Writers queued behind one another are batched, yet a batch never exceeds MAX_BATCH.
    assert 200 / MAX_BATCH <= commits < 200
    assert not store._writer.in_transaction


async def test_a_single_writer_commits_at_once(store):
    statements = await count_commits(store)
    for k in range(5):
        await insert(store, k)
        assert k in committed(store)
    assert statements.count("COMMIT") == 5
    assert "SAVEPOINT write" not in statements


async def test_a_failing_writer_in_a_batch_loses_only_its_own_changes(store):
    async def failing() -> None:
        async with store.write() as db:
            await db.execute("INSERT INTO t (k) VALUES (100)")
            await db.execute("INSERT INTO t (k) VALUES (101)")
            raise ValueError("member's change refused")

    results = await asyncio.gather(
        insert(store, 1, pause=0.01), failing(), insert(store, 2), insert(store, 3),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [type(None), ValueError, type(None), type(None)]
    assert committed(store) == {1, 2, 3}


async def test_a_failing_sql_statement_rolls_back_that_writers_earlier_statements(store):
    async def clashing() -> None:
        async with store.write() as db:
            await db.execute("INSERT INTO t (k) VALUES (50)")
            await db.execute("INSERT INTO t (k) VALUES (1)")  # already taken: IntegrityError

    results = await asyncio.gather(
        insert(store, 1, pause=0.01), clashing(), insert(store, 2), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert committed(store) == {1, 2}


async def test_the_first_writer_failing_leaves_later_writers_intact(store):
    async def first() -> None:
        async with store.write() as db:
            await db.execute("INSERT INTO t (k) VALUES (7)")
            await asyncio.sleep(0.01)  # the others queue up meanwhile
            raise RuntimeError("first fails")

    results = await asyncio.gather(first(), insert(store, 8), insert(store, 9),
                                   return_exceptions=True)  # fmt: skip
    assert isinstance(results[0], RuntimeError) and results[1:] == [None, None]
    assert committed(store) == {8, 9}


async def test_a_cancelled_writer_changes_nothing_and_the_store_goes_on(store):
    entered = asyncio.Event()

    async def slow() -> None:
        async with store.write() as db:
            await db.execute("INSERT INTO t (k) VALUES (30)")
            entered.set()
            await asyncio.sleep(10)

    first = asyncio.create_task(insert(store, 29, pause=0.01))
    await asyncio.sleep(0)
    task = asyncio.create_task(slow())
    later = asyncio.create_task(insert(store, 31))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(first, later)
    await insert(store, 32)
    assert committed(store) == {29, 31, 32}
    assert not store._writer.in_transaction


async def test_a_failed_commit_fails_every_writer_in_the_batch(store):
    # A deferred foreign key is checked only at COMMIT: one writer's bad row fails the
    # shared COMMIT, and then no writer of that batch may believe it was saved.
    async def orphan() -> None:
        async with store.write() as db:
            await db.execute("INSERT INTO t (k, parent) VALUES (40, 999)")

    results = await asyncio.gather(
        insert(store, 41, pause=0.01), orphan(), insert(store, 42), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) for r in results), results
    assert "could not be saved" in str(results[0])
    assert committed(store) == set()
    # The store is usable afterwards.
    await insert(store, 43)
    assert committed(store) == {43}


async def test_a_writer_cancelled_after_its_block_still_sees_its_batch_committed(store):
    # `first` finishes its block while `second` waits, so it leaves the COMMIT to whoever
    # writes next and waits. It is cancelled then, and `second` fails: the batch, holding
    # `first`'s change, must still be committed rather than left open.
    second_inside = asyncio.Event()

    async def second() -> None:
        async with store.write() as db:
            await db.execute("INSERT INTO t (k) VALUES (61)")
            second_inside.set()
            await asyncio.sleep(0.02)
            raise ValueError("second fails")

    first = asyncio.create_task(insert(store, 60, pause=0.01))
    await asyncio.sleep(0)
    other = asyncio.create_task(second())
    await second_inside.wait()
    first.cancel()
    results = await asyncio.gather(first, other, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], ValueError)
    # The shielded finish runs on after the cancellation, with no further write to prompt it.
    for _ in range(200):
        if committed(store):
            break
        await asyncio.sleep(0.01)
    assert committed(store) == {60}

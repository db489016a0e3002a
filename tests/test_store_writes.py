"""How the store writes for speed without changing what is written: remote items many rows a
statement, checkpoints beside the writer rather than inside its COMMIT."""

import logging
import sqlite3

import pytest

from server.store import (
    CHECKPOINT_BACKSTOP,
    ITEM_BY_UUID,
    NONCE_SWEEP_SECONDS,
    ROWS_A_STATEMENT,
    ItemQuery,
    Store,
)

pytestmark = pytest.mark.anyio

ORIGIN = "https://westside.example"


def remote(n: int, **changes) -> dict:
    return {
        "id": f"{ORIGIN}/items/00000000-0000-4000-8000-{n:012d}", "kind": "offer",
        "title": f"Soup number {n}", "body": "Lentils, warm.", "category": "food",
        "status": "open", "reach": "allies", "created": "2026-11-24T17:00:00Z",
        "updated": "2026-11-24T17:00:00Z", "expires": "2027-12-24T17:00:00Z", "version": 1,
        **changes,
    }  # fmt: skip


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "node.db")
    yield store
    await store.close()


async def traced(db) -> list[str]:
    statements: list[str] = []
    await db.set_trace_callback(statements.append)
    return statements


def sent(db, monkeypatch) -> list[tuple[str, int]]:
    """(SQL, rows of parameters) of each statement sent on `db` from here on."""
    statements = []
    execute, executemany = db.execute, db.executemany

    async def one(sql, parameters=None):
        statements.append((sql, 1))
        return await execute(sql, parameters)

    async def many(sql, parameters):
        parameters = list(parameters)
        statements.append((sql, len(parameters)))
        return await executemany(sql, parameters)

    monkeypatch.setattr(db, "execute", one)
    monkeypatch.setattr(db, "executemany", many)
    return statements


async def test_remote_items_are_written_many_rows_a_statement(store, monkeypatch):
    async with store.write() as db:
        await store.write_remote_items(db, [remote(n) for n in range(5)])
    count = 2 * ROWS_A_STATEMENT + 15
    states = [remote(n, version=2, title=f"Bread number {n}") for n in range(count)]
    async with store.write() as db:
        statements = sent(db, monkeypatch)
        await store.write_remote_items(db, states, source_peer=None, via={states[7]["id"]: ["x"]})
    # 40 + 40 + 15 rows, not a statement (nor an execution) a row.
    inserts = [(sql.count("), (") + 1, rows) for sql, rows in statements if "INTO items" in sql]
    assert inserts == [(40, 1), (40, 1), (15, 1)]
    # What is stored is what one statement a row stored: every state, the five updated.
    rows = await store.fetch_all("SELECT id, title, version, state, via FROM items ORDER BY id")
    assert [(row["id"], row["title"], row["version"]) for row in rows] == [
        (state["id"], state["title"], 2) for state in states]
    assert [row["via"] for row in rows if row["via"]] == ['["x"]']
    # The search index holds the new words, and none of the old titles.
    found = await store.list_items(ItemQuery(now=None, statuses=("open",), q="bread", limit=500))
    assert len(found) == count
    assert await store.list_items(ItemQuery(now=None, statuses=("open",), q="soup", limit=5)) == []


async def test_removing_remote_items_takes_them_out_of_search(store, monkeypatch):
    async with store.write() as db:
        await store.write_remote_items(db, [remote(n) for n in range(600)])
    async with store.write() as db:
        statements = sent(db, monkeypatch)
        await store.drop_remote_items_by_id(db, [remote(n)["id"] for n in range(0, 600, 2)])
    assert [rows for sql, rows in statements if sql.startswith("DELETE")] == [1]
    assert (await store.fetch_one("SELECT count(*) FROM items"))[0] == 300
    found = await store.list_items(ItemQuery(now=None, statuses=("open",), q="soup", limit=500))
    assert sorted(row.row for row in found) == list(range(2, 601, 2))


async def test_commits_are_checkpointed_beside_the_writer(store):
    """The writer's COMMIT copies nothing into the database file (below its backstop): the
    checkpointer's connection does, right after."""
    assert (await store._writer.execute_fetchall("PRAGMA wal_autocheckpoint"))[0][0] == CHECKPOINT_BACKSTOP
    before = store.path.stat().st_size
    checkpoints = await traced(store._checkpointer)
    writer = await traced(store._writer)
    for start in range(0, 600, 100):
        async with store.write() as db:
            await store.write_remote_items(db, [remote(n) for n in range(start, start + 100)])
    assert not any("checkpoint" in sql for sql in writer)
    await store.checkpointed()
    assert "PRAGMA wal_checkpoint(PASSIVE)" in checkpoints
    # The rows are in the database file itself now, not only in its write-ahead log.
    assert store.path.stat().st_size > before + 100_000
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as other:
        log_frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1:]
    assert log_frames == copied


async def test_a_failed_checkpoint_is_logged_and_writing_goes_on(store, monkeypatch, caplog):
    async def refuse(sql, *args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store._checkpointer, "execute", refuse)
    with caplog.at_level(logging.WARNING, logger="aidnode.store"):
        async with store.write() as db:
            await store.write_remote_items(db, [remote(1)])
        await store.checkpointed()
    assert "a checkpoint of the database failed: disk I/O error" in caplog.text
    async with store.write() as db:
        await store.write_remote_items(db, [remote(2)])
    assert (await store.fetch_one("SELECT count(*) FROM items"))[0] == 2


async def test_a_nonce_is_taken_once_within_its_window_and_swept_after(store):
    """`remember_nonce` in one statement: refused while the window holds it, taken again
    once it has passed; rows past the window are deleted at most once a sweep interval."""
    window = 300
    assert await store.remember_nonce("k#1", "abc", 1000, window)
    assert not await store.remember_nonce("k#1", "abc", 1000 + window - 1, window)
    assert await store.remember_nonce("k#2", "abc", 1001, window)  # another key's nonce
    assert await store.remember_nonce("k#1", "abc", 1000 + window, window)  # the window passed
    assert not await store.remember_nonce("k#1", "abc", 1000 + window + 5, window)
    # Within the sweep interval nothing is deleted; after it, what the window let go is.
    assert await store.remember_nonce("k#3", "old", 1002, window)
    assert (await store.fetch_one("SELECT count(*) FROM seen_nonces"))[0] == 3
    later = 1000 + NONCE_SWEEP_SECONDS + 2 * window
    assert await store.remember_nonce("k#4", "new", later, window)
    rows = await store.fetch_all("SELECT key_id FROM seen_nonces ORDER BY key_id")
    assert [row[0] for row in rows] == ["k#4"]


async def test_items_by_owner_leaves_out_items_with_no_owner(store):
    """Migration 0013: an ally's item (no owner) costs no entry in the owner index, which
    queries by owner still use."""
    async with store.write() as db:
        await store.write_remote_items(db, [remote(n) for n in range(3)])
    (sql,) = await store.fetch_one("SELECT sql FROM sqlite_master WHERE name = 'items_by_owner'")
    assert sql.endswith("WHERE owner_id IS NOT NULL")
    plan = await store.fetch_all("EXPLAIN QUERY PLAN SELECT row FROM items WHERE owner_id = ?"
                                 " ORDER BY created DESC", (1,))  # fmt: skip
    assert "items_by_owner" in " ".join(row[3] for row in plan)


async def test_an_item_is_found_by_uuid_under_each_origin_ours_first(store):
    """Migration 0014: with no index of uuids, an item's uuid is looked up as an id under each
    origin the node holds items of; our own item comes first, then another node's."""
    uuid = "00000000-0000-4000-8000-000000000007"  # remote(7)'s, under ORIGIN
    only_last = "00000000-0000-4000-8000-000000000042"
    first, last = "https://eastside.example", "https://zz-last.example"  # ORIGIN sorts between
    async with store.write() as db:
        await store.write_remote_items(db, [remote(n) for n in range(20)])
        await store.write_remote_items(db, [remote(7, id=f"{first}/items/{uuid}"),
                                            remote(42, id=f"{last}/items/{only_last}")])  # fmt: skip
    found = await store.item_by_uuid(uuid)
    assert found is not None and not found.is_local and found.state["id"].endswith(uuid)
    found = await store.item_by_uuid(only_last)  # the walk of origins reaches the last one
    assert found is not None and found.state["id"] == f"{last}/items/{only_last}"
    assert await store.item_by_uuid("00000000-0000-4000-8000-000000000099") is None
    ours = "https://our.example"
    async with store.write() as db:
        await store.write_item(db, remote(7, id=f"{ours}/items/{uuid}", reach="local",
                                          title="Ours"),
                               origin=ours, is_local=True)  # fmt: skip
    found = await store.item_by_uuid(uuid)
    assert (found.state["title"], found.is_local) == ("Ours", True)
    assert await store.fetch_one("SELECT 1 FROM sqlite_master WHERE name = 'items_by_uuid'") is None
    plan = " ".join(row[3] for row in await store.fetch_all(
        "EXPLAIN QUERY PLAN " + ITEM_BY_UUID, (uuid,)))  # fmt: skip
    assert "SCAN items" not in plan and "sqlite_autoindex_items_1 (id=?)" in plan, plan

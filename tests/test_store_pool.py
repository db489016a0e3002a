"""The pool of reader connections: first come, first served, whatever arrives meanwhile."""

import asyncio

import pytest

from server.store import FairPool

pytestmark = pytest.mark.anyio


async def test_a_connection_put_back_goes_to_the_longest_waiter_not_to_a_newcomer():
    pool = FairPool()
    pool.put("reader")
    held = await pool.get()
    order: list[str] = []

    async def take(name: str) -> None:
        connection = await pool.get()
        order.append(name)
        await asyncio.sleep(0)
        pool.put(connection)

    first = asyncio.create_task(take("first"))
    second = asyncio.create_task(take("second"))
    await asyncio.sleep(0)  # both wait now
    pool.put(held)
    # A newcomer arriving after the put, before the waiters have run, queues behind them.
    await take("newcomer")
    await asyncio.gather(first, second)
    assert order == ["first", "second", "newcomer"]


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_gives_it_back():
    pool = FairPool()
    pool.put("reader")
    held = await pool.get()
    waiter = asyncio.create_task(pool.get())
    await asyncio.sleep(0)
    pool.put(held)  # handed to the waiter, which is cancelled before it runs
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await asyncio.wait_for(pool.get(), 1) == "reader"


async def test_cancelled_waiters_are_passed_over():
    pool = FairPool()
    pool.put("reader")
    held = await pool.get()
    gone = asyncio.create_task(pool.get())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    later = asyncio.create_task(pool.get())
    await asyncio.sleep(0)
    pool.put(held)
    assert await asyncio.wait_for(later, 1) == "reader"

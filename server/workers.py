"""The loop every background worker runs: do one round now, then again when woken or when
`interval` seconds have passed, whichever comes first. A round that fails is logged and the
loop goes on, so one bad round never stops a worker.

Stopping is graceful: once `stop` is set, a worker finishes the round it is in (a push being
delivered, a page being taken in) and returns, rather than being cancelled half-way; the app's
lifespan waits a while for that before it cancels what is left (server/app.py).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("aidnode.workers")


async def run_rounds(one_round: Callable[[], Awaitable[object]], wake: asyncio.Event,
                     interval: float, what: str, stop: asyncio.Event) -> None:  # fmt: skip
    while not stop.is_set():
        wake.clear()
        try:
            await one_round()
        except Exception:
            log.exception("%s failed; retrying", what)
        await first_of(wake, stop, timeout=interval)


async def first_of(*events: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until one of the events is set, or `timeout` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter

"""The loop every background worker runs: do one round now, then again when woken or when
`interval` seconds have passed, whichever comes first. A round that fails is logged and the
loop goes on, so one bad round never stops a worker; cancelling the task stops it."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("aidnode.workers")


async def run_rounds(one_round: Callable[[], Awaitable[object]], wake: asyncio.Event,
                     interval: float, what: str) -> None:  # fmt: skip
    while True:
        wake.clear()
        try:
            await one_round()
        except Exception:
            log.exception("%s failed; retrying", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=interval)

"""The loop every background worker runs: do one round now, then again when woken or when
`interval` seconds have passed, whichever comes first. A round that fails is logged and the
loop goes on, so one bad round never stops a worker.

Stopping is graceful: once `stop` is set, a worker finishes the round it is in (a push being
delivered, a page being taken in) and returns, rather than being cancelled half-way; the app's
lifespan waits a while for that before it cancels what is left (server/app.py).
"""

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

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


# ---------------------------------------------------------------------------- several processes
#
# With `workers` > 1 (server/cli.py), several processes serve the same data directory, each
# with its own connections, caches and rate limiters. The background workers must run once:
# the process holding an exclusive lock on the data directory's `serve.lock` runs them (the
# leader); the others only answer requests. A process that wants a worker woken (a member
# posted, so the delivery worker should push) sends the worker's name to the leader in a
# datagram on a Unix socket; a datagram lost (no leader yet, a full buffer) costs at most a
# worker's interval, as every worker also runs on a timer.


class Leadership:
    """An exclusive, non-blocking `flock` on a file: held until the process ends or `release`.
    The kernel drops it when the holder dies, so a leader killed never blocks its successor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def try_acquire(self) -> bool:
        handle = self.path.open("a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the lock
            self._file = None


def wake_address(database_path: Path) -> str:
    """The leader's socket: in Linux's abstract namespace (no file to leave behind, no path
    length limit), named after the database so that nodes on one machine never share one."""
    digest = hashlib.sha256(str(database_path.resolve()).encode()).hexdigest()[:32]
    return f"\0aidnode-wake-{digest}"


class WakeReceiver:
    """The leader's end: each datagram names an event to set in this process."""

    def __init__(self, address: str, events: dict[str, asyncio.Event]) -> None:
        self.events = events
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.socket.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                name = self.socket.recv(64).decode("ascii", "replace")
            except (BlockingIOError, InterruptedError):
                return
            event = self.events.get(name)
            if event is None:
                log.warning("a wake-up for no known worker: %r", name)
            else:
                asyncio.Event.set(event)

    def close(self) -> None:
        self._loop.remove_reader(self.socket.fileno())
        self.socket.close()


class WakeSender:
    """The other processes' end: best effort, never blocking, never raising."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)

    def __call__(self, name: str) -> None:
        try:
            self.socket.sendto(name.encode("ascii"), self.address)
        except OSError:  # no leader bound yet, or its buffer is full: its timer will do
            pass

    def close(self) -> None:
        self.socket.close()


class SharedWake(asyncio.Event):
    """A worker's wake-up event that, set in a process that is not the leader, is also sent to
    the leader (`forward`), where the worker runs."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.forward: Callable[[str], None] | None = None

    def set(self) -> None:
        super().set()
        if self.forward is not None:
            self.forward(self.name)

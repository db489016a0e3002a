"""Signature checks on processes of their own, so that they use the machine's other cores.

Ingest and snapshots check a batch's Ed25519 signatures ahead of the chain's other checks,
and `ChainState.accept` skips a check already made with the key it finds in force. The node
cuts each entry's signing input out of the canonical bytes it makes anyway, for the entry's
hash (`federation.entries.signing_input_cut`), so a check is the Ed25519 check alone
(`server/checker.py`, the children's side). On threads, those checks fought the event loop
for the GIL: each signature needs the GIL before and after the native check, and a thread
asking for it while the event loop runs Python waits up to the interpreter's switch interval
(5 ms), so on two cores the checks ran at a fraction of their speed and slowed the loop
besides. A child process has a GIL of its own.

A `Verifier` runs `processes` children (`python -m server.checker`; the `verify_processes`
setting shared out among worker processes), started in the background when a node serves, or
else by its first batch. Until they are ready, and whenever they cannot be used, `check`
answers None (`available` False) and the caller checks signatures itself, as it would anyway.
Nothing depends on a child for correctness: an answer only lets a check be skipped. A task
is one frame on the child's standard input, a 4-byte length and a pickle of (public key
bytes, [(signing input, signature) or None, …]); the answer is one frame of a byte per pair
(1: valid). Each child answers its tasks in order. A child that ends or answers out of turn
is dropped (its tasks answer None) and replaced, at most once every RESTART_AFTER seconds;
so is one that owes an answer for STALL_AFTER seconds (hung, or starved of CPU).
Children run niced (their sessions' scheduling groups too, `checker.lower_autogroup`), in a
session of their own and ignoring SIGINT and SIGTERM (a Ctrl-C in the terminal, or a signal
to the node's process group, is the node's to act on: signals sent while a child was still
starting up, before it could ignore them, took it down), and end when their standard input
closes: when the node closes the verifier, or dies.
"""

import asyncio
import collections
import logging
import pickle
import sys
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checker import FRAME

log = logging.getLogger("aidnode.verifying")

RESTART_AFTER = 60.0  # seconds between attempts to start children, after one failed or ended
STOP_WAIT = 5.0  # seconds a child is given to end once its input is closed
# A child that owes an answer for this long is taken for hung: killed, and replaced. (Callers
# wait far less for any one answer, `Allies` ANSWER_WAIT, then check signatures themselves.)
STALL_AFTER = 10.0


class _Child:
    """One child process and the answers it owes, in order."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.owed: collections.deque[asyncio.Future] = collections.deque()
        self.sent_at: collections.deque[float] = collections.deque()  # monotonic, per owed
        self.alive = True
        self.reader = asyncio.create_task(self._read_answers())

    def send(self, public: bytes, pairs: Sequence) -> asyncio.Future:
        payload = pickle.dumps((public, list(pairs)), protocol=pickle.HIGHEST_PROTOCOL)
        answer = asyncio.get_running_loop().create_future()
        self.owed.append(answer)
        self.sent_at.append(time.monotonic())
        try:
            self.process.stdin.write(FRAME.pack(len(payload)) + payload)
        except (ConnectionError, RuntimeError) as error:  # the pipe closed under us
            self._end(f"its input closed ({error})")
        return answer

    async def _read_answers(self) -> None:
        reason = "it ended"
        try:
            while True:
                (size,) = FRAME.unpack(await self.process.stdout.readexactly(FRAME.size))
                answer = await self.process.stdout.readexactly(size)
                if not self.owed:
                    reason = "it answered a task it was not given"
                    return
                owed = self.owed.popleft()
                self.sent_at.popleft()
                if not owed.done():  # a task whose caller stopped waiting is still answered
                    owed.set_result([byte == 1 for byte in answer])
        except asyncio.IncompleteReadError:
            pass
        except (ConnectionError, OSError) as error:
            reason = f"its output failed ({error})"
        finally:
            self._end(reason)

    def stalled(self, now: float) -> bool:
        return bool(self.sent_at) and now - self.sent_at[0] > STALL_AFTER

    def kill(self, reason: str) -> None:
        """End a child that no longer answers (it is reaped with the others)."""
        if self.process.returncode is None:
            self.process.kill()
        self._end(reason)

    def _end(self, reason: str) -> None:
        if self.alive:
            self.alive = False
            if not self.process.stdin.is_closing():
                self.process.stdin.close()
            log.warning("a signature checker process (pid %s) stopped: %s; signatures are "
                        "checked in the node meanwhile", self.process.pid, reason)  # fmt: skip
        self._unanswered()

    def _unanswered(self) -> None:
        self.sent_at.clear()
        while self.owed:
            owed = self.owed.popleft()
            if not owed.done():
                owed.set_result(None)

    async def stop(self) -> None:
        """Close its input, so it ends; kill it if it has not within STOP_WAIT seconds."""
        self.alive = False
        if not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_WAIT)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        self._unanswered()


class Verifier:
    """Signature checks of batches of entries on child processes (see the module docstring)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._children: list[_Child] = []
        self._reaping: set[asyncio.Future] = set()  # children that stopped, being waited for
        self._starting: asyncio.Task | None = None
        self._next_start = 0.0  # monotonic time before which no child is started
        self._closed = False

    @property
    def ready(self) -> int:
        """Children that take tasks now."""
        return sum(child.alive for child in self._children)

    def available(self) -> bool:
        """Whether a child takes tasks now; children are started (for the next batch) when
        fewer run than asked for, and one that has owed an answer for STALL_AFTER seconds is
        killed first."""
        now = time.monotonic()
        for child in self._children:
            if child.alive and child.stalled(now):
                child.kill(f"it answered nothing for {STALL_AFTER:g} s")
            if not child.alive:
                reaping = asyncio.ensure_future(child.stop())
                self._reaping.add(reaping)
                reaping.add_done_callback(self._reaping.discard)
        self._children = [child for child in self._children if child.alive]
        if len(self._children) < self.processes:
            self._start_soon()
        return bool(self._children)

    def submit(self, pairs: Sequence[tuple[bytes, bytes] | None], public: bytes) -> asyncio.Future:
        """One task, on the child that owes fewest: the checks of these (signing input,
        signature) pairs (None: nothing to check, answered False) by the raw public key
        `public`. Its future gives a list of bools, or None (not checked). Only once
        `available()` said so."""
        child = min(self._children, key=lambda child: len(child.owed))
        return child.send(public, pairs)

    def check(self, pairs: Sequence[tuple[bytes, bytes] | None], public: Ed25519PublicKey,
              chunk: int) -> list[asyncio.Future] | None:  # fmt: skip
        """`submit` of `pairs`, `chunk` a task, in order; None at once when no child is ready."""
        if not self.available():
            return None
        key = public.public_bytes_raw()
        return [self.submit(pairs[start : start + chunk], key)
                for start in range(0, len(pairs), chunk)]  # fmt: skip

    def start(self) -> None:
        """Start the children now, in the background (`check` starts them otherwise)."""
        self._start_soon(now=True)

    async def wait_ready(self) -> int:
        """Start the children now and wait until they are up; how many are (for tests)."""
        self._start_soon(now=True)
        if self._starting is not None:
            await asyncio.shield(self._starting)
        return self.ready

    def _start_soon(self, *, now: bool = False) -> None:
        if self._closed or self._starting is not None:
            return
        if not now and time.monotonic() < self._next_start:
            return
        self._starting = asyncio.create_task(self._start())

    async def _start(self) -> None:
        try:
            while len(self._children) < self.processes and not self._closed:
                try:
                    # A session of its own: a Ctrl-C in the terminal, or a signal to the
                    # node's process group, is the node's to act on (it closes their input).
                    process = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "server.checker", start_new_session=True,
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                except OSError as error:
                    log.warning("could not start a signature checker process: %s; signatures "
                                "are checked in the node meanwhile", error)  # fmt: skip
                    break
                child = _Child(process)
                if self._closed:
                    await child.stop()
                    break
                self._children.append(child)
        finally:
            self._next_start = time.monotonic() + RESTART_AFTER
            self._starting = None

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        children, self._children = self._children, []
        await asyncio.gather(*(child.stop() for child in children), *self._reaping)

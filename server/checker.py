"""A signature checker process: the child side of `server.verifying`.

Run as `python -m server.checker` by a node, never by hand. It reads frames from its standard
input (a 4-byte length, then a pickle of (raw Ed25519 public key, [(signing input, signature)
or None, ...])) and answers each with a frame of a byte per pair (1: the signature is the
key's over that input), in order, until its input ends. It imports nothing but what that
takes (about 18 MB where the whole node's modules would make it 33), runs niced below the
node (NICENESS, its session's scheduling group too) and leaves SIGINT and SIGTERM to the node,
which closes its input as it stops.
"""

import os
import pickle
import signal
import struct
import sys
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FRAME = struct.Struct(">I")
KEYS_KEPT = 64  # public keys kept parsed
# Checkers run at a lower priority than the node: their checks are ahead of need, while the
# node's event loop and its SQLite threads are what every request waits for. At the same
# priority, a batch sent to the checkers held up the transaction it was sent ahead of (each
# statement a trip to the writer's thread, which found both cores taken).
NICENESS = 10


def pairs_valid(pairs: Iterable[tuple[bytes, bytes] | None], public: Ed25519PublicKey) -> list[bool]:
    """For each (signing input, signature) pair, whether the signature is `public`'s over it
    (False for None: nothing to check). The Ed25519 checks alone: the node cut the signing
    inputs out of the entries (`federation.entries.signing_input_cut`)."""
    valid = []
    for pair in pairs:
        if pair is None:
            valid.append(False)
            continue
        try:
            public.verify(pair[1], pair[0])
        except (InvalidSignature, TypeError, ValueError):
            valid.append(False)
        else:
            valid.append(True)
    return valid


def serve(source, sink) -> None:
    """Answer tasks from `source` on `sink` until `source` ends."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    while True:
        header = source.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        (size,) = FRAME.unpack(header)
        payload = source.read(size)
        if len(payload) < size:
            return
        raw, pairs = pickle.loads(payload)  # noqa: S301 (the node's own frames, over a pipe)
        public = keys.get(raw)
        if public is None:
            if len(keys) >= KEYS_KEPT:
                keys.clear()
            public = keys[raw] = Ed25519PublicKey.from_public_bytes(raw)
        answer = bytes(pairs_valid(pairs, public))
        sink.write(FRAME.pack(len(answer)) + answer)
        sink.flush()


def lower_autogroup(path: str = "/proc/self/autogroup") -> bool:
    """Give our autogroup NICENESS too; whether it could be set.

    Where the kernel groups processes by session for scheduling (autogroup, on by default in
    many distributions), a process's own niceness counts only against its session's other
    processes, and the node starts each checker in a session of its own: without this, each
    checker's group weighed as much as the whole node's, and the node's event loop and SQLite
    threads waited behind the checkers for a core (on two cores, ingest was about 6% slower).
    Without autogroup, the file is absent or the value has no effect."""
    try:
        with open(path, "w") as autogroup:
            autogroup.write(str(NICENESS))
    except OSError:  # no autogroup in this kernel, or a read-only /proc
        return False
    return True


if __name__ == "__main__":
    # A Ctrl-C in the terminal, or a SIGTERM to the node's process group, is the node's to
    # act on: it closes our input as it stops, and then we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(NICENESS)
    except OSError:  # a system call filter without setpriority (deploy/aidnode.service's)
        pass  # then at the node's own priority: slower to answer, never wrong
    lower_autogroup()
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the node is gone
        pass

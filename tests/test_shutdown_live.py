"""Graceful shutdown for real: SIGTERM lets a node finish the delivery it is in the middle of,
record what its follower acknowledged, and exit cleanly."""

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.live import LiveNode
from tests.scripted_peer import ScriptedPeer
from tests.test_allies_live import OFFER, Admin, eventually

pytestmark = pytest.mark.live


def stopped_cleanly(node: LiveNode) -> None:
    """SIGTERM, and the node shut down in order: uvicorn finishes, then passes the signal on
    (so a process manager sees how it ended), hence -SIGTERM or 0."""
    code = node.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGTERM), (code, node.log())
    assert "Application shutdown complete" in node.log()
    assert "Traceback" not in node.log() and "ERROR" not in node.log()


def test_sigterm_waits_for_a_push_in_flight_and_keeps_its_cursor(tmp_path):
    node = LiveNode(tmp_path, "Eastside").init()
    admin = Admin(node)
    node.start()
    follower = ScriptedPeer("Slow follower").start()
    try:
        # The node trusts the follower, which then subscribes: accepted at once.
        assert admin.post("/api/v1/peers", {"url": follower.url}).status_code == 201
        answer = follower.subscribe_to(node.url)
        assert answer.status_code == 202 and answer.json()["state"] == "accepted", answer.text
        # A post is pushed to the follower, whose inbox takes 3 s to answer.
        follower.inbox_delay = 3.0
        assert admin.post("/api/v1/items", OFFER).status_code == 201
        time.sleep(0.5)  # the push is on its way
        assert follower.pushed == []
        started = time.monotonic()
        stopped_cleanly(node)
        waited = time.monotonic() - started
        # The node waited for the answer rather than dropping the push half-way...
        assert len(follower.pushed) == 1 and follower.pushed[0]["entries"][0]["seq"] == 1
        assert 1.5 < waited < 20, waited
        # ...and recorded what the follower acknowledged before it exited.
        with sqlite3.connect(f"file:{node.data / 'aidnode.db'}?mode=ro", uri=True) as db:
            (delivered,) = db.execute("SELECT delivered_seq FROM peers WHERE url = ?",
                                      (follower.url,)).fetchone()  # fmt: skip
        assert delivered == 1
        assert node.cli("check").stdout.startswith("ok: 1 entries")
    finally:
        node.stop(signal.SIGKILL)
        follower.stop()


def test_sigterm_with_nothing_in_flight_exits_at_once(tmp_path):
    node = LiveNode(tmp_path, "Quiet").init()
    node.start()
    eventually(lambda: "Application startup complete" in node.log(), "startup", nodes=(node,))
    started = time.monotonic()
    stopped_cleanly(node)
    assert time.monotonic() - started < 5


def checkers_of(pid: int) -> list[int]:
    """The signature checker processes (`python -m server.checker`) of a node's process."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return [child for child in children
            if b"server.checker" in Path(f"/proc/{child}/cmdline").read_bytes()]  # fmt: skip


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_nodes_signature_checkers_end_with_it(tmp_path, sig):
    """A serving node starts its checker processes; stopped (SIGTERM, to its whole process
    group as a terminal or the test helper sends it) or killed, it leaves none behind, and a
    stop logs no checker as lost."""
    node = LiveNode(tmp_path, "Checked").init()
    node.start()
    # Signalled as soon as found, maybe while still starting up (before they could ignore
    # the group's SIGTERM, which then took them down: a session of their own since).
    eventually(lambda: len(checkers_of(node.process.pid)) == 2, "two checkers", nodes=(node,))
    checkers = checkers_of(node.process.pid)
    if sig == signal.SIGTERM:
        stopped_cleanly(node)
        assert "signature checker process" not in node.log()
    else:
        node.process.kill()  # the node alone: its checkers see their input close
        node.process.wait()
    eventually(lambda: not any(alive(pid) for pid in checkers), "the checkers ending",
               nodes=(node,), timeout=10)  # fmt: skip

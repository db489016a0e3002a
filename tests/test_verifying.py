"""Signature checks on child processes (`server.verifying`): they answer what the node would
find itself, and nothing goes wrong when they are not there: not started yet, killed, gone."""

import asyncio
import io
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from federation.entries import signatures_valid
from federation.keys import generate_key
from federation.strictjson import loads_strict
from server import verifying
from server.allies import _signed_pair
from server.checker import FRAME, NICENESS, lower_autogroup, serve
from server.verifying import Verifier
from tests.test_ingest import WEST, WestFeed, item

pytestmark = pytest.mark.anyio


def batch(count: int) -> tuple[WestFeed, list[dict], list]:
    """West's first `count` entries as a reader has them (strictly read), one of them forged
    (entry 4 carries entry 3's signature) and one not an entry at all; and, for each, the
    (signing input, signature) the checkers are sent, as ingest cuts them out."""
    feed = WestFeed()
    for n in range(1, count + 1):
        feed.append(item(n))
    entries = [loads_strict(json.dumps(entry)) for entry in feed.entries]
    entries[3] = {**entries[3], "sig": entries[2]["sig"]}
    entries[5] = {"seq": 6, "sig": 12}
    return feed, entries, [_signed_pair(entry, WEST)[1] for entry in entries]


@pytest.fixture
async def verifier():
    checker = Verifier(2)
    yield checker
    await checker.close()


async def answers(futures) -> list:
    return [ok for part in await asyncio.gather(*futures) for ok in part]


async def test_the_children_answer_what_the_node_would_find(verifier):
    feed, entries, pairs = batch(23)
    # Asked before any child is up: no answer (the node checks itself), and children start.
    assert verifier.check(pairs, feed.key.public, 5) is None
    assert await verifier.wait_ready() == 2
    futures = verifier.check(pairs, feed.key.public, 5)
    assert len(futures) == 5  # 23 entries, 5 a task
    found = await answers(futures)
    assert found == signatures_valid(entries, feed.key.public)
    assert found.count(False) == 2 and not found[3] and not found[5]
    # With another key, nothing is valid.
    assert await answers(verifier.check(pairs, generate_key("other").public, 10)) == [False] * 23


async def test_no_processes_means_no_answers_and_nothing_started():
    checker = Verifier(0)
    feed, entries, pairs = batch(8)
    assert checker.check(pairs, feed.key.public, 4) is None
    assert await checker.wait_ready() == 0
    assert checker.check(pairs, feed.key.public, 4) is None
    await checker.close()


async def test_a_killed_child_answers_none_and_is_replaced(verifier, monkeypatch, caplog):
    feed, entries, pairs = batch(10)
    assert await verifier.wait_ready() == 2
    first = verifier._children[0].process
    # One child dies; what it owed comes back unanswered, and is checked by the node instead.
    os.kill(first.pid, signal.SIGKILL)
    await first.wait()
    for _ in range(100):
        if verifier.ready == 1:
            break
        await asyncio.sleep(0.01)
    assert verifier.ready == 1
    assert "a signature checker process" in caplog.text and "stopped" in caplog.text
    # The other still answers; a new one is not started before RESTART_AFTER has passed.
    assert await answers(verifier.check(pairs, feed.key.public, 10)) == signatures_valid(
        entries, feed.key.public)
    assert verifier._starting is None and verifier.ready == 1
    monkeypatch.setattr(verifier, "_next_start", 0.0)
    verifier.check(pairs, feed.key.public, 10)
    assert await verifier.wait_ready() == 2
    assert first.pid not in [child.process.pid for child in verifier._children]


async def test_a_task_owed_by_a_dying_child_answers_none(verifier):
    feed, entries, pairs = batch(10)
    assert await verifier.wait_ready() == 2
    for child in verifier._children:
        os.kill(child.process.pid, signal.SIGSTOP)  # neither answers while stopped
    futures = verifier.check(pairs, feed.key.public, 5)
    for child in verifier._children:
        child.process.kill()
        os.kill(child.process.pid, signal.SIGCONT)
    assert await asyncio.gather(*futures) == [None, None]
    assert verifier.ready == 0
    assert verifier.check(pairs, feed.key.public, 5) is None


async def test_close_ends_the_children(verifier):
    assert await verifier.wait_ready() == 2
    processes = [child.process for child in verifier._children]
    await verifier.close()
    assert [process.returncode for process in processes] == [0, 0]
    feed, entries, pairs = batch(8)
    assert verifier.check(pairs, feed.key.public, 4) is None
    assert await verifier.wait_ready() == 0


async def test_a_child_that_cannot_start_is_logged_and_the_node_checks_itself(monkeypatch, caplog):
    async def refused(*args, **kwargs):
        raise OSError("no more processes")

    monkeypatch.setattr(verifying.asyncio, "create_subprocess_exec", refused)
    checker = Verifier(2)
    with caplog.at_level(logging.WARNING, logger="aidnode.verifying"):
        assert await checker.wait_ready() == 0
    assert "could not start a signature checker process: no more processes" in caplog.text
    feed, entries, pairs = batch(8)
    assert checker.check(pairs, feed.key.public, 4) is None
    await checker.close()


def test_the_child_answers_frames_in_order_and_ends_with_its_input():
    """`serve`, the child's loop, over byte streams: a frame of bytes per task, in order."""
    feed, entries, pairs = batch(12)
    other = generate_key("other")
    tasks = [(feed.key.public, pairs[:7]), (other.public, pairs[7:]), (feed.key.public, [])]
    source = io.BytesIO()
    for public, part in tasks:
        payload = pickle.dumps((public.public_bytes_raw(), part))
        source.write(FRAME.pack(len(payload)) + payload)
    source.write(FRAME.pack(100) + b"cut short")  # the node died mid-frame: the child ends
    source.seek(0)
    sink = io.BytesIO()
    serve(source, sink)
    sink.seek(0)
    answered = []
    while header := sink.read(FRAME.size):
        answered.append(list(sink.read(FRAME.unpack(header)[0])))
    expected = signatures_valid(entries[:7], feed.key.public)
    assert answered == [[int(ok) for ok in expected], [0] * 5, []]


async def test_a_hung_child_is_killed_and_replaced(verifier, monkeypatch, caplog):
    feed, entries, pairs = batch(10)
    assert await verifier.wait_ready() == 2
    hung = verifier._children[0].process
    os.kill(hung.pid, signal.SIGSTOP)  # alive, but answers nothing
    monkeypatch.setattr(verifying, "STALL_AFTER", 0.2)
    owed = verifier._children[0].send(feed.key.public.public_bytes_raw(), pairs)
    await asyncio.sleep(0.3)
    monkeypatch.setattr(verifier, "_next_start", 0.0)
    assert verifier.available()  # the other answers; the hung one is killed on the way
    assert await owed is None
    assert await hung.wait() == -signal.SIGKILL
    assert "answered nothing for 0.2 s" in caplog.text
    assert await verifier.wait_ready() == 2
    assert hung.pid not in [child.process.pid for child in verifier._children]


@pytest.mark.parametrize(("workers", "asked", "each"), [(1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 3, 2), (2, 0, 0)])
async def test_the_checkers_are_shared_out_among_worker_processes(harness_factory, workers, asked, each):
    async with harness_factory(workers=workers, verify_processes=asked) as harness:
        assert harness.node.allies.verifier.processes == each


async def test_children_leave_ctrl_c_and_sigterm_to_the_node(verifier):
    """A signal to the node's whole process group (Ctrl-C in a terminal) does not take its
    checkers down under it: they end when the node closes their input."""
    feed, entries, pairs = batch(10)
    assert await verifier.wait_ready() == 2
    # Both answer once first: they are past starting up, with their handlers set.
    assert await answers(verifier.check(pairs, feed.key.public, 5)) == signatures_valid(
        entries, feed.key.public)
    for child in verifier._children:
        os.kill(child.process.pid, signal.SIGINT)
        os.kill(child.process.pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert verifier.ready == 2
    assert await answers(verifier.check(pairs, feed.key.public, 5)) == signatures_valid(
        entries, feed.key.public)


async def test_checkers_run_below_the_node_also_where_sessions_are_scheduled_as_groups(verifier):
    """Each checker lowers its priority, and, where the kernel schedules each session as a
    group (autogroup), its session's too: checkers have sessions of their own, and there a
    process's niceness alone counts only against its own session."""
    assert await verifier.wait_ready() == 2
    feed, entries, pairs = batch(10)
    await answers(verifier.check(pairs, feed.key.public, 5))  # both past starting up
    own_nice, own_group = scheduling("self")
    for child in verifier._children:
        nice, group = scheduling(child.process.pid)
        assert nice == min(own_nice + NICENESS, 19)  # os.nice adds to what it inherited
        if own_group is not None and group_settable(own_group):  # a kernel with autogroup
            assert group is not None and group != own_group  # a session of its own
            assert group.split()[-1] == str(NICENESS), group


def group_settable(own_group: str) -> bool:
    """Whether this process may set its autogroup's niceness (it writes back the one it has,
    `own_group` as `scheduling` read it): a container may mount /proc read-only."""
    try:
        Path("/proc/self/autogroup").write_text(own_group.split()[-1])
    except OSError:
        return False
    return True


def scheduling(pid: int | str) -> tuple[int, str | None]:
    """A process's niceness, and its autogroup as /proc tells it (None: no autogroup). The file
    is empty for a process the kernel schedules in a cgroup of its own rather than an autogroup
    (as in many containers); there a session's group does not weigh."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    nice = int(stat.rpartition(")")[2].split()[16])  # field 19 of the whole line
    autogroup = Path(f"/proc/{pid}/autogroup")
    text = autogroup.read_text().strip() if autogroup.exists() else ""
    return nice, text if re.fullmatch(r"/autogroup-\d+ nice -?\d+", text) else None


def test_a_kernel_without_autogroup_leaves_the_checker_as_it_is(tmp_path):
    assert lower_autogroup(str(tmp_path / "absent" / "autogroup")) is False
    written = tmp_path / "autogroup"
    written.write_text("")
    assert lower_autogroup(str(written)) is True
    assert written.read_text() == str(NICENESS)


def test_a_checker_runs_where_it_may_not_lower_its_priority():
    """deploy/aidnode.service filters out setpriority (`~@resources`): there, `os.nice`
    fails, and the checker answers at the node's priority instead of ending."""
    feed, entries, pairs = batch(9)
    payload = pickle.dumps((feed.key.public.public_bytes_raw(), pairs))
    program = ("import os, runpy\n"
               "def refused(increment): raise PermissionError(1, 'Operation not permitted')\n"
               "os.nice = refused\n"
               "runpy.run_module('server.checker', run_name='__main__')\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", program], input=FRAME.pack(len(payload)) + payload,
                          capture_output=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    (size,) = FRAME.unpack(done.stdout[: FRAME.size])
    assert list(done.stdout[FRAME.size : FRAME.size + size]) == [
        int(ok) for ok in signatures_valid(entries, feed.key.public)]

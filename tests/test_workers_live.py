"""A node served by several worker processes (`workers` = 2), for real: the background workers
run in one of them, a post answered by the other still wakes delivery at once, counters for
/metrics add up across them, and a worker killed is replaced, its successor leading if it led."""

import http.client
import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.live import LiveNode
from tests.test_allies_live import OFFER, Admin, ally, eventually

pytestmark = pytest.mark.live

QUIET = {"AIDNODE_POLL_INTERVAL": "3600"}  # only pushes carry posts: a missed wake-up shows
LEADS = re.compile(r"worker process (\d+) runs the background workers")


def worker_pids(node: LiveNode) -> list[int]:
    """The worker processes of a node serving with several: the children of `aidnode serve`
    that multiprocessing spawned (not its resource tracker)."""
    pid = node.process.pid
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [child for child in children
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]  # fmt: skip


def leaders(node: LiveNode) -> list[int]:
    return [int(pid) for pid in LEADS.findall(node.log_path.read_text(errors="replace"))]


def serving_process(node: LiveNode, connection: http.client.HTTPConnection) -> int:
    """The worker process holding the server's end of a client's connection (Linux /proc)."""
    client_port = connection.sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == node.port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    assert inode is not None, "the server's end of the connection is not in /proc/net/tcp"
    for pid in worker_pids(node):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError("no worker process holds the connection")


def connection_to(node: LiveNode, pid: int, attempts: int = 64) -> http.client.HTTPConnection:
    """A kept-alive connection that the kernel gave to worker process `pid`."""
    for _ in range(attempts):
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b'{"status":"ok"}'
        if serving_process(node, connection) == pid:
            return connection
        connection.close()
    raise AssertionError(f"no connection of {attempts} reached worker process {pid}")


def post_on(connection: http.client.HTTPConnection, admin: Admin, body: dict) -> int:
    connection.request("POST", "/api/v1/items", body=json.dumps(body),
                       headers={**admin.headers, "Content-Type": "application/json"})  # fmt: skip
    answer = connection.getresponse()
    answer.read()
    return answer.status


@pytest.fixture
def pair(tmp_path):
    busy = LiveNode(tmp_path, "Coalition", env={**QUIET, "AIDNODE_WORKERS": "2"}).init()
    ally_node = LiveNode(tmp_path, "Pantry", env=QUIET).init()
    admins = Admin(busy), Admin(ally_node)
    busy.start(), ally_node.start()
    try:
        yield admins
    finally:
        busy.stop(), ally_node.stop()


def test_two_worker_processes_share_the_requests_and_run_the_background_work_once(pair):
    busy, pantry = pair
    nodes = (busy.node, pantry.node)
    eventually(lambda: len(leaders(busy.node)) == 1, "one worker process leading", nodes=nodes)
    [leader] = leaders(busy.node)
    workers = worker_pids(busy.node)
    assert len(workers) == 2 and leader in workers
    [other] = [pid for pid in workers if pid != leader]
    ally(busy, pantry)

    # Both processes learn of the new peer, whichever added it: its items can be asked for by
    # its address (an unknown group is a 400).
    def knows_the_pantry(pid: int) -> bool:
        connection = connection_to(busy.node, pid)
        connection.request("GET", f"/api/v1/items?origin={pantry.node.url}", headers=busy.headers)
        answer = connection.getresponse()
        answer.read()
        connection.close()
        return answer.status == 200

    for pid in (leader, other):
        eventually(lambda pid=pid: knows_the_pantry(pid), f"process {pid} knowing the pantry",
                   timeout=15, nodes=nodes)  # fmt: skip

    # A post answered by the process that does not deliver still reaches the ally at once: its
    # wake-up crosses to the leader (with pulls an hour apart, nothing else would carry it).
    connection = connection_to(busy.node, other)
    for number in range(3):
        title = f"Answered by the other process {number}"
        assert post_on(connection, busy, {**OFFER, "title": title}) == 201
        eventually(lambda title=title: title in pantry.remote_titles(), f"{title!r} at the pantry",
                   timeout=10, nodes=nodes)  # fmt: skip
    connection.close()

    # Requests answered by either process are counted once each in /metrics.
    def documents_served() -> float:
        metrics = httpx.get(f"{busy.node.url}/metrics", timeout=10).text
        [count] = re.findall(r'aidnode_http_requests_total\{method="GET",route="node_document",'
                             r'status_class="2xx"\} ([0-9.]+)', metrics)  # fmt: skip
        return float(count)

    before = documents_served()
    for pid in (leader, other):
        connection = connection_to(busy.node, pid)
        for _ in range(5):
            connection.request("GET", "/.well-known/aidnode")
            connection.getresponse().read()
        connection.close()
    assert documents_served() - before == 10

    # The leader killed: the parent starts another process, which takes the lead, and posts
    # still reach the ally.
    os.kill(leader, signal.SIGKILL)
    eventually(lambda: len(leaders(busy.node)) == 2, "a new worker process leading", nodes=nodes)
    successor = leaders(busy.node)[-1]
    assert successor != leader and successor in worker_pids(busy.node)
    assert other in worker_pids(busy.node)
    assert busy.post("/api/v1/items", {**OFFER, "title": "After the leader died"}).status_code == 201
    eventually(lambda: "After the leader died" in pantry.remote_titles(), "the post after the kill",
               timeout=10, nodes=nodes)  # fmt: skip
    assert busy.node.tracebacks() == ""


def test_a_port_in_use_is_a_clear_error_before_any_worker_starts(tmp_path):
    first = LiveNode(tmp_path, "First", env=QUIET).init().start()
    try:
        second = LiveNode(tmp_path, "Second", env={**QUIET, "AIDNODE_WORKERS": "2"}).init()
        result = second.cli("serve", "--port", str(first.port), check=False)
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}: Address already in use" in result.stderr
        assert "started worker process" not in result.stdout + result.stderr
        # The first node still answers: the second took none of its connections.
        for _ in range(10):
            assert httpx.get(f"{first.url}/.well-known/aidnode", timeout=5).json()["name"] == "First"
    finally:
        first.stop()

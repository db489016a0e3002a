"""Federation benchmark: push latency, catch-up and fan-out between real nodes on 127.0.0.1.

Prints, from one run on one machine (the nodes are `aidnode serve` processes, as
`tests/live.py` starts them; every wait is bounded and fails with the nodes' logs):

- push latency: two nodes allied both ways, pulls put off (poll_interval 3600 s) so that only
  pushes carry posts. One offer at a time is posted at A through the API and B's item listing
  (`?origin=remote&id=…`) is polled in a tight loop until it shows it: post → visible, as
  median, p90 (nearest rank) and max, after one warm-up post that is not counted. Printed
  beside it: how long A took to answer the post, and one poll's round trip (the figure's
  resolution; a busy poller also takes B's time, so the figure errs high);
- catch-up: a node whose feed holds a backlog (written in-process before it serves, 200 items
  to a transaction, as `bench/feed.py` builds them) and a fresh node that then adds it;
  entries per second from the fresh node's add to its `received_seq` reaching the head
  (its peer list polled every 20 ms). Both paths run, as in service: the reader pulls pages
  of 1,000 while the publisher, followed now, pushes batches of 100; overlaps are skipped.
  The raw Ed25519 verify rate of this machine, measured in the same run, is printed beside
  it, since verifying each entry is the one cost no implementation can avoid;
- fan-out: one node delivering its feed to 20 followers, entry-deliveries per second from
  the first push arriving to the last follower holding every entry. The followers are
  minimal inboxes (starlette under uvicorn, in this process, all on one thread) that check
  each request's signature against the node's pinned key and acknowledge the batch without
  checking its entries: this measures the sender, not 20 receivers. The node is made to
  trust and be followed by them by writing their peer rows before it starts.

CPU seconds used by each process during each measure are printed too, to show where the
time goes (on a 2-core machine, the poller, the nodes and the inboxes share the cores).

Targets: push median < 100 ms; catch-up >= 2,000 entries/s; fan-out >= 20,000/s.
Run, from the repository root (so `tests.live` is importable):
    .venv/bin/python -m bench.federation [--posts N] [--backlog N] [--fan-out N] [--followers N]
"""

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from federation.entries import entry_hash, sign_entry, signing_input
from federation.httpsig import MemoryNonces, SignatureError, verify_request
from federation.identity import node_document
from federation.keys import NodeKey, generate_key, parse_public_key, public_key_text
from federation.timefmt import format_time
from server.config import load_config
from server.node import Node
from tests.live import LiveNode, free_port

PASSWORD = "a long bench password\n"
PULLS_OFF = {"AIDNODE_POLL_INTERVAL": "3600"}  # pulls only at start and when an admin acts
OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household"}  # fmt: skip
PER_COMMIT = 200  # backlog items written per transaction
VERIFY_MESSAGES = 3000
VERIFY_ROUNDS = 5


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU a process has used (Linux /proc), threads included; or, given
    `thread`, what that one thread of it has used."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_since(before: dict[str, float], nodes: list[LiveNode]) -> dict[str, float]:
    """CPU seconds each node used since `before` (an empty dict: since it started)."""
    return {n.name: cpu_seconds(n.process.pid) - before.get(n.name, 0.0) for n in nodes}


def item_state(base: str, i: int, now: datetime) -> dict:
    """A valid, live offer of `base`, as `bench/feed.py` builds them (dates around now)."""
    created = format_time(now - timedelta(hours=1))
    return {
        "id": f"{base}/items/{uuid.uuid4()}",
        "kind": "offer", "title": f"Wheelchair ramp to lend {i}",
        "body": ("Aluminium, 2 m. Pick up on Elm Street, ask for Jo. " * 4).strip(),
        "category": "household", "tags": ["ramp", "loan"], "quantity": "1",
        "location": {"label": "Eastside", "geohash": "u33db"}, "status": "open",
        "reach": "allies", "expires": format_time(now + timedelta(days=30)), "created": created,
        "updated": created, "version": 1, "author": "Jo",
    }  # fmt: skip


def eventually(check: Callable[[], object], what: str, *, timeout: float, nodes: tuple = (),
               interval: float = 0.02) -> object:  # fmt: skip
    """Wait (bounded) until `check()` is truthy; fail with the nodes' logs if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name}\n{n.log()}" for n in nodes)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{logs}")
        time.sleep(interval)


class Admin:
    """A node's admin over the API, on one kept-alive connection. Made before the node serves."""

    def __init__(self, node: LiveNode) -> None:
        node.cli("create-admin", "--username", "admin", "--password-stdin", stdin=PASSWORD)
        token = node.cli("token", "--username", "admin").stdout.strip()
        self.node = node
        self.client = httpx.Client(base_url=node.url, timeout=30,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def add_peer(self, other: LiveNode, status: int) -> dict:
        added = self.client.post("/api/v1/peers", json={"url": other.url})
        if added.status_code != status:
            raise AssertionError(f"adding {other.name} at {self.node.name} answered "
                                 f"{added.status_code}: {added.text}\n{self.node.log()}")  # fmt: skip
        return added.json()

    def peer(self, url: str) -> dict:
        peers = self.client.get("/api/v1/peers").json()["peers"]
        return next(p for p in peers if p["url"] == url)

    def close(self) -> None:
        self.client.close()


def stop_all(nodes: list[LiveNode], admins: list[Admin]) -> None:
    for admin in admins:
        admin.close()
    for node in nodes:
        node.stop()  # SIGTERM to its process group, SIGKILL if it lingers


async def prepare_node(data: Path, entries: int, followers: list[tuple[str, NodeKey]] = ()
                       ) -> tuple[int, str, str]:  # fmt: skip
    """Before a node serves: write `entries` items to its feed and, for each (url, key) of
    `followers`, a peer it trusts, whose key is pinned and who follows it. Returns the feed's
    head seq and the node's current key id and public key."""
    node = Node(load_config(data, environ={}))
    await node.start()
    try:
        base, store, now = node.config.base_url, node.store, node.now()
        states = [item_state(base, i, now) for i in range(entries)]
        for first in range(0, entries, PER_COMMIT):
            async with store.write() as db:
                for state in states[first : first + PER_COMMIT]:
                    await store.write_item(db, state, origin=base, is_local=True,
                                           held_version=None)  # fmt: skip
        async with store.write() as db:
            for number, (url, key) in enumerate(followers, 1):
                cursor = await db.execute(
                    "INSERT INTO peers (url, name, trust, we_follow, they_follow, created)"
                    " VALUES (?, ?, 'trusted', 'none', 'accepted', ?)",
                    (url, f"Inbox {number}", format_time(now)),
                )
                await db.execute(
                    "INSERT INTO peer_keys (key_id, peer_id, public, retired_at_seq)"
                    " VALUES (?, ?, ?, NULL)",
                    (key.key_id(url), cursor.lastrowid, public_key_text(key.public)),
                )
        async with store.read() as db:
            key = await node.feed.current_key(db)
        return await store.feed_head_seq(), key.key_id(base), public_key_text(key.public)
    finally:
        await node.close()


# ------------------------------------------------------------------------ raw verification


class RawVerify:
    """Ed25519 verifications per second over entry-sized messages, by `cryptography` on one
    core: the yardstick ingest is measured against. Signed once; `rate` measures again (best
    of `rounds`), so a figure can be taken beside each one it divides."""

    def __init__(self) -> None:
        key, now, prev = generate_key(), datetime.now(UTC), None
        self.messages = []
        for i in range(VERIFY_MESSAGES):
            entry = sign_entry(origin="https://eastside.example", seq=i + 1, prev=prev, type="item",
                               at=format_time(now), body=item_state("https://eastside.example", i, now),
                               key=key)  # fmt: skip
            prev = entry_hash(entry)
            self.messages.append(signing_input(entry))
        self.signatures = [key.sign(m) for m in self.messages]
        self.public = key.public

    def rate(self, rounds: int = VERIFY_ROUNDS) -> float:
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            for message, signature in zip(self.messages, self.signatures, strict=True):
                self.public.verify(signature, message)
            best = max(best, rate(len(self.messages), time.perf_counter() - start))
        return best


# ------------------------------------------------------------------------ 1. push latency


def ally(first: Admin, second: Admin) -> None:
    """Each admin adds the other (as tests/test_allies_live.py does): trusted, followed both ways."""
    first.add_peer(second.node, 201)
    second.add_peer(first.node, 200)  # known already, through the subscription: now trusted
    eventually(lambda: first.peer(second.node.url)["we_follow"] == "accepted",
               "the second node telling the first it accepted", timeout=20,
               nodes=(first.node, second.node))  # fmt: skip


def bench_push(root: Path, posts: int) -> None:
    east, west = LiveNode(root, "Eastside", env=PULLS_OFF), LiveNode(root, "Westside", env=PULLS_OFF)
    nodes, admins = [east, west], []
    try:
        for node in nodes:
            node.init()
            admins.append(Admin(node))
            node.start()
        poster, reader = admins
        ally(poster, reader)
        latencies, answers, cpu = [], [], cpu_since({}, nodes)
        for i in range(posts + 1):  # the first is a warm-up, not counted
            start = time.perf_counter()
            posted = poster.client.post("/api/v1/items", json={**OFFER, "title": f"Ramp {i}"})
            answered = time.perf_counter()
            if posted.status_code != 201:
                raise AssertionError(f"posting answered {posted.status_code}: {posted.text}")
            query = {"origin": "remote", "id": posted.json()["id"], "limit": 1}

            def shown(query=query) -> bool:
                return bool(reader.client.get("/api/v1/items", params=query).json()["items"])

            eventually(shown, f"post {i} at Westside", timeout=10, nodes=tuple(nodes), interval=0)
            if i:
                latencies.append(time.perf_counter() - start)
                answers.append(answered - start)
        cpu = cpu_since(cpu, nodes)
        polls = []
        for _ in range(posts):
            start = time.perf_counter()
            assert shown()
            polls.append(time.perf_counter() - start)
    finally:
        stop_all(nodes, admins)
    ms = [1000 * s for s in latencies]
    print(f"push latency, post at A → visible at B ({posts} posts, one at a time):")
    print(f"  median {statistics.median(ms):6.1f} ms   p90 {nearest_rank(ms, 0.9):6.1f} ms"
          f"   max {max(ms):6.1f} ms   (target: median < 100 ms)")  # fmt: skip
    print(f"  A answering the post: median {1000 * statistics.median(answers):5.1f} ms;"
          f" one poll of B: median {1000 * statistics.median(polls):5.1f} ms")  # fmt: skip
    print(f"  CPU while posting and polling: {cpu[east.name]:.2f} s at A,"
          f" {cpu[west.name]:.2f} s at B")  # fmt: skip


# ------------------------------------------------------------------------ 2. catch-up


def bench_catch_up(root: Path, backlog: int, raw_verify: float) -> None:
    east, west = LiveNode(root, "Backlog", env=PULLS_OFF), LiveNode(root, "Fresh", env=PULLS_OFF)
    nodes, admins = [east, west], []
    try:
        for node in nodes:
            node.init()
            admins.append(Admin(node))
        publisher, reader = admins
        start = time.perf_counter()
        head, _, _ = asyncio.run(prepare_node(east.data, backlog))
        written = time.perf_counter() - start
        for node in nodes:
            node.start()
        # A trusts B first, so that B may read A's feed; then B adds A and reads it all.
        publisher.add_peer(west, 201)
        cpu = cpu_since({}, nodes)
        start = time.perf_counter()
        reader.add_peer(east, 200)
        eventually(lambda: reader.peer(east.url)["received_seq"] >= head,
                   f"{west.name} holding all {head} entries", timeout=300,
                   nodes=tuple(nodes))  # fmt: skip
        elapsed = time.perf_counter() - start
        cpu = cpu_since(cpu, nodes)
        shown = reader.client.get("/api/v1/items", params={"origin": "remote", "q": "ramp",
                                                           "limit": 1})  # fmt: skip
        assert shown.json()["items"], "the entries were taken in but no item is shown"
    finally:
        stop_all(nodes, admins)
    caught_up = rate(head, elapsed)
    print(f"catch-up, a fresh node reading a backlog of {head:,} entries (pull and push):")
    print(f"  {elapsed:6.2f} s: {caught_up:8,.0f} entries/s   (target >= 2,000/s)")
    print(f"  raw Ed25519 verify, this run: {raw_verify:8,.0f} /s;"
          f" catch-up is {caught_up / raw_verify:.1%} of it")  # fmt: skip
    print(f"  CPU during catch-up: {cpu[west.name]:.2f} s at the reader,"
          f" {cpu[east.name]:.2f} s at the publisher"
          f"  (backlog written in-process at {rate(head, written):,.0f} /s)")  # fmt: skip


# ------------------------------------------------------------------------ 3. fan-out


def push_refusal(request: Request, body: bytes, url: str, publisher: tuple[str, object],
                 nonces: MemoryNonces) -> str | None:  # fmt: skip
    """Why a bench follower at `url` refuses a push: it is not signed by the publisher's key
    (key id, public key), or it is a replay; None when it is."""
    key_id, public = publisher
    try:
        verify_request(method="POST", target_uri=f"{url}/federation/inbox",
                       headers=request.headers.items(), body=body, now=datetime.now(UTC),
                       lookup=lambda asked: public if asked == key_id else None,
                       nonces=nonces)  # fmt: skip
    except SignatureError as error:
        return str(error)
    return None


async def serve_all(servers: list[uvicorn.Server], ready: threading.Event,
                    sockets: list | None = None) -> None:  # fmt: skip
    """Serve every one of `servers` (each on its socket, when given) until they stop; `ready`
    is set once all listen, or one has failed (bounded: 10 s)."""
    tasks = [asyncio.create_task(server.serve(sockets=[sockets[i]] if sockets else None))
             for i, server in enumerate(servers)]  # fmt: skip
    for _ in range(500):
        if all(server.started for server in servers) or any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.02)
    ready.set()
    await asyncio.gather(*tasks)


class Inboxes:
    """Minimal followers: each serves its node document and a signed inbox, on its own port,
    all run by uvicorn on one thread of this process. They acknowledge what continues their
    cursor (409 with the cursor otherwise, as a node does) without checking the entries."""

    def __init__(self, count: int, expected: int, *, pid: Callable[[], int]) -> None:
        self.expected = expected
        self.followers = [(f"http://127.0.0.1:{free_port()}", generate_key()) for _ in range(count)]
        self.held = [0] * count
        self.refused: list[str] = []
        self.publisher_key: tuple[str, object] | None = None  # key id, public key
        self.publisher_pid = pid  # the sending node's process, for its CPU time
        self.first_at: tuple[float, float, float] | None = None  # wall, thread CPU, node CPU
        self.done_at: tuple[float, float, float] | None = None
        self.done = threading.Event()
        self._ready = threading.Event()
        self._servers: list[uvicorn.Server] = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def app(self, number: int) -> Starlette:
        url, key = self.followers[number]
        document = node_document(base_url=url, name=f"Inbox {number + 1}", description="",
                                 keys=[(key.name, key.public, None)], version="bench")  # fmt: skip
        nonces = MemoryNonces()  # replays refused, as a node refuses them

        async def well_known(request: Request) -> Response:
            return JSONResponse(document)

        async def inbox(request: Request) -> Response:
            body = await request.body()
            refusal = push_refusal(request, body, url, self.publisher_key, nonces)
            if refusal is not None:
                self.refused.append(refusal)
                return JSONResponse({"error": refusal}, status_code=401)
            if self.first_at is None:
                self.first_at = self._marks()
            entries = json.loads(body)["entries"]
            held = self.held[number]
            if entries[0]["seq"] > held + 1:
                return JSONResponse({"received": {"seq": held, "hash": None}}, status_code=409)
            self.held[number] = held = max(held, entries[-1]["seq"])
            if self.done_at is None and min(self.held) >= self.expected:
                self.done_at = self._marks()
                self.done.set()
            return JSONResponse({"received": {"seq": held, "hash": None}})

        return Starlette(routes=[
            Route("/.well-known/aidnode", well_known),
            Route("/federation/inbox", inbox, methods=["POST"]),
        ])  # fmt: skip

    def _marks(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.thread_time(), cpu_seconds(self.publisher_pid())

    async def _serve(self) -> None:
        for number, (url, _) in enumerate(self.followers):
            config = uvicorn.Config(self.app(number), host="127.0.0.1", port=int(url.rsplit(":", 1)[1]),
                                    log_level="warning", access_log=False, lifespan="off")  # fmt: skip
            self._servers.append(uvicorn.Server(config))
        await serve_all(self._servers, self._ready)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15) or not all(server.started for server in self._servers):
            raise AssertionError("the inboxes did not start listening")

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True  # uvicorn checks it every 0.1 s
        self._thread.join(15)


def bench_fan_out(root: Path, entries: int, count: int) -> None:
    publisher = LiveNode(root, "Publisher", env=PULLS_OFF)
    inboxes = Inboxes(count, entries, pid=lambda: publisher.process.pid)
    try:
        publisher.init()
        head, key_id, public = asyncio.run(prepare_node(publisher.data, entries,
                                                        inboxes.followers))  # fmt: skip
        inboxes.expected, inboxes.publisher_key = head, (key_id, parse_public_key(public))
        inboxes.start()
        launched = time.perf_counter()
        publisher.start()  # its delivery worker pushes to every follower as it starts
        if not inboxes.done.wait(120):
            raise AssertionError(f"the followers hold {sorted(inboxes.held)} of {head} entries "
                                 f"after 120 s; refused: {inboxes.refused[:3]}\n{publisher.log()}")  # fmt: skip
    finally:
        inboxes.stop()
        publisher.stop()
    (first, thread_first, node_first), (done, thread_done, node_done) = inboxes.first_at, inboxes.done_at
    deliveries = head * count
    print(f"fan-out, {head:,} entries to {count} followers ({deliveries:,} entry-deliveries):")
    print(f"  {done - first:6.2f} s from the first push to the last entry held:"
          f" {rate(deliveries, done - first):8,.0f} /s   (target >= 20,000/s)")  # fmt: skip
    print(f"  {done - launched:6.2f} s from launching the node; CPU from the first push:"
          f" {node_done - node_first:.2f} s at the node,"
          f" {thread_done - thread_first:.2f} s in the {count} inboxes")  # fmt: skip
    if inboxes.refused:
        print(f"  signatures refused: {len(inboxes.refused)}, first: {inboxes.refused[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=30, help="posts timed for push latency")
    parser.add_argument("--backlog", type=int, default=10_000, help="entries to catch up on")
    parser.add_argument("--fan-out", type=int, default=1000, help="entries to deliver")
    parser.add_argument("--followers", type=int, default=20, help="followers to deliver to")
    args = parser.parse_args()
    # Other work on the machine skews every figure here: say how busy it was.
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    raw_verify = RawVerify().rate()  # first, while nothing else runs
    with tempfile.TemporaryDirectory(prefix="aidnode-bench-") as tmp:
        root = Path(tmp)
        bench_push(root, args.posts)
        bench_catch_up(root, args.backlog, raw_verify)
        bench_fan_out(root, args.fan_out, args.followers)


if __name__ == "__main__":
    main()

"""Delivery benchmark (issue 9): one node pushing its feed to 50 followers, one of them slow.

One real node (`aidnode serve`, as `tests/live.py` starts it: real uvicorn, SQLite) and
`--followers` receiving nodes, each a small starlette app on its own 127.0.0.1 port, all served
by uvicorn on one thread of this process. They really follow the node: its admin adds each one
through the API (the node fetches its node document, pins its key and trusts it), then each
asks, with a signed `POST /federation/subscriptions`, to follow the node, which accepts. From
then on the node pushes to them on its own; nothing here writes its database.

Each follower checks what it is pushed as a node would, cheaply: the HTTP signature against
the node's published key, and the chain (every batch continues its cursor, each entry's `prev`
is the hash of the one before; hashes are computed once per entry for all followers). It
answers with what it holds, 409 when a batch does not continue it. One of them, the slow one,
answers every push only after `--slow` seconds. Each follower records every push (when it
arrived and was answered, how many entries) and the client port it came from: one port is one
TCP connection, so the ports count the connections the node opened to it.

Then `--entries` offers are posted at the node through its API, one after another by each of
`--posters` clients (from another process, so that this one's GIL, busy with the followers,
does not slow the posting), and the run prints: how long until every fast follower held the
head (and after the last post was answered); entry-deliveries per second; requests per
follower and entries per request; connections per follower; when the slow follower answered
its first push and held the head, against the fast ones; the node's CPU and resident memory.

Run, from the repository root (so `tests.live` is importable):
    .venv/bin/python -m bench.delivery [--entries N] [--followers N] [--slow S] [--posters N]
`tests/test_delivery_fanout_live.py` runs `run_fan_out` at a smaller size and asserts on it.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.federation import (
    OFFER,
    PULLS_OFF,
    Admin,
    cpu_seconds,
    eventually,
    push_refusal,
    rate,
    serve_all,
)  # fmt: skip
from federation.entries import entry_hash
from federation.httpsig import MemoryNonces, sign_request
from federation.identity import node_document, parse_node_document
from federation.keys import generate_key, parse_public_key
from tests.live import LiveNode


@dataclass
class Push:
    """One push a follower answered."""

    arrived: float  # time.monotonic()
    answered: float
    entries: int
    port: int  # the node's side of the TCP connection it came on


@dataclass
class Follower:
    """One receiving node: its address, key, and what it was pushed."""

    number: int
    delay: float  # seconds each push waits before it is answered
    sock: socket.socket = field(repr=False)
    key: object = field(repr=False)
    held: int = 0
    held_hash: str | None = None
    target: int | None = None  # the head it should reach, once known
    head_at: float | None = None  # when it first held `target`
    pushes: list[Push] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)  # of every request the node made to it
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    @property
    def name(self) -> str:
        return f"Follower {self.number + 1}"


class Followers:
    """`count` followers, the first of them slow, served on one thread of this process (so
    their handlers never run at once).

    The slow one answers each push after `delay` seconds. With `hold`, it also keeps its
    first push of the posts unanswered until every fast follower holds the head, `hold`
    seconds at most: if the node let it hold the others up, they would not get there, and
    the run would show it."""

    def __init__(self, count: int, *, delay: float = 3.0, hold: float = 0.0) -> None:
        self.followers = []
        for number in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))  # bound now: its port is never handed to another
            self.followers.append(Follower(number, delay if number == 0 else 0.0, sock,
                                           generate_key()))  # fmt: skip
        self.hold = hold
        self.publisher: tuple[str, object] | None = None  # the node's key id and public key
        self._hashes: dict[str, str] = {}  # entry signature -> entry hash, shared by all
        self._fast_done = asyncio.Event()  # every fast follower holds the head
        self._servers: list[uvicorn.Server] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def fast(self) -> list[Follower]:
        return [f for f in self.followers if not f.delay]

    @property
    def slow(self) -> list[Follower]:
        return [f for f in self.followers if f.delay]

    def _hash(self, entry: dict) -> str:
        known = self._hashes.get(entry["sig"])
        if known is None:
            known = self._hashes[entry["sig"]] = entry_hash(entry)
        return known

    def app(self, follower: Follower) -> Starlette:
        url, key = follower.url, follower.key
        document = node_document(base_url=url, name=follower.name,
                                 description="", keys=[(key.name, key.public, None)],
                                 version="bench")  # fmt: skip
        nonces = MemoryNonces()

        def held() -> dict:
            return {"received": {"seq": follower.held, "hash": follower.held_hash}}

        async def well_known(request: Request) -> Response:
            return JSONResponse(document)

        async def subscriptions(request: Request) -> Response:
            # The node following us back: accepted (it is the node's pull, not what we measure).
            return JSONResponse({"state": "accepted"}, status_code=202)

        async def feed(request: Request) -> Response:  # our own feed: empty
            return JSONResponse({"origin": url, "head": {"seq": 0, "hash": None}, "entries": []})

        async def cursor(request: Request) -> Response:
            return JSONResponse(held())

        async def inbox(request: Request) -> Response:
            arrived = time.monotonic()
            body = await request.body()
            refusal = push_refusal(request, body, url, self.publisher, nonces)
            if refusal is not None:
                follower.problems.append(refusal)
                return JSONResponse({"error": refusal}, status_code=401)
            message = json.loads(body)
            if message.get("type") != "entries":
                return JSONResponse({}, status_code=202)  # the answer to our subscription
            entries = message["entries"]
            if follower.delay:
                if self.hold and follower.target is not None and not follower.pushes:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._fast_done.wait(), self.hold)
                await asyncio.sleep(follower.delay)
            status = 200
            for entry in entries:
                if entry["seq"] <= follower.held:
                    continue  # held already: skipped, as a node skips it
                if entry["seq"] != follower.held + 1 or entry["prev"] != follower.held_hash:
                    follower.problems.append(f"entry {entry['seq']} does not continue "
                                             f"{follower.held}")  # fmt: skip
                    status = 409
                    break
                follower.held, follower.held_hash = entry["seq"], self._hash(entry)
            answered = time.monotonic()
            if follower.target is not None and follower.head_at is None \
                    and follower.held >= follower.target:  # fmt: skip
                follower.head_at = answered
                if all(f.head_at for f in self.fast):
                    self._fast_done.set()
            follower.pushes.append(Push(arrived, answered, len(entries),
                                        request.scope["client"][1]))  # fmt: skip
            return JSONResponse(held(), status_code=status)

        routes = Starlette(routes=[
            Route("/.well-known/aidnode", well_known),
            Route("/federation/subscriptions", subscriptions, methods=["POST", "DELETE"]),
            Route("/federation/feed", feed),
            Route("/federation/cursor", cursor),
            Route("/federation/inbox", inbox, methods=["POST"]),
        ])  # fmt: skip

        async def recording(scope, receive, send) -> None:
            if scope["type"] == "http":
                follower.ports.add(scope["client"][1])
            await routes(scope, receive, send)

        return recording

    async def _serve(self) -> None:
        for follower in self.followers:
            config = uvicorn.Config(self.app(follower), log_level="warning", access_log=False,
                                    lifespan="off")  # fmt: skip
            self._servers.append(uvicorn.Server(config))
        await serve_all(self._servers, self._ready, [f.sock for f in self.followers])

    def start(self) -> "Followers":
        self._thread.start()
        if not self._ready.wait(15) or not all(server.started for server in self._servers):
            raise AssertionError("the followers did not start listening")
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True  # uvicorn checks it every 0.1 s
        if self._thread.ident is not None:  # started
            self._thread.join(15)
        for follower in self.followers:
            follower.sock.close()

    def signed(self, follower: Follower, method: str, url: str, body: object = None) -> httpx.Request:
        request = httpx.Request(method, url, json=body) if body is not None else \
            httpx.Request(method, url)  # fmt: skip
        return sign_request(request, follower.key, follower.key.key_id(follower.url),
                            now=datetime.now(UTC))  # fmt: skip

    def follow(self, node: LiveNode, admin: Admin) -> None:
        """The node's admin adds every follower; each asks to follow the node, which accepts."""
        published = parse_node_document(httpx.get(f"{node.url}/.well-known/aidnode").json(),
                                        node.url)  # fmt: skip
        key_id, public = published.current_key
        self.publisher = key_id, parse_public_key(public)
        with httpx.Client(timeout=30) as client:
            for follower in self.followers:
                admin.add_peer(follower, 201)  # fetched, pinned, trusted (and followed back)
                asked = client.send(self.signed(follower, "POST", f"{node.url}/federation/subscriptions",
                                                {"subscriber": follower.url}))  # fmt: skip
                if asked.status_code != 202 or asked.json().get("state") != "accepted":
                    raise AssertionError(f"{follower.url} asking to follow answered "
                                         f"{asked.status_code}: {asked.text}\n{node.log()}")  # fmt: skip
        peers = {p["url"]: p for p in admin.client.get("/api/v1/peers").json()["peers"]}
        assert all(peers[f.url]["they_follow"] == "accepted" and peers[f.url]["trust"] == "trusted"
                   for f in self.followers), "not every follower follows the node"  # fmt: skip

    def head(self, node: LiveNode) -> int:
        """The node's head, as its feed says to a follower."""
        follower = self.followers[-1]
        with httpx.Client(timeout=30) as client:
            page = client.send(self.signed(follower, "GET",
                                           f"{node.url}/federation/feed?after=0&limit=1"))  # fmt: skip
        return page.json()["head"]["seq"]


def post_offers(url: str, authorization: str, count: int, posters: int) -> tuple[float, float]:
    """Post `count` offers at a node from `posters` threads, each one after another; (start,
    end) on the monotonic clock, which all processes here share."""
    def post(numbers: range) -> None:
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": authorization}) as client:  # fmt: skip
            for i in numbers:
                posted = client.post("/api/v1/items", json={**OFFER, "title": f"Ramp {i}"})
                if posted.status_code != 201:
                    raise AssertionError(f"posting answered {posted.status_code}: {posted.text}")

    start = time.monotonic()
    with ThreadPoolExecutor(posters) as threads:
        for done in [threads.submit(post, range(n, count, posters)) for n in range(posters)]:
            done.result()
    return start, time.monotonic()


def rss_kib(pid: int) -> tuple[int, int]:
    """(resident, peak resident) KiB of a process (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@dataclass
class FanOut:
    """The figures of one run; times are seconds from the first post."""

    entries: int
    head: int
    posted: float  # the last post answered
    fast_done: float  # every fast follower holding the head
    slow_first: float  # the slow follower answering its first push
    slow_done: float  # the slow follower holding the head
    requests: list[int]  # pushes per fast follower
    slow_requests: int
    entries_pushed: int  # entries in all pushes to fast followers (overlaps included)
    connections: list[int]  # per fast follower, over the pushes
    slow_connections: int
    setup_connections: list[int]  # per follower, over the setup (adding, subscribing, pulling)
    all_connections: list[int]  # per fast follower, over the whole run
    in_order: bool  # every follower holds every entry, chained
    problems: list[str]
    node_cpu: float
    node_rss: tuple[int, int]
    followers: int
    posters: int


def run_fan_out(root: Path, *, followers: int = 50, entries: int = 1000, delay: float = 3.0,
                hold: float = 0.0, posters: int = 1, timeout: float = 120.0) -> FanOut:  # fmt: skip
    """One node, `followers` following it (one slow: see `Followers` for `delay` and `hold`),
    `entries` offers posted at the node by `posters` clients at once: what arrived where,
    when, over how many requests and connections. Fails (with the node's log) if any wait
    runs over `timeout`."""
    node = LiveNode(root, "Publisher", env=PULLS_OFF)
    receivers = Followers(followers, delay=delay, hold=hold)
    admin = None
    try:
        node.init()
        admin = Admin(node)
        receivers.start()
        node.start()
        receivers.follow(node, admin)
        head_before = receivers.head(node)
        eventually(lambda: all(f.held >= head_before for f in receivers.followers),
                   "every follower holding the feed before the posts", timeout=timeout,
                   nodes=(node,))  # fmt: skip
        # Only what the posts bring is counted: forget the setup's pushes.
        for follower in receivers.followers:
            follower.pushes.clear()
            follower.target = head_before + entries
        setup_ports = [len(f.ports) for f in receivers.followers]
        cpu = cpu_seconds(node.process.pid)
        # Posted from another process, so that the followers' thread here does not hold the
        # poster back (they would share one GIL).
        token = admin.client.headers["Authorization"]
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            start, posted_at = pool.submit(post_offers, node.url, token, entries, posters).result()
        head = receivers.head(node)
        assert head == head_before + entries, f"the node's head is {head}, not {head_before + entries}"
        eventually(lambda: all(f.head_at for f in receivers.fast), "every fast follower at the head",
                   timeout=timeout, nodes=(node,))  # fmt: skip
        cpu = cpu_seconds(node.process.pid) - cpu
        rss = rss_kib(node.process.pid)
        eventually(lambda: all(f.head_at for f in receivers.slow), "the slow follower at the head",
                   timeout=timeout, nodes=(node,))  # fmt: skip
    finally:
        if admin is not None:
            admin.close()
        node.stop()
        receivers.stop()
    fast, (slow,) = receivers.fast, receivers.slow
    return FanOut(
        entries=entries, head=head, posted=posted_at - start,
        fast_done=max(f.head_at for f in fast) - start,
        slow_first=slow.pushes[0].answered - start, slow_done=slow.head_at - start,
        requests=[len(f.pushes) for f in fast], slow_requests=len(slow.pushes),
        entries_pushed=sum(p.entries for f in fast for p in f.pushes),
        connections=[len({p.port for p in f.pushes}) for f in fast],
        slow_connections=len({p.port for p in slow.pushes}),
        setup_connections=setup_ports, all_connections=[len(f.ports) for f in fast],
        in_order=all(f.held == head and not f.problems for f in receivers.followers),
        problems=[p for f in receivers.followers for p in f.problems],
        node_cpu=cpu, node_rss=rss, followers=followers, posters=posters,
    )  # fmt: skip


def report(run: FanOut, delay: float) -> None:
    fast = run.followers - 1
    how = "one after another" if run.posters == 1 else f"by {run.posters} clients at once"
    print(f"delivery: {run.entries:,} offers posted {how} at a node with {run.followers}"
          f" followers ({fast} fast, 1 answering each push after {delay:g} s)")  # fmt: skip
    print(f"  posting took {run.posted:6.2f} s ({rate(run.entries, run.posted):,.0f} posts/s)")
    print(f"  every fast follower at the head {run.fast_done:6.2f} s after the first post"
          f" ({run.fast_done - run.posted:+.2f} s after the last was answered)")  # fmt: skip
    print(f"  entry-deliveries/s: {rate(run.entries * fast, run.fast_done):,.0f} to the fast"
          f" followers until then; {rate(run.entries * run.followers, run.slow_done):,.0f}"
          f" to all {run.followers} until the slow one was done too")  # fmt: skip
    print(f"  requests per fast follower: median {statistics.median(run.requests):.0f},"
          f" min {min(run.requests)}, max {max(run.requests)}"
          f" ({run.entries / statistics.median(run.requests):.1f} entries per request;"
          f" {run.entries_pushed - run.entries * fast} entries sent twice)")  # fmt: skip
    print(f"  TCP connections per fast follower: over its pushes min {min(run.connections)},"
          f" max {max(run.connections)}; over the whole run (setup, pulls, pushes)"
          f" max {max(run.all_connections)}")  # fmt: skip
    print(f"  the slow follower: first push answered {run.slow_first:6.2f} s, at the head"
          f" {run.slow_done:6.2f} s, {run.slow_requests} requests on {run.slow_connections}"
          f" connection(s); the fast ones were all at the head at {run.fast_done:.2f} s")  # fmt: skip
    print(f"  every follower holds all {run.head:,} entries, each chained to the one before:"
          f" {run.in_order}" + (f"; problems: {run.problems[:3]}" if run.problems else ""))  # fmt: skip
    print(f"  the node: {run.node_cpu:.2f} s CPU from the first post until the fast followers"
          f" were done; RSS {run.node_rss[0] / 1024:.0f} MiB"
          f" (peak {run.node_rss[1] / 1024:.0f} MiB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000, help="offers posted at the node")
    parser.add_argument("--followers", type=int, default=50, help="followers, one of them slow")
    parser.add_argument("--slow", type=float, default=3.0, help="seconds the slow one takes per push")
    parser.add_argument("--posters", type=int, default=1, help="clients posting at once")
    args = parser.parse_args()
    # Other work on the machine skews every figure here: say how busy it was.
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="aidnode-bench-") as tmp:
        run = run_fan_out(Path(tmp), followers=args.followers, entries=args.entries,
                          delay=args.slow, posters=args.posters, timeout=150)  # fmt: skip
    report(run, args.slow)


if __name__ == "__main__":
    main()

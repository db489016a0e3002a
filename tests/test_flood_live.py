"""Floods, for real (issue 8): a trusted ally pushes 800 times as fast as it can while a
member browses, and the member hardly notices.

The scenario (`flood_scenario`, which `bench/flood.py` runs to print the same figures):

- a real node (`aidnode serve`, tests/live.py), its admin and a member made before it serves;
  the admin adds a `ScriptedPeer` through the API (pinned, trusted, followed, its `ITEMS`
  offers read from its feed); the member logs in through the login form and browses home,
  browse, an item page and a search, one page after another, `THINK` seconds apart;
- quiet: `QUIET_PAGES` page loads timed (after one round not counted), and as many again
  once the flood is over and the node has caught up: the quiet pages bracket the flood, so a
  machine that gets busier or quieter during the run moves the reference with it;
- flood: the peer sends `PUSHES` signed pushes to the node's inbox, `SENDERS` at a time, each
  sender's next push the moment its last one is answered, while the member goes on browsing;
  every page load until the last push is answered is timed.

The peer runs in a process of its own (its feed server and its senders), so that the member's
timings measure the node, not an interpreter shared with eight busy threads. Each push makes
one new entry of the peer's chain (the next version of one of its offers) and carries the
chain from the node's cursor as last answered, at most PUSH_BATCH entries: what a node's
delivery does (server/allies.py `deliver`), so concurrent pushes overlap, never leave a gap,
and the node skips what it holds. The peer ignores Retry-After: a flood. A node may make 600
federation requests a minute, so 200 pushes get 429; the entries they carried reach the node
when it next reads the peer's feed (every 5 s here), which the test waits for.

The bound is the issue's: the member's p95 page time under the flood within 3 x its quiet
p95, measured in the same run, the quiet p95 taken as at least `FLOOR` (20 ms). A quiet page
takes 5-10 ms, and on this shared 2-core machine a page that waits out another process's
time slice (or a checkpoint's fsync) takes 10-20 ms more whatever the node is doing, which
at p95 over 80 quiet pages is one of the four slowest: 3 x a 10 ms p95 would fail on that
noise, not on the flood. The figures are printed (`pytest -s`).
"""

import asyncio
import contextlib
import math
import multiprocessing
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path

import httpx
import pytest

from federation.timefmt import format_time
from server.allies import PUSH_BATCH
from server.config import load_config
from server.node import FEDERATION_PER_NODE_PER_MINUTE, Node, init_node
from tests.conftest import csrf_of
from tests.live import LiveNode
from tests.scripted_peer import ScriptedPeer
from tests.test_allies_live import FAST, eventually

pytestmark = pytest.mark.live

PUSHES = 800
SENDERS = 8
ITEMS = 100  # the peer's offers, read before the flood; each push updates one of them
QUIET_PAGES = 40  # before the flood, and as many after it
THINK = 0.02  # seconds the member waits between pages: a probe of the node, not a second flood
FLOOR = 0.020  # seconds: the least quiet p95 the bound is taken from (see the docstring)
BOUND = 3.0
FLOOD_TIMEOUT = 120.0
CATCH_UP_TIMEOUT = 30.0
SEARCH = "lentil"
ADMIN_PASSWORD = "a long test password"
MEMBER_PASSWORD = "another long test password"


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# ---------------------------------------------------------------------------- the peer


def offer(item_id: str, n: int, version: int, created: datetime) -> dict:
    """Offer `n` of the peer's, at `version` (each version a second after the last)."""
    return {"id": item_id, "kind": "offer", "title": f"Soup {n}, pot {version}",
            "body": "Lentil soup, a big pot. Bring a jar.", "category": "food", "status": "open",
            "reach": "allies", "created": format_time(created),
            "updated": format_time(created + timedelta(seconds=version)),
            "expires": format_time(created + timedelta(days=20)), "version": version,
            "author": "Jo"}  # fmt: skip


def push_flood(peer: ScriptedPeer, inbox: str, *, held: int, pushes: int, senders: int,
               make_entry) -> dict:  # fmt: skip
    """Send `pushes` pushes, `senders` at a time, as fast as the node answers; what came back.

    Each push makes one entry (`make_entry()`) and carries the chain from the node's cursor
    as last answered (`held` to start), so no push starts past what the node holds."""
    lock = threading.Lock()
    statuses: Counter = Counter()
    retry_after: list[str | None] = []
    problems: list[str] = []
    answered: dict[int, list[float]] = {}  # status: when each answer came (perf_counter)
    sent, acked = 0, held
    ready = threading.Barrier(senders + 1)  # every sender's client made before the clock starts

    def next_batch() -> list[dict] | None:
        nonlocal sent
        with lock:
            if sent == pushes:
                return None
            sent += 1
            make_entry()
            return peer.entries[acked : acked + PUSH_BATCH]

    def send_pushes() -> None:
        nonlocal acked
        with httpx.Client(timeout=30) as client:
            ready.wait(10)
            while (batch := next_batch()) is not None:
                request = peer.signed("POST", inbox, {"type": "entries", "origin": peer.url,
                                                      "entries": batch})  # fmt: skip
                try:
                    answer = client.send(request)
                except httpx.HTTPError as error:
                    with lock:
                        statuses["no answer"] += 1
                        problems.append(repr(error))
                    continue
                with lock:
                    statuses[answer.status_code] += 1
                    answered.setdefault(answer.status_code, []).append(time.perf_counter())
                    if answer.status_code == 429:
                        retry_after.append(answer.headers.get("retry-after"))
                    elif answer.status_code in (200, 409, 422):
                        acked = max(acked, answer.json()["received"]["seq"])
                    if answer.status_code not in (200, 429):
                        problems.append(f"{answer.status_code}: {answer.text[:300]}")

    threads = [threading.Thread(target=send_pushes) for _ in range(senders)]
    for thread in threads:
        thread.start()
    ready.wait(10)
    started, started_at = time.perf_counter(), time.time()
    for thread in threads:
        thread.join(FLOOD_TIMEOUT)
    seconds = time.perf_counter() - started
    if any(thread.is_alive() for thread in threads):
        problems.append(f"senders still sending after {FLOOD_TIMEOUT} s")
    since = {status: [t - started for t in times] for status, times in answered.items()}
    return {"statuses": dict(statuses), "seconds": seconds, "started_at": started_at,
            "retry_after": retry_after, "answered": since, "problems": problems[:10],
            "acked": acked}  # fmt: skip


def _peer_process(conn, items: int, pushes: int, senders: int) -> None:
    """The flooding ally, in its own process: it serves its feed, offers `items` offers, and
    on the word floods the node's inbox; it stops when told (the node has read its feed)."""
    try:
        peer = ScriptedPeer("Flooding ally").start()
        try:
            created = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
            ids = [f"{peer.url}/items/{uuid.uuid4()}" for _ in range(items)]
            versions = [1] * items
            for n, item_id in enumerate(ids):
                peer.append("item", offer(item_id, n, 1, created))
            conn.send({"url": peer.url, "ids": ids})
            order = conn.recv()
            if "stop" in order:  # the test ended before the flood
                return

            def make_entry() -> None:  # the next version of the offers, in turn
                n = (len(peer.entries) - items) % items
                versions[n] += 1
                peer.append("item", offer(ids[n], n, versions[n], created))

            flood = push_flood(peer, order["inbox"], held=order["held"], pushes=pushes,
                               senders=senders, make_entry=make_entry)  # fmt: skip
            conn.send({**flood, "head": len(peer.entries),
                       "versions": dict(zip(ids, versions, strict=True))})  # fmt: skip
            conn.recv()  # stop
        finally:
            peer.stop()
    except Exception:
        conn.send({"error": traceback.format_exc()})


# ---------------------------------------------------------------------------- the figures


@dataclass
class FloodFigures:
    """One run's figures: the member's page times (seconds) quiet, before the flood and after
    it, and under the flood; and what became of the pushes."""

    before: list[float]
    after: list[float]
    flood: list[float]
    statuses: dict
    flood_seconds: float
    pushes: int
    senders: int
    head: int  # entries in the peer's chain at the end
    acked: int  # the most the node said it held, in its answers to pushes
    held_after_flood: int  # what it held when the last push was answered
    catch_up_seconds: float  # from then to holding the head
    flood_at: list = field(default_factory=list)  # when each flood page was asked (time.time)
    started_at: float = 0.0  # when the first push was sent (time.time)
    answered: dict = field(default_factory=dict)  # status: seconds from then to each answer
    retry_after: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def quiet(self) -> list[float]:
        return self.before + self.after

    def p(self, phase: str, fraction: float) -> float:
        return nearest_rank(getattr(self, phase), fraction)

    @property
    def bound(self) -> float:
        return BOUND * max(self.p("quiet", 0.95), FLOOR)

    @property
    def ratio(self) -> float:
        return self.p("flood", 0.95) / self.p("quiet", 0.95)

    def while_refused(self) -> tuple[list[float], list[float]]:
        """The flood's page times split: before the first 429, and from it on."""
        first = self.started_at + min(self.answered.get(429, [math.inf]))
        pages = list(zip(self.flood_at, self.flood, strict=True))
        return [t for at, t in pages if at < first], [t for at, t in pages if at >= first]

    def report(self) -> list[str]:
        quiet = (f"{summary(self.quiet)} (p95 before the flood {ms(self.p('before', 0.95))},"
                 f" after {ms(self.p('after', 0.95))})")  # fmt: skip
        lines = [
            f"member's pages, quiet ({len(self.quiet)}): {quiet}",
            f"member's pages, flood ({len(self.flood)}): {summary(self.flood)}",
            f"flood p95 / quiet p95: {self.ratio:.2f}  (bound: flood p95 <= {ms(self.bound)},"
            f" {BOUND:g} x max(quiet p95, {ms(FLOOR)}))",
        ]
        for what, times in zip(("taken", "refused"), self.while_refused(), strict=True):
            if times:
                lines.append(f"  while pushes were {what} ({len(times)}): {summary(times)}")
        by_status = ", ".join(f"{status}: {count}" for status, count in
                              sorted(self.statuses.items(), key=lambda s: str(s[0])))  # fmt: skip
        lines.append(f"pushes: {self.pushes} from {self.senders} senders in"
                     f" {self.flood_seconds:.2f} s, {self.pushes / self.flood_seconds:.0f}/s;"
                     f" by status: {by_status}")  # fmt: skip
        for status, times in sorted(self.answered.items(), key=lambda s: str(s[0])):
            lines.append(f"  {status}: answered from {min(times):.2f} s to {max(times):.2f} s")
        waits = sorted(int(w) for w in self.retry_after if w and w.isdigit())
        if waits:
            lines.append(f"  429s said Retry-After {waits[0]}-{waits[-1]} s")
        lines.append(f"entries: the node held {self.held_after_flood} of the peer's {self.head}"
                     f" when the last push was answered, all {self.catch_up_seconds:.2f} s"
                     " later (the rest read from its feed)")  # fmt: skip
        return lines + [f"problem: {problem}" for problem in self.problems]


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def summary(times: list[float]) -> str:
    return (f"p50 {ms(nearest_rank(times, 0.5))}, p95 {ms(nearest_rank(times, 0.95))},"
            f" max {ms(max(times))}")  # fmt: skip


# ---------------------------------------------------------------------------- the scenario


class AdminApi:
    """The node's admin over the API."""

    def __init__(self, node: LiveNode, token: str) -> None:
        self.node, self.headers = node, {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.node.url + path, params=params, headers=self.headers, timeout=20)

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.node.url + path, json=body, headers=self.headers, timeout=20)

    def peer(self, url: str) -> dict:
        return next(p for p in self.get("/api/v1/peers").json()["peers"] if p["url"] == url)


async def make_accounts(node: LiveNode) -> str:
    """Before the node serves, in this process (the CLI would take a process each): an admin,
    whose API token is returned, and a member."""
    running = Node(load_config(node.data, environ=node.env))
    await running.start()
    try:
        admin = await running.create_user(username="admin", display_name="Admin",
                                          password=ADMIN_PASSWORD, role="admin")  # fmt: skip
        await running.create_user(username="member", display_name="Mo",
                                  password=MEMBER_PASSWORD, role="member")  # fmt: skip
        return await running.new_api_token(admin)
    finally:
        await running.close()


class Flood:
    """A node, its admin, a member's logged-in browser and the flooding ally's process."""

    def __init__(self, node: LiveNode, admin: AdminApi, browser: httpx.Client, conn, peer: dict,
                 *, pushes: int, senders: int, items: int, quiet_pages: int,
                 think: float) -> None:  # fmt: skip
        self.node, self.admin, self.browser, self.conn = node, admin, browser, conn
        self.peer_url, self.ids = peer["url"], peer["ids"]
        self.pushes, self.senders, self.items = pushes, senders, items
        self.quiet_pages, self.think = quiet_pages, think
        item_page = f"/items/{self.ids[0].rsplit('/', 1)[1]}"
        self.pages = ["/", "/items", item_page, f"/items?q={SEARCH}"]
        self.pushed: dict = {}

    def load(self, path: str) -> float:
        """One page load by the member, timed (after a pause); it must be the page."""
        time.sleep(self.think)
        started = time.perf_counter()
        page = self.browser.get(path)
        elapsed = time.perf_counter() - started
        if page.status_code != 200 or "Soup" not in page.text:
            raise AssertionError(f"{path} answered {page.status_code}: {page.text[:300]}\n"
                                 f"{self.node.log()}")  # fmt: skip
        return elapsed

    def received(self) -> int:
        return self.admin.peer(self.peer_url)["received_seq"]

    def measure(self) -> FloodFigures:
        """Quiet, flood, quiet again: the quiet pages bracket the flood, so that a machine
        that gets busier (or quieter) during the run moves the reference with it."""
        pages = cycle(self.pages)
        for path in self.pages:  # one round to warm up, not counted
            self.load(path)
        # Quiet: the member browses alone.
        before = [self.load(next(pages)) for _ in range(self.quiet_pages)]
        # The ally floods the inbox; the member goes on browsing until the last answer.
        self.conn.send({"inbox": f"{self.node.url}/federation/inbox", "held": self.items})
        flood, flood_at, deadline = [], [], time.monotonic() + FLOOD_TIMEOUT
        while not flood or not self.conn.poll():
            if time.monotonic() > deadline:
                log = self.node.log()
                raise AssertionError(f"the flood did not end in {FLOOD_TIMEOUT} s\n{log}")
            flood_at.append(time.time() + self.think)  # asked after the pause
            flood.append(self.load(next(pages)))
        self.pushed = pushed = receive(self.conn, 10, self.node)
        ended, held = time.perf_counter(), self.received()
        # The node reads in the peer's feed what the refused pushes carried.
        eventually(lambda: self.received() >= pushed["head"], "the node reading the peer's feed",
                   timeout=CATCH_UP_TIMEOUT, nodes=(self.node,))  # fmt: skip
        caught_up = time.perf_counter() - ended
        # Quiet again.
        after = [self.load(next(pages)) for _ in range(self.quiet_pages)]
        return FloodFigures(before=before, after=after, flood=flood, statuses=pushed["statuses"],
                            flood_seconds=pushed["seconds"], pushes=self.pushes,
                            senders=self.senders, head=pushed["head"], acked=pushed["acked"],
                            held_after_flood=held, catch_up_seconds=caught_up,
                            flood_at=flood_at, started_at=pushed["started_at"],
                            answered=pushed["answered"],
                            retry_after=pushed["retry_after"],
                            problems=pushed["problems"])  # fmt: skip


def receive(conn, timeout: float, node: LiveNode) -> dict:
    """The peer process's next word, within `timeout`; its traceback if it failed."""
    if not conn.poll(timeout):
        raise AssertionError(f"the peer process said nothing in {timeout} s\n{node.log()}")
    message = conn.recv()
    if "error" in message:
        raise AssertionError(f"the peer process failed:\n{message['error']}\n{node.log()}")
    return message


def member_browser(node: LiveNode) -> httpx.Client:
    """The member's browser, logged in through the login form."""
    browser = httpx.Client(base_url=node.url, timeout=30)
    page = browser.get("/login")
    assert page.status_code == 200, (page.status_code, page.text[:500], node.log())
    done = browser.post("/login", data={"username": "member", "password": MEMBER_PASSWORD,
                                        "csrf_token": csrf_of(page.text), "next": "/"})  # fmt: skip
    assert done.status_code == 303, done.text[:500]
    return browser


@contextlib.contextmanager
def flood_scenario(root: Path, *, pushes: int = PUSHES, senders: int = SENDERS,
                   items: int = ITEMS, quiet_pages: int = QUIET_PAGES,
                   think: float = THINK) -> Iterator[Flood]:  # fmt: skip
    """A node trusting a flooding ally (ready, its offers read) and a member logged in."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    conn, child_conn = context.Pipe()
    process = context.Process(target=_peer_process, args=(child_conn, items, pushes, senders),
                              daemon=True)  # fmt: skip
    with contextlib.ExitStack() as stack:
        process.start()  # it starts while the node is made
        stack.callback(_stop_peer, process, conn)
        node = LiveNode(root, "Flooded", env=FAST)
        init_node(node.data, name=node.name, base_url=node.url, environ=node.env)
        admin = AdminApi(node, asyncio.run(make_accounts(node)))
        stack.callback(node.stop)
        node.start()
        peer = receive(conn, 30, node)
        # The admin adds the ally: trusted, followed, its offers read.
        added = admin.post("/api/v1/peers", {"url": peer["url"]})
        assert added.status_code == 201, added.text
        eventually(lambda: admin.peer(peer["url"])["received_seq"] == items,
                   "the node reading the ally's offers", nodes=(node,))  # fmt: skip
        browser = member_browser(node)
        stack.callback(browser.close)
        yield Flood(node, admin, browser, conn, peer, pushes=pushes, senders=senders,
                    items=items, quiet_pages=quiet_pages, think=think)  # fmt: skip


def _stop_peer(process, conn) -> None:
    with contextlib.suppress(OSError):
        conn.send({"stop": True})
    process.join(15)
    if process.is_alive():
        process.terminate()
        process.join(5)


# ---------------------------------------------------------------------------- the test


def test_a_flooding_ally_leaves_the_node_serving_its_members(tmp_path):
    """800 pushes as fast as an ally can send them: no 5xx, those over the node's limit get
    429 with Retry-After, the node ends up holding every entry, and the member's p95 page
    time stays within 3 x its quiet value."""
    with flood_scenario(tmp_path) as flood:
        figures = flood.measure()
        for line in figures.report():
            print(line)
        statuses = figures.statuses
        # Every push was answered: taken, or refused by the limit; none failed in the node.
        assert set(statuses) <= {200, 429}, (statuses, figures.problems)
        assert sum(statuses.values()) == PUSHES
        # The limit held: 600 a minute from one node passed, the rest were told when to retry.
        if figures.flood_seconds < 55:
            assert statuses[200] == FEDERATION_PER_NODE_PER_MINUTE, statuses
        assert all(w and 1 <= int(w) <= 61 for w in figures.retry_after), figures.retry_after
        # The node is up; it held what it said it took, and then, from the feed, the rest:
        # every offer at its last version.
        assert flood.node.process.poll() is None
        assert httpx.get(f"{flood.node.url}/healthz", timeout=10).status_code == 200
        assert figures.held_after_flood >= figures.acked > ITEMS
        assert flood.received() == figures.head == ITEMS + PUSHES
        held = flood.admin.get("/api/v1/items", origin="remote", limit=200).json()["items"]
        assert {i["id"]: i["version"] for i in held} == flood.pushed["versions"]
        assert flood.node.cli("check").stdout.startswith("ok: ")  # its database and own chain
        log = flood.node.log()
        assert "Traceback" not in log and '" 500' not in log, log
        # The member hardly noticed.
        assert figures.p("flood", 0.95) <= figures.bound, "\n".join(figures.report())

"""Scale benchmark: a coalition node with 100,000 live items and 1,000,000 entries of history.

Builds the node, then serves it (`aidnode serve`, real uvicorn, loopback; `--workers N` for N
worker processes) and prints, in one run on one machine:

- browse and search: p50 and p95 of a member's `/items` and `/items?q=…` pages, at
  concurrency 1 and 20 (closed loop: each of the clients sends its next request when the last
  one is answered), and of `/api/v1/items`;
- ingest: entries per second trusted allies' pushes are taken in at (signed
  `POST /federation/inbox`, batches of 100, each ally's one after another as a follower's
  pusher sends them, each signed beforehand and written by a minimal client), as a share of
  the raw Ed25519 verify rate measured just before, in three rounds of 10,000 entries: the
  median round's figure, each round's printed beside it. Measured twice: one ally pushing
  alone, and four allies pushing at once (2,500 entries each a round), which is what a
  coalition node's allies do and what the target is read against;
- catch-up: a 10,000-entry backlog read from an ally that serves its feed, on the big node
  and, for comparison, on a fresh node in the same run, so that what history costs shows as
  a ratio;
- history: a page of the node's own feed read at its start and at its end (cost by position);
- memory: the node's peak RSS (VmHWM, its processes' added up), at start and after everything
  above;
- size: the database file per live item and per entry.

The history is written straight into a fresh node's SQLite file before it serves, in the
node's own schema and with the node's own key, so every entry is a real signed link of its
chain: 80,000 local items (60,000 still live, 20,000 fulfilled or withdrawn) edited over 80
days, and 40,000 live items of four allies. A sample of entries is checked against the
writer's RFC 8785 code and the whole state against the item rules as it is built.

Targets: browse and search p95 < 50 ms at concurrency 20; ingest >= 50% of raw verify
(four allies at once);
catch-up >= 2,000 entries/s; peak RSS < 300 MB. Run from the repository root:
    .venv/bin/python -m bench.scale [--live N] [--entries N] [--workers N]
"""

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.federation import Admin, RawVerify, eventually, nearest_rank, rate
from federation.encoding import b64url_encode
from federation.entries import canonical, canonical_read, hash_bytes
from federation.httpsig import sign_request
from federation.items import validate_state
from federation.keys import NodeKey, generate_key, load_key, public_key_text
from federation.timefmt import format_time
from server.config import load_config
from server.store import ITEM_UPSERT, _item_params
from tests.conftest import csrf_of
from tests.live import LiveNode, free_port
from tests.scripted_peer import ScriptedPeer

PASSWORD = "a long bench password\n"
QUIET = {"AIDNODE_POLL_INTERVAL": "3600"}  # no pulls but at start and when an admin acts
ALLIES = 4
LOCAL_SHARE = 0.6  # of the live items; the rest come from allies
CLOSED_LOCAL = 20_000  # local items no longer live, whose history is in the feed
HISTORY_DAYS = 80
WORDS = (
    "ramp wheelchair bike ride clinic groceries rice beans diapers formula blanket heater "
    "coat boots stroller crib laptop phone charger tent stove soup bread fruit insulin "
    "walker cane ladder drill paint moving boxes van truck childcare tutoring spanish "
    "english forms rent letter lawyer shelter pantry garden seeds tools sewing repair roof "
    "window lock fridge freezer fan books toys shoes socks towels soap masks tests water"
).split()  # fmt: skip
CATEGORIES = ("food", "housing", "transport", "care", "household", "health", "skills", "other")
SEARCHES = ("insulin", "wheelchair ramp", "groceries", "spanish tutoring", "van")
CONCURRENCY = (1, 20)
REQUESTS_PER_CLIENT = {1: 60, 20: 15}
INGEST_ENTRIES = 10_000  # a round
INGEST_ROUNDS = 3
INGEST_BATCH = 100
INGEST_ALLIES = 4  # pushing at once, as a coalition's allies do; one alone is measured too
CATCH_UP = 10_000


# ------------------------------------------------------------------------ building


class History:
    """Writes a node's feed and items straight into its SQLite file, entry after entry."""

    def __init__(self, data: Path, seed: int = 1) -> None:
        config = load_config(data, environ={})
        self.base = config.base_url
        self.db = sqlite3.connect(config.database_path, isolation_level=None)
        self.db.execute("PRAGMA synchronous = OFF")
        [(name,)] = self.db.execute("SELECT name FROM node_keys WHERE retired_at_seq IS NULL")
        self.key = load_key(config.keys_dir / f"{name}.pem", name)
        self.key_id = self.key.key_id(self.base)
        [(self.seq, self.prev)] = self.db.execute(
            "SELECT coalesce(max(seq), 0), (SELECT hash FROM feed ORDER BY seq DESC LIMIT 1) FROM feed")
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.checked = 0

    def state(self, origin: str, i: int, created: datetime) -> dict:
        """A valid first state of a local or allied item, words drawn at random."""
        rng, kind = self.rng, "need" if self.rng.random() < 0.4 else "offer"
        words = rng.sample(WORDS, 12)
        state = {
            "id": f"{origin}/items/{uuid.UUID(int=rng.getrandbits(128), version=4)}",
            "kind": kind, "title": f"{words[0].title()} and {words[1]} {i}",
            "body": " ".join(words[2:]).capitalize() + ". Ask at the front desk, weekday evenings.",
            "category": rng.choice(CATEGORIES), "tags": words[:2], "quantity": str(rng.randint(1, 9)),
            "location": {"label": "Eastside", "geohash": "u33d" + rng.choice("bcfg")},
            "status": "open", "reach": "allies", "created": format_time(created),
            "updated": format_time(created), "expires": format_time(created + timedelta(days=90)),
            "version": 1, "author": "Member",
        }  # fmt: skip
        if kind == "need":
            state["urgency"] = rng.choice(("normal", "normal", "urgent"))
        return state

    def entry(self, state: dict, at: str) -> tuple:
        """The next entry of the chain, carrying `state`, as a `feed` row."""
        self.seq += 1
        entry = {"v": 1, "origin": self.base, "seq": self.seq, "prev": self.prev, "type": "item",
                 "at": at, "body": state, "key": self.key_id}  # fmt: skip
        signing = canonical_read(entry)
        entry["sig"] = b64url_encode(self.key.sign(signing))
        encoded = canonical_read(entry)
        if self.seq <= 200 or self.seq % 50_000 == 0:  # the writer's own canonical form
            assert canonical(entry) == encoded and validate_state(state, origin=self.base)
            self.checked += 1
        self.prev = hash_bytes(encoded)
        return (self.seq, self.prev, "item", state["id"], at, encoded.decode("utf-8"))

    def build(self, *, local_live: int, closed: int, entries: int) -> None:
        """`local_live + closed` local items and `entries` entries about them in all."""
        items = local_live + closed
        extra = entries - items - closed  # each item is created; each closed one closes
        edits = [self.rng.randrange(items) for _ in range(max(0, extra))]
        order = list(range(items)) + edits
        self.rng.shuffle(order)
        first_seen: set[int] = set()  # an item's first place in the order is its creation
        states: dict[int, dict] = {}
        step = HISTORY_DAYS * 86400 / max(1, len(order) + closed)
        start = self.now - timedelta(days=HISTORY_DAYS)
        rows, clock = [], 0.0
        closing = set(range(local_live, items))

        def flush() -> None:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO feed (seq, hash, type, item_id, at, entry)"
                                " VALUES (?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
            self.db.execute("COMMIT")
            rows.clear()

        for item in order:
            clock += step
            moment = start + timedelta(seconds=int(clock))
            at = format_time(moment)
            if item not in first_seen:
                first_seen.add(item)
                state = self.state(self.base, item, moment)
            else:
                state = dict(states[item])
                state["version"] += 1
                state["updated"] = at
                state["quantity"] = str(self.rng.randint(1, 9))
                if self.rng.random() < 0.3:
                    state["status"] = "promised" if state["status"] == "open" else "open"
            states[item] = state
            rows.append(self.entry(state, at))
            if len(rows) >= 10_000:
                flush()
        for item in sorted(closing):  # the closed ones end fulfilled or withdrawn
            clock += step
            at = format_time(start + timedelta(seconds=int(clock)))
            state = {**states[item], "version": states[item]["version"] + 1, "updated": at,
                     "status": self.rng.choice(("fulfilled", "withdrawn"))}  # fmt: skip
            states[item] = state
            rows.append(self.entry(state, at))
        flush()
        self.db.execute("BEGIN")
        self.db.executemany(ITEM_UPSERT, [
            _item_params(s, self.base, True, 1, "after_delay" if s["kind"] == "need" else None, False)
            for s in states.values()
        ])  # fmt: skip
        self.db.execute("COMMIT")

    def allies(self, count: int, per_ally: int) -> list[tuple[str, NodeKey]]:
        """`count` trusted allies we follow, each with `per_ally` live items held here."""
        made = []
        for number in range(1, count + 1):
            url, key = f"http://127.0.0.1:{free_port()}", generate_key("main")
            self.db.execute("BEGIN")
            cursor = self.db.execute(
                "INSERT INTO peers (url, name, trust, we_follow, they_follow, received_seq, head_seq,"
                " created) VALUES (?, ?, 'trusted', 'accepted', 'none', ?, ?, ?)",
                (url, f"Ally {number}", per_ally, per_ally, format_time(self.now)))
            peer_id = cursor.lastrowid
            self.db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                            (key.key_id(url), peer_id, public_key_text(key.public)))  # fmt: skip
            start = self.now - timedelta(days=HISTORY_DAYS)
            params = []
            for i in range(per_ally):
                created = start + timedelta(seconds=int(i * HISTORY_DAYS * 86400 / per_ally))
                params.append(_item_params(self.state(url, i, created), url, False, None, None,
                                           False, None, peer_id))  # fmt: skip
            self.db.executemany(ITEM_UPSERT, params)
            self.db.execute("COMMIT")
            made.append((url, key))
        return made

    def close(self) -> None:
        # Items were written after the entries that carry them: note each one's latest entry
        # as the feed's own trigger does for entries appended after the item.
        self.db.execute(
            "UPDATE items SET feed_seq = latest.seq FROM (SELECT item_id, max(seq) AS seq"
            " FROM feed WHERE item_id IS NOT NULL GROUP BY item_id) AS latest"
            " WHERE items.id = latest.item_id AND items.is_local")  # fmt: skip
        self.db.execute("PRAGMA optimize")
        self.db.close()


def build_node(root: Path, *, live: int, entries: int, workers: int = 1) -> tuple[LiveNode, Admin, dict]:
    """A node holding `live` live items (LOCAL_SHARE of them its own) and `entries` entries."""
    node = LiveNode(root, "Coalition", env={**QUIET, "AIDNODE_WORKERS": str(workers)}).init()
    admin = Admin(node)
    local_live = int(live * LOCAL_SHARE)
    start = time.perf_counter()
    history = History(node.data)
    history.build(local_live=local_live, closed=CLOSED_LOCAL, entries=entries)
    history.allies(ALLIES, (live - local_live) // ALLIES)
    history.close()
    built = {"seconds": time.perf_counter() - start, "checked": history.checked,
             "head": history.seq}  # fmt: skip
    return node, admin, built


# ------------------------------------------------------------------------ measuring


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc")


def peak_rss_mb(pid: int) -> float:
    """The node's peak RSS (VmHWM): of all its processes together, each at its own peak."""
    return sum(_status_mb(each, "VmHWM:") for each in processes(pid))


def rss_mb(pid: int) -> float:
    return sum(_status_mb(each, "VmRSS:") for each in processes(pid))


def login_cookie(base: str) -> str:
    """The session cookie of the admin, logged in through the login form: `name=value`."""
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
        csrf = csrf_of(client.get("/login").text)
        answer = client.post("/login", data={"username": "admin", "password": PASSWORD.strip(),
                                             "csrf_token": csrf})  # fmt: skip
        if answer.status_code != 303:
            raise AssertionError(f"login answered {answer.status_code}: {answer.text[:300]}")
        session = [(name, value) for name, value in client.cookies.items() if "session" in name]
        if len(session) != 1:
            raise AssertionError(f"login set no session cookie: {dict(client.cookies)}")
        return "=".join(session[0])


class Connection:
    """One kept-alive HTTP/1.1 connection sending requests and reading whole answers.

    The load generator: it shares the machine with the node, and httpx spends 2-3 ms of CPU a
    request, as much as the node itself, so at concurrency 20 it, not the node, would set the
    pace (and 1 ms a push, on the path of pushes sent one after another). This writes a
    request made beforehand and reads the status line, the headers and a Content-Length body
    (what the node's answers carry), little more."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{name}: {value}\r\n" for name, value in
                            {"Host": f"{host}:{port}", **headers}.items())  # fmt: skip
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.send(f"GET {path} HTTP/1.1\r\n{self.head}\r\n".encode(), path)

    async def send(self, request: bytes, label: str) -> tuple[int, bytes]:
        """Send one whole request (`wire` makes one of an httpx.Request); its status and body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise AssertionError(f"{label}: an answer without Content-Length")
        return status, await self.reader.readexactly(length)

    @staticmethod
    def wire(request: httpx.Request) -> bytes:
        """The bytes of an HTTP/1.1 request as httpx would send it: its headers as they are
        (signed), its whole body."""
        head = b"".join(name + b": " + value + b"\r\n" for name, value in request.headers.raw)
        return b"%s %s HTTP/1.1\r\n%s\r\n%s" % (request.method.encode(), request.url.raw_path,
                                                  head, request.read())  # fmt: skip

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _closed_loop(base: str, paths: list[str], concurrency: int, per_client: int, *,
                       headers: dict[str, str]) -> list[tuple[str, float]]:  # fmt: skip
    """(path, latency in ms) of the requests of `concurrency` clients, each on its own
    connection, each sending `per_client` requests one after another (closed loop)."""
    url = httpx.URL(base)
    connections = [Connection(url.host, url.port, headers) for _ in range(concurrency)]
    try:
        for path in paths:  # warm: each page once, not counted
            status, body = await connections[0].get(path)
            if status != 200:
                raise AssertionError(f"{path} answered {status}: {body[:300]!r}")
        latencies: list[tuple[str, float]] = []

        async def one(number: int) -> None:
            connection = connections[number]
            for i in range(per_client):
                path = paths[(number + i) % len(paths)]
                start = time.perf_counter()
                status, _ = await connection.get(path)
                latencies.append((path, 1000 * (time.perf_counter() - start)))
                if status != 200:
                    raise AssertionError(f"{path} answered {status}")

        await asyncio.gather(*(one(n) for n in range(concurrency)))
    finally:
        for connection in connections:
            connection.close()
    return latencies


def pages(node: LiveNode, paths: list[str], **kwargs) -> dict[int, tuple]:
    """(p50, p95, requests, the node's CPU ms a request, the slowest path and its p50 at
    concurrency 1) at each concurrency."""
    figures = {}
    for concurrency in CONCURRENCY:
        cpu = _cpu(node)
        timed = asyncio.run(_closed_loop(node.url, paths, concurrency,
                                         REQUESTS_PER_CLIENT[concurrency], **kwargs))  # fmt: skip
        cpu = 1000 * (_cpu(node) - cpu) / (len(timed) + len(paths))
        ms = [latency for _, latency in timed]
        by_path = {path: statistics.median([t for p, t in timed if p == path]) for path in paths}
        slowest = max(by_path, key=by_path.__getitem__)
        figures[concurrency] = (statistics.median(ms), nearest_rank(ms, 0.95), len(ms), cpu,
                                slowest, by_path[slowest])  # fmt: skip
    return figures


def peer_entries(peer: ScriptedPeer, count: int) -> None:
    """Append `count` entries to a scripted ally's feed: new live offers, a few edits."""
    from bench.federation import item_state

    now, states = datetime.now(UTC), []
    for i in range(count):
        if states and i % 5 == 4:  # one entry in five edits an earlier item
            state = dict(states[-3])
            state["version"] += 1
            state["quantity"] = str(i % 9 + 1)
        else:
            state = item_state(peer.url, i, now)
        states.append(state)
        peer.append("item", state)


def measure_ingest(node: LiveNode, admin: Admin, name: str, raw: RawVerify, *,
                   allies: int = 1) -> dict:
    """INGEST_ROUNDS rounds of INGEST_ENTRIES pushed entries each, shared by `allies` trusted
    allies pushing at once, each its own batches one after another on its own connection,
    as a follower's delivery sends them. Each round is timed on its own and divided by the raw
    verify rate measured just before it (this machine's speed drifts by several percent over
    a minute); the figures are the median round's."""
    if INGEST_ENTRIES % (allies * INGEST_BATCH):
        raise ValueError(f"{allies} allies cannot share a round of {INGEST_ENTRIES:,} entries"
                         f" in pushes of {INGEST_BATCH}")  # fmt: skip
    pushers = [ScriptedPeer(f"{name} {n + 1}").start() for n in range(allies)]
    try:
        for pusher in pushers:
            admin.client.post("/api/v1/peers", json={"url": pusher.url}).raise_for_status()
            eventually(lambda url=pusher.url: admin.peer(url)["we_follow"] == "accepted",
                       f"{node.name} following {pusher.name}", timeout=30, nodes=(node,))  # fmt: skip
        # Each admin action wakes the node's pulls of every followed feed. Their entries are
        # made once those pulls are over, so that every one reaches the node by a push; the
        # check after the rounds (feed_served) makes sure none was read by a pull instead.
        _quiet_feeds(pushers)
        total = INGEST_ROUNDS * INGEST_ENTRIES
        each = total // allies
        inbox = f"{node.url}/federation/inbox"
        streams = []
        for pusher in pushers:
            peer_entries(pusher, each)
            streams.append(signed_pushes(pusher, inbox))
        per_round = INGEST_ENTRIES // allies // INGEST_BATCH  # pushes of each ally a round
        cpu_before = _cpu_split(node)
        rates, shares, yardsticks, client_cpu = [], [], [], 0.0

        async def push_all(wires: list[bytes]) -> None:
            connection = Connection("127.0.0.1", httpx.URL(node.url).port, {})
            try:
                for wire in wires:
                    status, answer = await connection.send(wire, "a push")
                    if status != 200:
                        raise AssertionError(f"a push answered {status}: {answer[:300]!r}"
                                             f"\n{node.log()}")  # fmt: skip
            finally:
                connection.close()

        async def rounds() -> None:
            nonlocal client_cpu
            for first in range(0, each // INGEST_BATCH, per_round):
                beside = raw.rate(rounds=3)
                yardsticks.append(beside)
                start, cpu_start = time.perf_counter(), time.process_time()
                await asyncio.gather(*(push_all(wires[first : first + per_round])
                                       for wires in streams))  # fmt: skip
                rates.append(rate(INGEST_ENTRIES, time.perf_counter() - start))
                client_cpu += time.process_time() - cpu_start
                shares.append(rates[-1] / beside)

        asyncio.run(rounds())
        cpu = {part: used - cpu_before[part] for part, used in _cpu_split(node).items()}
        for pusher in pushers:
            held = admin.peer(pusher.url)["received_seq"]
            if held != each or pusher.feed_served:
                raise AssertionError(f"{node.name} holds {held} of the {each} entries"
                                     f" {pusher.name} pushed, and read {pusher.feed_served}"
                                     " of them from its feed")  # fmt: skip
        median = shares.index(statistics.median_low(shares))
        return {"rate": rates[median], "share": shares[median], "shares": shares, "raw": yardsticks,
                "client_ms": 1000 * client_cpu / (total // INGEST_BATCH),
                "cpu_per_entry": {part: 1e6 * used / total for part, used in cpu.items()}}  # fmt: skip
    finally:
        for pusher in pushers:
            pusher.stop()


def signed_pushes(pusher: ScriptedPeer, inbox: str) -> list[bytes]:
    """A scripted ally's entries as pushes of INGEST_BATCH, each signed and made into its
    bytes before the clock starts: the pusher's own work is not the node's (a real ally signs
    on its own machine), and on two cores it would take the node's."""
    pushes = []
    for first in range(0, len(pusher.entries), INGEST_BATCH):
        body = {"type": "entries", "origin": pusher.url,
                "entries": pusher.entries[first : first + INGEST_BATCH]}  # fmt: skip
        request = httpx.Request("POST", inbox, headers={"Content-Type": "application/json"},
                                content=json.dumps(body, separators=(",", ":")).encode())  # fmt: skip
        pushes.append(Connection.wire(sign_request(request, pusher.key, pusher.key.key_id(pusher.url),
                                                   now=datetime.now(UTC))))  # fmt: skip
    return pushes


def _quiet_feeds(peers: list[ScriptedPeer], quiet: float = 1.0, timeout: float = 30) -> None:
    """Wait until each peer's feed has been read and none has been for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    reads, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = [peer.feed_reads for peer in peers]
        if now != reads:
            reads, since = now, time.monotonic()
        elif all(now) and time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)
    raise AssertionError(f"the node went on reading the pushers' feeds for {timeout:.0f} s")


def measure_catch_up(node: LiveNode, admin: Admin, backlog: ScriptedPeer) -> dict:
    """A new ally's backlog of CATCH_UP entries, read as pages of its feed."""
    start = time.perf_counter()
    admin.client.post("/api/v1/peers", json={"url": backlog.url}).raise_for_status()
    eventually(lambda: admin.peer(backlog.url)["received_seq"] >= len(backlog.entries),
               f"{node.name} reading the backlog", timeout=300, nodes=(node,), interval=0.02)  # fmt: skip
    elapsed = time.perf_counter() - start
    return {"rate": rate(len(backlog.entries), elapsed), "seconds": elapsed}


def measure_feed_reads(node: LiveNode, reader: ScriptedPeer, head: int) -> dict[str, float]:
    """Median ms of a signed read of 100 entries of the node's feed, at its start and end."""
    figures = {}
    with httpx.Client(timeout=30) as client:
        for label, after in (("start", 0), ("end", max(0, head - 100))):
            ms = []
            for _ in range(15):
                request = reader.signed("GET", f"{node.url}/federation/feed?after={after}&limit=100")
                begin = time.perf_counter()
                answer = client.send(request)
                ms.append(1000 * (time.perf_counter() - begin))
                if answer.status_code != 200 or len(answer.json()["entries"]) != 100:
                    raise AssertionError(f"the feed answered {answer.status_code}: {answer.text[:300]}")
            figures[label] = statistics.median(ms)
    return figures


def processes(pid: int) -> list[int]:
    """`pid` and its descendants (a node serving with several workers is a parent process
    and its worker processes)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += processes(int(child))
    return found


def _cpu(node: LiveNode) -> float:
    return sum(_cpu_split(node).values())


def _cpu_split(node: LiveNode) -> dict[str, float]:
    """CPU seconds a node's processes have used (Linux /proc), split three ways: their main
    threads (the event loops; with worker processes, also the parent's, which serves
    nothing), their other threads (SQLite's: the writer, the checkpointer, the readers), and
    the signature checker processes."""
    from bench.federation import cpu_seconds

    split = {"loop": 0.0, "threads": 0.0, "checkers": 0.0}
    for pid in processes(node.process.pid):
        whole = cpu_seconds(pid)
        if b"server.checker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            split["checkers"] += whole
            continue
        loop = cpu_seconds(pid, thread=pid)  # the main thread's id is the process's
        split["loop"] += loop
        split["threads"] += whole - loop
    return split


def database_bytes(node: LiveNode) -> int:
    return sum(path.stat().st_size for path in node.data.glob("aidnode.db*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1, help="the node's worker processes")
    args = parser.parse_args()
    began = time.perf_counter()
    raw = RawVerify()
    raw_rate = raw.rate()
    with tempfile.TemporaryDirectory(prefix="aidnode-scale-") as tmp:
        root = Path(tmp)
        node, admin, built = build_node(root, live=args.live, entries=args.entries,
                                        workers=args.workers)  # fmt: skip
        size = database_bytes(node)
        print(f"built {args.live:,} live items and {built['head']:,} entries in"
              f" {built['seconds']:.0f} s ({built['checked']} entries checked against rfc8785"
              f" and the item rules); database {size / 1e6:,.0f} MB:"
              f" {size / args.live / 1024:.1f} KiB per live item,"
              f" {size / built['head']:.0f} bytes per entry")  # fmt: skip
        fresh = LiveNode(root, "Fresh", env={**QUIET, "AIDNODE_WORKERS": str(args.workers)}).init()
        fresh_admin = Admin(fresh)
        backlog = ScriptedPeer("Backlog")
        peer_entries(backlog, CATCH_UP)
        backlog.start()
        try:
            node.start()
            fresh.start()
            started_rss = rss_mb(node.process.pid)
            print(f"node serving with {args.workers} worker process(es); RSS {started_rss:.0f} MB  (raw"
                  f" Ed25519 verify, this run: {raw_rate:,.0f}/s)")  # fmt: skip
            browse = ["/items", "/items?kind=need", "/items?kind=offer&category=food",
                      "/items?origin=remote", "/items?category=care"]
            search = [f"/items?q={term.replace(' ', '+')}" for term in SEARCHES]
            token = {"Authorization": admin.client.headers["Authorization"]}
            cookie = {"Cookie": login_cookie(node.url)}
            api = ["/api/v1/items?limit=50", "/api/v1/items?kind=need&limit=50",
                   "/api/v1/items?q=rice&limit=50"]
            for label, paths, headers in (("browse", browse, cookie), ("search", search, cookie),
                                          ("API list", api, token)):  # fmt: skip
                figures = pages(node, paths, headers=headers)
                for concurrency, (p50, p95, count, cpu, slowest, its_p50) in figures.items():
                    target = "   (target: p95 < 50 ms)" if concurrency == 20 and label != "API list" else ""
                    print(f"{label:>9}, concurrency {concurrency:2}: p50 {p50:6.1f} ms"
                          f"   p95 {p95:6.1f} ms   ({count} requests, node CPU {cpu:.2f} ms each)"
                          f"{target}")  # fmt: skip
                    if concurrency == 1:
                        print(f"{'':>9}  slowest page {slowest}: p50 {its_p50:.1f} ms")
            for target_node, target_admin, label in ((node, admin, "big"), (fresh, fresh_admin, "fresh")):
                for allies in (1, INGEST_ALLIES):
                    pushed = measure_ingest(target_node, target_admin, f"Pusher {label} {allies}",
                                            raw, allies=allies)  # fmt: skip
                    who = (f"{allies} allies pushing at once" if allies > 1
                           else "one ally pushing alone")  # fmt: skip
                    target = "   (target: >= 50%)" if allies > 1 else ""
                    rounds = ", ".join(f"{share:.1%}" for share in pushed["shares"])
                    print(f"{label:>5} node: ingest, {who}: {pushed['rate']:7,.0f}/s"
                          f" ({pushed['share']:.1%} of raw verify, the median of"
                          f" {INGEST_ROUNDS} rounds of {INGEST_ENTRIES:,}: {rounds}){target}")  # fmt: skip
                    split = pushed["cpu_per_entry"]
                    print(f"{'':>5}       raw verify beside the rounds {min(pushed['raw']):,.0f}–"
                          f"{max(pushed['raw']):,.0f}/s; the pushers' CPU {pushed['client_ms']:.2f} ms"
                          f" a push; the node's CPU an entry: event loop {split['loop']:.0f} µs,"
                          f" SQLite and other threads {split['threads']:.0f} µs,"
                          f" signature checkers {split['checkers']:.0f} µs"
                          f" (raw verify {1e6 / raw_rate:.0f} µs)")  # fmt: skip
                caught = measure_catch_up(target_node, target_admin, backlog)
                print(f"{label:>5} node: catch-up of a {CATCH_UP:,}-entry backlog"
                      f" {caught['rate']:7,.0f}/s   (target: >= 2,000/s)")  # fmt: skip
            reads = measure_feed_reads(node, backlog, built["head"])  # backlog is trusted now
            print(f"feed read, 100 entries: at the start {reads['start']:.1f} ms,"
                  f" at seq {built['head'] - 100:,} {reads['end']:.1f} ms")  # fmt: skip
            print(f"peak RSS: big node {peak_rss_mb(node.process.pid):.0f} MB"
                  f" (at start {started_rss:.0f} MB), fresh node {peak_rss_mb(fresh.process.pid):.0f} MB"
                  f"   (target < 300 MB)")  # fmt: skip
        finally:
            backlog.stop()
            admin.close()
            fresh_admin.close()
            node.stop()
            fresh.stop()
    print(f"whole run: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()

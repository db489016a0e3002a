"""Snapshots (docs/protocol.md §8.1), in-process: `GET /federation/snapshot` serves the latest
entry of each live item in seq order, paged and within 1 MiB, to whoever may read the feed; a
new ally of a node with a long history takes its live state from it, checks every entry with
the origin's keys, and reads the feed on from the snapshot's head, or, if the snapshot fails,
from the start. (Two real nodes: tests/test_snapshot_live.py.)"""

import asyncio
import json
import os
import signal
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.entries import entry_hash, key_entry_body
from federation.keys import generate_key, public_key_text
from federation.outbound import Reply
from server import allies as allies_module
from server.app import create_app
from tests.conftest import NodeHarness, make_node
from tests.test_feed import WEST, signed_get, trust_peer
from tests.test_ingest import WestFeed, add_west, item
from tests.test_relay import NORTH, Feed, add_peer, need

pytestmark = pytest.mark.anyio

OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household"}  # fmt: skip
EAST_URL = "http://127.0.0.1:8765"
NEW_ALLY_URL = "http://127.0.0.1:8766"
READER = "https://reader.example"


async def feed_entries(harness) -> list[dict]:
    rows = await harness.node.store.fetch_all("SELECT entry FROM feed ORDER BY seq")
    return [json.loads(row[0]) for row in rows]


async def live_latest(harness) -> list[dict]:
    """What a snapshot must hold, worked out the long way: for each federated item of the
    node that is open or promised, its latest entry; in seq order."""
    latest: dict[str, dict] = {}
    for entry in await feed_entries(harness):
        if entry["type"] == "item":
            latest[entry["body"]["id"]] = entry
    return sorted((e for e in latest.values() if e["body"]["status"] in ("open", "promised")),
                  key=lambda e: e["seq"])  # fmt: skip


async def read_snapshot(harness, key, url: str = WEST, **params) -> httpx.Response:
    """GET /federation/snapshot, signed by `key` as the node at `url`."""
    query = "&".join(f"{name}={value}" for name, value in params.items())
    path = "/federation/snapshot" + (f"?{query}" if query else "")
    return await harness.client().send(signed_get(harness, key, path, url=url))


async def all_pages(harness, key, limit: int) -> tuple[list[dict], list[dict]]:
    """Every page of the snapshot, `limit` entries a page: (pages, their entries)."""
    pages, entries, after = [], [], 0
    while True:
        page = (await read_snapshot(harness, key, after=after, limit=limit)).json()
        pages.append(page)
        entries += page["entries"]
        if page["next"] is None:
            return pages, entries
        after = page["next"]


async def post_history(api, items: int, edits: int, withdraw: int) -> list[dict]:
    """Offers, each edited `edits` times; the first `withdraw` of them then withdrawn."""
    posted = []
    for n in range(items):
        posted.append((await api.post("/api/v1/items", json={**OFFER, "title": f"Offer {n}"})).json())
    for round_ in range(edits):
        for n, offer in enumerate(posted):
            uuid = offer["id"].rsplit("/", 1)[1]
            changed = await api.patch(f"/api/v1/items/{uuid}", json={"title": f"Offer {n}, v{round_ + 2}"})
            assert changed.status_code == 200, changed.text
    for offer in posted[:withdraw]:
        uuid = offer["id"].rsplit("/", 1)[1]
        assert (await api.patch(f"/api/v1/items/{uuid}", json={"status": "withdrawn"})).status_code == 200
    return posted


# ---------------------------------------------------------------------------- serving


async def test_a_snapshot_holds_the_latest_entry_of_each_live_item_only(harness):
    """Withdrawn, fulfilled, expired and group-only items are left out; each live item comes
    once, as its latest entry, in seq order, with the head and the entry at the head."""
    api = await harness.api_client("jo")
    posted = await post_history(api, items=6, edits=3, withdraw=2)
    # One promised, then fulfilled; one promised and kept so; a need kept in the group.
    await api.patch(f"/api/v1/items/{posted[2]['id'].rsplit('/', 1)[1]}", json={"status": "promised"})
    await api.patch(f"/api/v1/items/{posted[2]['id'].rsplit('/', 1)[1]}", json={"status": "fulfilled"})
    await api.patch(f"/api/v1/items/{posted[3]['id'].rsplit('/', 1)[1]}", json={"status": "promised"})
    await api.post("/api/v1/items", json={"kind": "need", "title": "A ride", "body": "Tuesday.",
                                          "category": "transport"})  # fmt: skip
    # One whose time ran out, marked by the expiry worker; one whose time ran out, not yet marked.
    short = (await api.post("/api/v1/items", json={**OFFER, "title": "Short",
                                                   "expires": "2026-11-25T00:00:00Z"})).json()  # fmt: skip
    await api.post("/api/v1/items", json={**OFFER, "title": "Shorter", "expires": "2026-11-25T06:00:00Z"})
    harness.clock.advance(hours=7)
    assert await harness.node.expire_due_items() == 1
    harness.clock.advance(hours=6)
    west = await trust_peer(harness)
    response = await read_snapshot(harness, west)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    page = response.json()
    entries = await feed_entries(harness)
    assert page["origin"] == harness.config.base_url
    assert page["head"] == {"seq": entries[-1]["seq"], "hash": entry_hash(entries[-1])}
    assert page["head_entry"] == entries[-1] and page["keys"] == [] and page["next"] is None
    expected = [e for e in await live_latest(harness) if e["body"]["title"] != "Shorter"]
    assert page["entries"] == expected
    assert [e["body"]["title"] for e in page["entries"]] == [
        "Offer 4, v4", "Offer 5, v4", "Offer 3, v4"]  # fmt: skip
    assert short["id"] not in {e["body"]["id"] for e in page["entries"]}
    # Each is the item's state as the node holds it.
    for entry in page["entries"]:
        assert (await harness.node.store.item(entry["body"]["id"])).state == entry["body"]


async def test_an_empty_feed_has_an_empty_snapshot(harness_factory):
    async with harness_factory(feed_public=True) as h:
        page = (await h.client().get("/federation/snapshot")).json()
        assert page == {"origin": h.config.base_url, "head": {"seq": 0, "hash": None}, "keys": [],
                        "head_entry": None, "entries": [], "next": None}  # fmt: skip


async def test_snapshot_pages_follow_next_and_an_item_changed_meanwhile_comes_later(harness):
    api = await harness.api_client("jo")
    posted = await post_history(api, items=12, edits=1, withdraw=0)
    west = await trust_peer(harness)
    first = (await read_snapshot(harness, west, limit=5)).json()
    assert [e["seq"] for e in first["entries"]] == [13, 14, 15, 16, 17] and first["next"] == 17
    # An item of the first page changes before the next page is read: its new entry comes
    # after the first page's head, in a later page, so a reader paging on misses nothing.
    uuid = posted[0]["id"].rsplit("/", 1)[1]
    await api.patch(f"/api/v1/items/{uuid}", json={"title": "Offer 0, changed"})
    second = (await read_snapshot(harness, west, after=17, limit=5)).json()
    third = (await read_snapshot(harness, west, after=second["next"], limit=5)).json()
    assert [e["seq"] for e in second["entries"]] == [18, 19, 20, 21, 22] and second["next"] == 22
    assert [e["seq"] for e in third["entries"]] == [23, 24, 25] and third["next"] is None
    assert third["entries"][-1]["body"]["title"] == "Offer 0, changed"
    assert first["head"]["seq"] == 24 and third["head"]["seq"] == 25
    # A page asked for after the last one is empty; the default page is 100 entries.
    assert (await read_snapshot(harness, west, after=25)).json()["entries"] == []
    _, entries = await all_pages(harness, west, limit=100)
    assert entries == await live_latest(harness)


async def test_snapshot_pages_stay_under_one_mebibyte(harness_factory):
    async with harness_factory(feed_public=True) as h:
        api = await h.api_client("jo")
        big = {**OFFER, "body": "€" * 4000}  # 12 KB of UTF-8 each
        for i in range(90):
            assert (await api.post("/api/v1/items", json={**big, "title": f"Big {i}"})).status_code == 201
        await h.node.rotate_key()  # the key entries count against the page too
        response = await h.client().get("/federation/snapshot", params={"limit": 1000})
        assert len(response.content) <= 1024 * 1024
        page = response.json()
        assert 0 < len(page["entries"]) < 90 and len(page["keys"]) == 1
        assert page["next"] == page["entries"][-1]["seq"]
        rest = (await h.client().get("/federation/snapshot", params={"after": page["next"],
                                                                   "limit": 1000})).json()  # fmt: skip
        assert len(page["entries"]) + len(rest["entries"]) == 90 and rest["next"] is None


@pytest.mark.parametrize("params, field", [
    ({"after": "-1"}, "after"), ({"after": "x"}, "after"), ({"after": "١"}, "after"),
    ({"after": str(2**53)}, "after"), ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"),
    ({"limit": "1.5"}, "limit"), ({"page": "2"}, "page"),
])  # fmt: skip
async def test_bad_snapshot_parameters_are_refused_with_a_reason(harness_factory, params, field):
    """The same strict checks as the feed's: 400, naming the parameter."""
    async with harness_factory(feed_public=True) as h:
        response = await h.client().get("/federation/snapshot", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field and field in response.json()["error"]


async def test_only_those_who_may_read_the_feed_may_read_its_snapshot(harness_factory):
    async with harness_factory() as h:
        api = await h.api_client("jo")
        await api.post("/api/v1/items", json=OFFER)
        client = h.client()
        # No signature, while the feed is not public: refused.
        anonymous = await client.get("/federation/snapshot")
        assert anonymous.status_code == 401 and "error" in anonymous.json()
        # A node we do not know, however well it signs: refused.
        assert (await read_snapshot(h, generate_key())).status_code == 401
        # A node known but not trusted, or blocked: refused. Trusted: served.
        west = await trust_peer(h)
        for trust in ("unknown", "blocked"):
            async with h.node.store.write() as db:
                await db.execute("UPDATE peers SET trust = ?", (trust,))
            assert (await read_snapshot(h, west)).status_code == 401
        async with h.node.store.write() as db:
            await db.execute("UPDATE peers SET trust = 'trusted'")
        assert len((await read_snapshot(h, west)).json()["entries"]) == 1


async def test_a_public_feed_has_a_public_snapshot(harness_factory):
    async with harness_factory(feed_public=True) as h:
        api = await h.api_client("jo")
        await api.post("/api/v1/items", json=OFFER)
        assert len((await h.client().get("/federation/snapshot")).json()["entries"]) == 1
        # A request that carries a signature is still checked, and refused if it fails.
        assert (await read_snapshot(h, generate_key())).status_code == 401


async def test_needs_relayed_and_still_open_are_in_the_snapshot_as_our_relay_entries(harness):
    """A need we passed on is in force while we hold it open: the snapshot holds our latest
    relay entry of it. Once it closes, or its origin is blocked, it is left out."""
    west, north = Feed(WEST), Feed(NORTH)
    west_id = await add_peer(harness, west)
    north_id = await add_peer(harness, north, trust="unknown")
    for n in (1, 2):
        west.relay(north.append("item", need(n)))
    west.relay(north.append("item", need(1, title="Ride to the clinic, 9am", version=2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (3, None)
    ours = [e for e in await feed_entries(harness) if e["type"] == "relay"]
    assert [(e["body"]["entry"]["body"]["id"], e["body"]["entry"]["body"]["version"]) for e in ours] == [
        (need(1)["id"], 2), (need(2)["id"], 1)]  # one batch: need 1 went out at its newest
    reader = await trust_peer(harness, READER)
    page = (await read_snapshot(harness, reader, READER)).json()
    assert page["entries"] == ours
    # Need 2 is fulfilled at its origin: we pass that on, and it leaves the snapshot.
    west.relay(north.append("item", need(2, status="fulfilled", version=2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    page = (await read_snapshot(harness, reader, READER)).json()
    assert [e["body"]["entry"]["body"]["id"] for e in page["entries"]] == [need(1)["id"]]
    # Its origin blocked: we no longer hold need 1, and no longer vouch for it.
    await harness.node.allies.set_peer(north_id, None, trust="blocked")
    assert (await read_snapshot(harness, reader, READER)).json()["entries"] == []


# ---------------------------------------------------------------------------- reading


@asynccontextmanager
async def running(tmp_path, clock, name: str, base_url: str, **settings):
    config = make_node(tmp_path / name, name=name, base_url=base_url, **settings)
    app = create_app(config, clock=clock, workers=False)
    async with LifespanManager(app):
        yield NodeHarness(app, config, clock)


class Wire:
    """Carries one node's outgoing requests to another in-process node's app, and notes them.
    `after_page` runs after each snapshot page is answered (to change the origin meanwhile);
    `no_snapshot` answers 404 there, as a node from before snapshots would."""

    def __init__(self, reader: NodeHarness, origin: NodeHarness) -> None:
        self.origin = origin
        self.paths: list[str] = []
        self.after_page = None
        self.no_snapshot = False
        reader.node.allies.outbound._send = self.send

    async def send(self, request: httpx.Request, limit: int) -> Reply:
        path = request.url.raw_path.decode()
        self.paths.append(path)
        if self.no_snapshot and path.startswith("/federation/snapshot"):
            return Reply(404, httpx.Headers(), b'{"error": "not found"}')
        async with self.origin.client() as client:
            response = await client.send(request)
        if path.startswith("/federation/snapshot") and self.after_page is not None:
            await self.after_page(len([p for p in self.paths if p.startswith("/federation/snapshot")]))
        return Reply(response.status_code, response.headers, response.content)

    def count(self, prefix: str) -> int:
        return sum(1 for path in self.paths if path.startswith(prefix))


async def befriend(reader: NodeHarness, origin: NodeHarness, *, keys: int = 1) -> int:
    """The origin trusts the reader's key; the reader trusts and follows the origin, with the
    origin's first `keys` keys pinned (one: as pinned before the origin rotated)."""
    async with reader.node.store.read() as db:
        reader_key = await reader.node.feed.current_key(db)
    async with origin.node.store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, we_follow, they_follow, created)"
            " VALUES (?, 'New ally', 'trusted', 'none', 'accepted', ?)",
            (reader.config.base_url, origin.node.now_text()),
        )
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (reader_key.key_id(reader.config.base_url), cursor.lastrowid,
                          public_key_text(reader_key.public)))  # fmt: skip
    doc = await origin.node.node_document()
    async with reader.node.store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, we_follow, created)"
            " VALUES (?, 'Eastside', 'trusted', 'accepted', ?)",
            (origin.config.base_url, reader.node.now_text()),
        )
        for key in doc["keys"][:keys]:
            retired = key.get("retired_at_seq") if keys > 1 else None
            await db.execute(
                "INSERT INTO peer_keys (key_id, peer_id, public, retired_at_seq) VALUES (?, ?, ?, ?)",
                (key["id"], cursor.lastrowid, key["public"], retired),
            )
    return cursor.lastrowid


async def held_from(reader: NodeHarness, origin: str) -> dict[str, tuple[int, str]]:
    rows = await reader.node.store.fetch_all(
        "SELECT id, version, state FROM items WHERE NOT is_local AND origin = ?", (origin,))
    return {row[0]: (row[1], json.loads(row[2])["title"]) for row in rows}


async def live_at(origin: NodeHarness) -> dict[str, tuple[int, str]]:
    return {e["body"]["id"]: (e["body"]["version"], e["body"]["title"])
            for e in await live_latest(origin)}  # fmt: skip


@pytest.fixture
async def east_and_new_ally(tmp_path, clock, monkeypatch):
    """East, a node with a history (a key rotation in it), and a new ally that reads it;
    snapshots are taken from a 20-entry feed on, 4 entries a page."""
    monkeypatch.setattr(allies_module, "SNAPSHOT_AFTER", 20)
    monkeypatch.setattr(allies_module, "SNAPSHOT_LIMIT", 4)
    async with running(tmp_path, clock, "east", EAST_URL) as east, \
            running(tmp_path, clock, "ally", NEW_ALLY_URL) as ally:  # fmt: skip
        api = await east.api_client("jo")
        await post_history(api, items=5, edits=2, withdraw=1)  # entries 1–16
        await east.node.rotate_key()  # 17
        await post_history(api, items=5, edits=2, withdraw=2)  # 18–34
        await east.node.rotate_key()  # 35
        await api.post("/api/v1/items", json={**OFFER, "title": "After the rotations"})  # 36
        yield east, ally, api


async def test_a_new_ally_takes_live_state_from_the_snapshot_and_reads_on_from_its_head(
        east_and_new_ally):  # fmt: skip
    east, ally, api = east_and_new_ally
    peer_id = await befriend(ally, east)
    wire = Wire(ally, east)
    # The ally pulls: one entry tells it the head, then the snapshot, page by page.
    await ally.node.allies.pull(await ally.node.store.peer(peer_id))
    assert await held_from(ally, EAST_URL) == await live_at(east)
    assert len(await live_at(east)) == 8
    assert wire.paths[0] == "/federation/feed?after=0&limit=1"
    assert wire.count("/federation/snapshot") == 2  # 8 live entries, 4 a page
    assert wire.paths[-1] == "/federation/feed?after=36&limit=1000"
    # Its cursor stands at the head, and it followed both rotations from the key it pinned.
    peer = await ally.node.store.peer(peer_id)
    head = (await feed_entries(east))[-1]
    assert (peer.received_seq, peer.received_hash, peer.head_seq) == (36, entry_hash(head), 36)
    assert peer.last_error is None and peer.we_follow == "accepted"
    keys = await ally.node.store.fetch_all(
        "SELECT key_id, retired_at_seq FROM peer_keys WHERE peer_id = ? ORDER BY rowid", (peer_id,))
    assert [tuple(k) for k in keys] == [(f"{EAST_URL}#main", 17), (f"{EAST_URL}#key2", 35),
                                        (f"{EAST_URL}#key3", None)]  # fmt: skip
    found = await ally.node.metrics.render(ally.node)
    assert b'aidnode_snapshots_total{outcome="taken"} 1.0' in found
    assert b'aidnode_snapshot_entries_total{outcome="accepted"} 8.0' in found
    assert b'aidnode_ingested_entries_total{outcome="accepted"} 0.0' in found
    # What East changes next reaches the ally by its feed, chained onto the snapshot's head.
    first = next(iter(await live_at(east)))
    await api.patch(f"/api/v1/items/{first.rsplit('/', 1)[1]}", json={"status": "withdrawn"})
    await api.post("/api/v1/items", json={**OFFER, "title": "Newer still"})
    await ally.node.allies.pull(await ally.node.store.peer(peer_id))
    assert await held_from(ally, EAST_URL) == await live_at(east)
    assert (await ally.node.store.peer(peer_id)).received_seq == 38


async def test_a_snapshot_is_taken_when_the_checkers_do_not_answer(east_and_new_ally,
                                                                   monkeypatch, caplog):  # fmt: skip
    """Checker processes hung (or starved of CPU) hold each snapshot page up for ANSWER_WAIT
    at most; then the node checks the page's signatures itself."""
    east, ally, _ = east_and_new_ally
    peer_id = await befriend(ally, east)
    Wire(ally, east)
    verifier = ally.node.allies.verifier
    assert await verifier.wait_ready() == 2
    for child in verifier._children:
        os.kill(child.process.pid, signal.SIGSTOP)
    monkeypatch.setattr(allies_module, "ANSWER_WAIT", 0.1)
    try:
        await asyncio.wait_for(ally.node.allies.pull(await ally.node.store.peer(peer_id)), 10)
    finally:
        for child in verifier._children:
            os.kill(child.process.pid, signal.SIGCONT)
    assert await held_from(ally, EAST_URL) == await live_at(east)
    assert (await ally.node.store.peer(peer_id)).received_seq == 36
    assert "the page's signatures are checked here" in caplog.text


async def test_items_changed_while_the_snapshot_is_read_come_with_the_feed(east_and_new_ally):
    east, ally, api = east_and_new_ally
    peer_id = await befriend(ally, east, keys=3)  # pinned after the rotations, all three keys
    wire = Wire(ally, east)
    live = list(await live_at(east))

    async def change_east(pages: int) -> None:
        if pages == 1:  # after the first page: one item served already changes, one not yet
            await api.patch(f"/api/v1/items/{live[0].rsplit('/', 1)[1]}", json={"title": "Changed"})
            await api.patch(f"/api/v1/items/{live[-1].rsplit('/', 1)[1]}", json={"status": "withdrawn"})
            await api.post("/api/v1/items", json={**OFFER, "title": "Posted meanwhile"})

    wire.after_page = change_east
    await ally.node.allies.pull(await ally.node.store.peer(peer_id))
    held = await held_from(ally, EAST_URL)
    assert held == await live_at(east)
    assert "Changed" in {t for _, t in held.values()} and "Posted meanwhile" in {t for _, t in held.values()}
    # The cursor was set at the first page's head (36) and the feed read on from there.
    assert "/federation/feed?after=36&limit=1000" in wire.paths
    assert (await ally.node.store.peer(peer_id)).received_seq == 39
    assert await ally.node.store.refusals(peer_id) == []  # nothing taken twice


async def test_a_node_without_snapshots_is_read_from_the_start(east_and_new_ally):
    east, ally, _ = east_and_new_ally
    peer_id = await befriend(ally, east)
    wire = Wire(ally, east)
    wire.no_snapshot = True
    await ally.node.allies.pull(await ally.node.store.peer(peer_id))
    assert wire.paths[:3] == ["/federation/feed?after=0&limit=1",
                              "/federation/snapshot?after=0&limit=4",
                              "/federation/feed?after=0&limit=1000"]  # fmt: skip
    assert await held_from(ally, EAST_URL) == await live_at(east)
    peer = await ally.node.store.peer(peer_id)
    assert peer.received_seq == 36 and peer.last_error is None
    found = await ally.node.metrics.render(ally.node)
    assert b'aidnode_snapshots_total{outcome="fallback"} 1.0' in found


# ------------------------------------------------------------------------ a snapshot refused


class WestSnapshot:
    """West (a WestFeed) as a peer: its feed, and a snapshot of it the test may tamper with."""

    def __init__(self, feed: WestFeed) -> None:
        self.feed = feed
        self.tamper = lambda page, after: page  # changes a snapshot page before it is sent
        self.asked: list[str] = []

    def snapshot(self, after: int, limit: int) -> dict:
        entries = self.feed.entries
        latest: dict[str, dict] = {}
        for entry in entries:
            if entry["type"] == "item":
                latest[entry["body"]["id"]] = entry
        live = sorted((e for e in latest.values() if e["body"]["status"] == "open"
                       and e["seq"] > after), key=lambda e: e["seq"])  # fmt: skip
        page = live[:limit]
        return {"origin": WEST, "head": {"seq": len(entries), "hash": entry_hash(entries[-1])},
                "keys": [e for e in entries if e["type"] == "key"], "head_entry": entries[-1],
                "entries": page, "next": page[-1]["seq"] if len(live) > limit else None}  # fmt: skip

    async def request(self, method, url, **kwargs) -> Reply:
        path = url.removeprefix(WEST)
        self.asked.append(path)
        params = dict(httpx.URL(url).params)
        after, limit = int(params.get("after", 0)), int(params.get("limit", 100))
        if path.startswith("/federation/snapshot"):
            body = self.tamper(self.snapshot(after, limit), after)
        else:
            entries = self.feed.entries
            body = {"origin": WEST, "head": {"seq": len(entries), "hash": entry_hash(entries[-1])},
                    "entries": entries[after : after + limit]}  # fmt: skip
        return Reply(200, httpx.Headers(), json.dumps(body).encode())


def bad_signature(page, after):
    if after == 4:  # the second page: the first is taken in, then taken back
        entry = page["entries"][0]
        page["entries"][0] = {**entry, "body": {**entry["body"], "title": "Send money here"}}
    return page


def bad_head(page, after):
    return {**page, "head": {**page["head"], "hash": entry_hash(page["entries"][0])}}


def foreign_key(page, after):
    stranger = generate_key("key2")
    page["keys"][0] = {**page["keys"][0], "sig": WestFeed().append(item(99), key=stranger)["sig"]}
    return page


def not_live(page, after):
    return {**page, "entries": [*page["entries"], page["keys"][0]]} if after == 0 else page


def other_origin(page, after):
    return {**page, "origin": "https://elsewhere.example"}


@pytest.mark.parametrize("tamper, reason", [
    (bad_signature, "signature does not verify"), (bad_head, "does not hash to its head"),
    (foreign_key, "signature does not verify"), (not_live, "item and relay entries only"),
    (other_origin, "not from the node asked"),
])  # fmt: skip
async def test_a_tampered_snapshot_is_refused_and_the_cursor_stays_at_0(harness, monkeypatch,
                                                                       tamper, reason):  # fmt: skip
    """Anything in a snapshot that is not the origin's own word refuses the whole snapshot:
    what its earlier pages gave is taken back, the cursor does not move, the reason is noted."""
    monkeypatch.setattr(allies_module, "SNAPSHOT_LIMIT", 4)
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(1, 10):
        feed.append(item(n))
    new = generate_key("key2")
    feed.append(key_entry_body(WEST, 10, new), type="key")
    feed.key = new
    for n in range(10, 13):
        feed.append(item(n))
    west = WestSnapshot(feed)
    west.tamper = tamper
    monkeypatch.setattr(harness.node.allies.outbound, "request", west.request)
    peer = await harness.node.store.peer(peer_id)
    assert await harness.node.allies.sync_from_snapshot(peer) is False
    peer = await harness.node.store.peer(peer_id)
    assert (peer.received_seq, peer.received_hash) == (0, None)
    assert peer.last_error.startswith("snapshot refused:") and reason in peer.last_error, peer.last_error
    assert await held_from(harness, WEST) == {}
    written = 4 if tamper is bad_signature else 0  # the first page, taken in and then back
    found = await harness.node.metrics.render(harness.node)
    assert f'aidnode_snapshot_entries_total{{outcome="accepted"}} {written}.0'.encode() in found
    async with harness.node.store.read() as db:
        assert len(await harness.node.store.peer_keys_in(db, peer_id)) == 1  # no key taken
    # Pulling reads the whole feed instead, checked as a chain from entry 1.
    await harness.node.allies.pull(peer)
    peer = await harness.node.store.peer(peer_id)
    assert (peer.received_seq, peer.last_error) == (13, None)
    assert len(await held_from(harness, WEST)) == 12


async def test_an_untampered_snapshot_of_such_a_feed_is_taken(harness, monkeypatch):
    """Such a feed and its snapshot, untouched, are taken (so the refusals above are the
    tampering's doing): a page of 150 entries, written a hundred a transaction."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(1, 152):
        feed.append(item(n))
    feed.append(item(3, status="withdrawn", version=2))
    monkeypatch.setattr(harness.node.allies.outbound, "request", WestSnapshot(feed).request)
    assert await harness.node.allies.sync_from_snapshot(await harness.node.store.peer(peer_id))
    peer = await harness.node.store.peer(peer_id)
    assert (peer.received_seq, peer.received_hash) == (152, entry_hash(feed.entries[-1]))
    assert set(await held_from(harness, WEST)) == {item(n)["id"] for n in range(1, 152) if n != 3}
    found = await harness.node.metrics.render(harness.node)
    assert b'aidnode_snapshot_entries_total{outcome="accepted"} 150.0' in found


async def test_the_migration_links_what_a_node_published_before_it(tmp_path, clock):
    """A node made before snapshots gets its live items' latest entries, and its relays, found
    in its feed when it starts: its first snapshot is the same as if it had always kept them."""
    config = make_node(tmp_path)
    app = create_app(config, clock=clock, workers=False)
    async with LifespanManager(app):
        harness = NodeHarness(app, config, clock)
        api = await harness.api_client("jo")
        await post_history(api, items=4, edits=2, withdraw=1)
        west, north = Feed(WEST), Feed(NORTH)
        west_id = await add_peer(harness, west)
        await add_peer(harness, north, trust="unknown")
        west.relay(north.append("item", need(1)))
        assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
        reader = await trust_peer(harness, READER)
        before = (await read_snapshot(harness, reader, READER)).json()
        assert len(before["entries"]) == 4 and before["entries"][-1]["type"] == "relay"
        # Back to the schema before migration 8, keeping what the node holds.
        async with harness.node.store.write() as db:
            for statement in ("DROP INDEX items_in_snapshot", "DROP INDEX feed_key_entries",
                              "DROP TRIGGER items_feed_seq", "ALTER TABLE items DROP COLUMN feed_seq",
                              "DELETE FROM schema_migrations WHERE number = 8"):  # fmt: skip
                await db.execute(statement)
    app = create_app(config, clock=clock, workers=False)
    async with LifespanManager(app):
        harness = NodeHarness(app, config, clock)
        after = (await read_snapshot(harness, reader, READER)).json()
        assert after["entries"] == before["entries"] and after["head"] == before["head"]

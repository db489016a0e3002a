"""Relay, in-process: a need read through an ally's relay entry is checked with its origin's own
key, held once within its hop limit, passed on below it, and followed to its close."""

import json

import pytest

from federation.entries import entry_hash, sign_entry
from federation.keys import generate_key, public_key_text
from server.feed import ChainProblem
from tests.conftest import BASE_URL as EAST

pytestmark = pytest.mark.anyio

WEST = "https://westside.example"  # the ally whose feed East reads
NORTH = "https://northside.example"  # the need's origin, West's ally, not East's
AT = "2026-11-24T17:00:00Z"


def need(n: int, origin: str = NORTH, **changes) -> dict:
    return {
        "id": f"{origin}/items/00000000-0000-4000-8000-{n:012d}", "kind": "need",
        "title": f"Ride to the clinic {n}", "body": "Tuesday 9am.", "category": "transport",
        "urgency": "normal", "status": "open", "reach": "network", "hop_limit": 3,
        "created": AT, "updated": AT, "expires": "2026-12-24T17:00:00Z", "version": 1,
        "author": "Northside", **changes,
    }  # fmt: skip


class Feed:
    """A node's feed, signed with its own key, built entry by entry."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.key = generate_key("main")
        self.entries: list[dict] = []

    def append(self, type: str, body: dict) -> dict:
        prev = entry_hash(self.entries[-1]) if self.entries else None
        entry = sign_entry(origin=self.origin, seq=len(self.entries) + 1, prev=prev, type=type,
                           at=AT, body=body, key=self.key)  # fmt: skip
        self.entries.append(entry)
        return entry

    def relay(self, inner: dict, path: list[str] | None = None) -> dict:
        return self.append("relay", {"entry": inner, "path": path or [self.origin]})


async def add_peer(harness, feed: Feed, *, trust: str = "trusted", relay: bool = True) -> int:
    """A pinned peer, as `peer add` (trusted, followed) or a learned origin (unknown) leaves it."""
    async with harness.node.store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, relay, we_follow, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (feed.origin, feed.origin.split("//")[1].split(".")[0].title(), trust, int(relay),
             "accepted" if trust == "trusted" else "none", AT),
        )
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (feed.key.key_id(feed.origin), cursor.lastrowid,
                          public_key_text(feed.key.public)))  # fmt: skip
    harness.node.peer_names[feed.origin] = feed.origin.split("//")[1].split(".")[0].title()
    return cursor.lastrowid


async def own_relays(harness) -> list[dict]:
    """The relay entries in East's own feed, as bodies."""
    rows = await harness.node.store.fetch_all("SELECT entry FROM feed WHERE type = 'relay' ORDER BY seq")
    return [json.loads(row[0])["body"] for row in rows]


async def refusals(harness, peer_id: int) -> list[str]:
    return [row["reason"] for row in await harness.node.store.refusals(peer_id)]


@pytest.fixture
async def world(harness):
    west, north = Feed(WEST), Feed(NORTH)
    west_id = await add_peer(harness, west)
    north_id = await add_peer(harness, north, trust="unknown")
    return harness, west, north, west_id, north_id


async def test_a_relayed_need_is_held_with_its_path_and_passed_on_below_its_hop_limit(world):
    harness, west, north, west_id, _ = world
    inner = north.append("item", need(1))
    west.relay(inner)
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    row = await harness.node.store.item(need(1)["id"])
    assert row is not None and row.origin == NORTH and row.via == [WEST]
    # Distance 2 < hop_limit 3: East relays it, the origin's entry verbatim, itself last.
    assert await own_relays(harness) == [{"entry": inner, "path": [WEST, EAST]}]
    # Members see it with where it came from and how.
    member = await harness.api_client("jo")
    shown = (await member.get("/api/v1/items", params={"origin": "remote"})).json()["items"]
    assert [(i["origin"], i["origin_name"], i["via"]) for i in shown] == [(NORTH, "Northside", [WEST])]


async def test_at_its_hop_limit_a_need_is_held_but_not_passed_on(world):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1, hop_limit=2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1)["id"]) is not None
    assert await own_relays(harness) == []


async def test_beyond_its_hop_limit_a_need_is_refused(world):
    harness, west, north, west_id, _ = world
    other = "https://otherside.example"
    west.relay(north.append("item", need(1, hop_limit=2)), path=[other, WEST])
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1)["id"]) is None
    assert any("hop limit" in reason for reason in await refusals(harness, west_id))


async def test_a_tampered_inner_entry_is_refused_and_the_chain_goes_on(world):
    harness, west, north, west_id, _ = world
    inner = north.append("item", need(1))
    west.relay({**inner, "body": {**inner["body"], "title": "Send money to this account"}})
    west.relay(north.append("item", need(2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (2, None)
    assert await harness.node.store.item(need(1)["id"]) is None
    assert await harness.node.store.item(need(2)["id"]) is not None
    assert any("signature does not verify" in r for r in await refusals(harness, west_id))
    assert (await harness.node.store.peer(west_id)).received_seq == 2


async def test_a_need_signed_by_the_relayer_in_the_origins_name_is_refused(world):
    """The inner entry is checked with the origin's pinned key, never one the relayer holds."""
    harness, west, _, west_id, _ = world
    forged = sign_entry(origin=NORTH, seq=1, prev=None, type="item", at=AT, body=need(1),
                        key=west.key)  # West's key, North's name  # fmt: skip
    west.relay(forged)
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1)["id"]) is None
    assert any("signature does not verify" in r for r in await refusals(harness, west_id))


async def test_an_unknown_origin_whose_key_cannot_be_learned_is_refused(harness):
    west = Feed(WEST)
    west_id = await add_peer(harness, west)
    # The address guard refuses the origin's address (loopback), so nothing is fetched.
    stranger = Feed("http://127.0.0.1:9")
    west.relay(stranger.append("item", need(1, origin=stranger.origin)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1, origin=stranger.origin)["id"]) is None
    assert any("could not be learned" in r for r in await refusals(harness, west_id))


@pytest.mark.parametrize("body", [
    {"entry": {}, "path": [WEST]},
    {"path": [WEST]},
    {"entry": "x", "path": [WEST]},
    {"entry": None, "path": [WEST], "extra": 1},
    {"entry": {"origin": NORTH}, "path": []},
    {"entry": {"origin": NORTH}, "path": ["https://a.example", "https://b.example", WEST]},
    {"entry": {"origin": NORTH}, "path": ["not a url"]},
    {"entry": {"origin": NORTH}, "path": ["https://someone-else.example"]},  # not the writer
    {"entry": {"origin": NORTH}, "path": [NORTH, WEST]},  # the origin on its own path
    {"entry": {"origin": NORTH}, "path": [WEST, WEST]},
])  # fmt: skip
async def test_malformed_relays_are_refused_and_change_nothing(world, body):
    harness, west, _, west_id, _ = world
    west.append("relay", body)
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert (await harness.node.store.fetch_one("SELECT count(*) FROM items WHERE NOT is_local"))[0] == 0
    assert any(r.startswith("relay:") for r in await refusals(harness, west_id))
    assert await own_relays(harness) == []


async def test_a_relay_of_our_own_need_is_ignored_and_noted_as_a_sighting(world):
    """The origin never ingests its own need; it learns where the need went."""
    harness, west, _, west_id, _ = world
    member = await harness.api_client("ana")
    posted = (await member.post("/api/v1/items", json={
        "kind": "need", "title": "Ramp", "body": "For the steps", "category": "household",
        "reach": "network", "hop_limit": 3,
    })).json()  # fmt: skip
    text = (await harness.node.store.fetch_one(
        "SELECT entry FROM feed WHERE item_id = ?", (posted["id"],)))[0]
    west.relay(json.loads(text))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.sightings([posted["id"]]) == {posted["id"]: [WEST]}
    assert await refusals(harness, west_id) == []
    assert await own_relays(harness) == []
    row = await harness.node.store.item(posted["id"])
    assert row.is_local and row.state["version"] == 1


async def test_a_relay_with_us_on_its_path_is_ignored(world):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)), path=[EAST, WEST])
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1)["id"]) is None
    assert await refusals(harness, west_id) == [] and await own_relays(harness) == []


async def test_copies_by_two_ways_are_held_once_and_relayed_once(world):
    """A diamond: the same need through two allies is one item and one relay."""
    harness, west, north, west_id, _ = world
    south = Feed("https://southside.example")
    south_id = await add_peer(harness, south)
    inner = north.append("item", need(1))
    west.relay(inner)
    south.relay(inner)
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.allies.ingest(south_id, south.entries) == (1, None)
    rows = await harness.node.store.fetch_all("SELECT via FROM items WHERE NOT is_local")
    assert [json.loads(row[0]) for row in rows] == [[WEST]]
    assert len(await own_relays(harness)) == 1
    assert await refusals(harness, south_id) == []


async def test_every_later_version_is_relayed_and_closing_removes_it(world):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)))
    west.relay(north.append("item", need(1, title="Ride to the clinic, Tuesday", version=2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (2, None)
    # Judged in one batch, the newest version is what East relays.
    assert [r["entry"]["body"]["version"] for r in await own_relays(harness)] == [2]
    west.relay(north.append("item", need(1, status="fulfilled", version=3)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    relays = await own_relays(harness)
    assert [(r["entry"]["body"]["version"], r["entry"]["body"]["status"]) for r in relays] == [
        (2, "open"), (3, "fulfilled")]
    assert await harness.node.store.item(need(1)["id"]) is None


async def test_a_need_that_ends_before_it_was_passed_on_is_not_relayed(world):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)))
    west.relay(north.append("item", need(1, status="withdrawn", version=2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (2, None)
    assert await own_relays(harness) == []


async def test_a_need_closed_later_is_relayed_again_with_the_same_path(world):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    # The fulfilled version comes by another ally: it still goes out along East's first path.
    south = Feed("https://southside.example")
    south_id = await add_peer(harness, south)
    south.relay(north.append("item", need(1, status="fulfilled", version=2)))
    assert await harness.node.allies.ingest(south_id, south.entries) == (1, None)
    relays = await own_relays(harness)
    assert [(r["entry"]["body"]["status"], r["path"]) for r in relays] == [
        ("open", [WEST, EAST]), ("fulfilled", [WEST, EAST])]
    assert await harness.node.store.item(need(1)["id"]) is None


async def test_a_direct_allys_network_need_is_relayed_by_us(harness):
    west = Feed(WEST)
    west_id = await add_peer(harness, west)
    entry = west.append("item", need(1, origin=WEST, hop_limit=2))
    assert await harness.node.allies.ingest(west_id, west.entries[:1]) == (1, None)
    assert await own_relays(harness) == [{"entry": entry, "path": [EAST]}]


async def test_needs_of_an_ally_whose_needs_we_do_not_relay_stay_here(harness):
    west = Feed(WEST)
    west_id = await add_peer(harness, west, relay=False)
    west.append("item", need(1, origin=WEST))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1, origin=WEST)["id"]) is not None
    assert await own_relays(harness) == []


async def test_offers_and_allies_reach_needs_are_not_relayed(harness):
    west = Feed(WEST)
    west_id = await add_peer(harness, west)
    state = need(1, origin=WEST, reach="allies")
    del state["hop_limit"]
    west.append("item", state)
    offer = {**need(2, origin=WEST), "kind": "offer"}
    del offer["urgency"]
    west.append("item", offer)
    assert await harness.node.allies.ingest(west_id, west.entries) == (2, None)
    assert await own_relays(harness) == []


async def test_relayed_offers_are_refused(world):
    harness, west, north, west_id, _ = world
    offer = {**need(1), "kind": "offer"}
    del offer["urgency"]
    west.relay(north.append("item", offer))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(offer["id"]) is None
    assert any("network reach are relayed" in r for r in await refusals(harness, west_id))


async def test_beyond_its_quota_an_origins_new_needs_wait_then_go_out(world, clock):
    harness, west, north, west_id, _ = world
    for n in range(21):
        west.relay(north.append("item", need(n)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (21, None)
    assert len(await own_relays(harness)) == 20
    assert await harness.node.store.waiting_relays() == [(need(20)["id"], NORTH)]
    assert await harness.node.allies.relay_waiting() == 0  # the quota is still spent
    clock.advance(days=1, seconds=1)
    assert await harness.node.allies.relay_waiting() == 1
    relays = await own_relays(harness)
    assert len(relays) == 21 and relays[-1]["entry"]["body"]["id"] == need(20)["id"]
    assert await harness.node.store.waiting_relays() == []


async def test_blocking_the_relayer_removes_what_came_only_through_it(world):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    await harness.node.allies.set_peer(west_id, None, trust="blocked")
    assert await harness.node.store.item(need(1)["id"]) is None


async def test_a_blocked_origins_needs_are_refused_through_relays(world):
    harness, west, north, west_id, north_id = world
    await harness.node.allies.set_peer(north_id, None, trust="blocked")
    west.relay(north.append("item", need(1)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert await harness.node.store.item(need(1)["id"]) is None
    assert any("blocked" in r for r in await refusals(harness, west_id))


async def test_pages_show_the_origin_and_the_relaying_groups(world):
    """ "From Northside, via Westside" on browse and the item page, escaped."""
    harness, west, north, west_id, _ = world
    harness.node.peer_names[WEST] = "West <b>side</b>"
    west.relay(north.append("item", need(1)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    browser = await harness.browser("ana")
    listing = await browser.get("/items")
    assert "From Northside, via West &lt;b&gt;side&lt;/b&gt;" in listing.text
    page = await browser.get(f"/items/{need(1)['id'].rsplit('/', 1)[1]}")
    assert page.status_code == 200
    assert "from Northside, via West &lt;b&gt;side&lt;/b&gt;" in page.text


async def test_edits_to_a_relayed_need_are_coalesced_and_status_changes_go_at_once(world, clock):
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    # Two quick edits: neither goes out at once; the newest waits for the edit interval.
    for version in (2, 3):
        west.relay(north.append("item", need(1, title=f"Ride, edit {version}", version=version)))
        assert await harness.node.allies.ingest(west_id, west.entries) == (1, None)
    assert [r["entry"]["body"]["version"] for r in await own_relays(harness)] == [1]
    assert await harness.node.allies.relay_waiting() == 0
    clock.advance(minutes=5)
    assert await harness.node.allies.relay_waiting() == 1
    assert [r["entry"]["body"]["version"] for r in await own_relays(harness)] == [1, 3]
    # Another edit waits again; a status change does not, and carries the newest state.
    west.relay(north.append("item", need(1, title="Ride, edit 4", version=4)))
    west.relay(north.append("item", need(1, title="Ride, edit 4", status="promised", version=5)))
    assert await harness.node.allies.ingest(west_id, west.entries[3:4]) == (1, None)
    assert [r["entry"]["body"]["version"] for r in await own_relays(harness)] == [1, 3]
    assert await harness.node.allies.ingest(west_id, west.entries[4:]) == (1, None)
    relays = await own_relays(harness)
    assert [(r["entry"]["body"]["version"], r["path"]) for r in relays][-1] == (5, [WEST, EAST])
    assert await harness.node.store.waiting_relays() == []


async def test_check_finds_a_relayed_need_whose_feed_seq_is_not_a_relay_of_it(world):
    """A relayed need's `feed_seq` names our relay entry of it (what a snapshot serves)."""
    harness, west, north, west_id, _ = world
    west.relay(north.append("item", need(1)))
    west.relay(north.append("item", need(2)))
    assert await harness.node.allies.ingest(west_id, west.entries) == (2, None)
    assert len(await own_relays(harness)) == 2
    assert (await harness.node.check())["entries"] == 2  # our two relay entries
    async with harness.node.store.write() as db:  # the other need's relay entry
        await db.execute("UPDATE items SET feed_seq = 2 WHERE id = ?", (need(1)["id"],))
    with pytest.raises(ChainProblem, match="feed_seq 2 is not a relay entry of it"):
        await harness.node.check()

"""Ingest of a peer's entries, in-process: chain validity decides acceptance and the cursor,
content validity decides what is applied and shown; forks stop ingest; all idempotent."""

import asyncio
import itertools
import os
import signal

import pytest

from federation import entries as entries_module
from federation.entries import entry_hash, key_entry_body, sign_entry
from federation.keys import generate_key, public_key_text
from server import allies as allies_module

pytestmark = pytest.mark.anyio

WEST = "https://westside.example"
READERS = itertools.count()
ITEM = {
    "kind": "offer", "title": "Soup on Sundays", "body": "Lentil soup.", "category": "food",
    "status": "open", "reach": "allies", "created": "2026-11-24T17:00:00Z",
    "updated": "2026-11-24T17:00:00Z", "expires": "2026-12-24T17:00:00Z", "version": 1,
    "author": "Jo",
}  # fmt: skip


def item(n: int, **changes) -> dict:
    return {**ITEM, "id": f"{WEST}/items/00000000-0000-4000-8000-{n:012d}", **changes}


class WestFeed:
    """West's feed, signed with West's own key, built entry by entry."""

    def __init__(self) -> None:
        self.key = generate_key("main")
        self.key_id = self.key.key_id(WEST)
        self.entries: list[dict] = []

    def append(self, body: dict, type: str = "item", key=None) -> dict:
        prev = entry_hash(self.entries[-1]) if self.entries else None
        entry = sign_entry(origin=WEST, seq=len(self.entries) + 1, prev=prev, type=type,
                           at="2026-11-24T17:00:00Z", body=body, key=key or self.key)  # fmt: skip
        self.entries.append(entry)
        return entry


async def add_west(harness, feed: WestFeed, trust: str = "trusted") -> int:
    """West as a trusted, followed peer with its key pinned (as `peer add` leaves it)."""
    async with harness.node.store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, we_follow, created)"
            " VALUES (?, 'Westside', ?, 'pending', '2026-11-24T17:00:00Z')",
            (WEST, trust),
        )
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (feed.key_id, cursor.lastrowid, public_key_text(feed.key.public)))  # fmt: skip
    harness.node.peer_names[WEST] = "Westside"
    return cursor.lastrowid


async def trusted_keys(harness) -> dict:
    """The keys requests are verified with on routes for trusted nodes only."""
    keys = await harness.node.store.request_keys()
    return {key_id: found for key_id, found in keys.items() if found[2] == "trusted"}


async def remote_titles(harness) -> set[str]:
    """What a member sees of other nodes' items, through the API."""
    member = await harness.api_client(f"reader{next(READERS)}")
    items = (await member.get("/api/v1/items", params={"origin": "remote"})).json()["items"]
    return {i["title"] for i in items}


async def test_valid_entries_are_applied_and_shown_with_the_origin_name(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    feed.append(item(2, title="Bread"))
    accepted, problem = await harness.node.allies.ingest(peer_id, feed.entries, head_seq=2)
    assert (accepted, problem) == (2, None)
    member = await harness.api_client("jo")
    shown = (await member.get("/api/v1/items", params={"origin": "remote"})).json()["items"]
    assert {i["title"] for i in shown} == {"Soup on Sundays", "Bread"}
    assert {(i["origin"], i["origin_name"]) for i in shown} == {(WEST, "Westside")}
    assert (await member.get("/api/v1/items", params={"origin": "local"})).json()["items"] == []
    peer = await harness.node.store.peer(peer_id)
    assert (peer.received_seq, peer.received_hash) == (2, entry_hash(feed.entries[1]))
    assert peer.we_follow == "accepted" and peer.last_error is None
    # The same entries again (a page that overlaps, a push repeated) change nothing.
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (0, None)
    assert (await harness.node.store.peer(peer_id)).received_seq == 2


async def test_changes_replace_and_ended_items_leave(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    feed.append(item(2, title="Bread"))
    feed.append(item(1, title="Soup, now with bread", version=2))
    feed.append(item(2, title="Bread", status="withdrawn", version=2))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (4, None)
    assert await remote_titles(harness) == {"Soup, now with bread"}
    assert await harness.node.store.item(item(2)["id"]) is None


async def test_a_bad_entry_stops_the_batch_and_keeps_what_came_before(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    forged = dict(feed.append(item(2, title="Bread")), sig=feed.entries[0]["sig"])
    feed.append(item(3, title="Jam"))
    accepted, problem = await harness.node.allies.ingest(
        peer_id, [feed.entries[0], forged, feed.entries[2]]
    )
    assert accepted == 1 and problem.startswith("entry 2 refused:")
    peer = await harness.node.store.peer(peer_id)
    assert peer.received_seq == 1 and peer.last_error == problem and peer.failures == 1
    assert await remote_titles(harness) == {"Soup on Sundays"}
    # The genuine entries, sent again, are taken from where the cursor stopped.
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (2, None)
    assert await remote_titles(harness) == {"Soup on Sundays", "Bread", "Jam"}


@pytest.mark.parametrize("case", ["gap", "another origin", "entry of another key", "not an object"])
async def test_chain_invalid_entries_are_refused_and_change_nothing(harness, case):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    feed.append(item(2))
    if case == "gap":
        batch = feed.entries[1:]
    elif case == "another origin":
        batch = [{**feed.entries[0], "origin": "https://eastside.example"}]
    elif case == "entry of another key":
        other = generate_key("main")
        batch = [sign_entry(origin=WEST, seq=1, prev=None, type="item",
                            at="2026-11-24T17:00:00Z", body=item(1), key=other)]  # fmt: skip
    else:
        batch = ["an entry"]
    accepted, problem = await harness.node.allies.ingest(peer_id, batch)
    assert accepted == 0 and problem.startswith("entry ")
    assert (await harness.node.store.peer(peer_id)).received_seq == 0
    assert await remote_titles(harness) == set()


async def test_content_refusals_are_recorded_and_the_chain_goes_on(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1, id="https://eastside.example/items/00000000-0000-4000-8000-000000000001"))
    feed.append(item(2, title=" untrimmed "))
    feed.append(item(3, reach="local"))
    feed.append(item(4, title="Good"))
    feed.append(item(4, title="Older", version=1))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (5, None)
    assert await remote_titles(harness) == {"Good"}
    refusals = await harness.node.store.refusals(peer_id)
    reasons = {row["seq"]: row["reason"] for row in refusals}
    assert set(reasons) == {1, 2, 3, 5}
    assert reasons[1].startswith("id:") and reasons[2].startswith("title:")
    assert reasons[3].startswith("reach:") and "not newer" in reasons[5]
    assert (await harness.node.store.peer(peer_id)).received_seq == 5


async def test_a_fork_stops_ingest_until_a_resync(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (1, None)
    # West (or its key's thief) signs a different history from entry 1 on.
    rewritten = WestFeed()
    rewritten.key, rewritten.key_id = feed.key, feed.key_id
    rewritten.append(item(1, title="Other soup"))
    rewritten.append(item(2, title="Other bread"))
    accepted, problem = await harness.node.allies.ingest(peer_id, rewritten.entries[1:])
    assert accepted == 0 and problem.startswith("fork: entry 2")
    peer = await harness.node.store.peer(peer_id)
    assert peer.forked and not harness.node.allies.follows(peer)
    # Ingest from a forked node is refused until an admin re-syncs.
    feed.append(item(2, title="Bread"))
    assert (await harness.node.allies.ingest(peer_id, feed.entries))[0] == 0
    await harness.node.allies.resync(peer_id, None)
    assert await remote_titles(harness) == set()
    assert await harness.node.allies.ingest(peer_id, rewritten.entries) == (2, None)
    assert await remote_titles(harness) == {"Other soup", "Other bread"}


async def test_a_key_rotation_is_followed_and_the_old_key_refused_after_it(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    new = generate_key("key2")
    feed.append(key_entry_body(WEST, 2, new), type="key")
    feed.append(item(2, title="Bread"), key=new)
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (3, None)
    keys = {row[0]: row[2] for row in await harness.node.store.fetch_all(
        "SELECT key_id, public, retired_at_seq FROM peer_keys")}  # fmt: skip
    assert keys == {f"{WEST}#main": 2, f"{WEST}#key2": None}
    # Requests are now verified with the new key only.
    assert set(await trusted_keys(harness)) == {f"{WEST}#key2"}
    # An entry signed by the retired key after the hand-over is refused.
    late = sign_entry(origin=WEST, seq=4, prev=entry_hash(feed.entries[-1]), type="item",
                      at="2026-11-24T17:00:00Z", body=item(3), key=feed.key)  # fmt: skip
    accepted, problem = await harness.node.allies.ingest(peer_id, [late])
    assert accepted == 0 and "not the key in force" in problem


async def test_a_hand_over_to_a_key_other_than_the_pinned_one_is_refused(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    pinned = generate_key("key2")
    async with harness.node.store.write() as db:  # the node document listed key2 as this key
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (pinned.key_id(WEST), peer_id, public_key_text(pinned.public)))  # fmt: skip
    feed.append(item(1))
    feed.append(key_entry_body(WEST, 2, generate_key("key2")), type="key")
    accepted, problem = await harness.node.allies.ingest(peer_id, feed.entries)
    assert accepted == 1 and "differs from the one pinned" in problem
    assert (await harness.node.store.peer(peer_id)).received_seq == 1


async def test_blocked_or_unknown_nodes_are_not_read(harness):
    for trust in ("blocked", "unknown"):
        feed = WestFeed()
        async with harness.node.store.write() as db:
            await db.execute("DELETE FROM peers")
        peer_id = await add_west(harness, feed, trust=trust)
        feed.append(item(1))
        assert await harness.node.allies.ingest(peer_id, feed.entries) == (
            0, "not reading this node's feed")
        assert await remote_titles(harness) == set()


async def test_blocking_drops_a_nodes_items_at_once_and_forgets_its_feed(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    await harness.node.allies.ingest(peer_id, feed.entries)
    admin = await harness.api_client("root", "admin")
    response = await admin.patch(f"/api/v1/peers/{peer_id}", json={"trust": "blocked"})
    assert response.status_code == 200 and response.json()["trust"] == "blocked"
    assert await remote_titles(harness) == set()
    peer = await harness.node.store.peer(peer_id)
    assert (peer.received_seq, peer.received_hash) == (0, None)
    assert await trusted_keys(harness) == {}


async def test_the_address_guard_refuses_a_peer_on_a_private_address(harness):
    """With allow_private_addresses off (the default), adding a loopback node is refused
    before any connection, with the reason shown to the admin."""
    admin = await harness.api_client("root", "admin")
    response = await admin.post("/api/v1/peers", json={"url": "http://127.0.0.1:9"})
    assert response.status_code == 502
    assert "loopback" in response.json()["error"]
    assert (await admin.get("/api/v1/peers")).json() == {"peers": []}


@pytest.mark.parametrize("body, status, field", [
    ({"url": "not a url"}, 422, "url"),
    ({"url": "https://Eastside.example"}, 422, "url"),
    ({"url": "http://127.0.0.1:8765"}, 422, "url"),  # this node itself
    ({"url": "https://westside.example", "trust": "trusted"}, 422, "url"),
    (["https://westside.example"], 422, "url"),
])  # fmt: skip
async def test_bad_peer_requests_are_refused_with_a_reason(harness, body, status, field):
    admin = await harness.api_client("root", "admin")
    response = await admin.post("/api/v1/peers", json=body)
    assert response.status_code == status and response.json()["field"] == field
    assert (await admin.get("/api/v1/peers")).json() == {"peers": []}


@pytest.mark.parametrize("body, field", [
    ({"trust": "friendly"}, "trust"), ({"relay": "yes"}, "relay"), ({"follow": 1}, "follow"),
    ({"colour": "red"}, "colour"),
])  # fmt: skip
async def test_bad_peer_changes_are_refused_and_change_nothing(harness, body, field):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    admin = await harness.api_client("root", "admin")
    before = await harness.node.store.peer(peer_id)
    response = await admin.patch(f"/api/v1/peers/{peer_id}", json=body)
    assert response.status_code == 422 and response.json()["field"] == field
    assert await harness.node.store.peer(peer_id) == before
    assert (await admin.patch("/api/v1/peers/999", json={"relay": True})).status_code == 404


async def test_browse_search_and_the_item_page_show_allied_items_with_their_group(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    await harness.node.allies.ingest(peer_id, feed.entries)
    browser = await harness.browser("jo")
    listing = (await browser.get("/items")).text
    assert "Soup on Sundays" in listing and "From Westside" in listing
    assert "Soup on Sundays" in (await browser.get("/items", params={"q": "lentil"})).text
    assert "Soup on Sundays" not in (await browser.get("/items", params={"origin": "local"})).text
    page = await browser.get("/items/00000000-0000-4000-8000-000000000001")
    assert page.status_code == 200 and "from Westside" in page.text
    # A remote item cannot be changed here: only at its origin.
    api = await harness.api_client("ann")
    patch = await api.patch("/api/v1/items/00000000-0000-4000-8000-000000000001",
                            json={"title": "Mine now"})  # fmt: skip
    assert patch.status_code == 403


async def test_a_remote_state_is_judged_by_the_entry_limit_not_the_publishers_margin(harness):
    """Publishers keep states under STATE_MAX_BYTES so entries stay under 16 KiB; a receiver
    takes any valid state that came in a valid entry, and measures only the entry."""
    from federation import items as item_rules

    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    big = item(1, body="🍲" * 3600)  # 14,400 bytes of UTF-8 in 3,600 characters
    with pytest.raises(item_rules.ValidationError):
        item_rules.validate_state(big, origin=WEST)  # over the publisher's margin
    item_rules.validate_state(big, origin=WEST, in_entry=True)
    feed.append(big)
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (1, None)
    assert await harness.node.store.item(big["id"]) is not None


async def test_visitors_never_see_allied_items_even_with_public_offers(harness_factory):
    """public_offers opens this node's own offers to the public; allies shared theirs with
    our members only."""
    async with harness_factory(public_offers=True) as h:
        feed = WestFeed()
        peer_id = await add_west(h, feed)
        feed.append(item(1))
        await h.node.allies.ingest(peer_id, feed.entries)
        member = await h.api_client("jo")
        await member.post("/api/v1/items", json={"kind": "offer", "title": "Our bread",
                                                 "body": "Fresh.", "category": "food"})  # fmt: skip
        visitor = h.client()
        listing = (await visitor.get("/items")).text
        assert "Our bread" in listing and "Soup on Sundays" not in listing
        page = await visitor.get("/items/00000000-0000-4000-8000-000000000001")
        assert page.status_code == 404
        assert "Soup on Sundays" in (await (await h.browser("ann")).get("/items")).text


async def test_a_different_signed_entry_at_our_cursor_is_a_fork(harness):
    """An overlapping entry is compared with the one held at the cursor: the same is skipped,
    a forged one is ignored, a validly signed different one is a fork."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    feed.append(item(2))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (2, None)
    assert await harness.node.allies.ingest(peer_id, feed.entries[1:]) == (0, None)
    other = sign_entry(origin=WEST, seq=2, prev=entry_hash(feed.entries[0]), type="item",
                       at="2026-11-24T17:00:00Z", body=item(3), key=feed.key)  # fmt: skip
    forged = {**other, "sig": feed.entries[0]["sig"]}
    assert await harness.node.allies.ingest(peer_id, [forged]) == (0, None)
    accepted, problem = await harness.node.allies.ingest(peer_id, [other])
    assert accepted == 0 and problem.startswith("fork: entry 2")
    peer = await harness.node.store.peer(peer_id)
    assert peer.forked and peer.received_seq == 2 and peer.received_hash == entry_hash(feed.entries[1])


def counted_inline_checks(monkeypatch) -> list[int]:
    """The seqs of entries whose signature the node checks itself (not checked ahead)."""
    checked = []
    verify = entries_module.verify_signature

    def counted(entry, public, **kwargs):
        checked.append(entry["seq"])
        return verify(entry, public, **kwargs)

    monkeypatch.setattr(entries_module, "verify_signature", counted)
    return checked


async def west_with_a_forged_fifteenth(harness) -> tuple[int, list[dict]]:
    """West as a peer, and its first 20 entries with entry 15 keeping its place in the chain
    but carrying entry 14's signature."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(1, 21):
        feed.append(item(n))
    forged = {**feed.entries[14], "sig": feed.entries[13]["sig"]}
    return peer_id, [*feed.entries[:14], forged, *feed.entries[15:]]


async def test_a_batch_checked_ahead_still_stops_at_the_first_bad_signature(harness, monkeypatch):
    """Batches of 8 or more have their signatures checked on the checker processes first
    (`Allies._verify_ahead`): an entry whose signature does not verify stops the batch there,
    exactly as one checked in order does."""
    assert await harness.node.allies.verifier.wait_ready() == 2
    inline = counted_inline_checks(monkeypatch)
    peer_id, entries = await west_with_a_forged_fifteenth(harness)
    accepted, problem = await harness.node.allies.ingest(peer_id, entries, head_seq=20)
    assert accepted == 14 and "signature does not verify" in problem
    peer = await harness.node.store.peer(peer_id)
    assert peer.received_seq == 14
    # The checkers found the first 14 valid; only the forged one was checked again here.
    assert inline == [15]


async def test_a_batch_whose_checkers_do_not_answer_is_checked_here(harness, monkeypatch, caplog):
    """A checker process hung (or starved of CPU) holds a batch up for ANSWER_WAIT at most;
    then the node checks the batch's signatures itself, the forged one included."""
    assert await harness.node.allies.verifier.wait_ready() == 2
    for child in harness.node.allies.verifier._children:
        os.kill(child.process.pid, signal.SIGSTOP)
    monkeypatch.setattr(allies_module, "ANSWER_WAIT", 0.2)
    inline = counted_inline_checks(monkeypatch)
    peer_id, entries = await west_with_a_forged_fifteenth(harness)
    try:
        accepted, problem = await asyncio.wait_for(
            harness.node.allies.ingest(peer_id, entries, head_seq=20), 5)
    finally:
        for child in harness.node.allies.verifier._children:
            os.kill(child.process.pid, signal.SIGCONT)
    assert accepted == 14 and "signature does not verify" in problem
    assert inline == list(range(1, 16))  # every signature up to the forged one, here
    assert "did not answer within" in caplog.text


async def test_a_rotation_inside_a_batch_checked_ahead_is_followed(harness, monkeypatch):
    """Entries after a key entry in the same batch were checked ahead with the old key and
    failed there; in order they are checked again with the new key and accepted."""
    assert await harness.node.allies.verifier.wait_ready() == 2
    inline = counted_inline_checks(monkeypatch)
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(1, 6):
        feed.append(item(n))
    new = generate_key("key2")
    feed.append(key_entry_body(WEST, 6, new), type="key")
    for n in range(6, 16):
        feed.append(item(n), key=new)
    assert len(feed.entries) >= 8
    assert await harness.node.allies.ingest(peer_id, feed.entries, head_seq=16) == (16, None)
    assert inline == list(range(7, 17))  # signed by the new key: checked again, here

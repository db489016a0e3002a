"""The node's signed feed: what appends an entry, who may read it, rotation, and `check`."""

import asyncio
import json

import httpx
import pytest

from federation.entries import ChainState, EntryError, canonical, entry_hash
from federation.httpsig import sign_request
from federation.keys import generate_key, parse_public_key, public_key_text, save_key
from server.feed import ChainProblem

pytestmark = pytest.mark.anyio

OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household"}  # fmt: skip
NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday morning.",
        "category": "transport"}  # fmt: skip
WEST = "https://westside.example"


async def feed_rows(harness) -> list[dict]:
    rows = await harness.node.store.fetch_all("SELECT entry FROM feed ORDER BY seq")
    return [json.loads(row[0]) for row in rows]


async def trust_peer(harness, url: str = WEST, name: str = "main"):
    """Pin a key for a trusted node directly in the store (peering comes with allies)."""
    key = generate_key(name)
    async with harness.node.store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, created) VALUES (?, 'Westside', 'trusted', ?)",
            (url, harness.node.now_text()),
        )
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (key.key_id(url), cursor.lastrowid, public_key_text(key.public)))  # fmt: skip
    return key


def signed_get(harness, key, path: str, *, url: str = WEST, now=None, nonce=None) -> httpx.Request:
    request = httpx.Request("GET", harness.config.base_url + path)
    return sign_request(request, key, key.key_id(url), now=now or harness.clock(), nonce=nonce)


async def test_federated_changes_append_full_states(harness):
    """Offers, escalated needs, changes and withdrawals append entries; local items never do."""
    api = await harness.api_client("jo")
    offer = (await api.post("/api/v1/items", json=OFFER)).json()
    need = (await api.post("/api/v1/items", json=NEED)).json()
    need_uuid = need["id"].rsplit("/", 1)[1]
    # A local need leaves no trace in the feed, even when it changes.
    await api.patch(f"/api/v1/items/{need_uuid}", json={"title": "Ride to the clinic, 9am"})
    assert [e["body"]["id"] for e in await feed_rows(harness)] == [offer["id"]]
    # Escalating it publishes its first entry; a change of a node-local note publishes nothing.
    harness.clock.advance(minutes=1)
    await api.patch(f"/api/v1/items/{need_uuid}", json={"reach": "allies"})
    await api.patch(f"/api/v1/items/{need_uuid}", json={"escalation": "never"})
    await api.patch(f"/api/v1/items/{need_uuid}", json={"reach": "allies"})  # a no-op
    await api.patch(f"/api/v1/items/{need_uuid}", json={"status": "withdrawn"})
    entries = await feed_rows(harness)
    assert [(e["seq"], e["body"]["id"], e["body"]["version"]) for e in entries] == [
        (1, offer["id"], 1), (2, need["id"], 3), (3, need["id"], 4),
    ]  # fmt: skip
    assert entries[2]["body"]["status"] == "withdrawn"
    stored = await harness.node.store.item(need["id"])
    assert entries[2]["body"] == stored.state
    assert entries[0]["at"] == "2026-11-24T18:00:00Z" and entries[1]["at"] == "2026-11-24T18:01:00Z"
    assert (await harness.node.check())["entries"] == 3


async def test_expiry_appends_a_final_state(harness):
    api = await harness.api_client("jo")
    offer = (await api.post("/api/v1/items", json={**OFFER, "expires": "2026-11-25T00:00:00Z"})).json()
    harness.clock.advance(days=1)
    assert await harness.node.expire_due_items() == 1
    last = (await feed_rows(harness))[-1]
    assert last["body"]["id"] == offer["id"] and last["body"]["status"] == "expired"
    assert last["body"]["version"] == 2


async def test_an_item_and_its_entry_commit_together(harness, monkeypatch):
    """If the entry cannot be appended, the item change is rolled back too."""
    api = await harness.api_client("jo")

    async def broken_append(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(harness.node.feed, "append", broken_append)
    with pytest.raises(RuntimeError):
        await harness.node.post_item(await harness.node.store.user_by_username("jo"), OFFER)
    assert await harness.node.store.fetch_all("SELECT id FROM items") == []
    assert await feed_rows(harness) == []
    monkeypatch.undo()
    assert (await api.post("/api/v1/items", json=OFFER)).status_code == 201


async def test_feed_needs_a_trusted_signature(harness):
    api = await harness.api_client("jo")
    await api.post("/api/v1/items", json=OFFER)
    client = harness.client()
    # No signature: refused (feed_public is off).
    anonymous = await client.get("/federation/feed")
    assert anonymous.status_code == 401 and "error" in anonymous.json()
    # A node we do not know: refused, however well it signs.
    stranger = generate_key()
    assert (await client.send(signed_get(harness, stranger, "/federation/feed"))).status_code == 401
    # A trusted node: served.
    west = await trust_peer(harness)
    response = await client.send(signed_get(harness, west, "/federation/feed?after=0&limit=10"))
    assert response.status_code == 200
    page = response.json()
    assert page["origin"] == harness.config.base_url and len(page["entries"]) == 1
    assert page["head"] == {"seq": 1, "hash": entry_hash(page["entries"][0])}
    # The same request again is a replay.
    request = signed_get(harness, west, "/federation/feed", nonce="n" * 22)
    assert (await client.send(request)).status_code == 200
    again = signed_get(harness, west, "/federation/feed", nonce="n" * 22)
    assert (await client.send(again)).status_code == 401
    # Signed for another path, or 10 minutes ago, or for another node: refused.
    other_path = signed_get(harness, west, "/federation/feed?after=5")
    other_path.url = httpx.URL(harness.config.base_url + "/federation/feed?after=0")
    assert (await client.send(other_path)).status_code == 401
    harness.clock.advance(minutes=10)
    stale = signed_get(harness, west, "/federation/feed", now=harness.clock.now.replace(minute=0))
    assert (await client.send(stale)).status_code == 401
    elsewhere = httpx.Request("GET", "https://other.example/federation/feed")
    sign_request(elsewhere, west, west.key_id(WEST), now=harness.clock())
    forwarded = httpx.Request("GET", harness.config.base_url + "/federation/feed",
                              headers=elsewhere.headers)  # fmt: skip
    assert (await client.send(forwarded)).status_code == 401


async def test_blocked_or_untrusted_nodes_cannot_read(harness):
    west = await trust_peer(harness)
    client = harness.client()
    for trust in ("unknown", "blocked"):
        async with harness.node.store.write() as db:
            await db.execute("UPDATE peers SET trust = ?", (trust,))
        assert (await client.send(signed_get(harness, west, "/federation/feed"))).status_code == 401


async def test_public_feed_and_paging(harness_factory):
    async with harness_factory(feed_public=True) as h:
        api = await h.api_client("jo")
        for i in range(5):
            await api.post("/api/v1/items", json={**OFFER, "title": f"Offer {i}"})
        client = h.client()
        page = (await client.get("/federation/feed", params={"after": 2, "limit": 2})).json()
        assert [e["seq"] for e in page["entries"]] == [3, 4] and page["head"]["seq"] == 5
        empty = (await client.get("/federation/feed", params={"after": 5})).json()
        assert empty["entries"] == [] and empty["head"]["seq"] == 5
        for params in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "1001"},
                       {"after": "١"}, {"page": "2"}):  # fmt: skip
            response = await client.get("/federation/feed", params=params)
            assert response.status_code == 400 and "error" in response.json(), params


async def test_an_empty_feed(harness_factory):
    async with harness_factory(feed_public=True) as h:
        page = (await h.client().get("/federation/feed")).json()
        assert page == {"origin": h.config.base_url, "head": {"seq": 0, "hash": None}, "entries": []}


async def test_feed_pages_stay_under_one_mebibyte(harness_factory):
    async with harness_factory(feed_public=True) as h:
        api = await h.api_client("jo")
        big = {**OFFER, "body": "€" * 4000}  # 12 KB of UTF-8 each
        for i in range(90):
            assert (await api.post("/api/v1/items", json={**big, "title": f"Big {i}"})).status_code == 201
        response = await h.client().get("/federation/feed", params={"limit": 1000})
        assert len(response.content) <= 1024 * 1024
        entries = response.json()["entries"]
        assert 0 < len(entries) < 90 and entries[-1]["seq"] == len(entries)


async def test_key_rotation_hands_over_and_old_entries_still_verify(harness):
    api = await harness.api_client("jo")
    await api.post("/api/v1/items", json=OFFER)
    old_doc = (await harness.client().get("/.well-known/aidnode")).json()
    rotation = await harness.node.rotate_key()
    await api.post("/api/v1/items", json={**OFFER, "title": "After rotation"})
    doc = (await harness.client().get("/.well-known/aidnode")).json()
    base = harness.config.base_url
    assert [k["id"] for k in doc["keys"]] == [f"{base}#main", f"{base}#key2"]
    assert doc["keys"][0]["retired_at_seq"] == rotation["seq"] == 2
    assert "retired_at_seq" not in doc["keys"][1]
    entries = await feed_rows(harness)
    assert [e["key"] for e in entries] == [f"{base}#main", f"{base}#main", f"{base}#key2"]
    # A reader that knows only the old key follows the chain through the rotation.
    state = ChainState(base, 0, None, old_doc["keys"][0]["id"],
                       parse_public_key(old_doc["keys"][0]["public"]))  # fmt: skip
    for entry in entries:
        state.accept(entry)
    assert state.key_id == f"{base}#key2"
    # A forged entry signed with the retired key after the rotation is refused.
    forged = dict(entries[2], key=f"{base}#main")
    with pytest.raises(EntryError):
        ChainState(base, 2, entry_hash(entries[1]), f"{base}#key2", state.public).accept(forged)
    assert (await harness.node.check())["keys"] == 2


@pytest.mark.parametrize("damage", ["entry", "item", "hash", "gap"])
async def test_check_finds_damage(harness, damage):
    api = await harness.api_client("jo")
    for i in range(3):
        await api.post("/api/v1/items", json={**OFFER, "title": f"Offer {i}"})
    async with harness.node.store.write() as db:
        if damage == "entry":
            text = (await (await db.execute("SELECT entry FROM feed WHERE seq = 2")).fetchone())[0]
            await db.execute("UPDATE feed SET entry = ? WHERE seq = 2",
                             (text.replace("Offer 1", "Offer X"),))  # fmt: skip
        elif damage == "item":
            await db.execute("UPDATE items SET state = replace(state, 'Offer 2', 'Offer Y')")
        elif damage == "hash":
            await db.execute("UPDATE feed SET hash = 'sha256:' || substr(hash, 8) || 'x' WHERE seq = 1")
        else:
            await db.execute("DELETE FROM feed WHERE seq = 2")
    with pytest.raises(ChainProblem):
        await harness.node.check()


@pytest.mark.parametrize("wrong", ["feed_seq - 1", "NULL", "99"])
async def test_check_finds_an_item_whose_feed_seq_is_not_its_latest_entry(harness, wrong):
    """What a snapshot serves an item by (`items.feed_seq`) is checked against the feed."""
    api = await harness.api_client("jo")
    posted = (await api.post("/api/v1/items", json=OFFER)).json()
    await api.patch(f"/api/v1/items/{posted['id'].rsplit('/', 1)[1]}", json={"title": "Soup, again"})
    assert (await harness.node.check())["entries"] == 2
    async with harness.node.store.write() as db:
        await db.execute(f"UPDATE items SET feed_seq = {wrong} WHERE id = ?", (posted["id"],))
    with pytest.raises(ChainProblem, match="its feed_seq is .*, but its latest feed entry is 2"):
        await harness.node.check()


def test_stored_entries_are_canonical_text():
    """Entries are kept as their exact canonical bytes, so what is served is what was signed."""
    key = generate_key()
    from federation.entries import sign_entry

    entry = sign_entry(origin=WEST, seq=1, prev=None, type="item", at="2026-11-24T18:00:00Z",
                       body={"b": 1, "a": "é"}, key=key)  # fmt: skip
    assert canonical(entry).decode() == canonical(json.loads(canonical(entry))).decode()


async def test_the_chain_holds_when_writers_in_one_commit_fail_or_rotate_the_key(harness):
    """Writers sharing a COMMIT append one after another from the head the last one left;
    one rolled back after appending, or a key rotation among them, leaves no gap or fork."""
    node = harness.node
    await harness.add_user("jo")
    user = await node.store.user_by_username("jo")
    template = dict((await node.post_item(user, OFFER)).row.state)

    async def post(i: int) -> None:
        await node.post_item(user, {**OFFER, "title": f"Ramp {i}"})

    async def post_then_fail(i: int) -> None:
        state = {**template, "id": node.local_id(f"00000000-0000-4000-8000-{i:012d}")}
        async with node.store.write() as db:
            await node.store.write_item(db, state, origin=node.config.base_url, is_local=True,
                                        held_version=None)  # fmt: skip
            await asyncio.sleep(0.001)  # others queue up behind, into the same batch
            raise RuntimeError("refused after appending")

    jobs = []
    for i in range(30):
        jobs.append(post(i))
        if i % 7 == 3:
            jobs.append(post_then_fail(i))
        if i == 15:
            jobs.append(node.rotate_key())
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 4 and all(isinstance(f, RuntimeError) for f in failures), failures
    counts = await node.check()  # the whole chain verifies, every item matches its entry
    entries = await feed_rows(harness)
    assert counts["entries"] == len(entries) == 1 + 30 + 1  # template, posts, the key entry
    assert [e["seq"] for e in entries] == list(range(1, 33))
    assert sum(e["type"] == "key" for e in entries) == 1
    assert not any("00000000-0000-4000-8000" in e["body"].get("id", "") for e in entries)


async def test_a_key_file_left_by_a_rotation_that_never_committed_does_not_block_the_next(harness):
    """A node killed between writing the new key's file and committing its `key` entry leaves
    a file no entry names; the next rotation replaces it rather than failing on it."""
    orphan = harness.config.keys_dir / "key2.pem"
    save_key(generate_key("key2"), orphan)
    left = orphan.read_bytes()
    rotation = await harness.node.rotate_key()
    assert rotation["seq"] == 1 and orphan.read_bytes() != left
    assert (await harness.node.check())["keys"] == 2

"""Floods on the federation endpoints: each client address, and each signing node, is held to
its limit with a 429 and Retry-After, and one node's flood leaves another's requests alone."""

import pytest

from federation.keys import public_key_text
from server.accounts import RateLimiter
from tests.test_inbox import push, send, signed
from tests.test_ingest import WestFeed, add_west

pytestmark = pytest.mark.anyio

NORTH = "https://northside.example"


async def test_a_node_over_its_limit_gets_429_and_another_node_does_not(harness):
    west = WestFeed()
    await add_west(harness, west)
    north = WestFeed()
    async with harness.node.store.write() as db:
        cursor = await db.execute("INSERT INTO peers (url, name, trust, we_follow, created)"
                                  " VALUES (?, 'Northside', 'trusted', 'accepted', ?)",
                                  (NORTH, "2026-11-24T17:00:00Z"))  # fmt: skip
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (north.key.key_id(NORTH), cursor.lastrowid,
                          public_key_text(north.key.public)))  # fmt: skip
    harness.node.federation_by_node = RateLimiter(3, 60)
    for _ in range(3):
        assert (await send(harness, signed(harness, west.key, "GET", "/federation/cursor"))).status_code == 200
    refused = await send(harness, signed(harness, west.key, "GET", "/federation/cursor"))
    assert refused.status_code == 429 and "slow down" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    # Northside's requests are counted on their own.
    other = await send(harness, signed(harness, north.key, "GET", "/federation/cursor",
                                       key_id=north.key.key_id(NORTH)))  # fmt: skip
    assert other.status_code == 200


async def test_an_address_over_its_limit_is_refused_before_any_signature_work(harness):
    harness.node.federation_by_address = RateLimiter(2, 60)
    client = harness.client()
    for _ in range(2):  # unsigned: refused as such, but counted
        assert (await client.get("/federation/cursor")).status_code == 401
    refused = await client.get("/federation/cursor")
    assert refused.status_code == 429 and refused.headers["retry-after"]
    # The rest of the node serves on: the limit is for /federation/ only.
    assert (await client.get("/healthz")).status_code == 200


async def test_a_node_over_its_limit_is_refused_before_its_body_is_read(harness, monkeypatch):
    """Over its limit, a node's next request is refused by the key id it claims, before the
    body is parsed or the signature checked; and only verified requests count, so a forger
    naming a node's key does not spend that node's budget."""
    west = WestFeed()
    await add_west(harness, west)
    harness.node.federation_by_node = RateLimiter(2, 60)
    forger = WestFeed()  # another key under West's key id: its signature cannot verify
    for _ in range(3):
        forged = await send(harness, signed(harness, forger.key, "GET", "/federation/cursor"))
        assert forged.status_code == 401
    for _ in range(2):
        assert (await send(harness, signed(harness, west.key, "GET", "/federation/cursor"))).status_code == 200
    parsed = []
    monkeypatch.setattr("server.routing.loads_strict", lambda body: parsed.append(body))
    refused = await send(harness, signed(harness, west.key, "POST", "/federation/inbox",
                                         push(west, [])))  # fmt: skip
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 61
    assert parsed == []  # the inbox's body was never read as JSON

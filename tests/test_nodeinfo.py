"""NodeInfo 2.1: discovery at /.well-known/nodeinfo, the document at /nodeinfo/2.1, checked
against the published schema (tests/vectors/nodeinfo-2.1.schema.json).

One known deviation from the schema: its `protocols` enum is closed and has no entry for us,
and the list must hold one item at least, so the list holds only protocols the node really
speaks — none until an ActivityPub bridge exists — and `aidnode/1` goes in metadata.
"""

import json
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from server import __version__
from server.wellknown import nodeinfo_document
from tests.test_ingest import WestFeed, add_west, item

pytestmark = pytest.mark.anyio

SCHEMA = json.loads((Path(__file__).parent / "vectors" / "nodeinfo-2.1.schema.json").read_text())
PROFILE = "http://nodeinfo.diaspora.software/ns/schema/2.1"
OFFER = {"kind": "offer", "title": "Soup", "body": "Lentil soup.", "category": "food"}


async def test_discovery_links_to_the_2_1_document_on_our_origin(harness):
    """/.well-known/nodeinfo names the 2.1 schema and links to this node's document."""
    response = await harness.client().get("/.well-known/nodeinfo")
    assert response.status_code == 200
    assert response.json() == {"links": [{"rel": PROFILE,
                                          "href": f"{harness.config.base_url}/nodeinfo/2.1"}]}  # fmt: skip
    linked = await harness.client().get(response.json()["links"][0]["href"])
    assert linked.status_code == 200 and linked.json()["version"] == "2.1"


async def test_the_document_says_who_we_are_with_the_profile_content_type(harness):
    """Software aidnode and its version, invite-only, no protocols or services, aidnode/1 in
    metadata; served as JSON with the schema's profile."""
    response = await harness.client().get("/nodeinfo/2.1")
    assert response.headers["content-type"] == f'application/json; profile="{PROFILE}#"'
    doc = response.json()
    assert doc["software"] == {"name": "aidnode", "version": __version__}
    assert doc["protocols"] == [] and doc["services"] == {"inbound": [], "outbound": []}
    assert doc["openRegistrations"] is False
    assert doc["metadata"] == {"protocol": "aidnode/1", "nodeName": "Eastside Mutual Aid",
                               "nodeDescription": ""}  # fmt: skip


async def test_the_only_schema_error_is_the_known_protocols_deviation(harness):
    """Validated against the published schema, the document fails only `protocols` minItems."""
    doc = (await harness.client().get("/nodeinfo/2.1")).json()
    errors = list(Draft4Validator(SCHEMA).iter_errors(doc))
    assert [(list(e.path), e.validator) for e in errors] == [(["protocols"], "minItems")]
    # With a protocol the schema knows, the same document is valid: nothing else is wrong.
    assert list(Draft4Validator(SCHEMA).iter_errors({**doc, "protocols": ["activitypub"]})) == []


async def test_usage_counts_accounts_activity_and_our_own_posts(harness):
    """Users are active accounts; active ones signed in or posted within the window; local
    posts are our own items, never allies'."""
    # Ada signs in; Bo posts an offer with a token; Cy does nothing; Dee is disabled.
    await harness.browser("ada")
    bo = await harness.api_client("bo")
    assert (await bo.post("/api/v1/items", json=OFFER)).status_code == 201
    await harness.add_user("cy")
    await harness.browser("dee")
    user = await harness.node.store.user_by_username("dee")
    async with harness.node.store.write() as db:
        await harness.node.store.set_user_disabled(db, user.id, True)
    # West's item is read: it is not ours.
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (1, None)
    usage = (await harness.client().get("/nodeinfo/2.1")).json()["usage"]
    assert usage == {"users": {"total": 3, "activeMonth": 2, "activeHalfyear": 2}, "localPosts": 1}
    # Two months on, no one was active this month; seven months on, nor this half-year.
    harness.clock.advance(days=60)
    assert (await nodeinfo_document(harness.node))["usage"]["users"] == {
        "total": 3, "activeMonth": 0, "activeHalfyear": 2}  # fmt: skip
    harness.clock.advance(days=150)
    assert (await nodeinfo_document(harness.node))["usage"]["users"]["activeHalfyear"] == 0


async def test_the_counts_are_read_at_most_once_a_minute(harness):
    """A flood of requests reads the database once: the document is kept for a minute."""
    first = (await harness.client().get("/nodeinfo/2.1")).json()
    await harness.add_user("ada")
    again = await harness.client().get("/nodeinfo/2.1")
    assert again.json() == first and first["usage"]["users"]["total"] == 0
    assert again.headers["cache-control"] == "public, max-age=60"
    assert (await nodeinfo_document(harness.node))["usage"]["users"]["total"] == 1

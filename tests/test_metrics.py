"""`GET /metrics`: Prometheus text from the node's own registry, for loopback or an admin only;
requests by route name, what the database holds read at scrape time, ingest and push counts."""

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from federation.outbound import FetchError
from server import __version__
from server.app import create_app
from tests.conftest import make_node
from tests.test_delivery import Receiver, follower
from tests.test_ingest import WEST, WestFeed, add_west, item

pytestmark = pytest.mark.anyio

ELSEWHERE = ("203.0.113.7", 40000)  # a client that is not on this machine
OFFER = {"kind": "offer", "title": "Soup", "body": "Lentil soup.", "category": "food"}


def samples(text: str) -> dict[tuple, float]:
    """Every sample of an exposition: (name, sorted label pairs) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


async def scrape(harness) -> dict[tuple, float]:
    response = await harness.client().get("/metrics")
    assert response.status_code == 200, response.text
    return samples(response.text)


def remote_client(harness, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=harness.app, client=ELSEWHERE)
    return httpx.AsyncClient(transport=transport, base_url=harness.config.base_url, headers=headers)


async def test_loopback_reads_prometheus_text_with_the_node_version(harness):
    """From loopback, anonymous: 200 in the Prometheus text format, with the version as info."""
    response = await harness.client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)
    assert found[("aidnode_info", (("version", __version__),))] == 1
    assert found[("aidnode_database_up", ())] == 1


@pytest.mark.parametrize("role, status", [(None, 401), ("member", 403), ("coordinator", 403),
                                          ("admin", 200)])  # fmt: skip
async def test_from_elsewhere_only_an_admin_token_reads_metrics(harness, role, status):
    """Another machine needs an admin's token: the metrics reveal the alliance graph."""
    token = None
    if role:
        user = await harness.add_user(f"u-{role}", role)
        token = await harness.node.new_api_token(user)
    response = await remote_client(harness, token).get("/metrics")
    assert response.status_code == status
    assert ("aidnode_info" in response.text) is (status == 200)


async def test_a_request_a_local_proxy_forwarded_is_not_loopback(harness):
    """A reverse proxy on this machine connects from 127.0.0.1: what it forwards needs a token."""
    client = harness.client()
    assert (await client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})).status_code == 401
    assert (await client.get("/metrics", headers={"Forwarded": "for=198.51.100.4"})).status_code == 401
    admin = await harness.api_client("root", "admin")
    assert (await admin.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})).status_code == 200


async def test_requests_are_counted_by_route_name_never_by_path(harness):
    """Two item ids make one series (the route's name), with its status class and duration."""
    api = await harness.api_client("jo")
    for n in (1, 2):
        response = await api.get(f"/api/v1/items/00000000-0000-4000-8000-00000000000{n}")
        assert response.status_code == 404
    await harness.client().get("/no/such/page")
    text = (await harness.client().get("/metrics")).text
    assert "00000000-0000-4000-8000" not in text and "/no/such/page" not in text
    found = samples(text)
    key = (("method", "GET"), ("route", "api_item"), ("status_class", "4xx"))
    assert found[("aidnode_http_requests_total", key)] == 2
    assert found[("aidnode_http_request_duration_seconds_count", (("route", "api_item"),))] == 2
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status_class", "4xx"))
    assert found[("aidnode_http_requests_total", unmatched)] == 1


async def test_each_node_counts_in_a_registry_of_its_own(harness, tmp_path, clock):
    """Two nodes in one process keep apart, and the global default registry holds neither."""
    other_config = make_node(tmp_path / "other", base_url="http://127.0.0.1:8766")
    other = create_app(other_config, clock=clock, workers=False)
    async with LifespanManager(other):
        await harness.client().get("/healthz")
        await harness.client().get("/healthz")
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url=other_config.base_url) as client:
            theirs = samples((await client.get("/metrics")).text)
    healthz = (("method", "GET"), ("route", "healthz"), ("status_class", "2xx"))
    assert (await scrape(harness))[("aidnode_http_requests_total", healthz)] == 2
    assert ("aidnode_http_requests_total", healthz) not in theirs
    assert b"aidnode_" not in generate_latest(REGISTRY)


async def test_what_the_database_holds_is_read_at_each_scrape(harness):
    """Feed entries by type, items by origin and status, lags and queues come from the store."""
    # Jo posts two offers (they go in the feed) and a need (kept in the group).
    api = await harness.api_client("jo")
    for title in ("Soup", "Bread"):
        assert (await api.post("/api/v1/items", json={**OFFER, "title": title})).status_code == 201
    need = {**OFFER, "kind": "need", "title": "A ride"}
    assert (await api.post("/api/v1/items", json=need)).status_code == 201
    # West is followed and follows us; we read one of its items.
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    assert await harness.node.allies.ingest(peer_id, feed.entries, head_seq=7) == (1, None)
    store = harness.node.store
    async with store.write() as db:
        await store.update_peer(db, peer_id, they_follow="accepted", delivered_seq=1)
        # A relay waiting for its origin's quota and a response-status message to send.
        await db.execute("INSERT INTO relays (item_id, origin, path, version, state, updated)"
                         " VALUES ('x', ?, '[]', 1, 'waiting', '2026-11-24T18:00:00Z')", (WEST,))
        await db.execute("INSERT INTO response_status_outbox (response_id, node, item_id, state,"
                         " next_attempt) VALUES ('r', ?, 'i', 'accepted', '2026-11-24T18:00:00Z')",
                         (WEST,))  # fmt: skip
    found = await scrape(harness)
    assert found[("aidnode_feed_entries_total", (("type", "item"),))] == 2
    assert found[("aidnode_feed_head_seq", ())] == 2
    assert found[("aidnode_items", (("origin", "local"), ("status", "open")))] == 3
    assert found[("aidnode_items", (("origin", "remote"), ("status", "open")))] == 1
    assert found[("aidnode_peer_lag", (("peer", WEST),))] == 6  # its head 7, we hold 1
    assert found[("aidnode_push_lag", (("peer", WEST),))] == 1  # our head 2, it acknowledged 1
    assert found[("aidnode_peers", (("trust", "trusted"),))] == 1
    assert found[("aidnode_queue_depth", (("queue", "relays_waiting"),))] == 1
    assert found[("aidnode_queue_depth", (("queue", "response_status"),))] == 1
    assert found[("aidnode_queue_depth", (("queue", "expiry_due"),))] == 0
    # A month and more later, all three of Jo's items are due to expire: nothing was counted,
    # the next scrape simply reads it.
    harness.clock.advance(days=31)
    assert (await scrape(harness))[("aidnode_queue_depth", (("queue", "expiry_due"),))] == 3


async def test_ingest_counts_accepted_refused_and_invalid_entries(harness):
    """Entries applied, valid but refused for their content, and one that broke the chain."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1, title="Good"))
    feed.append(item(2, reach="local"))  # valid in the chain, refused for its content
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (2, None)
    forged = dict(feed.append(item(3)), sig=feed.entries[0]["sig"])
    accepted, problem = await harness.node.allies.ingest(peer_id, [forged])
    assert accepted == 0 and problem
    found = await scrape(harness)
    counts = {o: found[("aidnode_ingested_entries_total", (("outcome", o),))]
              for o in ("accepted", "refused", "invalid")}  # fmt: skip
    assert counts == {"accepted": 1, "refused": 1, "invalid": 1}


async def test_pushes_are_counted_by_outcome(harness, monkeypatch):
    """A 413, a 409 and two 200s: each push request is counted with what came of it."""
    receiver = Receiver((413, None), (409, 20), (200, "all"), (200, "all"))
    peer_id = await follower(harness, monkeypatch, receiver, posts=120)
    async with harness.node.store.write() as db:
        await harness.node.store.update_peer(db, peer_id, delivered_seq=30)
    await harness.node.allies.deliver(await harness.node.store.peer(peer_id))
    found = await scrape(harness)
    counts = {o: found[("aidnode_pushes_total", (("outcome", o),))]
              for o in ("ok", "conflict", "too_large", "error", "stopped")}  # fmt: skip
    assert counts == {"ok": 2, "conflict": 1, "too_large": 1, "error": 0, "stopped": 0}


@pytest.mark.parametrize("failure, outcome", [((503, None), "error"), ((400, None), "stopped"),
                                              (FetchError("connection refused"), "error")])  # fmt: skip
async def test_a_failed_push_is_counted_as_error_or_stopped(harness, monkeypatch, failure, outcome):
    """A failure that backs off counts as error; one that stops pushing, as stopped."""
    peer_id = await follower(harness, monkeypatch, Receiver(failure), posts=1)
    await harness.node.allies.deliver(await harness.node.store.peer(peer_id))
    found = await scrape(harness)
    assert found[("aidnode_pushes_total", (("outcome", outcome),))] == 1
    assert found[("aidnode_pushes_total", (("outcome", "ok"),))] == 0


async def test_metrics_still_answer_when_the_database_does_not(harness):
    """With the database gone, a scrape says so (database_up 0) and keeps the counters."""
    await harness.client().get("/healthz")
    await harness.node.store.close()
    found = await scrape(harness)
    assert found[("aidnode_database_up", ())] == 0
    assert ("aidnode_feed_head_seq", ()) not in found
    healthz = (("method", "GET"), ("route", "healthz"), ("status_class", "2xx"))
    assert found[("aidnode_http_requests_total", healthz)] == 1

"""A new ally of a node with a long history, for real: two `aidnode serve` processes. The ally
takes the node's live state from its snapshot instead of replaying its feed, ends at its head,
and reads what comes next by the feed as usual (docs/protocol.md §8.1)."""

import asyncio
import sqlite3

import httpx
import pytest

from server.config import load_config
from server.node import Node
from tests.live import LiveNode
from tests.test_allies_live import FAST, OFFER, Admin, ally, eventually
from tests.test_metrics import samples

pytestmark = pytest.mark.live

ITEMS, EDITS, WITHDRAWN = 100, 14, 30  # 100 + 1400 + 30 item entries, and one key rotation


def seed_history(node: LiveNode) -> None:
    """Give a stopped node its history, through the node's own code: offers, each edited
    many times, some withdrawn, and a key rotation halfway."""

    async def seed() -> None:
        live = Node(load_config(node.data, environ=node.env))
        await live.start()
        try:
            admin = await live.store.user_by_username("admin")
            posted = [await live.post_item(admin, {**OFFER, "title": f"Offer {n}"})
                      for n in range(ITEMS)]  # fmt: skip
            for edit in range(EDITS):
                await asyncio.gather(*(live.change_item(admin, view.uuid, {"title": f"Offer {n}, v{edit + 2}"})
                                       for n, view in enumerate(posted)))  # fmt: skip
                if edit == EDITS // 2:
                    await live.rotate_key()
            for view in posted[:WITHDRAWN]:
                await live.change_item(admin, view.uuid, {"status": "withdrawn"})
        finally:
            await live.close()

    asyncio.run(seed())


def db(node: LiveNode, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(f"file:{node.data / 'aidnode.db'}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def live_items(node: LiveNode) -> dict[str, int]:
    """A node's own live federated items, by id: their versions."""
    return dict(db(node, "SELECT id, version FROM items WHERE is_local AND reach != 'local'"
                         " AND status IN ('open', 'promised')"))  # fmt: skip


def held_items(node: LiveNode, origin: str) -> dict[str, int]:
    return dict(db(node, "SELECT id, version FROM items WHERE NOT is_local AND origin = ?", origin))


def metrics(node: LiveNode) -> dict[tuple, float]:
    return samples(httpx.get(f"{node.url}/metrics", timeout=10).text)


@pytest.fixture
def old_and_new(tmp_path):
    east = LiveNode(tmp_path, "Eastside", env=FAST).init()
    west = LiveNode(tmp_path, "Westside", env=FAST).init()
    admins = Admin(east), Admin(west)
    seed_history(east)
    east.start(), west.start()
    try:
        yield admins
    finally:
        east.stop(), west.stop()


def test_a_new_ally_syncs_from_the_snapshot_and_then_follows_the_feed(old_and_new):
    east, west = old_and_new
    nodes = (east.node, west.node)
    head = db(east.node, "SELECT max(seq) FROM feed")[0][0]
    assert head == ITEMS * (EDITS + 1) + WITHDRAWN + 1
    expected = live_items(east.node)
    assert len(expected) == ITEMS - WITHDRAWN
    # West, new, allies with East: it takes East's live state and stands at East's head.
    ally(east, west)
    eventually(lambda: west.peer(east.node.url)["received_seq"] == head, "west at east's head",
               nodes=nodes)  # fmt: skip
    assert held_items(west.node, east.node.url) == expected
    assert west.peer(east.node.url)["last_error"] is None
    # It read East's live entries, not its history: one snapshot, a few feed entries at most.
    found = metrics(west.node)
    assert found[("aidnode_snapshots_total", (("outcome", "taken"),))] == 1
    assert found[("aidnode_snapshot_entries_total", (("outcome", "accepted"),))] == len(expected)
    ingested = sum(value for (name, _), value in found.items() if name == "aidnode_ingested_entries_total")
    assert ingested < 10, found
    served = metrics(east.node)
    feed_reads = sum(value for (name, labels), value in served.items()
                     if name == "aidnode_http_requests_total"
                     and ("route", "federation_feed") in labels)  # fmt: skip
    assert served[("aidnode_http_requests_total", (("method", "GET"), ("route", "federation_snapshot"),
                                                   ("status_class", "2xx")))] == 1  # fmt: skip
    assert feed_reads <= 5, served
    # What East posts next reaches West by the feed (pushed or pulled), chained onto that head.
    posted = east.post("/api/v1/items", {**OFFER, "title": "Posted after the snapshot"}).json()
    eventually(lambda: posted["id"] in held_items(west.node, east.node.url), "the new offer at west",
               nodes=nodes)  # fmt: skip
    assert west.peer(east.node.url)["received_seq"] == head + 1
    assert held_items(west.node, east.node.url) == live_items(east.node)

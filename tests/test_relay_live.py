"""Escalation and relay for real: nodes as `aidnode serve` processes on 127.0.0.1 ports, each
with its own data directory, passing a need on hop by hop over real HTTP."""

import json
import sqlite3
import time

import pytest

from federation.entries import sign_entry
from federation.keys import generate_key
from tests.live import LiveNode
from tests.scripted_peer import ScriptedPeer
from tests.test_allies_live import FAST, Admin, ally, eventually

pytestmark = pytest.mark.live

NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday 9am, wheelchair.",
        "category": "transport"}  # fmt: skip


def start(tmp_path, names: list[str], env: dict | None = None) -> tuple[list[LiveNode], list[Admin]]:
    nodes = [LiveNode(tmp_path, name, env={**FAST, **(env or {})}).init() for name in names]
    admins = [Admin(node) for node in nodes]
    for node in nodes:
        node.start()
    return nodes, admins


def holds(admin: Admin, item_id: str) -> dict | None:
    """The item as the admin's node lists it among remote items, or None."""
    items = admin.get("/api/v1/items", origin="remote", id=item_id).json()["items"]
    return items[0] if items else None


def relay_entries(node: LiveNode, item_id: str) -> int:
    """How many relay entries for this item the node's own feed holds (read from its file)."""
    with sqlite3.connect(f"file:{node.data / 'aidnode.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT entry FROM feed WHERE type = 'relay'").fetchall()
    return sum(1 for (text,) in rows if item_id in text)


@pytest.fixture
def stop_all():
    started: list[LiveNode] = []
    yield started
    for node in started:
        node.stop()


def test_a_need_with_hop_limit_2_reaches_b_and_c_but_never_d_and_closes_everywhere(tmp_path, stop_all):
    """Reach, a response from two hops away, and closure, along a chain of four real nodes."""
    nodes, admins = start(tmp_path, ["Eastside", "Bridge", "Central", "Downtown"])
    stop_all.extend(nodes)
    a, b, c, d = admins
    # A chain of alliances: A–B, B–C, C–D.
    ally(a, b)
    ally(b, c)
    ally(c, d)
    # A member at A asks the network, two hops.
    posted = a.post("/api/v1/items", {**NEED, "reach": "network", "hop_limit": 2})
    assert posted.status_code == 201, posted.text
    item_id = posted.json()["id"]
    at_b = eventually(lambda: holds(b, item_id), "the need at B", nodes=tuple(nodes))
    assert at_b["origin_name"] == "Eastside" and "via" not in at_b
    at_c = eventually(lambda: holds(c, item_id), "the need at C", nodes=tuple(nodes))
    assert at_c["via"] == [b.node.url] and at_c["origin"] == a.node.url
    # C is at the hop limit: it does not pass the need on, so D never sees it.
    assert relay_entries(nodes[1], item_id) == 1 and relay_entries(nodes[2], item_id) == 0
    time.sleep(2)
    assert holds(d, item_id) is None
    # Someone at C, two hops away, can help: the response goes straight to A, signed by C.
    contact = "call Jo on 555-0199"
    sent = c.post("/api/v1/responses", {"item": item_id, "message": "I drive a van",
                                         "contact": contact})  # fmt: skip
    assert sent.status_code == 202, sent.text
    received = a.get("/api/v1/responses").json()["responses"]
    assert [(r["item"], r["from"]["node"], r["contact"]) for r in received] == [
        (item_id, c.node.url, contact)]
    # The contact is kept at A only: in no other node's database, in no feed.
    for node in nodes[1:]:
        for path in node.data.glob("aidnode.db*"):
            assert contact.encode() not in path.read_bytes(), path
    with sqlite3.connect(f"file:{nodes[0].data / 'aidnode.db'}?mode=ro", uri=True) as db:
        assert not [1 for (text,) in db.execute("SELECT entry FROM feed") if contact in text]
    # Met at A: promised, then fulfilled. It closes at B and at C.
    for status in ("promised", "fulfilled"):
        changed = a.patch(f"/api/v1/items/{item_id.rsplit('/', 1)[1]}", {"status": status})
        assert changed.status_code == 200, changed.text
    eventually(lambda: holds(b, item_id) is None and holds(c, item_id) is None,
               "the need closed at B and C", nodes=tuple(nodes))  # fmt: skip
    assert relay_entries(nodes[1], item_id) >= 2  # B relayed the later versions too
    assert holds(d, item_id) is None


def test_in_a_ring_every_node_holds_one_copy_and_the_origin_none(tmp_path, stop_all):
    nodes, admins = start(tmp_path, ["Eastside", "Bridge", "Central", "Downtown"])
    stop_all.extend(nodes)
    a, b, c, d = admins
    # A ring: A–B, B–C, C–D, D–A.
    ally(a, b)
    ally(b, c)
    ally(c, d)
    ally(d, a)
    posted = a.post("/api/v1/items", {**NEED, "reach": "network", "hop_limit": 3})
    assert posted.status_code == 201, posted.text
    item_id = posted.json()["id"]
    for admin in (b, c, d):
        eventually(lambda admin=admin: holds(admin, item_id), f"the need at {admin.node.name}",
                   nodes=tuple(nodes))  # fmt: skip
    time.sleep(3)  # let every relay go round
    for admin, node in zip((b, c, d), nodes[1:], strict=True):
        listed = [i for i in admin.get("/api/v1/items", limit=200).json()["items"]
                  if i["id"] == item_id]  # fmt: skip
        assert len(listed) == 1, (node.name, listed)
        assert relay_entries(node, item_id) <= 1, node.name
    # The origin never took its own need in from a relay, and saw where it went.
    mine = a.get("/api/v1/items", origin="all", id=item_id).json()["items"]
    assert [(i["origin"], i["version"]) for i in mine] == [(a.node.url, 1)]
    assert a.get("/api/v1/items", origin="remote").json()["items"] == []
    with sqlite3.connect(f"file:{nodes[0].data / 'aidnode.db'}?mode=ro", uri=True) as db:
        seen = {row[0] for row in db.execute("SELECT relayer FROM relay_sightings")}
    assert seen and seen <= {b.node.url, c.node.url, d.node.url}


def test_an_unmet_need_asks_allies_after_the_delay_and_a_kept_one_stays_home(tmp_path, stop_all):
    nodes, admins = start(tmp_path, ["Eastside", "Westside"], env={"AIDNODE_ESCALATE_AFTER": "3"})
    stop_all.extend(nodes)
    a, b = admins
    ally(a, b)
    kept = a.post("/api/v1/items", {**NEED, "title": "Keep this in the group", "escalation": "never"})
    waiting = a.post("/api/v1/items", {**NEED, "title": "Ask allies if unmet"})
    assert kept.status_code == waiting.status_code == 201
    assert waiting.json()["reach"] == "local"
    # Not before its delay...
    assert holds(b, waiting.json()["id"]) is None
    # ...but once it has passed, it goes to allies by itself.
    shown = eventually(lambda: holds(b, waiting.json()["id"]), "the delayed need at B",
                       timeout=30, nodes=tuple(nodes))  # fmt: skip
    assert shown["reach"] == "allies" and shown["version"] == 2
    time.sleep(4)
    assert holds(b, kept.json()["id"]) is None
    assert a.get(f"/api/v1/items/{kept.json()['id'].rsplit('/', 1)[1]}").json()["reach"] == "local"


def test_a_relayer_that_alters_or_forges_a_need_gets_nothing_shown(tmp_path, stop_all):
    """A trusted relayer passes on a need altered in transit and one signed in the origin's
    name with its own key: a real reader checks both with the origin's own key, learned
    from the origin's document, and shows only the genuine one."""
    nodes, admins = start(tmp_path, ["Eastside", "Westside"])
    stop_all.extend(nodes)
    origin, reader = admins  # not allies: the reader trusts the relayer only
    posted = origin.post("/api/v1/items", {**NEED, "reach": "network", "hop_limit": 3})
    assert posted.status_code == 201, posted.text
    item_id = posted.json()["id"]
    with sqlite3.connect(f"file:{nodes[0].data / 'aidnode.db'}?mode=ro", uri=True) as db:
        (text,) = db.execute("SELECT entry FROM feed WHERE item_id = ?", (item_id,)).fetchone()
    genuine = json.loads(text)
    relayer = ScriptedPeer("Relayer")
    # Its key has the origin's key name, so only the signature can tell them apart.
    relayer.key = generate_key(genuine["key"].rsplit("#", 1)[1])
    relayer.start()
    try:
        relayer.relay({**genuine, "body": {**genuine["body"], "title": "Send money to this account"}})
        forged_state = {**genuine["body"], "id": item_id[:-12] + "0" * 12, "title": "Forged"}
        relayer.relay(sign_entry(origin=origin.node.url, seq=1, prev=None, type="item",
                                 at=genuine["at"], body=forged_state, key=relayer.key))  # fmt: skip
        relayer.relay(genuine)
        added = reader.post("/api/v1/peers", {"url": relayer.url})
        assert added.status_code == 201, added.text
        shown = eventually(lambda: holds(reader, item_id), "the genuine need at the reader",
                           nodes=tuple(nodes))  # fmt: skip
        assert shown["title"] == NEED["title"] and shown["via"] == [relayer.url]
        assert eventually(lambda: reader.peer(relayer.url)["received_seq"] == 3, "all 3 read")
        titles = {i["title"] for i in reader.get("/api/v1/items", origin="remote").json()["items"]}
        assert titles == {NEED["title"]}
        with sqlite3.connect(f"file:{nodes[1].data / 'aidnode.db'}?mode=ro", uri=True) as db:
            reasons = [row[0] for row in db.execute("SELECT reason FROM ingest_refusals ORDER BY seq")]
        assert len(reasons) == 2 and all("signature does not verify" in r for r in reasons), reasons
    finally:
        relayer.stop()

"""Allies for real: nodes as `aidnode serve` processes on 127.0.0.1 ports, each with its own
data directory, reading each other's signed feeds over real HTTP."""

import signal
import time

import httpx
import pytest

from federation.keys import fingerprint, parse_public_key
from tests.live import LiveNode

pytestmark = pytest.mark.live

PASSWORD = "a long test password\n"
OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household"}  # fmt: skip
FAST = {"AIDNODE_POLL_INTERVAL": "5"}  # the least allowed: pulls are what carry changes for now


class Admin:
    """A node's admin, over the API."""

    def __init__(self, node: LiveNode) -> None:
        node.cli("create-admin", "--username", "admin", "--password-stdin", stdin=PASSWORD)
        token = node.cli("token", "--username", "admin").stdout.strip()
        self.node = node
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.node.url + path, params=params, headers=self.headers, timeout=10)

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.node.url + path, json=body, headers=self.headers, timeout=20)

    def patch(self, path: str, body: dict) -> httpx.Response:
        return httpx.patch(self.node.url + path, json=body, headers=self.headers, timeout=20)

    def remote_titles(self) -> set[str]:
        items = self.get("/api/v1/items", origin="remote", limit=200).json()["items"]
        return {item["title"] for item in items}

    def peer(self, url: str) -> dict:
        return next(p for p in self.get("/api/v1/peers").json()["peers"] if p["url"] == url)


def eventually(check, what: str, timeout: float = 20.0, nodes: tuple = ()):
    """Wait (bounded) until `check()` is truthy; fail with the nodes' logs if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name}\n{n.log()}" for n in nodes)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


def ally(a: Admin, b: Admin) -> None:
    """Each admin adds the other: trusted and followed both ways.

    A's subscription reaches B first: B does not know A, so it fetches A's node document and
    keeps the subscription pending. B's admin then adds A, which trusts A (accepting the
    pending subscription and telling A so) and subscribes to A in turn."""
    added = a.post("/api/v1/peers", {"url": b.node.url})
    assert added.status_code == 201, added.text
    assert added.json()["we_follow"] == "pending"
    waiting = b.peer(a.node.url)
    assert (waiting["trust"], waiting["they_follow"]) == ("unknown", "pending")
    added = b.post("/api/v1/peers", {"url": a.node.url})
    assert added.status_code == 200, added.text  # known already: now trusted and followed
    assert added.json()["trust"] == "trusted" and added.json()["we_follow"] == "accepted"
    eventually(lambda: a.peer(b.node.url)["we_follow"] == "accepted", "B telling A it accepted",
               nodes=(a.node, b.node))  # fmt: skip


@pytest.fixture
def pair(tmp_path):
    east = LiveNode(tmp_path, "Eastside", env=FAST).init()
    west = LiveNode(tmp_path, "Westside", env=FAST).init()
    admins = Admin(east), Admin(west)
    east.start(), west.start()
    try:
        yield admins
    finally:
        east.stop(), west.stop()


def test_two_nodes_ally_and_see_each_others_offers_change_and_leave(pair):
    east, west = pair
    nodes = (east.node, west.node)
    posted = east.post("/api/v1/items", OFFER).json()
    west.post("/api/v1/items", {**OFFER, "title": "Soup on Sundays", "category": "food"})
    ally(east, west)
    # The admin saw the peer's name and the fingerprint of the key it pinned.
    shown = west.peer(east.node.url)
    doc = httpx.get(f"{east.node.url}/.well-known/aidnode").json()
    assert shown["name"] == "Eastside" and shown["trust"] == "trusted"
    assert shown["fingerprint"] == fingerprint(parse_public_key(doc["keys"][-1]["public"]))
    eventually(lambda: west.remote_titles() == {OFFER["title"]}, "east's offer at west", nodes=nodes)
    eventually(lambda: east.remote_titles() == {"Soup on Sundays"}, "west's offer at east",
               nodes=nodes)  # fmt: skip
    item = west.get("/api/v1/items", origin="remote").json()["items"][0]
    assert item["id"] == posted["id"] and item["origin"] == east.node.url
    assert item["origin_name"] == "Eastside"
    for admin, other in ((west, east), (east, west)):
        shown = admin.peer(other.node.url)
        assert (shown["we_follow"], shown["they_follow"]) == ("accepted", "accepted"), shown
    # A change and a withdrawal at the origin reach the ally.
    uuid = posted["id"].rsplit("/", 1)[1]
    assert east.patch(f"/api/v1/items/{uuid}", {"title": "Ramp, 2 m"}).status_code == 200
    eventually(lambda: west.remote_titles() == {"Ramp, 2 m"}, "the change at west", nodes=nodes)
    assert east.patch(f"/api/v1/items/{uuid}", {"status": "withdrawn"}).status_code == 200
    eventually(lambda: west.remote_titles() == set(), "the withdrawal at west", nodes=nodes)
    # Blocking removes a node's items at once, and its requests are refused from then on.
    east.post("/api/v1/items", {**OFFER, "title": "Bread"})
    eventually(lambda: west.remote_titles() == {"Bread"}, "bread at west", nodes=nodes)
    blocked = west.patch(f"/api/v1/peers/{west.peer(east.node.url)['id']}", {"trust": "blocked"})
    assert blocked.status_code == 200 and blocked.json()["trust"] == "blocked"
    assert west.remote_titles() == set()
    east.patch(f"/api/v1/peers/{east.peer(west.node.url)['id']}", {"follow": True})  # read now
    eventually(lambda: "401" in (east.peer(west.node.url)["last_error"] or ""),
               "west refusing east's requests", nodes=nodes)  # fmt: skip
    east.post("/api/v1/items", {**OFFER, "title": "Jam"})
    time.sleep(1)
    assert west.remote_titles() == set()


def test_a_node_killed_while_its_ally_posts_catches_up_after_restart(pair):
    east, west = pair
    nodes = (east.node, west.node)
    ally(east, west)
    east.post("/api/v1/items", {**OFFER, "title": "Before"})
    eventually(lambda: west.remote_titles() == {"Before"}, "the first offer", nodes=nodes)
    west.node.stop(signal.SIGKILL)
    titles = {f"Offer {i}" for i in range(30)}
    for title in sorted(titles):
        assert east.post("/api/v1/items", {**OFFER, "title": title}).status_code == 201
    west.node.start()
    eventually(lambda: west.remote_titles() == titles | {"Before"}, "all 30 at west", nodes=nodes)
    assert west.peer(east.node.url)["received_seq"] == 31


def test_an_origin_killed_right_after_accepting_posts_loses_none(pair):
    east, west = pair
    nodes = (east.node, west.node)
    ally(east, west)
    titles = {f"Offer {i}" for i in range(30)}
    for title in sorted(titles):
        assert east.post("/api/v1/items", {**OFFER, "title": title}).status_code == 201
    east.node.stop(signal.SIGKILL)  # no graceful shutdown: only what was committed survives
    east.node.start()
    local = east.get("/api/v1/items", origin="local", limit=200).json()["items"]
    assert {item["title"] for item in local} == titles
    assert east.node.cli("check").stdout.startswith("ok: 30 entries")
    eventually(lambda: west.remote_titles() == titles, "all 30 at west", nodes=nodes)


def test_pushed_entries_arrive_without_waiting_for_a_pull(tmp_path):
    """With pulls an hour apart, only pushes can carry a post to the ally."""
    slow = {"AIDNODE_POLL_INTERVAL": "3600"}
    east = LiveNode(tmp_path, "Eastside", env=slow).init()
    west = LiveNode(tmp_path, "Westside", env=slow).init()
    admins = Admin(east), Admin(west)
    east.start(), west.start()
    try:
        ally(*admins)
        for i in range(3):
            admins[0].post("/api/v1/items", {**OFFER, "title": f"Pushed {i}"})
        eventually(lambda: admins[1].remote_titles() == {"Pushed 0", "Pushed 1", "Pushed 2"},
                   "the pushed offers at west", nodes=(east, west))  # fmt: skip
        assert admins[0].peer(west.url)["delivered_seq"] == 3
        # And west's cursor, as east may ask for it, says the same.
    finally:
        east.stop(), west.stop()


def test_unsigned_wrongly_signed_and_forged_pushes_to_a_real_node_change_nothing(pair):
    from datetime import UTC, datetime

    from federation.entries import sign_entry
    from federation.httpsig import sign_request
    from federation.keys import generate_key, load_key

    east, west = pair
    ally(east, west)
    eventually(lambda: west.peer(east.node.url)["we_follow"] == "accepted", "west following")
    east_key = load_key(east.node.data / "keys" / "main.pem", "main")
    inbox = f"{west.node.url}/federation/inbox"
    entry = sign_entry(origin=east.node.url, seq=1, prev=None, type="item",
                       at="2026-11-24T18:00:00Z", key=east_key, body={
                           "id": f"{east.node.url}/items/00000000-0000-4000-8000-000000000001",
                           "kind": "offer", "title": "Planted", "body": "Not posted at east.",
                           "category": "food", "status": "open", "reach": "allies",
                           "created": "2026-11-24T18:00:00Z", "updated": "2026-11-24T18:00:00Z",
                           "expires": "2026-12-24T18:00:00Z", "version": 1, "author": "Mallory"})  # fmt: skip
    body = {"type": "entries", "origin": east.node.url, "entries": [entry]}

    def post(key, key_id, payload) -> httpx.Response:
        request = httpx.Request("POST", inbox, json=payload)
        if key is not None:
            sign_request(request, key, key_id, now=datetime.now(UTC))
        with httpx.Client() as client:
            return client.send(request)

    assert post(None, None, body).status_code == 401  # unsigned
    thief = generate_key("main")
    assert post(thief, f"{east.node.url}#main", body).status_code == 401  # wrong key
    # East's real key, pushing entries it says are another node's: refused.
    forged = {**body, "origin": "http://127.0.0.1:9"}
    assert post(east_key, f"{east.node.url}#main", forged).status_code == 403
    # Entries from east's own chain, but signed by another key: refused, with what west holds.
    stolen_name = sign_entry(origin=east.node.url, seq=1, prev=None, type="item", key=thief,
                             at=entry["at"], body=entry["body"])  # fmt: skip
    planted = post(east_key, f"{east.node.url}#main", {**body, "entries": [stolen_name]})
    assert planted.status_code == 422 and planted.json()["received"] == {"seq": 0, "hash": None}
    assert "Planted" not in west.remote_titles()
    assert west.peer(east.node.url)["received_seq"] == 0


def test_a_node_with_the_guard_on_refuses_a_peer_at_a_private_address(tmp_path):
    guarded = LiveNode(tmp_path, "Guarded", env={"AIDNODE_ALLOW_PRIVATE_ADDRESSES": "0"}).init()
    other = LiveNode(tmp_path, "Other").init()
    admin = Admin(guarded)
    guarded.start(), other.start()
    try:
        refused = admin.post("/api/v1/peers", {"url": other.url})
        assert refused.status_code == 502 and "loopback" in refused.json()["error"]
        assert admin.get("/api/v1/peers").json() == {"peers": []}
        assert "GET /.well-known/aidnode" not in other.log()  # no request ever reached it
    finally:
        guarded.stop(), other.stop()


def test_naming_a_real_node_in_a_forged_subscription_gets_it_nowhere(pair):
    """West fetches East's document to learn the key a subscription names, but keeps nothing
    unless the request verifies with it: a forger cannot fill West's peer list."""
    from datetime import UTC, datetime

    from federation.httpsig import sign_request
    from federation.keys import generate_key

    east, west = pair
    request = httpx.Request("POST", f"{west.node.url}/federation/subscriptions",
                            json={"subscriber": east.node.url})  # fmt: skip
    sign_request(request, generate_key("main"), f"{east.node.url}#main", now=datetime.now(UTC))
    with httpx.Client() as client:
        refused = client.send(request)
    assert refused.status_code == 401
    assert "GET /.well-known/aidnode" in east.node.log()  # it was looked up
    assert west.get("/api/v1/peers").json() == {"peers": []}  # and not kept
    ally(east, west)  # the genuine subscription still goes through

"""Responses for real (DESIGN §7): nodes as `aidnode serve` processes on 127.0.0.1 ports. A
member at one node responds to an allied node's offer over the real API; the offer's poster
sees it, with the contact, and accepts it; the responder's node hears so. The contact is in
no node's feed and nowhere in the responder's database file. A node that is no ally may
respond too, and is listed apart; once blocked, it may not."""

import contextlib
import re
import sqlite3
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from federation.httpsig import sign_request
from federation.keys import load_key
from tests.live import LiveNode
from tests.test_allies_live import FAST, OFFER, Admin, ally, eventually

pytestmark = pytest.mark.live

ADMIN_PASSWORD = "a long test password"
CONTACT = "ring Sam: 555-0142 or sam.k@westside.example"
STRANGER_CONTACT = "north-9931@northside.example"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def join_as_member(node: LiveNode, username: str) -> dict:
    """A member who joined by an invite link, through the join form; their API headers."""
    link = node.cli("invite").stdout.strip()
    with httpx.Client(timeout=20) as browser:
        form = browser.get(link)
        assert form.status_code == 200, form.text
        joined = browser.post(link, data={
            "username": username, "display_name": username.title(), "password": "a fine passphrase 42",
            "password_again": "a fine passphrase 42", "csrf_token": csrf_of(form.text)})  # fmt: skip
        assert joined.status_code == 303, joined.text
    token = node.cli("token", "--username", username).stdout.strip()
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def logged_in(node: LiveNode, username: str, password: str):
    """A browser logged in through the login form."""
    with httpx.Client(base_url=node.url, timeout=20) as browser:
        form = browser.get("/login")
        answer = browser.post("/login", data={"username": username, "password": password,
                                              "csrf_token": csrf_of(form.text), "next": "/"})  # fmt: skip
        assert answer.status_code == 303, answer.text
        yield browser


def signed_post(node: LiveNode, url: str, body: dict) -> httpx.Response:
    """A request signed with `node`'s own key, as that node would send it."""
    request = httpx.Request("POST", url, json=body)
    sign_request(request, load_key(node.data / "keys" / "main.pem", "main"), f"{node.url}#main",
                 now=datetime.now(UTC))  # fmt: skip
    with httpx.Client(timeout=20) as client:
        return client.send(request)


def signed_feed(reader: LiveNode, of: LiveNode) -> str:
    """`of`'s whole feed as `reader` (an ally) reads it."""
    request = httpx.Request("GET", f"{of.url}/federation/feed?after=0&limit=1000")
    sign_request(request, load_key(reader.data / "keys" / "main.pem", "main"), f"{reader.url}#main",
                 now=datetime.now(UTC))  # fmt: skip
    with httpx.Client(timeout=20) as client:
        answer = client.send(request)
    assert answer.status_code == 200, answer.text
    return answer.text


def feed_table(node: LiveNode) -> str:
    """Every entry a node holds in its feed, read from its database."""
    connection = sqlite3.connect(f"file:{node.data / 'aidnode.db'}?mode=ro", uri=True)
    try:
        return "\n".join(row[0] for row in connection.execute("SELECT entry FROM feed"))
    finally:
        connection.close()


def database_bytes(node: LiveNode) -> bytes:
    """The node's SQLite files, byte for byte (the database and its write-ahead log)."""
    return b"".join(path.read_bytes() for path in sorted(node.data.glob("aidnode.db*")))


@pytest.fixture
def trio(tmp_path):
    east = LiveNode(tmp_path, "Eastside", env=FAST).init()
    west = LiveNode(tmp_path, "Westside", env=FAST).init()
    north = LiveNode(tmp_path, "Northside", env=FAST).init()
    admins = Admin(east), Admin(west), Admin(north)
    for node in (east, west, north):
        node.start()
    try:
        yield admins
    finally:
        for node in (east, west, north):
            node.stop()


def test_a_response_crosses_to_the_origin_is_accepted_and_the_contact_stays_there(trio):
    east, west, north = trio
    nodes = (east.node, west.node, north.node)
    # East and West are allies; East's admin offers a ramp to allies.
    ally(east, west)
    offer = east.post("/api/v1/items", OFFER).json()
    assert offer["reach"] == "allies"
    eventually(lambda: OFFER["title"] in west.remote_titles(), "east's offer at west", nodes=nodes)
    # Sam, a member at West, responds over West's API.
    sam = join_as_member(west.node, "sam")
    sent = httpx.post(f"{west.node.url}/api/v1/responses", headers=sam, timeout=30, json={
        "item": offer["id"], "message": "Could I borrow it on Saturday?", "contact": CONTACT})  # fmt: skip
    assert sent.status_code == 202, sent.text + west.node.log() + east.node.log()
    response_id = sent.json()["id"]
    # East's poster sees it, with the contact.
    [received] = east.get("/api/v1/responses").json()["responses"]
    assert received == {"id": response_id, "item": offer["id"],
                        "from": {"node": west.node.url, "name": "Sam"},
                        "message": "Could I borrow it on Saturday?", "contact": CONTACT,
                        "received": received["received"], "state": "pending"}  # fmt: skip
    # West keeps Sam's record, without the contact.
    mine = httpx.get(f"{west.node.url}/api/v1/responses/sent", headers=sam, timeout=10).json()
    assert [(r["id"], r["state"]) for r in mine["responses"]] == [(response_id, "pending")]
    # The poster accepts it: the offer is promised, at East and then at West.
    accepted = east.patch(f"/api/v1/responses/{response_id}", {"state": "accepted"})
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    uuid_ = offer["id"].rsplit("/", 1)[1]
    assert east.get(f"/api/v1/items/{uuid_}").json()["status"] == "promised"
    # West hears of it and records it for Sam.
    eventually(lambda: httpx.get(f"{west.node.url}/api/v1/responses/sent", headers=sam,
                                 timeout=10).json()["responses"][0]["state"] == "accepted",
               "west recording the acceptance", nodes=nodes)  # fmt: skip
    eventually(lambda: west.get("/api/v1/items", origin="remote", status="promised").json()["items"],
               "the promised offer at west", nodes=nodes)  # fmt: skip
    # The contact is in no node's feed, as allies read it or as each node holds it...
    for reader, of in ((west, east), (east, west)):
        assert "555-0142" not in signed_feed(reader.node, of.node)
    for node in nodes:
        assert "555-0142" not in feed_table(node) and "sam.k@" not in feed_table(node)
    # ...and nowhere in the responder's database, while the origin holds it.
    assert b"555-0142" not in database_bytes(west.node)
    assert b"Could I borrow it" in database_bytes(west.node)  # what Sam wrote is kept


def test_a_node_that_is_no_ally_may_respond_is_listed_apart_and_can_be_blocked(trio):
    east, west, north = trio
    nodes = (east.node, west.node, north.node)
    offer = east.post("/api/v1/items", OFFER).json()
    inbox = f"{east.node.url}/federation/inbox"

    def response_from_north(message: str) -> dict:
        return {"type": "response", "id": str(uuid.uuid4()), "item": offer["id"],
                "from": {"node": north.node.url, "name": "Noor"}, "message": message,
                "contact": STRANGER_CONTACT,
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip

    # North, which East has never met, responds: East learns its key from its document.
    answer = signed_post(north.node, inbox, response_from_north("Found this through a friend."))
    assert answer.status_code == 202, answer.text + east.node.log()
    assert "GET /.well-known/aidnode" in north.node.log()
    peer = east.peer(north.node.url)
    assert (peer["name"], peer["trust"]) == ("Northside", "unknown")
    [shown] = east.get("/api/v1/responses").json()["responses"]
    assert shown["from"]["node"] == north.node.url and shown["contact"] == STRANGER_CONTACT
    # On the offer's page, its response is listed apart, with a one-click block.
    with logged_in(east.node, "admin", ADMIN_PASSWORD) as browser:
        page = browser.get(f"/items/{offer['id'].rsplit('/', 1)[1]}").text
        apart = page[page.index('id="responses-from-others"'):]
        assert "Found this through a friend." in apart
        assert f'action="/admin/peers/{peer["id"]}"' in apart
        blocked = browser.post(f"/admin/peers/{peer['id']}",
                               data={"action": "block", "csrf_token": csrf_of(page)})  # fmt: skip
        assert blocked.status_code == 303
    assert east.peer(north.node.url)["trust"] == "blocked"
    # Blocked, North's responses are refused and its earlier one no longer shown.
    refused = signed_post(north.node, inbox, response_from_north("Again."))
    assert refused.status_code in (401, 403), refused.text
    assert east.get("/api/v1/responses").json() == {"responses": []}
    assert all(STRANGER_CONTACT not in feed_table(node) for node in nodes)

"""Hostile peers, for real (issue 8, "Nothing lost, no one let in"): a node that the target
trusts and follows, played by a `ScriptedPeer`, sends what an attacker or a broken node would,
over real HTTP to a real `aidnode serve` process, by both delivery paths: pushes to the
target's inbox, and the target pulling the peer's feed.

Every case ends the same way: a request gets a clear 4xx with a JSON `{"error"}`; feed content
that breaks the chain stops there (the cursor does not move) and content that breaks the item
rules is dropped with its reason recorded on the peer; the target's store is unchanged (items
and feed entries, read from its SQLite file read-only); and the target still serves (/healthz,
a member posts and browses). One target node serves the whole module; each test brings its own
scripted peers, so a fork or a back-off in one test cannot touch another.
"""

import contextlib
import json
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from federation.encoding import b64url_encode
from federation.entries import entry_hash, signing_input
from federation.keys import generate_key
from federation.timefmt import format_time
from tests.conftest import csrf_of
from tests.live import LiveNode
from tests.scripted_peer import ScriptedPeer
from tests.test_allies_live import FAST, PASSWORD, Admin, eventually

pytestmark = pytest.mark.live

MIB = 1024 * 1024
MEMBER_PASSWORD = "another long test password"
XSS = ['<script>alert(1)</script>', '<img src=x onerror="alert(2)">', '"><svg onload=alert(3)>']
DANGEROUS = ("<script>alert", "<img src=x", "<svg onload", 'onerror="alert')


# ---------------------------------------------------------------------------- the target


class Target:
    """The real node under attack: its admin and a member over the API, and its file read-only."""

    def __init__(self, node: LiveNode, admin: Admin, member_headers: dict) -> None:
        self.node, self.admin, self.member_headers = node, admin, member_headers
        self.url = node.url
        self.inbox = f"{node.url}/federation/inbox"

    def db(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(f"file:{self.node.data / 'aidnode.db'}?mode=ro", uri=True,
                             timeout=10) as db:  # fmt: skip
            return db.execute(sql, params).fetchall()

    def store(self) -> dict:
        """What must not change under attack: every item held (id, version, title) and the
        node's own feed."""
        return {"items": sorted(self.db("SELECT id, version, title FROM items")),
                "feed": self.db("SELECT seq, hash FROM feed ORDER BY seq")}  # fmt: skip

    def peer(self, peer: ScriptedPeer) -> dict:
        return self.admin.peer(peer.url)

    def refusals(self, peer: ScriptedPeer) -> list[str]:
        return [reason for (reason,) in self.db(
            "SELECT reason FROM ingest_refusals JOIN peers ON peers.id = peer_id"
            " WHERE peers.url = ? ORDER BY ingest_refusals.id", peer.url)]  # fmt: skip

    def add(self, peer: ScriptedPeer) -> dict:
        """The admin adds the peer through the API: pinned, trusted, followed, its feed read."""
        added = self.admin.post("/api/v1/peers", {"url": peer.url})
        assert added.status_code == 201, added.text
        return eventually(lambda: self.peer(peer)["we_follow"] == "accepted" and self.peer(peer),
                          "the target reading the peer's feed", nodes=(self.node,))  # fmt: skip

    def pull(self, peer: ScriptedPeer) -> None:
        """Have the target read the peer's feed now: an admin's follow is a retry (it clears
        any back-off and wakes the reader)."""
        reads = peer.feed_reads
        changed = self.admin.patch(f"/api/v1/peers/{self.peer(peer)['id']}", {"follow": True})
        assert changed.status_code == 200, changed.text
        eventually(lambda: peer.feed_reads > reads, "the target reading the feed", nodes=(self.node,))

    def still_serving(self) -> None:
        """/healthz answers, a member posts and browses, and nothing went wrong inside."""
        assert httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200
        title = f"Still here {uuid.uuid4().hex[:8]}"
        posted = httpx.post(f"{self.url}/api/v1/items", headers=self.member_headers, timeout=20,
                            json={"kind": "need", "title": title, "body": "Soup.",
                                  "category": "food", "escalation": "never"})  # fmt: skip
        assert posted.status_code == 201, posted.text
        listed = httpx.get(f"{self.url}/api/v1/items", headers=self.member_headers, timeout=10,
                           params={"q": title.split()[-1]})  # fmt: skip
        assert [i["title"] for i in listed.json()["items"]] == [title]
        log = self.node.log()
        assert "Traceback" not in log and '" 500' not in log, log


def assert_refused(response: httpx.Response, status: int) -> None:
    """A clear 4xx with a JSON {"error": text}."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert isinstance(response.json().get("error"), str) and response.json()["error"]


def join(node: LiveNode, link: str) -> None:
    """A member joins through the invitation form, as a person would."""
    path = "/" + link.split("/", 3)[3]
    with httpx.Client(base_url=node.url, timeout=20) as browser:
        page = browser.get(path)
        assert page.status_code == 200, page.text[:500]
        joined = browser.post(path, data={"username": "member", "display_name": "Mo",
                                          "password": MEMBER_PASSWORD,
                                          "password_again": MEMBER_PASSWORD,
                                          "csrf_token": csrf_of(page.text)})  # fmt: skip
        assert joined.status_code == 303, joined.text[:500]


@contextlib.contextmanager
def logged_in(node: LiveNode) -> Iterator[httpx.Client]:
    """The admin's browser, logged in through the login form."""
    with httpx.Client(base_url=node.url, timeout=20) as browser:
        page = browser.get("/login")
        done = browser.post("/login", data={"username": "admin", "password": PASSWORD.strip(),
                                            "csrf_token": csrf_of(page.text), "next": "/"})  # fmt: skip
        assert done.status_code == 303, done.text[:500]
        yield browser


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    node = LiveNode(root, "Target", env=FAST).init()
    admin = Admin(node)
    link = node.cli("invite").stdout.strip()
    node.start()
    try:
        join(node, link)
        token = node.cli("token", "--username", "member").stdout.strip()
        yield Target(node, admin, {"Authorization": f"Bearer {token}"})
    finally:
        node.stop()


@pytest.fixture
def peers(target):
    """Scripted peers for one test (`peers()` starts one; `peers(add=True)` has the target's
    admin add it), all stopped when the test ends."""
    started: list[ScriptedPeer] = []

    def make(name: str = "Hostile", description: str = "", *, add: bool = True) -> ScriptedPeer:
        peer = ScriptedPeer(name, description).start()
        started.append(peer)
        if add:
            target.add(peer)
        return peer

    yield make
    for peer in started:
        peer.stop()


# ---------------------------------------------------------------------------- entries


def state(peer: ScriptedPeer, n: int = 1, **changes) -> dict:
    """A valid item state of the peer's (an offer to allies), with `changes`."""
    now = datetime.now(UTC).replace(microsecond=0)
    # Ids unique to the peer (its port): item pages are found by uuid.
    base = {"id": f"{peer.url}/items/{peer.port:08x}-0000-4000-8000-{n:012d}", "kind": "offer",
            "title": f"Soup {n}", "body": "Lentil soup.", "category": "food", "status": "open",
            "reach": "allies", "created": format_time(now - timedelta(minutes=1)),
            "updated": format_time(now - timedelta(minutes=1)),
            "expires": format_time(now + timedelta(days=20)), "version": 1, "author": "Jo"}  # fmt: skip
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def need(peer: ScriptedPeer, n: int = 1, **changes) -> dict:
    return state(peer, n, kind="need", urgency="normal", reach="network", hop_limit=2, **changes)


def chain(peer: ScriptedPeer, bodies: list[tuple[str, dict]], *, start: int = 1,
          prev: str | None = None) -> list[dict]:  # fmt: skip
    """Entries `start`, `start`+1, … of the peer's chain, signed and linked, not appended."""
    entries = []
    for offset, (type, body) in enumerate(bodies):
        entries.append(peer.sign(type, body, seq=start + offset, prev=prev))
        prev = entry_hash(entries[-1])
    return entries


def resign(peer: ScriptedPeer, entry: dict, key=None) -> dict:
    """Sign an entry as it stands (however it breaks the rules) with `key` (default the
    peer's): a chain-valid signature over chain-invalid content."""
    unsigned = {name: value for name, value in entry.items() if name != "sig"}
    return {**unsigned, "sig": b64url_encode((key or peer.key).sign(signing_input(unsigned)))}


def deliver(target: Target, peer: ScriptedPeer, entries: list[dict], path: str,
            push_status: int | None = None) -> None:  # fmt: skip
    """Send entries by `path`: pushed to the inbox (the answer must be `push_status`), or put
    in the peer's feed (after what it served before) and read by the target."""
    if path == "push":
        answer = peer.push(target.url, entries)
        if push_status == 200:
            assert answer.status_code == 200, answer.text
        else:
            assert_refused(answer, push_status)
    else:
        peer.entries = [*peer.entries, *entries]
        target.pull(peer)


PATHS = ["push", "pull"]


# ---------------------------------------------------------------------------- chain validity


def _other_key(peer):
    return [resign(peer, peer.sign("item", state(peer), seq=1, prev=None), key=generate_key("main"))]


def _tampered(peer):
    entry = peer.sign("item", state(peer), seq=1, prev=None)
    return [{**entry, "body": {**entry["body"], "title": "Send money to this account"}}]


def _gap(peer):
    first = peer.sign("item", state(peer), seq=1, prev=None)
    return chain(peer, [("item", state(peer, 2)), ("item", state(peer, 3))], start=2,
                 prev=entry_hash(first))  # fmt: skip


def _seq_as_text(peer):
    return [resign(peer, {**peer.sign("item", state(peer), seq=1, prev=None), "seq": "1"})]


def _seq_zero(peer):
    return [resign(peer, {**peer.sign("item", state(peer), seq=1, prev=None), "seq": 0})]


def _extra_field(peer):
    return [resign(peer, {**peer.sign("item", state(peer), seq=1, prev=None), XSS[0]: 1})]


def _origin_not_the_signer(peer):
    entry = peer.sign("item", state(peer), seq=1, prev=None)
    return [resign(peer, {**entry, "origin": "http://127.0.0.1:9", "key": "http://127.0.0.1:9#main"})]


def _key_of_another_node(peer):
    return [resign(peer, {**peer.sign("item", state(peer), seq=1, prev=None),
                          "key": "http://127.0.0.1:9#main"})]  # fmt: skip


def _oversized(peer):  # chain validity includes size: an item entry is at most 16 KiB
    entry = peer.sign("item", state(peer), seq=1, prev=None)
    return [resign(peer, {**entry, "body": {**entry["body"], "body": "x" * (17 * 1024)}})]


def _short_signature(peer):
    return [{**peer.sign("item", state(peer), seq=1, prev=None), "sig": "AAAA"}]


CHAIN_CASES = {
    # case: (entries from the peer, the push's answer, what the refusal says)
    "signed with another key": (_other_key, 422, "signature does not verify"),
    "tampered after signing": (_tampered, 422, "signature does not verify"),
    "a gap": (_gap, 409, "expected entry 1, got 2"),
    "seq as text": (_seq_as_text, 409, "seq must be a whole number"),
    "seq 0": (_seq_zero, 422, "seq must be a whole number"),
    "an unexpected field": (_extra_field, 422, "entry fields wrong"),
    "another origin": (_origin_not_the_signer, 422, "origin is not the expected node"),
    "another node's key": (_key_of_another_node, 422, "one of the origin's keys"),
    "over 16 KiB": (_oversized, 422, "at most 16384 bytes"),
    "a short signature": (_short_signature, 422, "sig"),
}


@pytest.mark.parametrize("path", PATHS)
def test_entries_that_break_the_chain_are_refused_and_move_nothing(target, peers, path):
    """Bad signatures, gaps, wrong types and oversized entries: refused, cursor unmoved."""
    cases = list(CHAIN_CASES.items())
    hostile = [peers(f"Hostile {n}") for n in range(len(cases))]
    before = target.store()
    for peer, (case, (make, push_status, reason)) in zip(hostile, cases, strict=True):
        # The peer sends the bad entries.
        deliver(target, peer, make(peer), path, push_status)
        if path == "pull":  # the reason is recorded on the peer
            eventually(lambda peer=peer, reason=reason: reason in (target.peer(peer)["last_error"] or ""),
                       f"{case}: the refusal recorded", nodes=(target.node,))  # fmt: skip
        # Nothing was taken in from it.
        shown = target.peer(peer)
        assert shown["received_seq"] == 0, (case, shown)
        assert target.store() == before, case
    target.still_serving()


# ---------------------------------------------------------------------------- content validity


CONTENT_CASES = [
    # (changes to a valid state, what the refusal says)
    ({"title": "x" * 121}, "title"),
    ({"location": {"label": "Market square", "geohash": "u4pruy"}}, "geohash"),
    ({"category": "weapons"}, "category"),
    ({"kind": "need", "urgency": "normal", "reach": "network", "hop_limit": 50}, "hop_limit"),
    ({"id": "http://127.0.0.1:9/items/00000000-0000-4000-8000-000000000009"}, "not under its origin"),
    ({"reach": "local"}, "a local item is not for other nodes"),
    ({"version": 0}, "version"),
    ({"tags": ["x" * 33]}, "tags"),
    ({XSS[1]: "field"}, "is not a known field"),
    # Wrong types, field by field.
    ({"title": 5}, "title"),
    ({"tags": "soup"}, "tags"),
    ({"tags": [5]}, "tags"),
    ({"location": ["Market square"]}, "location"),
    ({"location": {"label": 5}}, "location.label"),
    ({"location": {"label": "Market", "geohash": 5}}, "geohash"),
    ({"version": "1"}, "version"),
    ({"version": True}, "version"),
    ({"kind": "need", "urgency": "normal", "reach": "network", "hop_limit": "2"}, "hop_limit"),
    ({"expires": 1}, "expires"),
    ({"created": "2026-13-45T00:00:00Z"}, "created"),
    ({"status": "deleted"}, "status"),
    ({"author": ""}, "author"),
    ({"kind": ["offer"]}, "kind"),
    ({"body": None}, "body"),
    ({"quantity": {"n": 2}}, "quantity"),
]


@pytest.mark.parametrize("path", PATHS)
def test_items_that_break_the_item_rules_are_dropped_with_the_reason(target, peers, path):
    """The chain goes on (the cursor moves) but no state is applied; each reason is recorded."""
    peer = peers()
    before = target.store()
    entries = chain(peer, [("item", state(peer, n + 1, **changes))
                           for n, (changes, _) in enumerate(CONTENT_CASES)])  # fmt: skip
    deliver(target, peer, entries, path, 200)
    eventually(lambda: target.peer(peer)["received_seq"] == len(entries), "the entries read",
               nodes=(target.node,))  # fmt: skip
    reasons = eventually(lambda: len(target.refusals(peer)) == len(CONTENT_CASES) and target.refusals(peer),
                         "the refusals recorded", nodes=(target.node,))  # fmt: skip
    for reason, (changes, expected) in zip(reasons, CONTENT_CASES, strict=True):
        assert expected in reason, (changes, reason)
    assert target.store() == before
    assert target.peer(peer)["last_error"] is None  # content refusals never stop the chain
    target.still_serving()


# ---------------------------------------------------------------------------- forks


@pytest.mark.parametrize("path", PATHS)
def test_a_fork_keeps_the_first_entry_and_stops_reading_that_node(target, peers, path):
    peer = peers()
    # The peer's genuine entry 1 is taken in.
    genuine = chain(peer, [("item", state(peer, title="Genuine soup"))])
    deliver(target, peer, genuine, path, 200)
    eventually(lambda: target.peer(peer)["received_seq"] == 1, "entry 1 taken", nodes=(target.node,))
    before = target.store()
    # Then it signs a different entry 1 (and, for readers of its feed, an entry 2 after it).
    other = chain(peer, [("item", state(peer, title="Rewritten soup")), ("item", state(peer, 2))])
    if path == "push":
        deliver(target, peer, other[:1], path, 422)
    else:
        peer.entries = other
        target.pull(peer)
    shown = eventually(lambda: (target.peer(peer)["last_error"] or "").startswith("fork:")
                       and target.peer(peer), "the fork recorded", nodes=(target.node,))  # fmt: skip
    assert shown["received_seq"] == 1
    assert target.store() == before
    assert "Genuine soup" in {title for _, _, title in before["items"]}
    # Reading that node has stopped: its genuine entry 2 is not taken either.
    follow_up = chain(peer, [("item", state(peer, 2))], start=2, prev=entry_hash(genuine[0]))
    assert_refused(peer.push(target.url, follow_up), 422)
    assert target.peer(peer)["received_seq"] == 1 and target.store() == before
    # The admin page says so, with a way to re-sync.
    with logged_in(target.node) as browser:
        html = browser.get("/admin/peers").text
    assert "Fork: reading stopped" in html and 'value="resync"' in html
    target.still_serving()


# ---------------------------------------------------------------------------- relays


@pytest.mark.parametrize("path", PATHS)
def test_relays_with_tampered_inner_entries_are_refused(target, peers, path):
    """A trusted relayer passes on an origin's need altered, re-signed, mislabelled or in the
    wrong shape: the target checks each inner entry with the origin's own key (learned from
    the origin's document) and shows none; the genuine one, relayed after, is shown."""
    origin = peers("Origin", add=False)  # never added: the target learns its key on its own
    genuine = origin.append("item", need(origin, title="Ride to the clinic"))
    relayer = peers("Relayer")
    before = target.store()
    forged = {**genuine, "body": {**genuine["body"], "title": "Forged"}}
    hostile = [
        ("relay", {"entry": {**genuine, "body": {**genuine["body"], "title": "Send money"}},
                   "path": [relayer.url]}),
        ("relay", {"entry": resign(origin, forged, key=relayer.key), "path": [relayer.url]}),
        ("relay", {"entry": {**genuine, "key": f"{origin.url}#other"}, "path": [relayer.url]}),
        ("relay", {"entry": genuine, "path": ["http://127.0.0.1:9", relayer.url][::-1]}),
        ("relay", {"entry": resign(origin, {**genuine, "body": state(origin, 2)}), "path": [relayer.url]}),
        ("relay", {"entry": genuine, "path": [relayer.url], "note": XSS[2]}),
    ]
    entries = chain(relayer, hostile)
    deliver(target, relayer, entries, path, 200)
    reasons = eventually(lambda: len(target.refusals(relayer)) == len(hostile) and target.refusals(relayer),
                         "every relay refused", nodes=(target.node,))  # fmt: skip
    assert all(reason.startswith("relay: ") for reason in reasons), reasons
    assert sum("signature does not verify" in r for r in reasons) == 2, reasons
    assert "key in force" in reasons[2] and "must end with" in reasons[3], reasons
    assert "only needs at network reach" in reasons[4] and "{entry, path}" in reasons[5], reasons
    assert target.store() == before
    # The genuine relay, after them, is taken and shown as relayed.
    deliver(target, relayer, chain(relayer, [("relay", {"entry": genuine, "path": [relayer.url]})],
                                   start=len(entries) + 1, prev=entry_hash(entries[-1])), path, 200)
    held = eventually(lambda: target.admin.get("/api/v1/items", origin="remote",
                                               id=genuine["body"]["id"]).json()["items"],
                      "the genuine need held", nodes=(target.node,))  # fmt: skip
    assert [(i["title"], i["via"]) for i in held] == [("Ride to the clinic", [relayer.url])]
    target.still_serving()


# ---------------------------------------------------------------------------- requests


def _request_cases(peer: ScriptedPeer, target: Target):
    """(case, request, expected status) for bad requests a trusted, followed peer sends."""
    inbox = target.inbox
    valid = {"type": "entries", "origin": peer.url, "entries": chain(peer, [("item", state(peer))])}
    now = datetime.now(UTC)
    swapped = peer.signed("POST", inbox, valid)
    swapped = httpx.Request("POST", swapped.url, headers=swapped.headers,
                            content=swapped.content.replace(b"Soup", b"Soap"))  # fmt: skip
    raw = [
        ("malformed JSON", b'{"type": "entries", "origin": ', 400),
        ("duplicate keys", b'{"type": "subscription", "type": "entries"}', 400),
        ("a float", b'{"type": "subscription", "state": 1.5}', 400),
        ("NaN", b'{"type": "subscription", "state": NaN}', 400),
        ("deep nesting", b'{"type": "x", "a": ' + b"[" * 100 + b"]" * 100 + b"}", 400),
        ("not UTF-8", b'{"type": "\xff"}', 400),
    ]
    typed = [
        ("entries not a list", {"type": "entries", "origin": peer.url, "entries": "nope"}, 400),
        ("too many entries", {"type": "entries", "origin": peer.url, "entries": [{}] * 101}, 400),
        ("type not text", {"type": 5}, 400),
        ("an unknown type", {"type": "gossip"}, 400),
        ("an array", ["entries"], 400),
        ("extra fields", {**valid, "extra": True}, 400),
        ("entries of another origin", {**valid, "origin": "http://127.0.0.1:9"}, 403),
        ("an entry not an object", {"type": "entries", "origin": peer.url, "entries": [123]}, 409),
        ("a bad subscription state", {"type": "subscription", "state": 5}, 400),
    ]
    yield "unsigned", httpx.Request("POST", inbox, json=valid), 401
    yield "signed with another key", peer.signed("POST", inbox, valid, key=generate_key("main")), 401
    yield "body swapped under the signature", swapped, 401
    yield "signed an hour ago", peer.signed("POST", inbox, valid, now=now - timedelta(hours=1)), 401
    yield "signed an hour ahead", peer.signed("POST", inbox, valid, now=now + timedelta(hours=1)), 401
    yield "a short nonce", peer.signed("POST", inbox, valid, nonce="abc"), 401
    yield "not JSON", peer.signed("POST", inbox, content=b"hello"), 400
    plain = peer.signed("POST", inbox, valid)
    plain.headers["content-type"] = "text/plain"
    yield "sent as text/plain", plain, 415
    for case, content, status in raw:
        yield case, peer.signed("POST", inbox, content=content), status
    for case, body, status in typed:
        yield case, peer.signed("POST", inbox, body), status
    padded = {"type": "subscription", "state": "accepted", "pad": "x" * (600 * 1024)}
    yield "over the inbox's 512 KiB", peer.signed("POST", inbox, padded), 413
    yield "over 1 MiB, not even JSON, unsigned", httpx.Request("POST", inbox, content=b"x" * (MIB + 1),
                                                              headers={"Content-Type": "application/json"}), 413  # fmt: skip
    subscriptions = f"{target.url}/federation/subscriptions"
    yield "subscribing another node", peer.signed("POST", subscriptions,
                                                  {"subscriber": "http://127.0.0.1:9"}), 400  # fmt: skip
    for query in ("after=-1", "after=abc", "limit=5000", "limit=0", "after=1&evil=1"):
        yield f"feed ?{query}", peer.signed("GET", f"{target.url}/federation/feed?{query}"), 400


def test_bad_requests_get_a_clear_4xx_and_change_nothing(target, peers):
    """Forged, stale and swapped signatures, malformed JSON, wrong types, oversized bodies:
    each a 4xx with a JSON error, and nothing changes."""
    peer = peers()
    before, held = target.store(), target.peer(peer)
    for case, request, status in _request_cases(peer, target):
        answer = peer.send(request)
        try:
            assert_refused(answer, status)
        except AssertionError as error:
            raise AssertionError(f"{case}: {error}") from None
    assert target.store() == before
    after = target.peer(peer)
    assert (after["received_seq"], after["trust"], after["we_follow"]) == (
        held["received_seq"], held["trust"], held["we_follow"])
    target.still_serving()


def test_a_replayed_request_is_refused_even_with_a_fresh_signature(target, peers):
    """The same nonce twice: the second is 401, whether the request is replayed verbatim or
    signed anew over another body."""
    peer = peers()
    entries = chain(peer, [("item", state(peer, title="Soup once")), ("item", state(peer, 2))])
    first = peer.signed("POST", target.inbox, {"type": "entries", "origin": peer.url,
                                               "entries": entries[:1]})  # fmt: skip
    assert peer.send(first).status_code == 200
    before = target.store()
    # The same request, byte for byte.
    assert_refused(peer.send(first), 401)
    # A new request over entry 2, signed now, reusing the first one's nonce.
    nonce = re.search(r'nonce="([^"]+)"', first.headers["signature-input"]).group(1)
    again = peer.signed("POST", target.inbox, {"type": "entries", "origin": peer.url,
                                               "entries": entries[1:]}, nonce=nonce)  # fmt: skip
    assert_refused(peer.send(again), 401)
    # And a signed read of the cursor, twice.
    read = peer.signed("GET", f"{target.url}/federation/cursor")
    assert peer.send(read).json()["received"]["seq"] == 1
    assert_refused(peer.send(read), 401)
    assert target.store() == before and target.peer(peer)["received_seq"] == 1
    target.still_serving()


def _raw_post(port: int, head: bytes, chunks=()) -> tuple[bytes, float]:
    """Send a request's head and then body chunks over a plain socket (stopping when the node
    closes), and read the answer; return it with the seconds it took after the head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node answered and closed before the body was all sent: as it should
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (TimeoutError, ConnectionResetError):
            pass
        return answer, time.monotonic() - started


def test_an_oversized_body_is_refused_before_it_is_read_or_parsed(target, peers):
    """Over 1 MiB is 413 before anything else: before the signature is checked (an unsigned
    body gets 413, not 401), before it is parsed (a body that is not JSON gets 413, not
    400), and before it is even read (a body announced but never sent is answered at once)."""
    peer = peers()
    before, log_before = target.store(), len(target.node.log_path.read_bytes())
    host = f"Host: 127.0.0.1:{target.node.port}\r\n".encode()
    # Announced at 2 MiB, and not one byte sent: the answer comes at once.
    answer, took = _raw_post(target.node.port, b"POST /federation/inbox HTTP/1.1\r\n" + host +
                             b"Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert took < 5 and b'"error"' in answer
    # Streamed without a length, 64 KiB at a time, past 1 MiB: cut off at the cap.
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    answer, _ = _raw_post(target.node.port, b"POST /federation/inbox HTTP/1.1\r\n" + host +
                          b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                          [chunk] * 20 + [b"0\r\n\r\n"])  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    # Validly signed, not JSON, over 1 MiB: still 413, not a 400 from a parser.
    answer = peer.send(peer.signed("POST", target.inbox, content=b"<" * (MIB + 1)))
    assert_refused(answer, 413)
    # The same size of valid JSON is refused as fast: no parse work either way.
    timings = {}
    for name, content in (("garbage", b"x" * (MIB + 10)), ("json", json.dumps(
            {"type": "entries", "origin": peer.url, "entries": ["x" * MIB]}).encode())):  # fmt: skip
        started = time.monotonic()
        assert_refused(httpx.post(target.inbox, content=content, timeout=20,
                                  headers={"Content-Type": "application/json"}), 413)  # fmt: skip
        timings[name] = time.monotonic() - started
    assert max(timings.values()) < 2, timings
    # The API and the forms have their own, smaller caps.
    big = httpx.post(f"{target.url}/api/v1/items", content=b"x" * (65 * 1024), timeout=20,
                     headers={**target.member_headers, "Content-Type": "application/json"})  # fmt: skip
    assert_refused(big, 413)
    form = httpx.post(f"{target.url}/login", content=b"x" * (65 * 1024), timeout=20,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert form.status_code == 413
    assert target.store() == before
    # The node's log shows the refusals and no work on the bodies (no ingest, no warning).
    said = target.node.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert said.count('" 413 ') == 7, said
    assert "ingest" not in said and " WARNING " not in said and " ERROR " not in said, said
    target.still_serving()


# ---------------------------------------------------------------------------- markup


def test_markup_from_a_peer_is_shown_as_text_on_every_page(target, peers):
    """A peer whose name, description, items and refused entries all carry markup, delivered
    by push and by pull: browse, the item pages and the admin peers page show it as text."""
    peer = peers(XSS[0][:200], " ".join(XSS))
    marked = dict(title=XSS[0], body=f"line one\n{XSS[1]}", tags=[XSS[1], XSS[2]],
                  location={"label": XSS[2]}, author=XSS[1], quantity=XSS[2])  # fmt: skip
    # One item pushed, one read from the feed, and entries refused for reasons quoting markup.
    pushed = chain(peer, [("item", state(peer, 1, **marked))])
    deliver(target, peer, pushed, "push", 200)
    pulled = chain(peer, [("item", state(peer, 2, **marked, kind="need", urgency="urgent")),
                          ("item", state(peer, 3, **{XSS[2]: 1}))],
                   start=2, prev=entry_hash(pushed[0]))  # fmt: skip
    bad = resign(peer, {**peer.sign("item", state(peer, 4), seq=4, prev=entry_hash(pulled[-1])),
                        XSS[0]: 1})  # fmt: skip
    peer.entries = [*pushed, *pulled, bad]
    target.pull(peer)
    eventually(lambda: "entry fields wrong" in (target.peer(peer)["last_error"] or ""),
               "the bad entry refused", nodes=(target.node,))  # fmt: skip
    assert target.peer(peer)["received_seq"] == 3 and len(target.refusals(peer)) == 1
    ids = [entry["body"]["id"] for entry in (pushed[0], pulled[0])]
    held = target.admin.get("/api/v1/items", origin="remote", limit=200).json()["items"]
    assert {i["id"] for i in held} >= set(ids)
    assert all(i["title"] == XSS[0] for i in held if i["id"] in ids)  # the JSON keeps the text
    # Every page that shows them, as the admin sees it.
    with logged_in(target.node) as browser:
        urls = ["/", "/items", "/items?q=script", "/items?origin=remote", "/admin/peers",
                *(f"/items/{item_id.rsplit('/', 1)[1]}" for item_id in ids)]  # fmt: skip
        for url in urls:
            page = browser.get(url)
            assert page.status_code == 200, (url, page.status_code)
            for dangerous in DANGEROUS:
                assert dangerous not in page.text, (url, dangerous)
            assert "&lt;script&gt;" in page.text or "&lt;img" in page.text, url
    target.still_serving()

"""The admin Peers page as an admin uses it: add a node by its address, read each peer's trust,
following and health, and change what this node decides about it with one button each."""

import html
import re

import pytest
from markupsafe import escape

from federation.entries import sign_entry
from federation.identity import node_document, parse_node_document
from federation.keys import fingerprint, generate_key, public_key_text
from tests.conftest import csrf_of, post_form
from tests.test_xss import PAYLOADS

pytestmark = pytest.mark.anyio

WEST = "https://westside.example"
NORTH = "https://northside.example"
SOUP = {
    "id": f"{WEST}/items/00000000-0000-4000-8000-000000000001", "kind": "offer",
    "title": "Soup on Sundays", "body": "Lentil soup.", "category": "food", "status": "open",
    "reach": "allies", "created": "2026-11-24T17:00:00Z", "updated": "2026-11-24T17:00:00Z",
    "expires": "2026-12-24T17:00:00Z", "version": 1, "author": "Jo",
}  # fmt: skip


@pytest.fixture(autouse=True)
def lookups(harness, monkeypatch) -> list[str]:
    """These tests reach no other node: a peer's host name is never looked up (a button that
    tells a peer something fails at once, as for a node that is down). Returns the names."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        raise OSError(f"no name lookups in these tests ({host})")

    monkeypatch.setattr(harness.node.allies.outbound.guard, "_resolve", resolve)
    return asked


async def add_peer_row(harness, url: str = WEST, name: str = "Westside", *, key=None,
                       trust: str = "trusted", we_follow: str = "pending", **fields) -> int:
    """A peer as `peer add` leaves it (key pinned), with any columns set as a test needs."""
    key = key or generate_key("main")
    store = harness.node.store
    async with store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, we_follow, created)"
            " VALUES (?, ?, ?, ?, '2026-11-24T17:00:00Z')",
            (url, name, trust, we_follow),
        )
        peer_id = cursor.lastrowid
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (key.key_id(url), peer_id, public_key_text(key.public)))  # fmt: skip
        if fields:
            await store.update_peer(db, peer_id, **fields)
    harness.node.peer_names[url] = name
    return peer_id


def card(page: str, peer_id: int) -> str:
    """The part of the Peers page about one peer."""
    for chunk in page.split('<li class="card peer')[1:]:
        if f'id="peer-{peer_id}"' in chunk.split(">", 1)[0]:
            return chunk
    raise AssertionError(f"peer {peer_id} is not on the page")


def url_error(page: str) -> str:
    match = re.search(r'<p class="error" id="url-error">(.*?)</p>', page, re.S)
    assert match, "no error beside the url field"
    return html.unescape(match.group(1))


async def act(browser, peer_id: int, action: str):
    """Press one of a peer's buttons (with the page's CSRF token, as a browser would)."""
    return await post_form(browser, "/admin/peers", {"action": action},
                           action=f"/admin/peers/{peer_id}")  # fmt: skip


async def test_the_page_lists_each_peer_with_its_key_trust_lag_and_health(harness):
    """Name, address, fingerprint, trust, following, relay, lag, last error, next try and
    recent refusals are all on the page."""
    admin = await harness.browser("root", "admin")
    # West: trusted, 7 entries behind, failing, with a refused item.
    west_key = generate_key("main")
    west = await add_peer_row(
        harness, key=west_key, we_follow="accepted", they_follow="accepted", relay=1,
        received_seq=5, head_seq=12, last_success="2026-11-24T16:00:00Z",
        last_error="timed out after 10 s", failures=3, next_attempt="2026-11-24T18:20:00Z",
    )  # fmt: skip
    async with harness.node.store.write() as db:
        await harness.node.store.record_refusals(db, west, [(4, SOUP["id"], "title: must be trimmed")],
                                                 "2026-11-24T15:00:00Z")  # fmt: skip
    # North: not trusted, never read.
    north = await add_peer_row(harness, NORTH, "Northside", trust="unknown", we_follow="none")

    page = await admin.get("/admin/peers")
    assert page.status_code == 200
    shown = card(page.text, west)
    assert "Westside" in shown and WEST in shown
    assert fingerprint(west_key.public) in shown
    assert "Trusted" in shown and "Yes, reading its feed" in shown
    assert "On: its needs go on to our allies" in shown
    assert "7 entries behind" in shown and "(received 5 of 12)" in shown
    assert '<time datetime="2026-11-24T16:00:00Z">' in shown  # last success
    assert "timed out after 10 s" in shown and "3 failures in a row." in shown
    assert '<time datetime="2026-11-24T18:20:00Z">' in shown  # next try
    assert "<details>" in shown and "title: must be trimmed" in shown
    assert 'value="untrust"' in shown and 'value="relay_off"' in shown
    # North is shown as it is: untrusted, not followed, up to date with nothing, no error.
    other = card(page.text, north)
    assert "Northside" in other and "Not trusted" in other and "Up to date" in other
    assert "Last error" not in other and "<details>" not in other
    assert 'value="trust"' in other and 'value="follow"' in other and 'value="relay_on"' in other
    # The admin menu leads here.
    assert 'href="/admin/peers"' in page.text


async def test_a_fork_is_explained_and_resync_clears_it_and_the_cursor(harness):
    admin = await harness.browser("root", "admin")
    fork = "fork: entry 6 is validly signed but does not follow entry 5 as we hold it (abc)"
    peer_id = await add_peer_row(harness, received_seq=5, received_hash="abc", head_seq=9,
                                 last_error=fork, failures=1)  # fmt: skip
    # The page names the fork, says what to do and offers the re-sync.
    shown = card((await admin.get("/admin/peers")).text, peer_id)
    assert str(escape(fork)) in shown
    assert "contradicts what we hold" in shown and "out of band" in shown
    assert re.search(r'value="resync">\s*<button type="submit" class="primary">Re-sync', shown)
    # The admin re-syncs: the error and the cursor are gone, reading starts afresh.
    response = await act(admin, peer_id, "resync")
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/peers#peer-{peer_id}"
    peer = await harness.node.store.peer(peer_id)
    assert (peer.last_error, peer.received_seq, peer.received_hash, peer.head_seq) == (None, 0, None, 0)
    assert not peer.forked and harness.node.allies.follows(peer)
    assert "contradicts what we hold" not in card((await admin.get("/admin/peers")).text, peer_id)


async def test_each_button_changes_the_peer_and_is_audited(harness):
    admin = await harness.browser("root", "admin")
    key = generate_key("main")
    peer_id = await add_peer_row(harness, key=key)
    # West's feed brings one item, which members see.
    entry = sign_entry(origin=WEST, seq=1, prev=None, type="item", at="2026-11-24T17:00:00Z",
                       body=SOUP, key=key)  # fmt: skip
    assert await harness.node.allies.ingest(peer_id, [entry], head_seq=1) == (1, None)
    assert await harness.node.store.item(SOUP["id"]) is not None

    async def peer_after(action: str):
        response = await act(admin, peer_id, action)
        assert response.status_code == 303, (action, response.text[:300])
        assert response.headers["location"] == f"/admin/peers#peer-{peer_id}"
        return await harness.node.store.peer(peer_id)

    # Trust: trusted → unknown → blocked, and blocking removes its items and forgets its feed.
    assert (await peer_after("untrust")).trust == "unknown"
    assert await harness.node.store.item(SOUP["id"]) is not None
    blocked = await peer_after("block")
    assert blocked.trust == "blocked" and blocked.received_seq == 0
    assert await harness.node.store.item(SOUP["id"]) is None
    page = card((await admin.get("/admin/peers")).text, peer_id)
    assert "Blocked" in page and 'value="block"' not in page and "Unblock, without trusting" in page
    assert (await peer_after("untrust")).trust == "unknown"
    assert (await peer_after("trust")).trust == "trusted"
    # Relay on and off.
    assert (await peer_after("relay_on")).relay is True
    assert (await peer_after("relay_off")).relay is False
    # Unfollow and follow again.
    assert (await peer_after("unfollow")).we_follow == "none"
    assert (await peer_after("follow")).we_follow == "pending"
    # Every change is in the audit log, under the admin's name.
    audit = (await admin.get("/admin/audit")).text
    for detail in ("trust trusted → unknown", "trust unknown → blocked", "trust unknown → trusted",
                   "relay on", "relay off", "unfollow", "follow"):  # fmt: skip
        assert detail in audit, detail
    assert audit.count("peer.change") == 8 and "root" in audit


async def test_unknown_actions_and_peers_are_refused(harness):
    admin = await harness.browser("root", "admin")
    peer_id = await add_peer_row(harness)
    assert (await act(admin, peer_id, "delete")).status_code == 400
    assert (await act(admin, peer_id, "")).status_code == 400
    assert (await act(admin, 999, "trust")).status_code == 404
    missing = await post_form(admin, "/admin/peers", {"action": "trust"}, action="/admin/peers/x1")
    assert missing.status_code == 404
    peer = await harness.node.store.peer(peer_id)
    assert (peer.trust, peer.we_follow, peer.relay) == ("trusted", "pending", False)


async def test_buttons_without_the_csrf_token_are_refused_and_change_nothing(harness):
    admin = await harness.browser("root", "admin")
    peer_id = await add_peer_row(harness)
    await admin.get("/admin/peers")
    for data in ({"action": "block"}, {"action": "block", "csrf_token": "A" * 43}):
        assert (await admin.post(f"/admin/peers/{peer_id}", data=data)).status_code == 403
    added = await admin.post("/admin/peers", data={"url": NORTH})
    assert added.status_code == 403
    assert (await harness.node.store.peer(peer_id)).trust == "trusted"
    assert [p.url for p in await harness.node.store.peers()] == [WEST]


@pytest.mark.parametrize("role", ["member", "coordinator"])
async def test_members_and_coordinators_may_not_see_or_change_peers(harness, role):
    peer_id = await add_peer_row(harness)
    browser = await harness.browser("someone", role)
    home = await browser.get("/")
    assert 'href="/admin/peers"' not in home.text
    csrf = csrf_of(home.text)  # a valid token of their own session
    assert (await browser.get("/admin/peers")).status_code == 403
    refused = await browser.post(f"/admin/peers/{peer_id}", data={"action": "block", "csrf_token": csrf})
    assert refused.status_code == 403
    added = await browser.post("/admin/peers", data={"url": NORTH, "csrf_token": csrf})
    assert added.status_code == 403
    assert (await harness.node.store.peer(peer_id)).trust == "trusted"
    assert len(await harness.node.store.peers()) == 1


async def test_visitors_are_sent_to_login(harness):
    peer_id = await add_peer_row(harness)
    visitor = await harness.browser()
    response = await visitor.get("/admin/peers")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin%2Fpeers"
    posted = await visitor.post(f"/admin/peers/{peer_id}", data={"action": "block"})
    assert posted.status_code == 303 and posted.headers["location"].startswith("/login?next=")
    assert (await harness.node.store.peer(peer_id)).trust == "trusted"


async def test_adding_a_loopback_address_shows_the_guards_refusal(harness):
    """With private addresses not allowed (the default), the address guard refuses the node
    before connecting; the reason is shown beside the field, the input kept, nothing added."""
    admin = await harness.browser("root", "admin")
    response = await post_form(admin, "/admin/peers", {"url": "http://127.0.0.1:9"})
    assert response.status_code == 502
    assert "loopback" in url_error(response.text)
    assert 'value="http://127.0.0.1:9"' in response.text
    assert 'aria-invalid="true" aria-describedby="url-error' in response.text
    assert await harness.node.store.peers() == []


async def test_adding_something_not_a_url_shows_the_url_rule(harness):
    admin = await harness.browser("root", "admin")
    response = await post_form(admin, "/admin/peers", {"url": "not a url"})
    assert response.status_code == 422
    assert url_error(response.text) == "Problem: the base URL must not contain spaces"
    assert 'value="not a url"' in response.text
    # This node's own address is refused too.
    own = await post_form(admin, "/admin/peers", {"url": harness.config.base_url})
    assert own.status_code == 422 and "this node's own address" in url_error(own.text)
    assert await harness.node.store.peers() == []


async def test_adding_a_node_pins_its_key_and_asks_to_compare_the_fingerprint(harness, monkeypatch):
    """The notice after adding names the node and shows the pinned key's fingerprint (the
    node document is served by a stand-in: no network here)."""
    admin = await harness.browser("root", "admin")
    key = generate_key("main")
    fetched = []

    async def west_document(url):
        fetched.append(url)
        doc = node_document(base_url=WEST, name="Westside <script>alert(1)</script>",
                            description="Soup & bread", keys=[("main", key.public, None)],
                            version="0.1")  # fmt: skip
        return parse_node_document(doc, url)

    monkeypatch.setattr(harness.node.allies, "fetch_document", west_document)
    response = await post_form(admin, "/admin/peers", {"url": f" {WEST} "})
    assert response.status_code == 303 and fetched == [WEST]
    [peer] = await harness.node.store.peers()
    assert response.headers["location"] == f"/admin/peers?added={peer.id}#peer-{peer.id}"
    assert (peer.url, peer.trust, peer.we_follow) == (WEST, "trusted", "pending")
    page = (await admin.get(response.headers["location"])).text
    notice = re.search(r'<div class="notice" role="status">(.*?)</div>', page, re.S).group(1)
    assert "Added Westside &lt;script&gt;alert(1)&lt;/script&gt; (https://westside.example)" in notice
    assert fingerprint(key.public) in notice and "out of band" in notice
    assert "<script>alert" not in page
    # Adding it again trusts and follows what is known, without fetching anew.
    await act(admin, peer.id, "untrust")
    again = await post_form(admin, "/admin/peers", {"url": WEST})
    assert again.headers["location"] == f"/admin/peers?added={peer.id}&known=1#peer-{peer.id}"
    assert fetched == [WEST] and (await harness.node.store.peer(peer.id)).trust == "trusted"
    assert "was already known" in (await admin.get(again.headers["location"])).text
    # Without `added`, there is no notice.
    assert 'class="notice"' not in (await admin.get("/admin/peers")).text


async def test_a_node_asking_to_follow_is_listed_with_an_accepting_trust_button(harness):
    admin = await harness.browser("root", "admin")
    peer_id = await add_peer_row(harness, trust="unknown", we_follow="none", they_follow="pending")
    page = (await admin.get("/admin/peers")).text
    assert "Nodes asking to follow this one" in page and f'href="#peer-{peer_id}"' in page
    shown = card(page, peer_id)
    assert "Asking: trust it to accept" in shown
    assert "Trust and accept its request to follow us" in shown


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_text_from_other_nodes_is_shown_as_text(harness, payload):
    """A peer's name, description, error and refusal reasons come from another node: inert."""
    admin = await harness.browser("root", "admin")
    peer_id = await add_peer_row(harness, name=payload, description=payload,
                                 last_error=f"fork: {payload}", they_follow="pending")  # fmt: skip
    async with harness.node.store.write() as db:
        await harness.node.store.record_refusals(db, peer_id, [(1, payload, payload)],
                                                 "2026-11-24T15:00:00Z")  # fmt: skip
    page = await admin.get("/admin/peers")
    assert page.status_code == 200
    for dangerous in ("<script>alert", "<img src=x", "<svg onload", 'onerror="alert'):
        assert dangerous not in page.text, dangerous
    assert str(escape(payload)) in card(page.text, peer_id)
    assert ">49<" not in page.text


async def test_a_follower_shows_how_much_of_our_feed_it_has_and_whether_pushing_paused(harness):
    member = await harness.api_client("jo")
    for title in ("Soup", "Bread", "Jam"):
        await member.post("/api/v1/items", json={"kind": "offer", "title": title,
                                                 "body": "Homemade.", "category": "food"})  # fmt: skip
    peer_id = await add_peer_row(harness, they_follow="accepted", delivered_seq=1, push_stopped=1)
    admin = await harness.browser("root", "admin")
    shown = card((await admin.get("/admin/peers")).text, peer_id)
    assert "Our entries delivered" in shown and "1 of 3" in shown
    assert "Pushing stopped" in shown
    quiet = await add_peer_row(harness, url="https://north.example", name="North")
    assert "Our entries delivered" not in card((await admin.get("/admin/peers")).text, quiet)

"""The federation endpoints other nodes call to push and subscribe, in-process: every request
signed, every refusal a clear 4xx that changes nothing (DESIGN §4.4–4.5)."""

import httpx
import pytest

from federation.entries import entry_hash
from federation.httpsig import sign_request
from federation.keys import generate_key
from tests.test_ingest import WEST, WestFeed, add_west, item, remote_titles

pytestmark = pytest.mark.anyio


def signed(harness, key, method: str, path: str, body=None, *, key_id=None) -> httpx.Request:
    kwargs = {"json": body} if body is not None else {}
    request = httpx.Request(method, harness.config.base_url + path, **kwargs)
    return sign_request(request, key, key_id or key.key_id(WEST), now=harness.clock())


async def send(harness, request: httpx.Request) -> httpx.Response:
    return await harness.client().send(request)


def push(feed: WestFeed, entries=None, origin: str = WEST) -> dict:
    return {"type": "entries", "origin": origin,
            "entries": feed.entries if entries is None else entries}  # fmt: skip


async def test_a_push_from_a_followed_node_is_taken_and_answered_with_the_cursor(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    feed.append(item(1))
    feed.append(item(2, title="Bread"))
    response = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox", push(feed)))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": {"seq": 2, "hash": entry_hash(feed.entries[1])}}
    assert await remote_titles(harness) == {"Soup on Sundays", "Bread"}
    # The same push again is harmless and says the same.
    again = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox", push(feed)))
    assert again.json() == response.json()
    # GET /federation/cursor tells the signer what we hold of its feed.
    held = await send(harness, signed(harness, feed.key, "GET", "/federation/cursor"))
    assert held.json() == response.json()


async def test_a_push_that_leaves_a_gap_is_answered_409_with_where_to_resume(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    for n in range(3):
        feed.append(item(n + 1))
    harness.node.allies._wake.clear()
    response = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox",
                                          push(feed, feed.entries[2:])))  # fmt: skip
    assert response.status_code == 409
    assert response.json()["received"] == {"seq": 0, "hash": None}
    assert await remote_titles(harness) == set()
    assert harness.node.allies._wake.is_set()  # the gap has the pull worker read the feed


async def test_unsigned_wrongly_signed_and_forged_pushes_change_nothing(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    body = push(feed)
    unsigned = await harness.client().post("/federation/inbox", json=body)
    assert unsigned.status_code == 401 and "error" in unsigned.json()
    # Signed by a key that is not West's pinned key, under West's key id.
    thief = generate_key("main")
    wrong = await send(harness, signed(harness, thief, "POST", "/federation/inbox", body))
    assert wrong.status_code == 401
    # A valid signature, with the body swapped afterwards.
    request = signed(harness, feed.key, "POST", "/federation/inbox", body)
    swapped = httpx.Request("POST", request.url, headers=request.headers,
                            content=request.content.replace(b"Soup", b"Soap"))  # fmt: skip
    assert (await send(harness, swapped)).status_code == 401
    # West signing entries it claims are another node's.
    forged = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox",
                                        push(feed, origin="https://eastside.example")))  # fmt: skip
    assert forged.status_code == 403
    # Entries whose origin is West but signed (inside) by another key.
    other = WestFeed()
    other.append(item(1, title="Planted"))
    planted = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox",
                                         push(other)))  # fmt: skip
    assert planted.status_code == 422 and planted.json()["received"]["seq"] == 0
    assert await remote_titles(harness) == set()
    peer = await harness.node.store.peer(peer_id)
    assert (peer.received_seq, peer.received_hash) == (0, None)


async def test_pushes_from_unfollowed_untrusted_or_blocked_nodes_are_refused(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    for fields, status in (({"we_follow": "none"}, 403), ({"trust": "unknown"}, 401),
                           ({"trust": "blocked"}, 401)):  # fmt: skip
        async with harness.node.store.write() as db:
            await harness.node.store.update_peer(db, peer_id, trust="trusted", we_follow="pending")
            await harness.node.store.update_peer(db, peer_id, **fields)
        response = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox",
                                              push(feed)))  # fmt: skip
        assert response.status_code == status, (fields, response.text)
    assert await remote_titles(harness) == set()


@pytest.mark.parametrize("body, status", [
    ({"type": "entries", "origin": WEST}, 400),
    ({"type": "entries", "origin": WEST, "entries": []}, 400),
    ({"type": "entries", "origin": WEST, "entries": [{}] * 101}, 400),
    ({"type": "gossip"}, 400),
    ({"type": "subscription", "state": "maybe"}, 400),
    (["not", "an", "object"], 400),
])  # fmt: skip
async def test_malformed_inbox_messages_are_refused(harness, body, status):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    before = await harness.node.store.peer(peer_id)
    response = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox", body))
    assert response.status_code == status and response.json()["error"]
    assert await harness.node.store.peer(peer_id) == before


async def test_an_inbox_message_over_512_kib_is_refused(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    body = {"type": "subscription", "state": "accepted", "pad": "x" * (512 * 1024)}
    response = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox", body))
    assert response.status_code == 413


async def test_subscriptions_follow_trust(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed, trust="unknown")

    async def subscribe(subscriber: str = WEST) -> httpx.Response:
        return await send(harness, signed(harness, feed.key, "POST", "/federation/subscriptions",
                                          {"subscriber": subscriber}))  # fmt: skip

    # Known but not trusted: the subscription waits for an admin.
    answer = await subscribe()
    assert (answer.status_code, answer.json()) == (202, {"state": "pending"})
    assert (await harness.node.store.peer(peer_id)).they_follow == "pending"
    # Speaking for another node is refused.
    assert (await subscribe("https://eastside.example")).status_code == 400
    # Trusted: accepted at once.
    async with harness.node.store.write() as db:
        await harness.node.store.update_peer(db, peer_id, trust="trusted")
    answer = await subscribe()
    assert answer.json() == {"state": "accepted"}
    # Unsubscribing: signed, no body.
    gone = await send(harness, signed(harness, feed.key, "DELETE", "/federation/subscriptions"))
    assert gone.status_code == 200
    assert (await harness.node.store.peer(peer_id)).they_follow == "none"
    # Blocked: refused outright.
    async with harness.node.store.write() as db:
        await harness.node.store.update_peer(db, peer_id, trust="blocked")
    assert (await subscribe()).status_code == 403
    assert (await harness.node.store.peer(peer_id)).they_follow == "none"


async def test_a_subscription_answer_moves_our_follow_state(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    response = await send(harness, signed(harness, feed.key, "POST", "/federation/inbox",
                                          {"type": "subscription", "state": "accepted"}))  # fmt: skip
    assert response.status_code == 200
    assert (await harness.node.store.peer(peer_id)).we_follow == "accepted"


async def test_an_unknown_node_whose_document_cannot_be_read_is_refused(harness):
    """A subscription from a node never met makes this node fetch its document through the
    address guard; here the guard refuses (a loopback address), so the request is 401, no
    peer is added, and the failure is remembered rather than fetched again at once."""
    stranger = generate_key("main")
    url = "https://127.0.0.2"
    for _ in range(2):
        request = signed(harness, stranger, "POST", "/federation/subscriptions",
                         {"subscriber": url}, key_id=stranger.key_id(url))  # fmt: skip
        response = await send(harness, request)
        assert response.status_code == 401 and "loopback" in response.json()["error"]
    assert await harness.node.store.peers() == []


async def test_a_known_node_signing_with_an_unannounced_key_is_refused_and_shown(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    rogue = generate_key("key9")
    request = signed(harness, rogue, "POST", "/federation/subscriptions", {"subscriber": WEST},
                     key_id=rogue.key_id(WEST))  # fmt: skip
    response = await send(harness, request)
    assert response.status_code == 401
    peer = await harness.node.store.peer(peer_id)
    assert peer.last_error.startswith("key: ") and peer.they_follow == "none"


async def test_a_signed_request_from_a_node_resumes_pushing_to_it(harness):
    """Pushing to a follower stops after a refusal or long failures; the next signed request
    from that node shows it is back, and pushing resumes at once."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    async with harness.node.store.write() as db:
        await harness.node.store.update_peer(db, peer_id, they_follow="accepted", push_stopped=1,
                                             push_next_attempt="2026-11-25T18:00:00Z")  # fmt: skip
    assert not harness.node.allies.delivers_to(await harness.node.store.peer(peer_id))
    response = await send(harness, signed(harness, feed.key, "GET", "/federation/cursor"))
    assert response.status_code == 200
    peer = await harness.node.store.peer(peer_id)
    assert (peer.push_stopped, peer.push_next_attempt) == (False, None)
    assert harness.node.allies.delivers_to(peer)

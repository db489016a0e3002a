"""Responses in-process (DESIGN §7): signed `response` messages at the origin's inbox, what
the poster and coordinators see and decide, and the responder's side with the origin faked.

Every refusal is a clear 4xx that stores nothing; the contact is kept only at the origin,
never in a feed, and never by the responder's node."""

import json
import uuid

import httpx
import pytest

from federation.identity import NodeDocument
from federation.keys import generate_key, public_key_text
from federation.outbound import FetchError, Reply
from server.responses import RESPONSES_PER_HOUR_OTHER
from tests.conftest import BASE_URL, PASSWORD, csrf_of, login, post_form
from tests.test_inbox import send, signed
from tests.test_ingest import WEST, WestFeed, add_west, item

pytestmark = pytest.mark.anyio

CONTACT = "call Jo on 555-0199, jo@westside.example"
NEED = {"kind": "need", "title": "Lift to the clinic", "body": "Tuesday at 9.",
        "category": "transport", "reach": "allies"}  # fmt: skip
STRANGER = "https://stranger.example"


def response(item_id: str, *, node: str = WEST, response_id: str | None = None, **changes) -> dict:
    body = {"type": "response", "id": response_id or str(uuid.uuid4()), "item": item_id,
            "from": {"node": node, "name": "Jo"}, "message": "I can drive you.",
            "contact": CONTACT, "created": "2026-11-24T17:59:00Z"}  # fmt: skip
    body.update(changes)
    return body


async def respond(harness, key, body: dict, *, node: str = WEST) -> httpx.Response:
    return await send(harness, signed(harness, key, "POST", "/federation/inbox", body,
                                      key_id=key.key_id(node)))  # fmt: skip


async def post(harness, client: httpx.AsyncClient, data: dict = NEED) -> dict:
    created = await client.post("/api/v1/items", json=data)
    assert created.status_code == 201, created.text
    return created.json()


async def stored_responses(harness) -> list:
    return await harness.node.store.fetch_all("SELECT id, from_node, message, state FROM responses")


async def outbox(harness) -> list[tuple]:
    rows = await harness.node.store.fetch_all(
        "SELECT response_id, node, item_id, state, attempts, next_attempt FROM response_status_outbox")
    return [tuple(row) for row in rows]


def stranger_document(key) -> NodeDocument:
    return NodeDocument(url=STRANGER, name="Stranger Collective", description="",
                        keys=[(key.key_id(STRANGER), public_key_text(key.public), None)])  # fmt: skip


def fake_documents(harness, monkeypatch, documents: dict) -> list[str]:
    """Node documents served to this node's guarded fetches; returns the URLs fetched."""
    fetched: list[str] = []

    async def fetch_document(url: str):
        fetched.append(url)
        return documents[url]

    monkeypatch.setattr(harness.node.allies, "fetch_document", fetch_document)
    return fetched


# ---------------------------------------------------------------------------- the origin


async def test_an_allys_response_is_taken_and_shown_to_the_poster_and_coordinators(harness):
    """A response from an ally is answered 202 with its id; the poster and coordinators see
    it with the contact, other members do not."""
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    need = await post(harness, poster)
    # West responds to the need.
    body = response(need["id"])
    answer = await respond(harness, feed.key, body)
    assert (answer.status_code, answer.json()) == (202, {"id": body["id"]})
    # The poster sees it, with how to reach the responder.
    listed = (await poster.get("/api/v1/responses")).json()["responses"]
    assert listed == [{"id": body["id"], "item": need["id"], "from": {"node": WEST, "name": "Jo"},
                       "message": "I can drive you.", "contact": CONTACT,
                       "received": "2026-11-24T18:00:00Z", "state": "pending"}]  # fmt: skip
    # A coordinator sees every response; another member sees none of them.
    coordinator = await harness.api_client("coord", "coordinator")
    assert [r["id"] for r in (await coordinator.get("/api/v1/responses")).json()["responses"]] == [body["id"]]
    other = await harness.api_client("other")
    assert (await other.get("/api/v1/responses")).json() == {"responses": []}
    # The poster's item page shows it with the contact; another member's shows a form instead.
    path = f"/items/{need['id'].rsplit('/', 1)[1]}"
    page = await (await harness.browser("neighbour")).get(path)
    assert CONTACT not in page.text and f'action="{path}/respond"' in page.text
    browser = harness.client(follow_redirects=False)
    await login(browser, "poster", PASSWORD)
    page = await browser.get(path)
    assert CONTACT in page.text and "I can drive you." in page.text
    assert f'action="{path}/respond"' not in page.text


async def test_a_repeat_is_answered_as_the_first_and_changes_nothing(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    need = await post(harness, await harness.api_client("poster"))
    body = response(need["id"])
    first = await respond(harness, feed.key, body)
    # The same response again (a retry after a lost answer), even with other words.
    again = await respond(harness, feed.key, {**body, "message": "Changed my mind."})
    assert (again.status_code, again.json()) == (202, first.json())
    rows = await stored_responses(harness)
    assert [(r["id"], r["message"]) for r in rows] == [(body["id"], "I can drive you.")]
    # The same id from another node is not a repeat: it is refused, and nothing changes.
    key = generate_key("main")
    async with harness.node.store.write() as db:
        cursor = await db.execute("INSERT INTO peers (url, name, trust, created) VALUES"
                                  " (?, 'S', 'unknown', '2026-11-24T17:00:00Z')", (STRANGER,))
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (key.key_id(STRANGER), cursor.lastrowid, public_key_text(key.public)))
    copy = await respond(harness, key, {**body, "from": {"node": STRANGER, "name": "X"}},
                         node=STRANGER)  # fmt: skip
    assert copy.status_code == 409 and copy.json()["field"] == "id"
    assert len(await stored_responses(harness)) == 1


def _long(n: int) -> str:
    return "x" * n


@pytest.mark.parametrize("change, status, field", [
    ({"extra": 1}, 400, "extra"),
    ({"contact": None}, 400, "contact"),
    ({"contact": _long(501)}, 400, "contact"),
    ({"contact": "  "}, 400, "contact"),
    ({"message": _long(2001)}, 400, "message"),
    ({"message": 42}, 400, "message"),
    ({"message": "bell\x07"}, 400, "message"),
    ({"id": "not-a-uuid"}, 400, "id"),
    ({"id": "1B4E28BA-2FA1-41D2-883F-0016D3CCA427"}, 400, "id"),
    ({"created": "2026-11-24 17:59:00"}, 400, "created"),
    ({"item": 7}, 400, "item"),
    ({"from": {"node": WEST}}, 400, "from.name"),
    ({"from": {"node": WEST, "name": "Jo", "email": "jo@x"}}, 400, "from.email"),
    ({"from": {"node": WEST, "name": _long(81)}}, 400, "from.name"),
    ({"from": "Jo"}, 400, "from"),
    ({"from": {"node": "https://eastside.example", "name": "Jo"}}, 403, None),
])  # fmt: skip
async def test_a_malformed_or_misattributed_response_is_refused_and_stores_nothing(
    harness, change, status, field
):
    feed = WestFeed()
    await add_west(harness, feed)
    need = await post(harness, await harness.api_client("poster"))
    body = response(need["id"], **change)
    answer = await respond(harness, feed.key, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]
    if field is not None:
        assert answer.json().get("field") == field
    assert await stored_responses(harness) == []


@pytest.mark.parametrize("missing", ["id", "item", "from", "message", "contact", "created"])
async def test_a_response_missing_a_field_is_refused(harness, missing):
    feed = WestFeed()
    await add_west(harness, feed)
    need = await post(harness, await harness.api_client("poster"))
    body = response(need["id"])
    del body[missing]
    answer = await respond(harness, feed.key, body)
    assert answer.status_code == 400 and answer.json()["field"] == missing
    assert await stored_responses(harness) == []


async def test_unknown_and_local_only_items_get_the_same_404_and_ended_ones_409(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    local_only = await post(harness, poster, {**NEED, "reach": "local"})
    open_need = await post(harness, poster)
    promised = await post(harness, poster, {**NEED, "title": "Promised"})
    uuid_of = promised["id"].rsplit("/", 1)[1]
    assert (await poster.patch(f"/api/v1/items/{uuid_of}", json={"status": "promised"})).status_code == 200
    unknown = f"{BASE_URL}/items/{uuid.uuid4()}"
    answers = [await respond(harness, feed.key, response(item_id)) for item_id in
               (unknown, local_only["id"], f"{WEST}/items/{uuid.uuid4()}", "not an id")]  # fmt: skip
    assert {(a.status_code, a.text) for a in answers} == {(404, '{"error":"no such item"}')}
    # An item that is no longer open: 409.
    closed = await respond(harness, feed.key, response(promised["id"]))
    assert closed.status_code == 409
    # An expired one too.
    harness.clock.advance(days=31)
    expired = await respond(harness, feed.key, response(open_need["id"]))
    assert expired.status_code == 409
    assert await stored_responses(harness) == []


async def test_responses_are_rate_limited_per_node_and_lower_for_non_allies(harness, monkeypatch):
    feed = WestFeed()
    await add_west(harness, feed)
    need = await post(harness, await harness.api_client("poster"))
    stranger = generate_key("main")
    fake_documents(harness, monkeypatch, {STRANGER: stranger_document(stranger)})
    # A node that is not an ally: its first responses pass, then it must wait.
    for _ in range(RESPONSES_PER_HOUR_OTHER):
        answer = await respond(harness, stranger, response(need["id"], node=STRANGER), node=STRANGER)
        assert answer.status_code == 202, answer.text
    limited = await respond(harness, stranger, response(need["id"], node=STRANGER), node=STRANGER)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    # An ally, counted on its own, may send more than that.
    for _ in range(RESPONSES_PER_HOUR_OTHER + 1):
        assert (await respond(harness, feed.key, response(need["id"]))).status_code == 202
    assert len(await stored_responses(harness)) == 2 * RESPONSES_PER_HOUR_OTHER + 1


async def test_an_unknown_node_is_learned_listed_apart_and_can_be_blocked(harness, monkeypatch):
    """A node never met: its document is fetched (through the guard, here faked) to learn its
    key; its response is taken and shown apart, with a block button for admins. Once blocked,
    its responses are refused and no longer shown."""
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    need = await post(harness, poster)
    stranger = generate_key("main")
    fetched = fake_documents(harness, monkeypatch, {STRANGER: stranger_document(stranger)})
    # An ally and a stranger respond.
    await respond(harness, feed.key, response(need["id"]))
    body = response(need["id"], node=STRANGER, message="Not from around here, but I can help.")
    answer = await respond(harness, stranger, body, node=STRANGER)
    assert answer.status_code == 202, answer.text
    assert fetched == [STRANGER]
    peer = await harness.node.store.peer_by_url(STRANGER)
    assert (peer.name, peer.trust) == ("Stranger Collective", "unknown")
    assert len((await poster.get("/api/v1/responses")).json()["responses"]) == 2
    # The item's page, for an admin: the stranger's response sits apart, with a block button.
    admin = await harness.browser("root", "admin")
    page = (await admin.get(f"/items/{need['id'].rsplit('/', 1)[1]}")).text
    apart = page[page.index('id="responses-from-others"'):]
    assert "Not from around here" in apart and "I can drive you." not in apart
    assert f'action="/admin/peers/{peer.id}"' in apart and 'value="block"' in apart
    # One click blocks it (the peers page's own form).
    blocked = await admin.post(f"/admin/peers/{peer.id}", data={"action": "block",
                                                                "csrf_token": csrf_of(page)})  # fmt: skip
    assert blocked.status_code == 303
    assert (await harness.node.store.peer(peer.id)).trust == "blocked"
    # Its responses are no longer shown, and new ones are refused.
    shown = (await poster.get("/api/v1/responses")).json()["responses"]
    assert [r["from"]["node"] for r in shown] == [WEST]
    refused = await respond(harness, stranger, response(need["id"], node=STRANGER), node=STRANGER)
    assert refused.status_code == 403
    assert len(await stored_responses(harness)) == 2


async def test_pushes_and_status_news_from_nodes_not_pinned_get_401_without_any_fetch(harness,
                                                                                    monkeypatch):  # fmt: skip
    """Only a response makes this node fetch an unknown node's document: a push, a
    subscription answer or a response-status from a node it has not pinned is refused at once."""
    stranger = generate_key("main")
    fetched = fake_documents(harness, monkeypatch, {STRANGER: stranger_document(stranger)})
    for body in ({"type": "entries", "origin": STRANGER, "entries": [{"seq": 1}]},
                 {"type": "subscription", "state": "accepted"},
                 {"type": "response-status", "id": str(uuid.uuid4()),
                  "item": f"{STRANGER}/items/{uuid.uuid4()}", "state": "accepted"},
                 {"type": "gossip"}, ["entries"]):  # fmt: skip
        answer = await respond(harness, stranger, body, node=STRANGER)
        assert answer.status_code == 401, (body, answer.text)
    assert fetched == []
    assert await harness.node.store.peers() == []


async def test_a_responders_words_are_shown_as_text_never_as_markup(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    await harness.add_user("poster")
    browser = harness.client(follow_redirects=False)
    await login(browser, "poster", PASSWORD)
    need = await post(harness, harness.client(headers={"Authorization": "Bearer " + await (
        harness.node.new_api_token(await harness.node.store.user_by_username("poster")))}))  # fmt: skip
    payload = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    await respond(harness, feed.key, response(need["id"], message=payload, contact=payload,
                                              **{"from": {"node": WEST, "name": payload[:80]}}))  # fmt: skip
    for path in (f"/items/{need['id'].rsplit('/', 1)[1]}", "/my/responses"):
        page = (await browser.get(path)).text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_a_responder_pinned_while_its_signature_is_checked_is_taken(harness, monkeypatch):
    """A responder's key can be pinned while its response is being checked (an ingest learns
    its node as a relayed need's origin meanwhile): the signature is checked again with the
    key now pinned; the response is neither refused nor its document fetched."""
    feed = WestFeed()
    await add_west(harness, feed, trust="unknown")
    need = await post(harness, await harness.api_client("poster"))
    fetched = fake_documents(harness, monkeypatch, {})
    pinned = harness.node.store.request_keys
    reads = []

    async def west_pinned_after_the_first_read():
        keys = await pinned()
        reads.append(len(reads))
        return keys if len(reads) > 1 else {k: v for k, v in keys.items() if not k.startswith(WEST)}

    monkeypatch.setattr(harness.node.store, "request_keys", west_pinned_after_the_first_read)
    answer = await respond(harness, feed.key, response(need["id"]))
    assert answer.status_code == 202, answer.text
    assert fetched == [] and len(reads) == 3  # the first look, the second, the check again
    assert len(await stored_responses(harness)) == 1


async def test_a_known_node_that_is_not_trusted_may_respond_but_not_push(harness):
    feed = WestFeed()
    await add_west(harness, feed, trust="unknown")
    need = await post(harness, await harness.api_client("poster"))
    assert (await respond(harness, feed.key, response(need["id"]))).status_code == 202
    feed.append(item(1))
    push = {"type": "entries", "origin": WEST, "entries": feed.entries}
    assert (await respond(harness, feed.key, push)).status_code == 401


async def test_accepting_promises_the_item_and_queues_the_news_for_the_responder(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    need = await post(harness, poster)
    ids = []
    for _ in range(3):
        body = response(need["id"])
        await respond(harness, feed.key, body)
        ids.append(body["id"])
    version = need["version"]
    # Another member may not decide; nor may anyone decide a response that does not exist.
    other = await harness.api_client("other")
    assert (await other.patch(f"/api/v1/responses/{ids[0]}", json={"state": "accepted"})).status_code == 404
    assert (await poster.patch(f"/api/v1/responses/{uuid.uuid4()}",
                               json={"state": "accepted"})).status_code == 404  # fmt: skip
    assert (await poster.patch(f"/api/v1/responses/{ids[0]}", json={"state": "maybe"})).status_code == 422
    assert (await poster.patch(f"/api/v1/responses/{ids[0]}",
                               json={"state": "accepted", "note": 1})).status_code == 422  # fmt: skip
    assert await outbox(harness) == []
    # The poster accepts one: the need is promised (a new version, published) and the
    # responder's node is to be told.
    accepted = await poster.patch(f"/api/v1/responses/{ids[0]}", json={"state": "accepted"})
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    uuid_of = need["id"].rsplit("/", 1)[1]
    shown = (await poster.get(f"/api/v1/items/{uuid_of}")).json()
    assert (shown["status"], shown["version"]) == ("promised", version + 1)
    entries = await harness.node.store.fetch_all("SELECT entry FROM feed WHERE item_id = ?", (need["id"],))
    assert json.loads(entries[-1][0])["body"]["status"] == "promised"
    assert await outbox(harness) == [(ids[0], WEST, need["id"], "accepted", 0, "2026-11-24T18:00:00Z")]
    # Accepting again changes nothing; declining an accepted one is refused.
    assert (await poster.patch(f"/api/v1/responses/{ids[0]}", json={"state": "accepted"})).status_code == 200
    assert (await poster.patch(f"/api/v1/responses/{ids[0]}", json={"state": "declined"})).status_code == 409
    # A coordinator declines another, by the web form.
    coordinator = await harness.browser("coord", "coordinator")
    page = await coordinator.get(f"/items/{uuid_of}")
    declined = await coordinator.post(f"/responses/{ids[1]}", data={"state": "declined",
                                                                    "csrf_token": csrf_of(page.text)})  # fmt: skip
    assert declined.status_code == 303 and declined.headers["location"] == f"/items/{uuid_of}#response-{ids[1]}"
    # A second acceptance, with the need promised already, leaves it promised.
    assert (await poster.patch(f"/api/v1/responses/{ids[2]}", json={"state": "accepted"})).status_code == 200
    assert (await poster.get(f"/api/v1/items/{uuid_of}")).json()["version"] == version + 1
    states = {r["id"]: r["state"] for r in (await poster.get("/api/v1/responses")).json()["responses"]}
    assert states == {ids[0]: "accepted", ids[1]: "declined", ids[2]: "accepted"}
    assert {row[0]: row[3] for row in await outbox(harness)} == {
        ids[0]: "accepted", ids[1]: "declined", ids[2]: "accepted"}
    # The need is later marked fulfilled as any status change.
    assert (await poster.patch(f"/api/v1/items/{uuid_of}", json={"status": "fulfilled"})).status_code == 200


async def test_the_worker_sends_response_status_and_retries_a_few_times(harness, monkeypatch):
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    need = await post(harness, poster)
    body = response(need["id"])
    await respond(harness, feed.key, body)
    await poster.patch(f"/api/v1/responses/{body['id']}", json={"state": "accepted"})
    calls: list[tuple[str, dict]] = []
    answers: list = [FetchError("connection refused"), Reply(503, httpx.Headers(), b"{}"),
                     Reply(200, httpx.Headers(), b'{"id":"x","state":"accepted"}')]  # fmt: skip

    async def request(method, url, *, json_body=None, **kwargs):
        calls.append((url, json_body))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(harness.node.allies.outbound, "request", request)
    responses = harness.node.responses
    # The first attempt fails: it is retried after a delay, not at once.
    assert await responses.send_due_statuses() == 0
    assert calls == [(f"{WEST}/federation/inbox", {"type": "response-status", "id": body["id"],
                                                    "item": need["id"], "state": "accepted"})]  # fmt: skip
    [(_, _, _, _, attempts, next_attempt)] = await outbox(harness)
    assert attempts == 1 and next_attempt > "2026-11-24T18:00:00Z"
    assert await responses.send_due_statuses() == 0 and len(calls) == 1
    # When due it is sent again; a 503 is retried too; then it gets through and is done.
    for _ in range(2):
        harness.clock.advance(hours=3)
        await responses.send_due_statuses()
    assert len(calls) == 3 and await outbox(harness) == []


async def test_response_status_news_gives_up_after_a_few_tries_or_a_refusal(harness, monkeypatch):
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    need = await post(harness, poster)
    bodies = [response(need["id"]) for _ in range(2)]
    for body in bodies:
        await respond(harness, feed.key, body)
    calls = []

    async def request(method, url, *, json_body=None, **kwargs):
        calls.append(json_body["id"])
        if json_body["id"] == bodies[0]["id"]:
            raise FetchError("timed out after 10 s")
        return Reply(404, httpx.Headers(), b'{"error":"no such response"}')

    monkeypatch.setattr(harness.node.allies.outbound, "request", request)
    await poster.patch(f"/api/v1/responses/{bodies[0]['id']}", json={"state": "accepted"})
    await poster.patch(f"/api/v1/responses/{bodies[1]['id']}", json={"state": "declined"})
    for _ in range(10):
        await harness.node.responses.send_due_statuses()
        harness.clock.advance(hours=3)
    # The unreachable one was tried 1 + 5 times; the refused one once.
    assert calls.count(bodies[0]["id"]) == 6 and calls.count(bodies[1]["id"]) == 1
    assert [row[5] for row in await outbox(harness)] == [None, None]


async def test_the_contact_is_in_no_feed_and_no_item(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    poster = await harness.api_client("poster")
    need = await post(harness, poster)
    body = response(need["id"])
    await respond(harness, feed.key, body)
    await poster.patch(f"/api/v1/responses/{body['id']}", json={"state": "accepted"})
    # Not in the feed table, nor in any item's state.
    for table, column in (("feed", "entry"), ("items", "state")):
        rows = await harness.node.store.fetch_all(f"SELECT {column} FROM {table}")
        assert rows and not any(CONTACT in row[0] or "555-0199" in row[0] for row in rows)
    # Not in the feed as an ally reads it, page by page.
    page = await send(harness, signed(harness, feed.key, "GET", "/federation/feed?after=0&limit=1000"))
    assert page.status_code == 200 and len(page.json()["entries"]) == 2
    assert "555-0199" not in page.text and "jo@westside" not in page.text
    # Nor in the item as any API client sees it.
    listed = await poster.get("/api/v1/items", params={"id": need["id"], "status": "promised"})
    assert listed.json()["items"] and "555-0199" not in listed.text


# ---------------------------------------------------------------------------- the responder


async def west_offer(harness) -> tuple[WestFeed, dict]:
    """West as an ally whose open offer this node holds."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (1, None)
    return feed, feed.entries[0]["body"]


def fake_origin(harness, monkeypatch, answer) -> list[tuple[str, dict]]:
    """The origin's answers to this node's requests (a Reply, an exception, or a function of the
    body returning one); returns what was sent."""
    sent: list[tuple[str, dict]] = []

    async def request(method, url, *, json_body=None, **kwargs):
        sent.append((url, json_body))
        reply = answer(json_body) if callable(answer) else answer
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(harness.node.allies.outbound, "request", request)
    return sent


def accepted(body: dict) -> Reply:
    return Reply(202, httpx.Headers(), json.dumps({"id": body["id"]}).encode())


async def database_bytes(harness) -> bytes:
    path = harness.config.database_path
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_a_members_response_to_a_remote_item_goes_to_its_origin_and_leaves_no_contact(
    harness, monkeypatch
):
    feed, offer = await west_offer(harness)
    sent = fake_origin(harness, monkeypatch, accepted)
    member = await harness.api_client("sam")
    # The member responds to West's offer.
    answer = await member.post("/api/v1/responses", json={
        "item": offer["id"], "message": "I would love some soup.", "contact": CONTACT})  # fmt: skip
    assert answer.status_code == 202, answer.text
    response_id = answer.json()["id"]
    [(url, body)] = sent
    assert url == f"{WEST}/federation/inbox"
    assert body == {"type": "response", "id": response_id, "item": offer["id"],
                    "from": {"node": BASE_URL, "name": "Sam"}, "message": "I would love some soup.",
                    "contact": CONTACT, "created": "2026-11-24T18:00:00Z"}  # fmt: skip
    # This node keeps what was sent, never the contact.
    mine = (await member.get("/api/v1/responses/sent")).json()["responses"]
    assert [(r["id"], r["item"], r["state"], r["message"]) for r in mine] == [
        (response_id, offer["id"], "pending", "I would love some soup.")]
    assert "contact" not in mine[0]
    assert (await member.get("/api/v1/responses")).json() == {"responses": []}
    assert b"555-0199" not in await database_bytes(harness)
    # The origin tells us it was accepted: the member sees it.
    status = {"type": "response-status", "id": response_id, "item": offer["id"], "state": "accepted"}
    told = await respond(harness, feed.key, status)
    assert (told.status_code, told.json()) == (200, {"id": response_id, "state": "accepted"})
    assert (await member.get("/api/v1/responses/sent")).json()["responses"][0]["state"] == "accepted"


@pytest.mark.parametrize("answer, status", [
    (Reply(404, httpx.Headers(), b'{"error":"no such item"}'), 404),
    (Reply(409, httpx.Headers(), b'{"error":"this item is no longer open"}'), 409),
    (Reply(403, httpx.Headers(), b'{"error":"blocked"}'), 403),
    (Reply(429, httpx.Headers({"Retry-After": "120"}), b'{"error":"slow down"}'), 429),
    (Reply(401, httpx.Headers(), b'{"error":"signature refused"}'), 502),
    (Reply(500, httpx.Headers(), b"oops"), 502),
    (Reply(202, httpx.Headers(), b'{"id":"someone-else"}'), 502),
    (FetchError("connection refused"), 502),
    (FetchError("timed out after 10 s"), 504),
])  # fmt: skip
async def test_an_origin_that_refuses_or_cannot_be_reached_is_passed_on_and_nothing_is_kept(
    harness, monkeypatch, answer, status
):
    _, offer = await west_offer(harness)
    fake_origin(harness, monkeypatch, answer)
    member = await harness.api_client("sam")
    reply = await member.post("/api/v1/responses", json={
        "item": offer["id"], "message": "Soup, please.", "contact": CONTACT})  # fmt: skip
    assert reply.status_code == status and reply.json()["error"], reply.text
    if status == 429:
        assert reply.headers["retry-after"] == "120"
    assert (await member.get("/api/v1/responses/sent")).json() == {"responses": []}


@pytest.mark.parametrize("body, status, field", [
    ({"item": "x", "message": "m"}, 422, "contact"),
    ({"item": "x", "message": "m", "contact": "c", "name": "Sam"}, 422, "name"),
    ({"item": 1, "message": "m", "contact": "c"}, 422, "item"),
    ({"item": "x", "message": "m" * 2001, "contact": "c"}, 422, "message"),
    ({"item": "x", "message": "m", "contact": "c" * 501}, 422, "contact"),
    ({"item": "https://westside.example/items/00000000-0000-4000-8000-000000000009",
      "message": "m", "contact": "c"}, 404, None),
])  # fmt: skip
async def test_a_members_bad_response_is_refused_and_nothing_is_sent(harness, monkeypatch,
                                                                      body, status, field):  # fmt: skip
    await west_offer(harness)
    sent = fake_origin(harness, monkeypatch, accepted)
    member = await harness.api_client("sam")
    reply = await member.post("/api/v1/responses", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json().get("field") == field
    assert sent == []


async def test_contact_details_go_only_to_https_origins(harness, monkeypatch):
    sent = fake_origin(harness, monkeypatch, accepted)
    origin = "http://127.0.0.2:8080"
    state = {**item(1), "id": f"{origin}/items/00000000-0000-4000-8000-000000000001"}
    async with harness.node.store.write() as db:
        await harness.node.store.write_remote_items(db, [state], origin=origin)
    member = await harness.api_client("sam")
    reply = await member.post("/api/v1/responses", json={
        "item": state["id"], "message": "Soup?", "contact": CONTACT})  # fmt: skip
    assert reply.status_code == 403 and "https" in reply.json()["error"]
    assert sent == []


async def test_a_response_to_a_local_item_stays_on_this_node(harness, monkeypatch):
    sent = fake_origin(harness, monkeypatch, accepted)
    poster = await harness.api_client("poster")
    need = await post(harness, poster, {**NEED, "reach": "local"})
    member = await harness.api_client("sam")
    # A member of this node responds to a neighbour's need: stored here, nothing sent.
    reply = await member.post("/api/v1/responses", json={
        "item": need["id"], "message": "I can take you.", "contact": "flat 4"})  # fmt: skip
    assert reply.status_code == 202
    assert sent == []
    [shown] = (await poster.get("/api/v1/responses")).json()["responses"]
    assert shown["from"] == {"node": BASE_URL, "name": "Sam"} and shown["contact"] == "flat 4"
    assert [r["state"] for r in (await member.get("/api/v1/responses/sent")).json()["responses"]] == ["pending"]
    # The poster accepts it: the need is promised, and no one else needs telling.
    assert (await poster.patch(f"/api/v1/responses/{shown['id']}", json={"state": "accepted"})).status_code == 200
    assert await outbox(harness) == []
    assert [r["state"] for r in (await member.get("/api/v1/responses/sent")).json()["responses"]] == ["accepted"]
    # The poster cannot respond to their own item, and no one to one no longer open.
    own = await poster.post("/api/v1/responses", json={
        "item": need["id"], "message": "me", "contact": "me"})  # fmt: skip
    assert own.status_code == 403
    late = await member.post("/api/v1/responses", json={
        "item": need["id"], "message": "again", "contact": "c"})  # fmt: skip
    assert late.status_code == 409


async def test_response_status_is_taken_only_from_the_items_origin_for_a_response_it_sent(
    harness, monkeypatch
):
    feed, offer = await west_offer(harness)
    fake_origin(harness, monkeypatch, accepted)
    member = await harness.api_client("sam")
    response_id = (await member.post("/api/v1/responses", json={
        "item": offer["id"], "message": "Soup?", "contact": CONTACT})).json()["id"]  # fmt: skip
    # Another known node speaking of it: as if we had sent it nothing.
    other = generate_key("main")
    async with harness.node.store.write() as db:
        cursor = await db.execute("INSERT INTO peers (url, name, trust, created) VALUES"
                                  " (?, 'S', 'trusted', '2026-11-24T17:00:00Z')", (STRANGER,))
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (other.key_id(STRANGER), cursor.lastrowid, public_key_text(other.public)))
    status = {"type": "response-status", "id": response_id, "item": offer["id"], "state": "declined"}
    assert (await respond(harness, other, status, node=STRANGER)).status_code == 404
    # The origin, about another item, an unknown response, or with a bad state.
    for change, code in (({"item": f"{WEST}/items/{uuid.uuid4()}"}, 404),
                         ({"id": str(uuid.uuid4())}, 404), ({"state": "maybe"}, 400),
                         ({"extra": True}, 400)):  # fmt: skip
        assert (await respond(harness, feed.key, {**status, **change})).status_code == code
    sent = (await member.get("/api/v1/responses/sent")).json()["responses"]
    assert [r["state"] for r in sent] == ["pending"]


async def test_the_respond_form_on_a_remote_items_page(harness, monkeypatch):
    _, offer = await west_offer(harness)
    sent = fake_origin(harness, monkeypatch, accepted)
    browser = await harness.browser("sam")
    path = f"/items/{offer['id'].rsplit('/', 1)[1]}"
    page = await browser.get(path)
    assert f'action="{path}/respond"' in page.text and "Westside" in page.text
    # A form without a message comes back with the problem beside the field.
    empty = await post_form(browser, path, {"message": "", "contact": CONTACT}, action=f"{path}/respond")
    assert empty.status_code == 422 and 'id="message-error"' in empty.text and sent == []
    # Sent: back to the item, which shows what the member sent.
    done = await post_form(browser, path, {"message": "Soup, please!", "contact": CONTACT},
                           action=f"{path}/respond")  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == f"{path}#my-responses"
    assert len(sent) == 1 and sent[0][1]["contact"] == CONTACT
    page = await browser.get(path)
    assert "Soup, please!" in page.text and "Waiting for an answer" in page.text
    assert CONTACT not in page.text
    mine = await browser.get("/my/responses")
    assert mine.status_code == 200 and "Soup, please!" in mine.text
    # An origin that cannot be reached: the member is told so, on the form.
    fake_origin(harness, monkeypatch, FetchError("connection refused"))
    failed = await post_form(browser, path, {"message": "Again", "contact": CONTACT},
                             action=f"{path}/respond")  # fmt: skip
    assert failed.status_code == 502 and "could not reach" in failed.text
    assert 'id="contact"' in failed.text and CONTACT in failed.text  # kept, to try again
    # Without a CSRF token, nothing is sent.
    refused = await browser.post(f"{path}/respond", data={"message": "x", "contact": "y"})
    assert refused.status_code == 403


async def test_the_responses_page_lists_responses_to_a_members_items(harness):
    feed = WestFeed()
    await add_west(harness, feed)
    browser = await harness.browser("poster")
    poster = harness.client(headers={"Authorization": "Bearer " + await harness.node.new_api_token(
        await harness.node.store.user_by_username("poster"))})  # fmt: skip
    need = await post(harness, poster)
    body = response(need["id"])
    await respond(harness, feed.key, body)
    page = await browser.get("/my/responses")
    assert CONTACT in page.text and "Lift to the clinic" in page.text
    # Accepting from this page comes back to it.
    done = await browser.post(f"/responses/{body['id']}", data={
        "state": "accepted", "back": "mine", "csrf_token": csrf_of(page.text)})  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == f"/my/responses#response-{body['id']}"
    assert "Accepted" in (await browser.get("/my/responses")).text

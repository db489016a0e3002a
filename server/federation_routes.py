"""Endpoints other nodes call, `/federation/…` (DESIGN §4.3–4.5). Every one is signed."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .api import read_json
from .errors import ClientError, Forbidden, PayloadTooLarge, Unauthorized
from .feed import (
    FEED_LIMIT_DEFAULT,
    FEED_LIMIT_MAX,
    page_json,
    read_page,
    read_snapshot_page,
    snapshot_json,
)
from .responses import inbox_message
from .routing import INBOX_MAX_BYTES, federation


def _whole_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # int() does not read thousands of digits: anything that long is out of range anyway.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20 or not low <= int(raw) <= high:
        raise ClientError(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(raw)


def _page_params(request: Request) -> tuple[int, int]:
    """`after` and `limit` of a paged read (the feed, the snapshot), checked strictly."""
    after = _whole_number(request, "after", 0, 0, 2**53 - 1)
    limit = _whole_number(request, "limit", FEED_LIMIT_DEFAULT, 1, FEED_LIMIT_MAX)
    unknown = set(request.query_params) - {"after", "limit"}
    if unknown:
        raise ClientError(f"unknown parameter {sorted(unknown)[0]}", field=sorted(unknown)[0])
    return after, limit


async def feed(request: Request) -> Response:
    """`GET /federation/feed?after=<seq>&limit=<n>`: entries after a seq, in order, ≤ 1 MiB."""
    node = request.app.state.node
    after, limit = _page_params(request)
    async with node.store.read() as db:
        texts, head = await read_page(db, after, limit)
    return Response(page_json(node.config.base_url, texts, head), media_type="application/json",
                    headers={"Cache-Control": "no-store"})  # fmt: skip


async def snapshot(request: Request) -> Response:
    """`GET /federation/snapshot?after=<seq>&limit=<n>`: the latest entry of each live item
    after a seq, in seq order, with the head, its entry and the key entries, ≤ 1 MiB
    (docs/protocol.md §8.1): a new ally syncs live state without replaying the history."""
    node = request.app.state.node
    after, limit = _page_params(request)
    async with node.store.read() as db:
        page = await read_snapshot_page(db, after, limit, node.now_text())
    return Response(snapshot_json(node.config.base_url, page), media_type="application/json",
                    headers={"Cache-Control": "no-store"})  # fmt: skip


async def _json_body(request: Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ClientError("the body must be a JSON object")
    return body


async def subscribe(request: Request) -> Response:
    """`POST /federation/subscriptions {"subscriber"}`: a node asks to follow this one."""
    node, signer = request.app.state.node, request.state.peer
    body = await _json_body(request)
    if set(body) != {"subscriber"} or body["subscriber"] != signer.node:
        raise ClientError("the body must be {\"subscriber\": <your base URL>}, signed by it",
                          field="subscriber")  # fmt: skip
    if signer.trust == "blocked":
        raise Forbidden("this node does not accept subscriptions from yours")
    state = await node.allies.subscription_requested(signer.peer_id)
    return JSONResponse({"state": state}, status_code=202)


async def unsubscribe(request: Request) -> Response:
    node, signer = request.app.state.node, request.state.peer
    if await request.body():
        raise ClientError("send no body: the subscriber is the signer")
    if signer.trust == "blocked":
        raise Forbidden("this node does not accept requests from yours")
    await node.allies.subscription_ended(signer.peer_id)
    return JSONResponse({"state": "none"})


async def inbox(request: Request) -> Response:
    """`POST /federation/inbox`: pushed entries, the answer to our subscription, a response to
    one of our items, or what became of a response we sent (access `inbox_sender`: the type
    chose which keys could sign it)."""
    node, signer = request.app.state.node, request.state.peer
    if len(await request.body()) > INBOX_MAX_BYTES:
        raise PayloadTooLarge(f"an inbox message is at most {INBOX_MAX_BYTES} bytes")
    parsed = getattr(request.state, "inbox_message", None)
    json_sent = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
    # A push's nonce, not recorded yet (`identify_node(defer_nonce=True)`: its body said
    # `entries`), commits with its entries; a push refused here records it on its own.
    unrecorded = signer.nonce
    try:
        body = parsed if isinstance(parsed, dict) and json_sent else await _json_body(request)
        kind = body.get("type")
        if kind in ("response", "response-status"):
            return await inbox_message(node, signer, body)
        if signer.trust != "trusted":  # identified among trusted keys only; checked once more
            raise Unauthorized("signature refused: this node takes that message only from its allies")
        if kind == "entries":
            if set(body) != {"type", "origin", "entries"}:
                raise ClientError("an entries message is {type, origin, entries}")
            if body["origin"] != signer.node:
                raise Forbidden("entries are taken only from their origin, signing for itself")
            unrecorded = None  # received_push records it
            status, answer = await node.allies.received_push(signer.peer_id, body, nonce=signer.nonce)
            return JSONResponse(answer, status_code=status)
        if kind == "subscription":
            if set(body) != {"type", "state"} or body["state"] not in ("accepted", "rejected"):
                raise ClientError("a subscription message is {type, state: accepted|rejected}")
            await node.allies.subscription_answered(signer.peer_id, body["state"])
            return JSONResponse({"ok": True})
        raise ClientError("unknown message type: expected entries, subscription, response or "
                          "response-status", field="type")
    finally:
        if unrecorded is not None:
            await unrecorded.remember(node.store)


async def cursor(request: Request) -> Response:
    """`GET /federation/cursor`: what this node has received of the signer's feed."""
    peer = await request.app.state.node.store.peer(request.state.peer.peer_id)
    return JSONResponse({"received": {"seq": peer.received_seq, "hash": peer.received_hash}},
                        headers={"Cache-Control": "no-store"})  # fmt: skip


routes = [
    federation("/federation/feed", feed, "feed_reader", name="federation_feed"),
    federation("/federation/snapshot", snapshot, "feed_reader", name="federation_snapshot"),
    federation("/federation/cursor", cursor, "trusted_node", name="federation_cursor"),
    federation("/federation/inbox", inbox, "inbox_sender", methods=("POST",),
               name="federation_inbox"),
    federation("/federation/subscriptions", subscribe, "any_node", methods=("POST",),
               name="federation_subscribe"),
    federation("/federation/subscriptions", unsubscribe, "any_node", methods=("DELETE",),
               name="federation_unsubscribe"),
]

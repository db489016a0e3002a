"""The JSON API, `/api/v1/…` (DESIGN §8): bearer tokens only, errors as `{"error": message}`."""

import base64
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from federation import items as item_rules
from federation.encoding import b64url_encode
from federation.errors import MalformedError
from federation.items import N_
from federation.strictjson import loads_strict

from .allies import peer_json
from .errors import ClientError, Invalid, NotFound, UnsupportedMediaType
from .node import has_role
from .openapi import openapi_document
from .routing import api, path_number, path_uuid, public
from .store import ItemQuery

LIST_LIMIT_MAX = 200
LIST_LIMIT_DEFAULT = 50
Q_MAX = 200
LISTABLE_STATUSES = ("open", "promised", "fulfilled", "withdrawn")
ORIGINS = ("local", "remote", "all")


async def read_json(request: Request) -> object:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("send JSON with Content-Type: application/json")
    try:
        return loads_strict(await request.body())
    except MalformedError as error:
        raise ClientError(f"the body is not acceptable JSON: {error}") from None


def encode_cursor(value: dict) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def decode_cursor(text: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = loads_strict(raw)
    except (ValueError, MalformedError):
        raise ClientError(N_("cursor is not one this node gave out"), field="cursor") from None
    if not isinstance(value, dict) or not (
        (set(value) == {"r"} and type(value["r"]) is int and value["r"] >= 0)
        or (set(value) == {"a"} and isinstance(value["a"], list) and len(value["a"]) == 2
            and isinstance(value["a"][0], str) and isinstance(value["a"][1], int))
    ):  # fmt: skip
        raise ClientError(N_("cursor is not one this node gave out"), field="cursor")
    return value


def _one_of(params, name: str, choices: tuple[str, ...]) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if value not in choices:
        raise ClientError(N_("%(field)s must be one of: %(choices)s"), field=name,
                          params={"field": name, "choices": ", ".join(choices)})  # fmt: skip
    return value


def item_query(request: Request, *, limit_default: int, limit_max: int) -> ItemQuery:
    """Build an item listing from the query string shared by the API and the browse page."""
    params = request.query_params
    node = request.app.state.node
    user = request.state.user
    status = _one_of(params, "status", LISTABLE_STATUSES)
    statuses = (status,) if status else item_rules.LIVE_STATUSES
    q = params.get("q", "").strip()
    if len(q) > Q_MAX:
        raise ClientError(N_("q must be at most %(max)d characters"), field="q",
                          params={"max": Q_MAX})  # fmt: skip
    raw_limit = params.get("limit") or str(limit_default)
    # isdecimal, not isdigit: int() refuses digits like "²"; nor does it read thousands of them.
    if not raw_limit.isdecimal() or len(raw_limit) > 20 or not 1 <= int(raw_limit) <= limit_max:
        raise ClientError(N_("limit must be a whole number from 1 to %(max)d"), field="limit",
                          params={"max": limit_max})  # fmt: skip
    query = ItemQuery(
        now=node.now_text(), statuses=statuses, kind=_one_of(params, "kind", item_rules.KINDS),
        category=_one_of(params, "category", item_rules.CATEGORIES), q=q or None,
        origin=_origin(params, node), item_id=params.get("id") or None, near=_near(params),
        limit=int(raw_limit),
    )  # fmt: skip
    if user is None:
        query.public_only = True
    elif status in item_rules.FINAL_STATUSES and not has_role(user, "coordinator"):
        # Ended items are their poster's history: a member lists only their own.
        query.owner_id = user.id
    cursor = params.get("cursor")
    if cursor:
        value = decode_cursor(cursor)
        if "r" in value:
            query.after_row = value["r"]
        else:
            query.after = (value["a"][0], value["a"][1])
    return query


def _origin(params, node) -> str:
    """`origin`: local, remote, all, or one group's base URL (this node's or a known peer's)."""
    value = params.get("origin") or "all"
    if value in ORIGINS or value == node.config.base_url or value in node.peer_names:
        return value
    raise ClientError(N_("origin must be local, remote, all or the base URL of a known group"),
                      field="origin")  # fmt: skip


def _near(params) -> str | None:
    """`near`: a geohash prefix (1 to 5 characters): items whose location lies within it."""
    value = params.get("near") or ""
    if not value:
        return None
    if not 1 <= len(value) <= item_rules.GEOHASH_MAX or any(
        c not in item_rules.GEOHASH_ALPHABET for c in value
    ):
        raise ClientError(N_("near must be a geohash of 1 to %(max)d characters"), field="near",
                          params={"max": item_rules.GEOHASH_MAX})  # fmt: skip
    return value


async def page_of_items(request: Request, query: ItemQuery):
    """One page of items and the cursor for the next (None at the end)."""
    node = request.app.state.node
    wanted = query.limit
    query.limit = wanted + 1
    views = await node.list_items(query, request.state.user)
    query.limit = wanted
    next_cursor = None
    if len(views) > wanted:
        views = views[:wanted]
        if query.q:
            next_cursor = encode_cursor({"r": views[-1].row.row})
        else:
            last = views[-1]
            next_cursor = encode_cursor({"a": [last.state["created"], last.row.row]})
    return views, next_cursor


async def list_items(request: Request) -> Response:
    query = item_query(request, limit_default=LIST_LIMIT_DEFAULT, limit_max=LIST_LIMIT_MAX)
    views, next_cursor = await page_of_items(request, query)
    return JSONResponse({"items": [view.to_json() for view in views], "next": next_cursor})


async def create_item(request: Request) -> Response:
    node = request.app.state.node
    view = await node.post_item(request.state.user, await read_json(request))
    return JSONResponse(view.to_json(), status_code=201,
                        headers={"Location": view.state["id"]})  # fmt: skip


def _uuid(request: Request) -> str:
    return path_uuid(request, "uuid", N_("no such item"))


async def get_item(request: Request) -> Response:
    node = request.app.state.node
    view = await node.item_for(_uuid(request), request.state.user)
    if not view.row.is_local:
        raise NotFound("no such item: only this node's own items are addressed by uuid here")
    return JSONResponse(view.to_json())


async def patch_item(request: Request) -> Response:
    node = request.app.state.node
    item_uuid = _uuid(request)
    view = await node.change_item(request.state.user, item_uuid, await read_json(request))
    return JSONResponse(view.to_json())


async def _peers_json(node, peers) -> list[dict]:
    prints = await node.allies.fingerprints()
    return [peer_json(peer, prints.get(peer.id)) for peer in peers]


async def list_peers(request: Request) -> Response:
    node = request.app.state.node
    return JSONResponse({"peers": await _peers_json(node, await node.store.peers())})


async def add_peer(request: Request) -> Response:
    node = request.app.state.node
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"url"}:
        raise Invalid("send {\"url\": <the node's base URL>}", field="url")
    peer, created = await node.allies.add_peer(body["url"], request.state.user)
    [shown] = await _peers_json(node, [peer])
    return JSONResponse(shown, status_code=201 if created else 200)


PEER_FIELDS = {"trust": str, "relay": bool, "follow": bool}


async def patch_peer(request: Request) -> Response:
    node = request.app.state.node
    peer_id = path_number(request, "id", N_("no such peer"))
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        raise Invalid("send an object with any of: trust, relay, follow")
    for name, value in body.items():
        if name not in PEER_FIELDS:
            raise Invalid(f"unknown field {name!r}: only trust, relay, follow", field=name)
        if type(value) is not PEER_FIELDS[name]:
            raise Invalid(f"{name} must be a {'string' if PEER_FIELDS[name] is str else 'boolean'}",
                          field=name)  # fmt: skip
    peer = await node.allies.set_peer(peer_id, request.state.user, **body)
    [shown] = await _peers_json(node, [peer])
    return JSONResponse(shown)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(request.app.state.node))


routes = [
    api("/api/v1/items", list_items, "member", methods=("GET",), name="api_items"),
    api("/api/v1/items", create_item, "member", methods=("POST",), name="api_create_item"),
    api("/api/v1/items/{uuid}", get_item, "member", methods=("GET",), name="api_item"),
    api("/api/v1/items/{uuid}", patch_item, "member", methods=("PATCH",), name="api_patch_item"),
    api("/api/v1/peers", list_peers, "admin", methods=("GET",), name="api_peers"),
    api("/api/v1/peers", add_peer, "admin", methods=("POST",), name="api_add_peer"),
    api("/api/v1/peers/{id}", patch_peer, "admin", methods=("PATCH",), name="api_patch_peer"),
    public("/api/v1/openapi.json", openapi, name="openapi"),
]

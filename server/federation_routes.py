"""Endpoints other nodes call, `/federation/…` (DESIGN §4.3–4.5). Every one is signed."""

from starlette.requests import Request
from starlette.responses import Response

from .errors import ClientError
from .feed import FEED_LIMIT_DEFAULT, FEED_LIMIT_MAX, page_json, read_page
from .routing import federation


def _whole_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ClientError(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(raw)


async def feed(request: Request) -> Response:
    """`GET /federation/feed?after=<seq>&limit=<n>`: entries after a seq, in order, ≤ 1 MiB."""
    node = request.app.state.node
    after = _whole_number(request, "after", 0, 0, 2**53 - 1)
    limit = _whole_number(request, "limit", FEED_LIMIT_DEFAULT, 1, FEED_LIMIT_MAX)
    unknown = set(request.query_params) - {"after", "limit"}
    if unknown:
        raise ClientError(f"unknown parameter {sorted(unknown)[0]}", field=sorted(unknown)[0])
    async with node.store.read() as db:
        texts, head = await read_page(db, after, limit)
    return Response(page_json(node.config.base_url, texts, head), media_type="application/json",
                    headers={"Cache-Control": "no-store"})  # fmt: skip


routes = [
    federation("/federation/feed", feed, "feed_reader", name="federation_feed"),
]

"""Machine-readable documents: the node document (DESIGN §4.1), NodeInfo 2.1, the health
check and the metrics (DESIGN §8).

NodeInfo (http://nodeinfo.diaspora.software/protocol, schema 2.1): `/.well-known/nodeinfo`
links to `/nodeinfo/2.1`. One known deviation from its schema: `protocols` has a closed enum
with no entry for us and needs one item at least, so the list holds only the protocols the
node really speaks, none until an ActivityPub bridge exists, and `aidnode/1` goes in
`metadata.protocol` (tests/test_nodeinfo.py checks that this is the only deviation).
"""

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from federation.timefmt import format_time

from . import __version__
from .routing import public

if TYPE_CHECKING:
    from .node import Node

NODEINFO_SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/2.1"
NODEINFO_CONTENT_TYPE = f'application/json; profile="{NODEINFO_SCHEMA}#"'
NODEINFO_CACHE_SECONDS = 60  # the counts are read at most once a minute, however often asked
HEALTH_TIMEOUT = 5.0


async def node_document(request: Request) -> Response:
    return JSONResponse(await request.app.state.node.node_document(),
                        headers={"Cache-Control": "public, max-age=300"})  # fmt: skip


async def nodeinfo_links(request: Request) -> Response:
    base = request.app.state.node.config.base_url
    return JSONResponse({"links": [{"rel": NODEINFO_SCHEMA, "href": f"{base}/nodeinfo/2.1"}]},
                        headers={"Cache-Control": "public, max-age=3600"})  # fmt: skip


async def nodeinfo_document(node: "Node") -> dict:
    """The node's NodeInfo 2.1 document. Registration is by invite only: never open."""
    now = node.now()
    users = await node.store.usage_counts(month_ago=format_time(now - timedelta(days=30)),
                                          halfyear_ago=format_time(now - timedelta(days=180)))  # fmt: skip
    return {
        "version": "2.1",
        "software": {"name": "aidnode", "version": __version__},
        "protocols": [],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": False,
        "usage": {"users": users, "localPosts": sum((await node.store.count_items()).values())},
        "metadata": {"protocol": "aidnode/1", "nodeName": node.config.name,
                     "nodeDescription": node.config.description},
    }  # fmt: skip


async def nodeinfo(request: Request) -> Response:
    cached = getattr(request.app.state, "nodeinfo_cache", None)
    if cached is None or time.monotonic() - cached[0] > NODEINFO_CACHE_SECONDS:
        cached = request.app.state.nodeinfo_cache = (
            time.monotonic(), await nodeinfo_document(request.app.state.node))
    return JSONResponse(cached[1], media_type=NODEINFO_CONTENT_TYPE,
                        headers={"Cache-Control": f"public, max-age={NODEINFO_CACHE_SECONDS}"})  # fmt: skip


async def metrics(request: Request) -> Response:
    """Prometheus text format (server/metrics.py): loopback or an admin token only."""
    node = request.app.state.node
    return Response(await node.metrics.render(node), media_type=node.metrics.content_type,
                    headers={"Cache-Control": "no-store"})  # fmt: skip


async def healthz(request: Request) -> Response:
    """200 when the node can serve: its database answers a real query, in time."""
    node = request.app.state.node
    try:
        ok = await asyncio.wait_for(node.store.ping(), HEALTH_TIMEOUT)
    except Exception:
        ok = False
    if not ok:
        return JSONResponse({"status": "unavailable", "error": "the database does not answer"},
                            status_code=503)  # fmt: skip
    return JSONResponse({"status": "ok"})


routes = [
    public("/.well-known/aidnode", node_document, name="node_document"),
    public("/healthz", healthz, name="healthz"),
    public("/.well-known/nodeinfo", nodeinfo_links, name="nodeinfo_links"),
    public("/nodeinfo/2.1", nodeinfo, name="nodeinfo"),
    public("/metrics", metrics, access="loopback_or_admin", name="metrics"),
]

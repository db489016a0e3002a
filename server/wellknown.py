"""Machine-readable documents: the node document (DESIGN §4.1) and the health check."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .routing import public


async def node_document(request: Request) -> Response:
    return JSONResponse(await request.app.state.node.node_document(),
                        headers={"Cache-Control": "public, max-age=300"})  # fmt: skip


async def healthz(request: Request) -> Response:
    """200 when the node can serve: its database answers."""
    node = request.app.state.node
    try:
        ok = await node.store.ping()
    except Exception:
        ok = False
    if not ok:
        return JSONResponse({"status": "unavailable", "error": "the database does not answer"},
                            status_code=503)  # fmt: skip
    return JSONResponse({"status": "ok"})


routes = [
    public("/.well-known/aidnode", node_document, name="node_document"),
    public("/healthz", healthz, name="healthz"),
]

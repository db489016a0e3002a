"""The app factory: `create_app(config)` builds one node as a starlette app.

The onion, outside in:

    ServerErrorMiddleware   (starlette) anything unexpected → a plain 500, logged
    ObserveRequests         each request timed once answered: one access-log line
                            (server/logs.py), counted by route name (server/metrics.py)
    SecurityHeaders         CSP, no framing, no sniffing, same-origin referrers
    BodyLimit               413 before a body larger than its route's cap is read
    ExceptionMiddleware     ClientError → {"error"} (API, federation) or the error page
    Router                  AccessRoutes: who may use each is declared with the route

The lifespan opens the node (store, key) and runs the background workers; nothing runs at
import, so tests build as many nodes in one process as they like. With several worker
processes (`workers` > 1), only the one that holds the data directory's lock runs them
(server/workers.py); `app_from_environment` is what each of those processes builds.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.items import N_
from federation.timefmt import Clock, system_clock

from . import (
    account_security,
    api,
    atom,
    federation_routes,
    notifications,
    responses,
    web,
    wellknown,
)
from .config import Config, load_config
from .errors import ClientError
from .logs import ObserveRequests, configure_logging, log_access
from .metrics import request_observer
from .node import Node
from .templating import Templates
from .workers import Leadership, WakeReceiver, WakeSender, run_rounds, wake_address

log = logging.getLogger("aidnode")

JSON_PREFIXES = ("/api/", "/federation/", "/.well-known/", "/healthz", "/metrics", "/nodeinfo/")
BODY_LIMIT_API = 64 * 1024
BODY_LIMIT_FORM = 64 * 1024
BODY_LIMIT_FEDERATION = 1024 * 1024
EXPIRY_INTERVAL = 60.0
WORKER_GRACE = 15.0  # seconds workers have at shutdown to finish their round
PEER_NAMES_REFRESH = 5.0  # seconds, with several processes: one may add a peer the others show
DATA_DIR_VARIABLE = "AIDNODE_SERVE_DATA_DIR"  # set by `aidnode serve` for its worker processes


def wants_json(path: str) -> bool:
    return path.startswith(JSON_PREFIXES)


def body_limit_for(path: str) -> int:
    if path.startswith("/federation/"):
        return BODY_LIMIT_FEDERATION
    if path.startswith("/api/"):
        return BODY_LIMIT_API
    return BODY_LIMIT_FORM


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over the route's cap with 413, whether or not they say their size."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, send, limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        template = N_("the request body is larger than this endpoint accepts (%(limit)d bytes)")
        if wants_json(scope["path"]):
            response = JSONResponse({"error": template % {"limit": limit}}, status_code=413)
        else:  # a page: in the language of its Accept-Language (no session is looked up here)
            gettext = scope["app"].state.templates.gettext(Request(scope))
            response = Response(gettext(template) % {"limit": limit}, status_code=413,
                                media_type="text/plain")  # fmt: skip
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]  # fmt: skip


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error_response(request: Request, status: int, error: ClientError, body: dict, headers: dict):
    if wants_json(request.url.path):
        return JSONResponse(body, status_code=status, headers=headers)
    templates: Templates = request.app.state.templates
    if not hasattr(request.state, "user"):
        request.state.user = None
    message = error.translated(templates.gettext(request))
    response = templates.render(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )
    response.headers.update(headers)
    return response


async def client_error(request: Request, error: ClientError) -> Response:
    return _error_response(request, error.status, error, error.body(), error.headers())


async def http_error(request: Request, error: HTTPException) -> Response:
    messages = {404: N_("not found"), 405: N_("method not allowed")}
    message = messages.get(error.status_code, str(error.detail))
    return _error_response(request, error.status_code, ClientError(message), {"error": message},
                           dict(error.headers or {}))  # fmt: skip


async def client_gone(request: Request, error: ClientDisconnect) -> Response:
    """The client hung up before its request body was read (a peer killed mid-push, a member
    closing the tab): nothing was done, no one is there to answer, and it is no error of ours."""
    log.info("%s %s: the client went away before its request was read", request.method,
             request.url.path)  # fmt: skip
    return Response("the request was not read to its end", status_code=400, media_type="text/plain")


async def server_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    if wants_json(request.url.path):
        return JSONResponse({"error": "internal error"}, status_code=500)
    gettext = request.app.state.templates.gettext(request)
    return Response(gettext(N_("Something went wrong on this node. It has been logged.")),
                    status_code=500, media_type="text/plain")  # fmt: skip


async def _expire(node: Node) -> None:
    count = await node.expire_due_items()
    if count:
        log.info("expired %d items", count)
    await node.delete_expired_sessions()


async def _escalate(node: Node) -> None:
    """Escalate needs whose delay has passed, and send relays that waited for their origin's
    quota or the edit interval."""
    count = await node.escalate_due_needs()
    if count:
        log.info("escalated %d needs to allies", count)
    await node.allies.relay_waiting()


async def _verify_restore(node: Node, done: asyncio.Event) -> None:
    """After a restore: ask the nodes that follow this one what they hold of its feed, until
    none is ahead and the hold lifts (server/backup.py)."""
    problem = await node.verify_restored_feed()
    if problem:
        log.warning("feed on hold after a restore: %s", problem)
    else:
        log.info("the feed is not on hold: no node that follows this one is ahead of it")
        done.set()


def _workers(node: Node) -> list[asyncio.Task]:
    """The background workers, each a `run_rounds` loop that stops with `node.stopping`.
    Escalation is checked often enough that a need asks allies within a tenth of its delay."""
    escalation_interval = max(1.0, min(30.0, node.config.escalate_after_urgent / 10,
                                       node.config.escalate_after / 10))  # fmt: skip
    loops = [
        run_rounds(lambda: _expire(node), asyncio.Event(), EXPIRY_INTERVAL, "expiry", node.stopping),
        run_rounds(lambda: _escalate(node), asyncio.Event(), escalation_interval, "escalation",
                   node.stopping),
        node.allies.run(), node.allies.run_delivery(), node.responses.run(),
        node.notifications.run(),
    ]  # fmt: skip
    if node.feed.hold is not None:
        # Its own stop: set by the node's shutdown, or once the hold has lifted.
        lifted = asyncio.Event()
        node.stopping_hooks.append(lifted)
        loops.append(run_rounds(lambda: _verify_restore(node, lifted), asyncio.Event(),
                                node.config.poll_interval, "checking the feed after a restore",
                                lifted))  # fmt: skip
    return [asyncio.create_task(loop) for loop in loops]


def _share_the_work(node: Node, cleanup: list[Callable[[], None]]) -> bool:
    """One of several processes serving the node: whether this one leads (runs the background
    workers and hears the others' wake-ups) or forwards its wake-ups to the one that does."""
    address = wake_address(node.config.database_path)
    leadership = Leadership(node.config.data_dir / "serve.lock")
    if leadership.try_acquire():
        receiver = WakeReceiver(address, node.wakes)
        cleanup += [leadership.release, receiver.close]  # undone last first: the socket, then the lock
        log.info("worker process %d runs the background workers", os.getpid())
        return True
    sender = WakeSender(address)
    for event in node.wakes.values():
        event.forward = sender
    cleanup.append(sender.close)
    return False


def create_app(config: Config, *, clock: Clock = system_clock, workers: bool = True) -> Starlette:
    """Build a node. `workers=False` leaves the background workers off (for tests that drive
    them by hand with an injected clock)."""
    node = Node(config, clock=clock)
    node.responses = responses.Responses(node)
    node.notifications = notifications.Notifications(node)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        cleanup: list[Callable[[], None]] = []
        tasks = []
        if workers and config.workers > 1:
            leader = _share_the_work(node, cleanup)
            tasks = _workers(node) if leader else []
            tasks.append(asyncio.create_task(run_rounds(
                node.read_peer_names, asyncio.Event(), PEER_NAMES_REFRESH,
                "reading the peers' names", node.stopping)))  # fmt: skip
        elif workers:
            tasks = _workers(node)
        if workers:
            # A serving node checks allies' signatures on its checker processes from its first
            # batch on (tests that drive ingest by hand have them start with their first batch).
            node.allies.verifier.start()
        try:
            yield
        finally:
            # Graceful: each worker finishes the round it is in (a push on its way, a page
            # being taken in) and stops; whatever is still running after the grace is
            # cancelled, which leaves nothing half-written (every write is one transaction).
            node.stopping.set()
            for hook in node.stopping_hooks:
                hook.set()
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=WORKER_GRACE)
                for task in late:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for step in reversed(cleanup):
                step()
            await node.close()

    static_dir = str(resources.files("templates") / "static")
    routes = [
        *wellknown.routes,
        *api.routes,
        *federation_routes.routes,
        *responses.routes,
        *notifications.routes,
        *account_security.routes,
        *atom.routes,
        *web.routes,
        Mount("/static", app=StaticFiles(directory=static_dir), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ObserveRequests, observers=[log_access, request_observer(node.metrics)]),
                    Middleware(SecurityHeaders), Middleware(BodyLimit)],
        exception_handlers={ClientError: client_error, HTTPException: http_error,
                            ClientDisconnect: client_gone, Exception: server_error},
        lifespan=lifespan,
    )  # fmt: skip
    app.state.node = node
    app.state.templates = Templates()
    return app


def app_from_environment() -> Starlette:
    """The app of one of `aidnode serve`'s worker processes (uvicorn imports and calls this in
    each): the data directory comes from the environment serve set before starting them."""
    config = load_config(Path(os.environ[DATA_DIR_VARIABLE]))
    configure_logging(config.log_format)
    return create_app(config)

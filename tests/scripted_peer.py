"""A scripted peer for live tests: a minimal node that says what the test makes it say.

It serves a node document, accepts subscriptions, and serves a feed of whatever entries the
test appends (signed with its own key, chained properly, so a real node accepts its chain and
judges only what the entries carry). It checks nothing that real nodes send it: it plays a
node that is trusted but misbehaves. Served by uvicorn on a free 127.0.0.1 port, in a thread
of the test process, stopped when the test ends.
"""

import asyncio
import json
import threading
from datetime import UTC, datetime

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from federation.entries import entry_hash, sign_entry
from federation.httpsig import sign_request
from federation.identity import node_document
from federation.keys import generate_key
from tests.live import free_port

AT = "2026-11-24T17:00:00Z"


class ScriptedPeer:
    def __init__(self, name: str = "Scripted", description: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.description = description
        self.key = generate_key("main")
        self.entries: list[dict] = []
        self.subscribers: list[str] = []
        self.inbox_delay = 0.0  # seconds the inbox takes to answer a push
        self.pushed: list[dict] = []  # pushes answered, in order
        self.feed_page: bytes | None = None  # when set, the feed answers these bytes instead
        self.feed_reads = 0  # feed requests answered
        self.feed_served = 0  # entries those answers carried
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def append(self, type: str, body: dict) -> dict:
        """Sign and append an entry to this peer's own feed."""
        prev = entry_hash(self.entries[-1]) if self.entries else None
        entry = sign_entry(origin=self.url, seq=len(self.entries) + 1, prev=prev, type=type, at=AT,
                           body=body, key=self.key)  # fmt: skip
        self.entries.append(entry)
        return entry

    def relay(self, inner: dict) -> dict:
        """A relay entry passing `inner` on, this peer as the only relayer."""
        return self.append("relay", {"entry": inner, "path": [self.url]})

    def sign(self, type: str, body: dict, *, seq: int, prev: str | None, key=None) -> dict:
        """An entry of this peer's chain, signed (by `key`, default its own) but not appended:
        for pushes, forks and entries signed with the wrong key."""
        return sign_entry(origin=self.url, seq=seq, prev=prev, type=type, at=AT, body=body,
                          key=key or self.key)  # fmt: skip

    def signed(self, method: str, url: str, body: object = None, *, content: bytes | None = None,
               now: datetime | None = None, nonce: str | None = None, key=None) -> httpx.Request:
        """A request signed as this peer (by `key` under this peer's key id, default its own
        key), at `now` (default the wall clock), with `nonce` (default a fresh one)."""
        if content is not None:
            request = httpx.Request(method, url, content=content,
                                    headers={"Content-Type": "application/json"})  # fmt: skip
        elif body is not None:
            request = httpx.Request(method, url, json=body)
        else:
            request = httpx.Request(method, url)
        return sign_request(request, key or self.key, self.key.key_id(self.url),
                            now=now or datetime.now(UTC), nonce=nonce)  # fmt: skip

    def send(self, request: httpx.Request) -> httpx.Response:
        with httpx.Client(timeout=20) as client:
            return client.send(request)

    def push(self, url: str, entries: list, **kwargs) -> httpx.Response:
        """Push entries of this peer's feed to a node's inbox, signed."""
        body = {"type": "entries", "origin": self.url, "entries": entries}
        return self.send(self.signed("POST", f"{url}/federation/inbox", body, **kwargs))

    def app(self) -> Starlette:
        document = node_document(base_url=self.url, name=self.name, description=self.description,
                                 keys=[(self.key.name, self.key.public, None)], version="test")  # fmt: skip

        async def well_known(request: Request) -> Response:
            return JSONResponse(document)

        async def subscribe(request: Request) -> Response:
            if request.method == "POST":
                self.subscribers.append(request.headers.get("signature-input", ""))
                return JSONResponse({"state": "accepted"}, status_code=202)
            return JSONResponse({"state": "none"})

        async def feed(request: Request) -> Response:
            self.feed_reads += 1
            if self.feed_page is not None:
                return Response(self.feed_page, media_type="application/json")
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", "100"))
            head = ({"seq": len(self.entries), "hash": entry_hash(self.entries[-1])}
                    if self.entries else {"seq": 0, "hash": None})  # fmt: skip
            page = self.entries[after : after + limit]
            self.feed_served += len(page)
            return JSONResponse({"origin": self.url, "head": head, "entries": page})

        async def inbox(request: Request) -> Response:
            body = json.loads(await request.body())
            await asyncio.sleep(self.inbox_delay)
            entries = body.get("entries") or []
            self.pushed.append(body)
            last = entries[-1] if entries else None
            return JSONResponse({"received": {"seq": last["seq"] if last else 0,
                                              "hash": entry_hash(last) if last else None}})

        return Starlette(routes=[
            Route("/.well-known/aidnode", well_known),
            Route("/federation/subscriptions", subscribe, methods=["POST", "DELETE"]),
            Route("/federation/feed", feed),
            Route("/federation/inbox", inbox, methods=["POST"]),
        ])  # fmt: skip

    def subscribe_to(self, url: str) -> httpx.Response:
        """Ask a node, with a signed request, to let this peer follow it."""
        request = httpx.Request("POST", f"{url}/federation/subscriptions",
                                json={"subscriber": self.url})  # fmt: skip
        sign_request(request, self.key, self.key.key_id(self.url), now=datetime.now(UTC))
        with httpx.Client(timeout=10) as client:
            return client.send(request)

    def start(self) -> "ScriptedPeer":
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), daemon=True)
        self._thread.start()
        for _ in range(500):  # bounded: 10 s
            if self._server.started:
                return self
            threading.Event().wait(0.02)
        raise AssertionError(f"the scripted peer did not start on port {self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

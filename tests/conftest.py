"""Shared test helpers: build nodes in temp dirs, drive them in-process, log people in.

`make_node(tmp_path, **settings)` creates a node with `aidnode init`'s own code; the `app`
fixtures run its lifespan with asgi-lifespan (httpx's ASGITransport does not), and the
clients talk to it over httpx as a browser or a program would.
"""

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.timefmt import FixedClock
from server.app import create_app
from server.config import load_config
from server.node import init_node

BASE_URL = "http://127.0.0.1:8765"
PASSWORD = "correct horse battery staple"
START = datetime(2026, 11, 24, 18, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend():
    # aiosqlite runs on asyncio only.
    return "asyncio"


def make_node(tmp_path: Path, name: str = "Eastside Mutual Aid", base_url: str = BASE_URL,
              **settings):
    """Create a node's data directory and return its Config (settings override the file)."""
    data_dir = tmp_path / "node"
    init_node(data_dir, name=name, base_url=base_url, environ={})
    return load_config(data_dir, environ={}, **settings)


class NodeHarness:
    """A running in-process node with helpers to make members and clients."""

    def __init__(self, app, config, clock):
        self.app = app
        self.config = config
        self.clock = clock
        self.node = app.state.node

    def client(self, **kwargs) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=self.config.base_url, **kwargs)

    async def add_user(self, username: str, role: str = "member", display_name: str | None = None):
        return await self.node.create_user(
            username=username, display_name=display_name or username.title(), password=PASSWORD,
            role=role,
        )

    async def api_client(self, username: str, role: str = "member") -> httpx.AsyncClient:
        """A client holding a bearer token for a new member with that role."""
        user = await self.add_user(username, role)
        token = await self.node.new_api_token(user)
        return self.client(headers={"Authorization": f"Bearer {token}"})

    async def browser(self, username: str | None = None, role: str = "member") -> httpx.AsyncClient:
        """A cookie-keeping client, logged in through the real login form when a name is given."""
        client = self.client(follow_redirects=False)
        if username is not None:
            await self.add_user(username, role)
            await login(client, username, PASSWORD)
        return client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    page = await client.get("/login")
    if page.status_code != 200:  # already logged in: the form on any page carries the token
        page = await client.get("/")
    response = await client.post("/login", data={
        "username": username, "password": password, "csrf_token": csrf_of(page.text), "next": "/",
    })  # fmt: skip
    assert response.status_code == 303, response.text[:500]
    return response


async def post_form(client: httpx.AsyncClient, form_url: str, data: dict, action: str | None = None):
    """Load a page holding a form, then POST `data` with that page's CSRF token."""
    page = await client.get(form_url)
    assert page.status_code == 200, (form_url, page.status_code)
    return await client.post(action or form_url, data={**data, "csrf_token": csrf_of(page.text)})


@pytest.fixture
def clock():
    return FixedClock(START)


@pytest.fixture
async def harness(tmp_path, clock):
    config = make_node(tmp_path)
    app = create_app(config, clock=clock, workers=False)
    async with LifespanManager(app):
        yield NodeHarness(app, config, clock)


@pytest.fixture
def harness_factory(tmp_path, clock):
    """Build a node with extra settings: `async with harness_factory(public_offers=True) as h`."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def build(**settings):
        config = make_node(tmp_path, **settings)
        app = create_app(config, clock=clock, workers=False)
        async with LifespanManager(app):
            yield NodeHarness(app, config, clock)

    return build

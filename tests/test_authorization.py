"""Who may use each route: a route × role matrix generated from the app's own routes.

Every route declares its access level. This test holds the expected level of every route in
a table of its own, so a route cannot be added (or loosened) without this file saying so,
then checks each cell, anonymous, member, coordinator, admin and another node, against the
live app.
"""

import json

import httpx
import pytest

from federation.httpsig import sign_request
from server.routing import AccessRoute
from tests.conftest import csrf_of
from tests.test_feed import WEST, trust_peer

pytestmark = pytest.mark.anyio

EXPECTED = {
    ("GET", "/"): "anyone",
    ("GET", "/login"): "anyone",
    ("POST", "/login"): "anyone",
    ("POST", "/logout"): "member",
    ("GET", "/join/{code}"): "anyone",
    ("POST", "/join/{code}"): "anyone",
    ("GET", "/items"): "visitor_if_public",
    ("GET", "/items/new"): "member",
    ("POST", "/items/new"): "member",
    ("GET", "/items/{uuid}"): "visitor_if_public",
    ("GET", "/items/{uuid}/edit"): "member",
    ("POST", "/items/{uuid}/edit"): "member",
    ("POST", "/items/{uuid}/status"): "member",
    ("GET", "/my/items"): "member",
    ("POST", "/items/{uuid}/respond"): "member",
    ("POST", "/responses/{id}"): "member",
    ("GET", "/my/responses"): "member",
    ("GET", "/notifications"): "member",
    ("POST", "/account/email"): "member",
    ("POST", "/account/password"): "member",
    ("POST", "/account/tokens/revoke"): "member",
    ("GET", "/admin/members/{user_id}/tokens"): "admin",
    ("POST", "/admin/members/{user_id}/tokens/revoke"): "admin",
    # Anyone, but only while public_offers is on: 404 otherwise, members too (server/atom.py).
    ("GET", "/offers.atom"): "anyone",
    ("GET", "/account"): "member",
    ("POST", "/account"): "member",
    ("GET", "/coordinate"): "coordinator",
    ("GET", "/admin/members"): "admin",
    ("POST", "/admin/members/{user_id}"): "admin",
    ("GET", "/admin/invites"): "admin",
    ("POST", "/admin/invites"): "admin",
    ("POST", "/admin/invites/{invite_id}/revoke"): "admin",
    ("GET", "/admin/audit"): "admin",
    ("GET", "/admin/peers"): "admin",
    ("POST", "/admin/peers"): "admin",
    ("POST", "/admin/peers/{peer_id}"): "admin",
    ("GET", "/api/v1/items"): "member",
    ("POST", "/api/v1/items"): "member",
    ("GET", "/api/v1/items/{uuid}"): "member",
    ("PATCH", "/api/v1/items/{uuid}"): "member",
    ("GET", "/api/v1/peers"): "admin",
    ("POST", "/api/v1/peers"): "admin",
    ("PATCH", "/api/v1/peers/{id}"): "admin",
    ("GET", "/api/v1/responses"): "member",
    ("POST", "/api/v1/responses"): "member",
    ("GET", "/api/v1/responses/sent"): "member",
    ("PATCH", "/api/v1/responses/{id}"): "member",
    ("GET", "/api/v1/openapi.json"): "anyone",
    ("GET", "/.well-known/aidnode"): "anyone",
    ("GET", "/healthz"): "anyone",
    ("GET", "/.well-known/nodeinfo"): "anyone",
    ("GET", "/nodeinfo/2.1"): "anyone",
    ("GET", "/metrics"): "loopback_or_admin",
    ("GET", "/federation/feed"): "feed_reader",
    ("GET", "/federation/snapshot"): "feed_reader",
    ("GET", "/federation/cursor"): "trusted_node",
    ("POST", "/federation/inbox"): "inbox_sender",
    ("POST", "/federation/subscriptions"): "any_node",
    ("DELETE", "/federation/subscriptions"): "any_node",
}
# Routes on one item that only its poster or a coordinator may use: the item in the matrix
# belongs to someone else, so a plain member is refused (403) there.
POSTER_OR_COORDINATOR = {
    ("GET", "/items/{uuid}/edit"), ("POST", "/items/{uuid}/edit"),
    ("POST", "/items/{uuid}/status"), ("PATCH", "/api/v1/items/{uuid}"),
}
ROLES = (None, "member", "coordinator", "admin")
RANK = {None: 0, "member": 1, "coordinator": 2, "admin": 3}


def declared_routes(app):
    for route in app.routes:
        if isinstance(route, AccessRoute):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, route.path, route


def may(access: str, role: str | None, public_offers: bool) -> bool:
    if access == "anyone":
        return True
    if access == "visitor_if_public":
        return public_offers or role is not None
    if access == "loopback_or_admin":
        return True  # the in-process client is 127.0.0.1 (other addresses: tests/test_metrics.py)
    if access in ("feed_reader", "trusted_node", "any_node", "inbox_sender"):
        return False  # only other nodes, by signature (tests/test_feed.py); people never
    return RANK[role] >= RANK[access]


async def test_every_route_is_in_the_table(harness):
    """The app's routes and their access levels are exactly the ones this file expects."""
    declared = {(m, p): r.access for m, p, r in declared_routes(harness.app)}
    assert declared == EXPECTED


@pytest.mark.parametrize("public_offers", [False, True])
async def test_route_role_matrix(harness_factory, public_offers):
    """Each route answers each role as its access level says."""
    async with harness_factory(public_offers=public_offers) as h:
        # Fixtures for path parameters: someone else's item, a member, an invite.
        owner = await h.api_client("owner")
        item = (await owner.post("/api/v1/items", json={
            "kind": "offer", "title": "Bike", "body": "A bike.", "category": "transport",
        })).json()  # fmt: skip
        item_uuid = item["id"].rsplit("/", 1)[1]
        member = await h.node.store.user_by_username("owner")
        await h.node.new_invite("member", None)
        invite_id = (await h.node.store.list_invites())[0]["id"]
        params = {"uuid": item_uuid, "code": "x" * 43, "user_id": str(member.id),
                  "invite_id": str(invite_id), "id": "1", "peer_id": "1"}  # fmt: skip

        for role in ROLES:
            # One logged-in browser and one API client per role.
            browser = await h.browser(f"b{RANK[role]}", role) if role else await h.browser()
            api = await h.api_client(f"a{RANK[role]}", role) if role else h.client()
            # The token of this browser's session (a visitor's comes with the login form).
            csrf = csrf_of((await browser.get("/" if role else "/login")).text)
            for method, path, route in declared_routes(h.app):
                if (method, path) in {("POST", "/logout")}:
                    continue  # checked below, last, since it ends the session
                url = path.format(**params)
                client = api if route.surface in ("api", "public", "federation") else browser
                kwargs = {}
                if method == "POST":
                    kwargs["data"] = {"csrf_token": csrf}
                elif method == "PATCH":
                    kwargs["json"] = {}
                response = await client.request(method, url, **kwargs)
                cell = f"{method} {path} as {role or 'anonymous'}: {response.status_code}"
                assert response.status_code < 500, cell
                if (method, path) == ("POST", "/login"):
                    # Open to all; empty credentials are simply wrong ones.
                    assert response.status_code == 401, cell
                    assert "wrong username or password" in response.text
                    continue
                access = route.access
                if (method, path) in POSTER_OR_COORDINATOR:
                    access = "coordinator"
                if may(access, role, public_offers):
                    assert response.status_code not in (401, 403), cell
                    assert not response.headers.get("location", "").startswith("/login"), cell
                elif role is None and route.surface == "page":
                    assert response.status_code == 303, cell
                    assert response.headers["location"].startswith("/login?next="), cell
                elif role is None or route.surface == "federation":
                    assert response.status_code == 401, cell
                else:
                    assert response.status_code == 403, cell
            if role is not None:
                out = await browser.post("/logout", data={"csrf_token": csrf})
                assert out.status_code == 303
                assert (await browser.get("/my/items")).status_code == 303


async def test_coordinators_cannot_reach_admin_pages_by_api_token(harness):
    """Admin pages take sessions only: a bearer token on a page route counts for nothing."""
    admin_api = await harness.api_client("root", "admin")
    response = await admin_api.get("/admin/members", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


FEDERATION_ACCESS = ("feed_reader", "trusted_node", "any_node", "inbox_sender")


@pytest.mark.parametrize("trust", ["trusted", "unknown", "blocked"])
async def test_route_matrix_for_another_node(harness, trust):
    """The matrix's fifth column: a request signed by another node, trusted, known or blocked.

    A node's signature counts on the federation routes alone: everywhere else the request is
    answered exactly as the same request from an anonymous visitor. On the federation routes,
    a trusted node is let in; a node known but not trusted only where any node may come; a
    blocked node nowhere (its key is not looked up, or it is told no).
    """
    key = await trust_peer(harness)
    if trust != "trusted":
        async with harness.node.store.write() as db:
            await db.execute("UPDATE peers SET trust = ?", (trust,))
    owner = await harness.api_client("owner")
    item = (await owner.post("/api/v1/items", json={
        "kind": "offer", "title": "Bike", "body": "A bike.", "category": "transport",
    })).json()  # fmt: skip
    params = {"uuid": item["id"].rsplit("/", 1)[1], "code": "x" * 43, "user_id": "1",
              "invite_id": "1", "id": "1", "peer_id": "1"}  # fmt: skip
    async with harness.client(follow_redirects=False) as client:
        for method, path, route in declared_routes(harness.app):
            url = harness.config.base_url + path.format(**params)
            body = b"{}" if method in ("POST", "PATCH") else b""
            if (method, path) == ("POST", "/federation/subscriptions"):
                body = json.dumps({"subscriber": WEST}).encode()
            headers = {"content-type": "application/json"} if body else {}
            signed = sign_request(httpx.Request(method, url, content=body, headers=headers),
                                  key, key.key_id(WEST), now=harness.clock())  # fmt: skip
            response = await client.send(signed)
            cell = f"{method} {path} signed by a {trust} node: {response.status_code} {response.text[:200]}"
            assert response.status_code < 500, cell
            if route.access not in FEDERATION_ACCESS:
                plain = await client.request(method, url, content=body, headers=headers)
                assert response.status_code == plain.status_code, cell
                if route.access not in ("anyone", "loopback_or_admin"):
                    assert response.status_code in (303, 401, 403, 404), cell
                    assert response.status_code != 404 or route.access == "visitor_if_public", cell
            elif trust == "trusted" or (trust == "unknown" and route.access == "any_node"):
                assert response.status_code not in (401, 403), cell
                if route.access == "any_node":
                    assert response.status_code in (200, 202), cell
            else:
                assert response.status_code in ((401, 403) if route.access == "any_node" else (401,)), cell

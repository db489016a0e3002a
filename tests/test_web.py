"""The web pages as a person uses them: log in, post, edit, change status, invite, join."""

import re

import pytest

from tests.conftest import PASSWORD, csrf_of, login, post_form

pytestmark = pytest.mark.anyio

NEED_FORM = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday 9am.\nWheelchair.",
             "category": "transport", "urgency": "urgent", "escalation": "after_delay",
             "tags": "ride, clinic", "location_label": "Eastside", "location_geohash": "u33db"}  # fmt: skip


def cookie_header(response, prefix: str) -> str:
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith(prefix))


async def test_login_sets_a_hardened_per_node_cookie(harness):
    browser = await harness.browser()
    await harness.add_user("jo")
    response = await login(browser, "jo", PASSWORD)
    cookie = cookie_header(response, "aidnode_session_")
    name = cookie.split("=", 1)[0]
    assert name == f"aidnode_session_{harness.node.cookie_suffix}" and len(name) == len("aidnode_session_") + 8
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # http loopback node; https nodes set Secure (below)
    assert (await browser.get("/my/items")).status_code == 200


async def test_https_node_sets_secure_cookies(harness_factory):
    async with harness_factory(base_url="https://aid.eastside.example") as h:
        browser = h.client(follow_redirects=False)
        await h.add_user("jo")
        response = await login(browser, "jo", PASSWORD)
        assert "Secure" in cookie_header(response, "aidnode_session_")


async def test_wrong_password_and_unknown_user_look_the_same(harness):
    browser = await harness.browser()
    await harness.add_user("jo")
    page = await browser.get("/login")
    wrong = await browser.post("/login", data={"username": "jo", "password": "nope nope nope",
                                               "csrf_token": csrf_of(page.text)})  # fmt: skip
    nobody = await browser.post("/login", data={"username": "nobody", "password": "nope nope nope",
                                                "csrf_token": csrf_of(page.text)})  # fmt: skip
    assert wrong.status_code == nobody.status_code == 401
    assert "wrong username or password" in wrong.text and "wrong username or password" in nobody.text
    assert 'value="jo"' in wrong.text  # the username is kept in the form


async def test_login_is_rate_limited_per_account(harness):
    browser = await harness.browser()
    await harness.add_user("jo")
    csrf = csrf_of((await browser.get("/login")).text)
    for _ in range(5):
        response = await browser.post("/login", data={"username": "jo", "password": "x" * 12,
                                                      "csrf_token": csrf})  # fmt: skip
        assert response.status_code == 401
    # Locked now, even with the right password.
    locked = await browser.post("/login", data={"username": "jo", "password": PASSWORD,
                                                "csrf_token": csrf})  # fmt: skip
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0


async def test_login_needs_its_csrf_token(harness):
    browser = await harness.browser()
    await harness.add_user("jo")
    await browser.get("/login")
    response = await browser.post("/login", data={"username": "jo", "password": PASSWORD})
    assert response.status_code == 403
    assert not any(h.startswith("aidnode_session_") for h in response.headers.get_list("set-cookie"))


async def test_new_session_at_login_and_logout_ends_it(harness):
    """Login replaces any session the browser had; logout makes the old cookie worthless."""
    browser = await harness.browser("jo")
    first = browser.cookies.get(f"aidnode_session_{harness.node.cookie_suffix}")
    await login(browser, "jo", PASSWORD)
    second = browser.cookies.get(f"aidnode_session_{harness.node.cookie_suffix}")
    assert first != second
    assert await harness.node.session(first) is None
    csrf = csrf_of((await browser.get("/")).text)
    await browser.post("/logout", data={"csrf_token": csrf})
    assert await harness.node.session(second) is None
    replay = harness.client(follow_redirects=False,
                            cookies={f"aidnode_session_{harness.node.cookie_suffix}": second})  # fmt: skip
    assert (await replay.get("/my/items")).status_code == 303


async def test_post_a_need_through_the_form(harness):
    browser = await harness.browser("jo")
    response = await post_form(browser, "/items/new", NEED_FORM)
    assert response.status_code == 303
    page = await browser.get(response.headers["location"])
    assert page.status_code == 200 and "Ride to the clinic" in page.text
    [row] = await harness.node.store.fetch_all("SELECT state, escalation FROM items")
    assert '"urgency": "urgent"' in row["state"] and row["escalation"] == "after_delay"
    assert '"tags": ["ride", "clinic"]' in row["state"]


async def test_form_errors_show_beside_the_field_and_keep_input(harness):
    browser = await harness.browser("jo")
    response = await post_form(browser, "/items/new", {**NEED_FORM, "location_geohash": "u33dbc"})
    assert response.status_code == 422
    assert "geohash must be at most 5 characters" in response.text
    assert 'value="Ride to the clinic"' in response.text
    assert await harness.node.store.fetch_all("SELECT id FROM items") == []


async def test_form_post_without_csrf_is_refused_and_changes_nothing(harness):
    browser = await harness.browser("jo")
    response = await browser.post("/items/new", data=NEED_FORM)
    assert response.status_code == 403
    wrong = await browser.post("/items/new", data={**NEED_FORM, "csrf_token": "A" * 43})
    assert wrong.status_code == 403
    assert await harness.node.store.fetch_all("SELECT id FROM items") == []


async def test_edit_and_status_through_forms(harness):
    browser = await harness.browser("jo")
    created = await post_form(browser, "/items/new", NEED_FORM)
    url = created.headers["location"]
    edited = await post_form(browser, f"{url}/edit", {**NEED_FORM, "title": "Ride to the clinic, 9am"})
    assert edited.status_code == 303
    promised = await post_form(browser, url, {"status": "promised"}, action=f"{url}/status")
    assert promised.status_code == 303
    item_uuid = url.rsplit("/", 1)[1]
    stored = await harness.node.store.item(harness.node.local_id(item_uuid))
    assert stored.state["title"] == "Ride to the clinic, 9am"
    assert stored.state["status"] == "promised" and stored.state["version"] == 3
    # The page now offers the moves that are allowed from promised.
    page = (await browser.get(url)).text
    assert 'value="fulfilled"' in page and 'value="open"' in page


async def test_item_url_is_html_or_json(harness):
    browser = await harness.browser("jo")
    url = (await post_form(browser, "/items/new", NEED_FORM)).headers["location"]
    html = await browser.get(url)
    assert html.headers["content-type"].startswith("text/html")
    as_json = await browser.get(url, headers={"Accept": "application/json"})
    assert as_json.json()["title"] == "Ride to the clinic"
    assert as_json.json()["id"] == f"{harness.config.base_url}{url}"


async def test_local_items_are_hidden_from_visitors_even_with_public_offers(harness_factory):
    async with harness_factory(public_offers=True) as h:
        api = await h.api_client("jo")
        shared = (await api.post("/api/v1/items", json={"kind": "offer", "title": "Soup",
                  "body": "Lentil.", "category": "food"})).json()  # fmt: skip
        private = (await api.post("/api/v1/items", json={"kind": "offer", "title": "Spare room",
                   "body": "Quiet.", "category": "housing", "reach": "local"})).json()  # fmt: skip
        visitor = h.client(follow_redirects=False)
        listing = (await visitor.get("/items")).text
        assert "Soup" in listing and "Spare room" not in listing
        assert (await visitor.get(shared["id"])).status_code == 200
        assert (await visitor.get(private["id"])).status_code == 404


async def test_visitors_are_sent_to_login_without_public_offers(harness):
    visitor = harness.client(follow_redirects=False)
    response = await visitor.get("/items?kind=offer")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fitems%3Fkind%3Doffer"
    # And after logging in they land where they were going, never off-site.
    await harness.add_user("jo")
    for target, landing in (("/items?kind=offer", "/items?kind=offer"),
                            ("//evil.example", "/"), ("https://evil.example", "/")):
        visitor = harness.client(follow_redirects=False)
        csrf = csrf_of((await visitor.get("/login")).text)
        response = await visitor.post("/login", data={"username": "jo", "password": PASSWORD,
                                                      "next": target, "csrf_token": csrf})  # fmt: skip
        assert response.headers["location"] == landing


async def test_invite_join_and_roles(harness):
    """An admin invites, the link makes a member with the invited role, once."""
    admin = await harness.browser("root", "admin")
    response = await post_form(admin, "/admin/invites", {"role": "coordinator"})
    link = re.search(r"http://[^<\s\"]+/join/[A-Za-z0-9_-]{43}", response.text).group(0)
    path = link.removeprefix(harness.config.base_url)
    newcomer = harness.client(follow_redirects=False)
    form = {"username": "Cora", "display_name": "Cora B", "password": PASSWORD,
            "password_again": PASSWORD}  # fmt: skip
    mismatch = await post_form(newcomer, path, {**form, "password_again": "different!!"})
    assert mismatch.status_code == 422 and "differ" in mismatch.text
    joined = await post_form(newcomer, path, form)
    assert joined.status_code == 303
    cora = await harness.node.store.user_by_username("cora")
    assert cora.role == "coordinator" and cora.display_name == "Cora B"
    assert (await newcomer.get(path)).status_code == 404
    audit = (await admin.get("/admin/audit")).text
    assert "invite.create" in audit and "user.create" in audit


async def test_admin_cannot_remove_the_last_admin(harness):
    admin = await harness.browser("root", "admin")
    root = await harness.node.store.user_by_username("root")
    response = await post_form(admin, "/admin/members", {"role": "member"},
                               action=f"/admin/members/{root.id}")  # fmt: skip
    assert response.status_code == 409
    assert (await harness.node.store.user_by_username("root")).role == "admin"


async def test_disabling_a_member_ends_sessions_and_tokens(harness):
    admin = await harness.browser("root", "admin")
    jo_browser = await harness.browser("jo")
    jo = await harness.node.store.user_by_username("jo")
    token = await harness.node.new_api_token(jo)
    response = await post_form(admin, "/admin/members", {"action": "disable"},
                               action=f"/admin/members/{jo.id}")  # fmt: skip
    assert response.status_code == 303
    assert (await jo_browser.get("/my/items")).status_code == 303
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    assert (await api.get("/api/v1/items")).status_code == 401


async def test_members_make_api_tokens_on_their_account_page(harness):
    browser = await harness.browser("jo")
    response = await post_form(browser, "/account", {"label": "phone"})
    token = re.search(r"<code>([A-Za-z0-9_-]{43})</code>", response.text).group(1)
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    assert (await api.get("/api/v1/items")).status_code == 200


async def test_pages_send_security_headers(harness):
    response = await harness.client().get("/login")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_oversized_form_is_413(harness):
    browser = await harness.browser("jo")
    response = await browser.post("/items/new", data={"body": "x" * 70_000})
    assert response.status_code == 413


async def test_login_is_rate_limited_per_client_address(harness):
    """Guessing across many accounts from one address is stopped too."""
    browser = await harness.browser()
    csrf = csrf_of((await browser.get("/login")).text)
    for i in range(20):
        response = await browser.post("/login", data={"username": f"user{i}", "password": "x" * 12,
                                                      "csrf_token": csrf})  # fmt: skip
        assert response.status_code == 401
    blocked = await browser.post("/login", data={"username": "someone", "password": "x" * 12,
                                                 "csrf_token": csrf})  # fmt: skip
    assert blocked.status_code == 429


@pytest.mark.parametrize("path", ["/admin/members/99999999999999999999", "/admin/members/١٢",
                                  "/admin/invites/99999999999999999999/revoke"])  # fmt: skip
async def test_row_ids_in_paths_are_plain_bounded_numbers(harness, path):
    """An id too long for a row, or in other digits, is 404 (never a 500) and changes nothing."""
    admin = await harness.browser("root", role="admin")
    answer = await post_form(admin, "/admin/members", {"role": "member"}, action=path)
    assert answer.status_code == 404

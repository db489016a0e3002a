"""Accounts hold: sessions cannot be fixed or replayed, a new password locks everyone else out,
tokens can be seen and revoked, and neither login nor join tells who has an account."""

import re
import time

import pytest

import server.accounts
from server.app import _expire
from tests.conftest import PASSWORD, csrf_of, login, post_form

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a much longer new passphrase"


def cookie_name(harness) -> str:
    return f"aidnode_session_{harness.node.cookie_suffix}"


def browser_with(harness, session: str):
    """A browser holding a session cookie it was given (planted), as the node's own would be."""
    browser = harness.client(follow_redirects=False)
    browser.cookies.set(cookie_name(harness), session, domain="127.0.0.1")
    return browser


async def session_count(harness, username: str) -> int:
    user = await harness.node.store.user_by_username(username)
    row = await harness.node.store.fetch_one("SELECT count(*) FROM sessions WHERE user_id = ?",
                                             (user.id,))  # fmt: skip
    return row[0]


async def change_password(browser, current: str, new: str, again: str | None = None):
    return await post_form(browser, "/account", {
        "current_password": current, "new_password": new,
        "new_password_again": new if again is None else again,
    }, action="/account/password")  # fmt: skip


# ---------------------------------------------------------------------------- sessions


async def test_a_planted_cookie_logs_no_one_in_and_is_replaced_at_login(harness):
    """A cookie value the node never issued is no session, and login never keeps it."""
    await harness.add_user("jo")
    planted = "A" * 43
    browser = browser_with(harness, planted)
    # The planted value opens nothing.
    assert (await browser.get("/my/items")).status_code == 303
    assert await harness.node.session(planted) is None
    # Logging in issues a fresh value; the planted one still opens nothing.
    await login(browser, "jo", PASSWORD)
    issued = browser.cookies.get(cookie_name(harness))
    assert issued and issued != planted
    assert (await browser.get("/my/items")).status_code == 200
    replay = browser_with(harness, planted)
    assert (await replay.get("/my/items")).status_code == 303


async def test_an_attackers_session_planted_in_a_browser_dies_at_the_victims_login(harness):
    """Session fixation: a real session someone slipped into a browser is ended when its user
    logs in, and the browser gets a session of its own."""
    # Mallory logs in and plants her session cookie in Jo's browser.
    mallory = await harness.browser("mallory")
    planted = mallory.cookies.get(cookie_name(harness))
    await harness.add_user("jo")
    victim = browser_with(harness, planted)
    # Jo logs in from that browser.
    await login(victim, "jo", PASSWORD)
    issued = victim.cookies.get(cookie_name(harness))
    assert issued != planted
    user = (await harness.node.session(issued)).user
    assert user.username == "jo"
    # The planted session is gone: no one shares Jo's login.
    assert await harness.node.session(planted) is None


async def test_joining_issues_a_new_session(harness):
    """A new member gets a new session, never the one the browser held before."""
    old_browser = await harness.browser("mallory")
    planted = old_browser.cookies.get(cookie_name(harness))
    code = await harness.node.new_invite("member", None)
    newcomer = browser_with(harness, planted)
    joined = await post_form(newcomer, f"/join/{code}", {
        "username": "cora", "display_name": "Cora", "password": PASSWORD,
        "password_again": PASSWORD})  # fmt: skip
    assert joined.status_code == 303
    issued = newcomer.cookies.get(cookie_name(harness))
    assert issued != planted
    assert (await harness.node.session(issued))[0].username == "cora"
    assert await harness.node.session(planted) is None


async def test_logout_ends_the_session_on_the_server(harness):
    """After logout the old cookie value (and its CSRF token) opens nothing, even replayed."""
    browser = await harness.browser("jo")
    token = browser.cookies.get(cookie_name(harness))
    csrf = csrf_of((await browser.get("/account")).text)
    assert (await browser.post("/logout", data={"csrf_token": csrf})).status_code == 303
    assert await session_count(harness, "jo") == 0
    # Replayed by someone who copied the cookie and the form token.
    replay = browser_with(harness, token)
    assert (await replay.get("/account")).status_code == 303
    refused = await replay.post("/account", data={"csrf_token": csrf, "label": "stolen"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    jo = await harness.node.store.user_by_username("jo")
    assert await harness.node.api_tokens(jo.id) == []


async def test_the_expiry_worker_deletes_expired_sessions(harness):
    """Sessions past their time are deleted by the periodic expiry round, live ones kept."""
    await harness.browser("jo")
    harness.clock.advance(days=harness.config.session_days, seconds=1)
    await harness.browser("ana")  # a session begun now, still live
    # One round of the expiry worker (server/app.py runs it every minute).
    await _expire(harness.node)
    assert await session_count(harness, "jo") == 0
    assert await session_count(harness, "ana") == 1


# ---------------------------------------------------------------------------- passwords


async def test_changing_the_password_ends_every_other_session(harness):
    """A new password logs out every other device, re-issues this one's session, and the old
    password no longer logs in."""
    phone = await harness.browser("jo")
    laptop = harness.client(follow_redirects=False)
    await login(laptop, "jo", PASSWORD)
    before = phone.cookies.get(cookie_name(harness))
    # Jo changes the password on the phone.
    response = await change_password(phone, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/account?password=changed")
    after = phone.cookies.get(cookie_name(harness))
    assert after != before and await harness.node.session(before) is None
    page = await phone.get("/account?password=changed")
    assert page.status_code == 200 and "Your password was changed" in page.text
    # The laptop's session is gone; only the phone's new one is left.
    assert (await laptop.get("/my/items")).status_code == 303
    assert await session_count(harness, "jo") == 1
    # The old password is refused, the new one works.
    stranger = harness.client(follow_redirects=False)
    csrf = csrf_of((await stranger.get("/login")).text)
    old = await stranger.post("/login", data={"username": "jo", "password": PASSWORD,
                                              "csrf_token": csrf})  # fmt: skip
    assert old.status_code == 401
    await login(stranger, "jo", NEW_PASSWORD)
    assert "user.password" in (await harness.node.store.audit_entries())[0]["action"]


async def test_password_change_errors_sit_beside_their_fields(harness):
    """A wrong current password, a mismatch and a short new password each show beside their
    field, no password is written back into the form, and nothing changes."""
    browser = await harness.browser("jo")
    token = browser.cookies.get(cookie_name(harness))
    wrong = await change_password(browser, "not my password", NEW_PASSWORD)
    assert wrong.status_code == 422
    assert re.search(r'id="current_password-error">[^<]*not your current password', wrong.text)
    assert "not my password" not in wrong.text and NEW_PASSWORD not in wrong.text
    differ = await change_password(browser, PASSWORD, NEW_PASSWORD, again="something else!")
    assert differ.status_code == 422 and 'id="new_password_again-error"' in differ.text
    short = await change_password(browser, PASSWORD, "short")
    assert short.status_code == 422 and re.search(
        r'id="new_password-error">[^<]*at least 10', short.text
    )
    # Still logged in with the same session, and the password is unchanged.
    assert browser.cookies.get(cookie_name(harness)) == token
    assert (await browser.get("/my/items")).status_code == 200
    await login(harness.client(follow_redirects=False), "jo", PASSWORD)


async def test_password_change_needs_its_csrf_token(harness):
    """Without the session's CSRF token a password change is refused and changes nothing."""
    browser = await harness.browser("jo")
    response = await browser.post("/account/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "new_password_again": NEW_PASSWORD})  # fmt: skip
    assert response.status_code == 403
    await login(harness.client(follow_redirects=False), "jo", PASSWORD)


async def test_guessing_the_current_password_is_rate_limited(harness):
    """A stolen session cannot guess the password: after 5 wrong guesses even the right one is
    refused with 429 and Retry-After."""
    browser = await harness.browser("jo")
    for _ in range(5):
        assert (await change_password(browser, "a wrong guess", NEW_PASSWORD)).status_code == 422
    locked = await change_password(browser, PASSWORD, NEW_PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert 'id="current_password-error"' in locked.text
    # The password did not change: the node still knows the old one.
    jo = await harness.node.store.user_by_username("jo")
    assert await harness.node.passwords.verify(
        PASSWORD, await harness.node.store.password_hash(jo.id)
    )


# ---------------------------------------------------------------------------- API tokens


async def test_members_see_and_revoke_their_api_tokens(harness):
    """The account page lists each token (label, created, last used) and revoking one makes it
    401 on its very next request."""
    browser = await harness.browser("jo")
    made = await post_form(browser, "/account", {"label": "phone app"})
    token = re.search(r"<code>([A-Za-z0-9_-]{43})</code>", made.text).group(1)
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    # Used an hour later: the page says when.
    harness.clock.advance(hours=1)
    assert (await api.get("/api/v1/items")).status_code == 200
    page = (await browser.get("/account")).text
    assert "phone app" in page and "2026-11-24 18:00" in page and "2026-11-24 19:00" in page
    assert token not in page  # the secret is shown once, never listed
    # Jo revokes it.
    jo = await harness.node.store.user_by_username("jo")
    (listed,) = await harness.node.api_tokens(jo.id)
    revoked = await post_form(browser, "/account", {"token_id": str(listed["id"])},
                              action="/account/tokens/revoke")  # fmt: skip
    assert revoked.status_code == 303
    assert (await api.get("/api/v1/items")).status_code == 401
    assert "phone app" not in (await browser.get("/account")).text


async def test_a_member_cannot_revoke_someone_elses_token(harness):
    """Another member's token id is 'no such token' (404) and the token keeps working."""
    ana = await harness.add_user("ana")
    token = await harness.node.new_api_token(ana, "ana's script")
    (listed,) = await harness.node.api_tokens(ana.id)
    jo = await harness.browser("jo")
    response = await post_form(jo, "/account", {"token_id": str(listed["id"])},
                               action="/account/tokens/revoke")  # fmt: skip
    assert response.status_code == 404
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    assert (await api.get("/api/v1/items")).status_code == 200


async def test_revoking_a_token_needs_its_csrf_token(harness):
    """A revoke POST without the CSRF token is refused and the token lives on."""
    browser = await harness.browser("jo")
    jo = await harness.node.store.user_by_username("jo")
    token = await harness.node.new_api_token(jo, "cli")
    (listed,) = await harness.node.api_tokens(jo.id)
    response = await browser.post("/account/tokens/revoke", data={"token_id": str(listed["id"])})
    assert response.status_code == 403
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    assert (await api.get("/api/v1/items")).status_code == 200


async def test_an_admin_lists_and_revokes_a_members_tokens(harness):
    """An admin sees a member's tokens from the members page and revokes one (audited)."""
    admin = await harness.browser("root", "admin")
    jo = await harness.add_user("jo")
    token = await harness.node.new_api_token(jo, "lost laptop")
    members = (await admin.get("/admin/members")).text
    assert f'href="/admin/members/{jo.id}/tokens"' in members
    page = await admin.get(f"/admin/members/{jo.id}/tokens")
    assert page.status_code == 200 and "lost laptop" in page.text
    (listed,) = await harness.node.api_tokens(jo.id)
    revoked = await post_form(admin, f"/admin/members/{jo.id}/tokens", {"token_id": str(listed["id"])},
                              action=f"/admin/members/{jo.id}/tokens/revoke")  # fmt: skip
    assert revoked.status_code == 303
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    assert (await api.get("/api/v1/items")).status_code == 401
    entry = (await harness.node.store.audit_entries())[0]
    assert (entry["actor"], entry["action"], entry["target"]) == ("root", "token.revoke", "jo")


# ---------------------------------------------------------------------------- enumeration


async def test_login_tells_no_one_which_usernames_exist(harness, monkeypatch):
    """Unknown user, wrong password and disabled account get the same message and status, each
    after a full scrypt check (so about the same time), and the same lockout."""
    await harness.add_user("jo")
    gone = await harness.add_user("gone")
    root = await harness.add_user("root", "admin")
    await harness.node.change_member(root, gone.id, disabled=True)
    checked = []
    real_verify = server.accounts.verify_password_sync

    def spy(password, stored):
        checked.append(stored)
        return real_verify(password, stored)

    monkeypatch.setattr(server.accounts, "verify_password_sync", spy)
    browser = harness.client(follow_redirects=False)
    csrf = csrf_of((await browser.get("/login")).text)

    async def attempt(username: str):
        started = time.perf_counter()
        response = await browser.post("/login", data={"username": username, "password": "x" * 12,
                                                      "csrf_token": csrf})  # fmt: skip
        return response, time.perf_counter() - started

    answers = {name: await attempt(name) for name in ("jo", "nobody", "gone")}
    errors = {name: re.search(r'<p class="error"[^>]*>(.*?)</p>', response.text, re.S).group(1)
              for name, (response, _) in answers.items()}  # fmt: skip
    assert {response.status_code for response, _ in answers.values()} == {401}
    assert len(set(errors.values())) == 1 and "wrong username or password" in errors["jo"]
    # Every attempt ran scrypt (against a dummy hash when there is no account).
    assert len(checked) == 3 and all(stored.startswith("scrypt$15$8$3$") for stored in checked)
    times = [elapsed for _, elapsed in answers.values()]
    assert min(times) > max(times) / 5, times
    # Guessing at an unknown name is locked out just as at a real one.
    for name in ("jo", "nobody"):
        for _ in range(4):
            await attempt(name)
        assert (await attempt(name))[0].status_code == 429


async def test_join_says_the_same_for_every_unusable_invitation(harness):
    """An unknown, malformed, used, revoked or expired invitation look alike, on GET and POST."""
    used = await harness.node.new_invite("member", None)
    await harness.node.create_user(username="first", display_name="First", password=PASSWORD,
                                   role="member", invite_code=used)  # fmt: skip
    revoked = await harness.node.new_invite("member", None)
    invite_id = (await harness.node.store.list_invites())[0]["id"]
    async with harness.node.store.write() as db:
        await harness.node.store.revoke_invite(db, invite_id)
    expired = await harness.node.new_invite("member", None, days=1)
    harness.clock.advance(days=1, seconds=1)
    codes = {"unknown": "B" * 43, "malformed": "short", "used": used, "revoked": revoked,
             "expired": expired}  # fmt: skip
    visitor = harness.client(follow_redirects=False)
    csrf = csrf_of((await visitor.get("/login")).text)
    seen = set()
    for what, code in codes.items():
        page = await visitor.get(f"/join/{code}")
        posted = await visitor.post(f"/join/{code}", data={
            "username": "first", "password": PASSWORD, "password_again": PASSWORD,
            "csrf_token": csrf})  # fmt: skip
        assert page.status_code == posted.status_code == 404, what
        seen.add(page.text)
        seen.add(posted.text)
    assert len(seen) == 1


async def test_a_taken_username_says_taken_and_keeps_the_invitation(harness):
    """With a valid invitation, a taken username says so (to pick another) and spends nothing."""
    await harness.add_user("jo")
    code = await harness.node.new_invite("member", None)
    visitor = harness.client(follow_redirects=False)
    taken = await post_form(visitor, f"/join/{code}", {
        "username": "jo", "password": PASSWORD, "password_again": PASSWORD})  # fmt: skip
    assert taken.status_code == 422 and re.search(r'id="username-error">[^<]*taken', taken.text)
    assert await harness.node.invite_role(code) == "member"
    joined = await post_form(visitor, f"/join/{code}", {
        "username": "jo2", "password": PASSWORD, "password_again": PASSWORD})  # fmt: skip
    assert joined.status_code == 303

"""Notifications (issue 7) in-process: who is told what, in the app and by email.

A response to a member's item tells that member only; what became of a member's response
tells that member; reading the page clears the count. Emails go through a real SMTP server
(aiosmtpd) on a free 127.0.0.1 port, sent by the worker, never by the request, with retries,
a cap, and never a contact. A member's address is theirs alone."""

import asyncio
import logging
import socket
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from server.notifications import EMAIL_ATTEMPTS, EMAIL_RETRY_DELAYS, check_email
from tests.conftest import BASE_URL, post_form
from tests.test_ingest import WEST, WestFeed, add_west
from tests.test_responses import (
    CONTACT,
    accepted,
    fake_origin,
    outbox,
    post,
    respond,
    response,
    west_offer,
)

pytestmark = pytest.mark.anyio

FROM = "aid@eastside.example"
POSTER_EMAIL = "poster@example.org"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """An aiosmtpd handler keeping what it was sent; `refuse` answers every RCPT with it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], object]] = []
        self.recipients_asked = 0
        self.logins: list[tuple[bytes, bytes]] = []
        self.refuse: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        self.recipients_asked += 1
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=(auth_data.login, auth_data.password) == (b"node", b"s3cret"))
        return AuthResult(success=False)


class MailServer:
    """A real SMTP server on 127.0.0.1, started and stopped by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mailbox = Mailbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port,
                                     authenticator=self.mailbox.authenticate,
                                     auth_require_tls=False)  # fmt: skip
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def mail_server():
    server = MailServer(free_port())
    yield server
    server.stop()


def smtp_settings(server: MailServer, **more) -> dict:
    return {"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_from": FROM,
            "smtp_starttls": False, "smtp_username": "node", "smtp_password": "s3cret", **more}  # fmt: skip


async def set_email(browser, address: str):
    return await post_form(browser, "/account", {"email": address}, action="/account/email")


def header_nav(html: str) -> str:
    return html[html.index("<nav"):html.index("</nav>")]


async def emails_queued(harness) -> list[tuple]:
    rows = await harness.node.store.fetch_all(
        "SELECT notification_id, attempts, next_attempt FROM email_outbox ORDER BY notification_id")
    return [tuple(row) for row in rows]


async def poster_with_need(harness, email: str | None = POSTER_EMAIL):
    """West as an ally; a member ("poster") with a browser, an API client and a need."""
    feed = WestFeed()
    await add_west(harness, feed)
    browser = await harness.browser("poster")
    if email:
        assert (await set_email(browser, email)).status_code == 303
    user = await harness.node.store.user_by_username("poster")
    api = harness.client(headers={"Authorization": "Bearer " + await harness.node.new_api_token(user)})
    return feed, browser, api, await post(harness, api)


# ---------------------------------------------------------------------------- in the app


async def test_a_response_to_my_item_notifies_me_and_no_other_member(harness):
    """West's response to my need gives me one unread notification; another member none."""
    feed, poster, _, need = await poster_with_need(harness, email=None)
    other = await harness.browser("other")
    coordinator = await harness.browser("coord", "coordinator")
    # West responds.
    body = response(need["id"])
    assert (await respond(harness, feed.key, body)).status_code == 202
    # My header counts it; the others' do not.
    assert "Notifications (1)" in header_nav((await poster.get("/")).text)
    for browser in (other, coordinator):
        nav = header_nav((await browser.get("/")).text)
        assert "Notifications" in nav and "Notifications (" not in nav
        assert "Lift to the clinic" not in (await browser.get("/notifications")).text
    # My page says who responded and links to the response on the item's page, never the contact.
    page = (await poster.get("/notifications")).text
    item_path = f"/items/{need['id'].rsplit('/', 1)[1]}"
    assert f'href="{item_path}#response-{body["id"]}"' in page
    assert "Jo from Westside responded to your item." in page and "Lift to the clinic" in page
    assert CONTACT not in page and "555-0199" not in page


async def test_reading_the_page_clears_the_count_and_lists_newest_first(harness):
    """The page lists newest first and marks what it shows read; a later one is unread."""
    feed, poster, _, need = await poster_with_need(harness, email=None)
    # Jo responds, then Ana.
    await respond(harness, feed.key, response(need["id"]))
    harness.clock.advance(minutes=1)
    await respond(harness, feed.key, response(need["id"], **{"from": {"node": WEST, "name": "Ana"}}))
    assert "Notifications (2)" in header_nav((await poster.get("/my/items")).text)
    # Viewing the page: both shown, newest first, flagged new this once; the count is gone.
    page = (await poster.get("/notifications")).text
    assert page.index("Ana from Westside") < page.index("Jo from Westside")
    assert page.count(">New<") == 2
    assert "Notifications (" not in header_nav(page)
    again = (await poster.get("/notifications")).text
    assert ">New<" not in again and "Ana from Westside" in again
    assert "Notifications (" not in header_nav((await poster.get("/")).text)
    # A third response is unread again.
    await respond(harness, feed.key, response(need["id"]))
    assert "Notifications (1)" in header_nav((await poster.get("/")).text)


async def test_a_response_by_a_member_of_this_node_notifies_the_poster_only(harness, monkeypatch):
    """A neighbour's response to a local item notifies its poster, not the neighbour."""
    sent = fake_origin(harness, monkeypatch, accepted)
    _, poster, _, need = await poster_with_need(harness, email=None)
    neighbour = await harness.browser("sam")
    sam_user = await harness.node.store.user_by_username("sam")
    await harness.node.responses.send(sam_user, {"item": need["id"], "message": "I can drive.",
                                                 "contact": "flat 4"})  # fmt: skip
    assert sent == []  # it never left the node
    assert "Notifications (1)" in header_nav((await poster.get("/")).text)
    assert "Sam from Eastside Mutual Aid responded to your item." in (await poster.get("/notifications")).text
    assert "Notifications (" not in header_nav((await neighbour.get("/")).text)


@pytest.mark.parametrize("state, words", [("accepted", "Westside accepted your response."),
                                          ("declined", "Westside declined your response.")])
async def test_what_became_of_my_response_to_a_remote_item_notifies_me(harness, monkeypatch,
                                                                       state, words):  # fmt: skip
    """A signed response-status from the origin notifies the responder's member, once."""
    feed, offer = await west_offer(harness)
    fake_origin(harness, monkeypatch, accepted)
    sam = await harness.browser("sam")
    other = await harness.browser("other")
    sam_user = await harness.node.store.user_by_username("sam")
    response_id = await harness.node.responses.send(
        sam_user, {"item": offer["id"], "message": "Soup?", "contact": CONTACT})
    assert "Notifications (" not in header_nav((await sam.get("/")).text)
    # The origin tells us what became of it; it may repeat itself (a retry), told once.
    status = {"type": "response-status", "id": response_id, "item": offer["id"], "state": state}
    for _ in range(2):
        assert (await respond(harness, feed.key, status)).status_code == 200
    assert "Notifications (1)" in header_nav((await sam.get("/")).text)
    page = (await sam.get("/notifications")).text
    assert words in page and "Soup on Sundays" in page
    assert f'href="/items/{offer["id"].rsplit("/", 1)[1]}#my-responses"' in page
    assert "Notifications (" not in header_nav((await other.get("/")).text)


async def test_deciding_a_local_members_response_notifies_them_not_the_decider(harness):
    """At the origin, accepting a member's response to a local item notifies the member."""
    _, poster, api, need = await poster_with_need(harness, email=None)
    sam = await harness.browser("sam")
    sam_user = await harness.node.store.user_by_username("sam")
    response_id = await harness.node.responses.send(
        sam_user, {"item": need["id"], "message": "I can drive.", "contact": "flat 4"})
    assert (await poster.get("/notifications")).status_code == 200  # read the response's one
    assert (await api.patch(f"/api/v1/responses/{response_id}", json={"state": "accepted"})).status_code == 200
    assert "Notifications (1)" in header_nav((await sam.get("/")).text)
    assert "Eastside Mutual Aid accepted your response." in (await sam.get("/notifications")).text
    assert "Notifications (" not in header_nav((await poster.get("/")).text)


# ---------------------------------------------------------------------------- the address


@pytest.mark.parametrize("text", [
    "not an address", "@example.org", "jo@", "jo@localhost", "jo@example", "jo@-x.example",
    "jo@ex_ample.org", "jo smith@example.org", "jo@example.org\r\nBcc: all@example.org",
    "Jo <jo@example.org>", "jo..x@example.org", "jo@1.2.3.4", "x" * 65 + "@example.org",
    "jo@" + "a" * 250 + ".org",
])  # fmt: skip
def test_unusable_addresses_are_refused(text):
    """An address that could not be delivered to, or that smuggles headers, is Invalid."""
    with pytest.raises(Exception, match="looks like name@example.org"):
        check_email(text)


def test_usable_addresses_are_kept_with_their_domain_in_lowercase():
    """Ordinary addresses pass; the domain is lowercased (IDNA), the local part kept."""
    assert check_email("  Jo.Smith+aid@Example.ORG ") == "Jo.Smith+aid@example.org"
    assert check_email("ana@bücher.example") == "ana@xn--bcher-kva.example"
    assert check_email("") is None and check_email("   ") is None


async def test_the_address_form_needs_csrf_validates_and_can_remove_it(harness):
    """The address form needs its CSRF token, refuses a bad address (422), keeps a good one, and an empty field removes it."""
    browser = await harness.browser("ana")
    ana = await harness.node.store.user_by_username("ana")
    # Without the token: refused, nothing stored.
    refused = await browser.post("/account/email", data={"email": "ana@example.org"})
    assert refused.status_code == 403
    assert await harness.node.notifications.email_of(ana) is None
    # A bad address: the form again, with the problem beside the field and the input kept.
    bad = await set_email(browser, "ana at example")
    assert bad.status_code == 422 and 'id="email-error"' in bad.text and 'value="ana at example"' in bad.text
    assert await harness.node.notifications.email_of(ana) is None
    # A good one is kept and shown to its owner.
    good = await set_email(browser, "Ana@Example.org")
    assert good.status_code == 303 and good.headers["location"] == "/account#email-section"
    assert await harness.node.notifications.email_of(ana) == "Ana@example.org"
    assert 'value="Ana@example.org"' in (await browser.get("/account")).text
    # Emptied: gone.
    assert (await set_email(browser, "")).status_code == 303
    assert await harness.node.notifications.email_of(ana) is None


async def test_an_address_is_seen_by_no_one_else_and_is_in_no_item_or_feed(harness):
    """No other member, admins included, sees a member's address on any page or in the API, and no item or feed holds it."""
    feed, poster, api, need = await poster_with_need(harness, email="secret.poster@example.org")
    await respond(harness, feed.key, response(need["id"]))
    admin = await harness.browser("root", "admin")
    other_api = await harness.api_client("other")
    item_path = f"/items/{need['id'].rsplit('/', 1)[1]}"
    for path in ("/", "/account", "/admin/members", "/notifications", item_path, "/my/responses",
                 "/items"):  # fmt: skip
        page = await admin.get(path)
        assert page.status_code == 200 and "secret.poster" not in page.text, path
    for path in ("/api/v1/items", "/api/v1/responses", f"/api/v1/items/{item_path[7:]}"):
        assert "secret.poster" not in (await other_api.get(path)).text
    for table, column in (("feed", "entry"), ("items", "state"), ("responses", "contact"),
                          ("notifications", "item_title || actor_name || group_name")):  # fmt: skip
        rows = await harness.node.store.fetch_all(f"SELECT {column} FROM {table}")
        assert rows and not any("secret.poster" in row[0] for row in rows), table
    # Its owner sees it.
    assert "secret.poster@example.org" in (await poster.get("/account")).text


# ---------------------------------------------------------------------------- email


async def test_the_worker_emails_what_happened_with_a_link_and_no_contact(harness_factory,
                                                                          mail_server):  # fmt: skip
    """The event queues the poster's email and the worker sends it (logged in): what happened and the link, no contact or message."""
    mail_server.start()
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, _, _, need = await poster_with_need(h)
        other = await h.browser("other")
        assert (await set_email(other, "other@example.org")).status_code == 303
        body = response(need["id"], message="Call me on 555-0199 any time.")
        assert (await respond(h, feed.key, body)).status_code == 202
        # Queued by the event, sent by no request.
        assert len(await emails_queued(h)) == 1 and mail_server.mailbox.messages == []
        assert await h.node.notifications.send_due_emails() == 1
        assert await emails_queued(h) == []
    [(sender, recipients, message)] = mail_server.mailbox.messages
    assert sender == FROM and recipients == [POSTER_EMAIL]
    assert mail_server.mailbox.logins == [(b"node", b"s3cret")]
    assert message["To"] == POSTER_EMAIL and FROM in message["From"]
    assert message["Subject"] == "[Eastside Mutual Aid] New response to “Lift to the clinic”"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_content()
    assert "Jo from Westside responded to “Lift to the clinic”" in text
    assert f"{BASE_URL}/items/{need['id'].rsplit('/', 1)[1]}#response-{body['id']}" in text
    assert f"{BASE_URL}/account" in text
    assert "555-0199" not in text and "westside.example" not in text and "Call me" not in text


async def test_an_email_goes_out_in_the_members_language(harness_factory, mail_server):
    """A member who chose Spanish gets the email in Spanish."""
    mail_server.start()
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, _, _, need = await poster_with_need(h)
        await h.node.set_language(await h.node.store.user_by_username("poster"), "es")
        assert (await respond(h, feed.key, response(need["id"]))).status_code == 202
        assert await h.node.notifications.send_due_emails() == 1
    [(_, _, message)] = mail_server.mailbox.messages
    assert "Lift to the clinic" in message["Subject"] and "New response" not in message["Subject"]
    assert message.get_content().startswith("Hola")


async def test_the_responders_member_is_emailed_when_accepted(harness_factory, mail_server,
                                                               monkeypatch):  # fmt: skip
    """An acceptance from the origin emails the responder's member, at their address."""
    mail_server.start()
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, offer = await west_offer(h)
        fake_origin(h, monkeypatch, accepted)
        sam = await h.browser("sam")
        assert (await set_email(sam, "sam@example.org")).status_code == 303
        sam_user = await h.node.store.user_by_username("sam")
        response_id = await h.node.responses.send(
            sam_user, {"item": offer["id"], "message": "Soup?", "contact": CONTACT})
        status = {"type": "response-status", "id": response_id, "item": offer["id"], "state": "accepted"}
        assert (await respond(h, feed.key, status)).status_code == 200
        assert await h.node.notifications.send_due_emails() == 1
    [(_, recipients, message)] = mail_server.mailbox.messages
    assert recipients == ["sam@example.org"]
    assert message["Subject"] == "[Eastside Mutual Aid] Your response to “Soup on Sundays” was accepted"
    assert "Westside accepted your response" in message.get_content()
    assert "555-0199" not in message.get_content()


async def test_the_worker_loop_sends_when_woken_and_stops_with_the_node(harness_factory,
                                                                        mail_server):  # fmt: skip
    """`run` is woken by the event, sends, and returns once the node is stopping."""
    mail_server.start()
    async with harness_factory(**smtp_settings(mail_server)) as h:
        worker = asyncio.create_task(h.node.notifications.run())
        feed, _, _, need = await poster_with_need(h)
        await respond(h, feed.key, response(need["id"]))
        for _ in range(100):
            if mail_server.mailbox.messages:
                break
            await asyncio.sleep(0.05)
        assert len(mail_server.mailbox.messages) == 1
        h.node.stopping.set()
        await asyncio.wait_for(worker, timeout=5)


async def test_a_failed_email_is_retried_once_the_server_is_back(harness_factory, mail_server,
                                                                 caplog):  # fmt: skip
    """With the server down the request still answers and the email waits; it is retried when due and sent once the server is up."""
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, _, _, need = await poster_with_need(h)
        # The server is down: the response is still taken at once.
        assert (await respond(h, feed.key, response(need["id"]))).status_code == 202
        with caplog.at_level(logging.WARNING, logger="aidnode.notifications"):
            assert await h.node.notifications.send_due_emails() == 0
        [(_, attempts, next_attempt)] = await emails_queued(h)
        assert attempts == 1 and next_attempt == "2026-11-24T18:01:00Z"
        assert "failed (attempt 1" in caplog.text and POSTER_EMAIL not in caplog.text
        # Up again, but not yet due: nothing is sent.
        mail_server.start()
        assert await h.node.notifications.send_due_emails() == 0
        assert mail_server.mailbox.messages == []
        # Due: sent, and the outbox is empty.
        h.clock.advance(seconds=EMAIL_RETRY_DELAYS[0])
        assert await h.node.notifications.send_due_emails() == 1
        assert await emails_queued(h) == []
    assert [m[1] for m in mail_server.mailbox.messages] == [[POSTER_EMAIL]]


async def test_an_email_is_given_up_after_the_last_attempt(harness_factory, mail_server, caplog):
    """A server that keeps answering 4xx is tried EMAIL_ATTEMPTS times, then never again."""
    mail_server.start()
    mail_server.mailbox.refuse = "451 4.3.0 try again later"
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, _, _, need = await poster_with_need(h)
        await respond(h, feed.key, response(need["id"]))
        with caplog.at_level(logging.WARNING, logger="aidnode.notifications"):
            for _ in range(EMAIL_ATTEMPTS + 3):
                await h.node.notifications.send_due_emails()
                h.clock.advance(hours=3)
        assert mail_server.mailbox.recipients_asked == EMAIL_ATTEMPTS
        assert await emails_queued(h) == [(1, EMAIL_ATTEMPTS, None)]
        assert f"gave up emailing notification 1 after {EMAIL_ATTEMPTS} attempts" in caplog.text
    assert mail_server.mailbox.messages == []


async def test_a_permanent_refusal_is_given_up_at_once(harness_factory, mail_server):
    """A 5xx answer to the recipient is not retried."""
    mail_server.start()
    mail_server.mailbox.refuse = "550 5.1.1 no such mailbox"
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, _, _, need = await poster_with_need(h)
        await respond(h, feed.key, response(need["id"]))
        for _ in range(3):
            await h.node.notifications.send_due_emails()
            h.clock.advance(hours=3)
        assert mail_server.mailbox.recipients_asked == 1
        assert await emails_queued(h) == [(1, 1, None)]


async def test_no_email_is_queued_or_sent_without_smtp_host(harness, mail_server):
    """With smtp_host empty a member with an address is told in the app only: nothing is queued or sent."""
    mail_server.start()
    feed, poster, _, need = await poster_with_need(harness)  # with an address
    await respond(harness, feed.key, response(need["id"]))
    assert "Notifications (1)" in header_nav((await poster.get("/")).text)
    assert await emails_queued(harness) == []
    assert await harness.node.notifications.send_due_emails() == 0
    assert mail_server.mailbox.messages == [] and mail_server.mailbox.recipients_asked == 0


async def test_a_member_without_an_address_is_emailed_nothing(harness_factory, mail_server):
    """On a node that sends email, a poster who gave no address is told in the app only."""
    mail_server.start()
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, poster, _, need = await poster_with_need(h, email=None)
        await respond(h, feed.key, response(need["id"]))
        assert "Notifications (1)" in header_nav((await poster.get("/")).text)
        assert await emails_queued(h) == []
        assert await h.node.notifications.send_due_emails() == 0
    assert mail_server.mailbox.recipients_asked == 0


async def test_removing_the_address_drops_queued_emails(harness_factory, mail_server):
    """Emails queued for a member who then removes their address are never sent."""
    mail_server.start()
    async with harness_factory(**smtp_settings(mail_server)) as h:
        feed, poster, _, need = await poster_with_need(h)
        await respond(h, feed.key, response(need["id"]))
        assert len(await emails_queued(h)) == 1
        assert (await set_email(poster, "")).status_code == 303
        assert await emails_queued(h) == []
        assert await h.node.notifications.send_due_emails() == 0
    assert mail_server.mailbox.messages == []


async def test_deciding_a_remote_response_notifies_no_one_here_and_still_tells_its_node(harness):
    """Declining another node's response notifies no member here (West tells its own) and still queues the response-status."""
    feed, _, api, need = await poster_with_need(harness, email=None)
    body = response(need["id"])
    await respond(harness, feed.key, body)
    assert (await api.patch(f"/api/v1/responses/{body['id']}", json={"state": "declined"})).status_code == 200
    assert [row[3] for row in await outbox(harness)] == ["declined"]
    kinds = await harness.node.store.fetch_all("SELECT kind FROM notifications")
    assert [row[0] for row in kinds] == ["response"]  # West's member is told by West

"""Notifications (issue 7): a member is told when someone responds to one of their items, and
when a response they made is accepted or declined, in the app and, if they wish, by email.

Where they come from: `server.responses` calls this module inside the transaction of the event
itself, so a notification exists exactly when the event does:

    event                                         node      who is told         kind
    Responses.receive (another node's member)     origin    the item's poster   response
    Responses.send, to this node's own item       origin    the item's poster   response
    Responses.decide, the responder a member here origin    the responder       accepted|declined
    Responses.status_received                     responder the responder       accepted|declined

One per (member, response, kind): a repeated message (a retried `response-status`) tells no
one twice. A notification says what happened and links to the item's page on this node; it
never holds a contact (that is shown only there, to the poster and coordinators).

In the app: an unread count in every page's header (`identify` in server/routing.py counts
them) and `/notifications`, newest first, which marks what it shows as read.

By email: only while the node has SMTP configured (`smtp_host`) and the member has given an
address (`/account`: optional, shown to no one else, never in an item, a feed or a message to
another node). The event queues the email in `email_outbox`, in the same transaction; the
worker (`run`) sends it through aiosmtplib, never in the request that caused it, and a failure
is retried with growing delays, then given up and logged:

    email_outbox row:  due ──sent──▶ (deleted)
                        │ └─refused for good (5xx)──────────────▶ given up (next_attempt NULL)
                        └─failed──▶ due again after EMAIL_RETRY_DELAYS[n] ─▶ … ─▶ given up

The address is read when the email is sent, so a member who removed theirs gets nothing.
"""

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiosmtplib
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from federation import items as item_rules
from federation.items import N_
from federation.timefmt import format_time

from .errors import Invalid
from .routing import page
from .templating import DEFAULT_LANGUAGE, Templates
from .workers import run_rounds

if TYPE_CHECKING:
    from .node import Node
    from .store import User

log = logging.getLogger("aidnode.notifications")

KINDS = ("response", "accepted", "declined")
LIST_MAX = 100  # notifications shown on the page, newest first
# Seconds before each retry of an email; after the last one it is given up.
EMAIL_RETRY_DELAYS = (60, 300, 1800, 7200)
EMAIL_ATTEMPTS = 1 + len(EMAIL_RETRY_DELAYS)
EMAIL_POLL = 30.0  # seconds between the worker's looks for retries that are due
EMAIL_BATCH = 50  # emails sent in one round (one SMTP connection) at most
SMTP_TIMEOUT = 30.0
SMTPS_PORT = 465  # TLS from the first byte (RFC 8314); other ports use STARTTLS


# ---------------------------------------------------------------------------- addresses

EMAIL_MAX = 254  # RFC 5321's path limit, less the angle brackets
LOCAL_PART_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_email(text: str) -> str | None:
    """A member's address as stored (its domain lowercased, in IDNA form), None for an empty
    field, or Invalid. A usable mailbox, deliberately plain: `local@domain.tld`, with no
    display name, comments, quoted local part or IP literal."""
    text = text.strip()
    if not text:
        return None
    problem = Invalid(N_("an email address looks like name@example.org"), field="email")
    local, at, domain = text.rpartition("@")
    if not at or len(local) > 64 or not LOCAL_PART_RE.fullmatch(local):
        raise problem
    try:
        domain = domain.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise problem from None
    labels = domain.split(".")
    if (len(labels) < 2 or len(domain) > 253 or labels[-1].isdigit()
            or not all(LABEL_RE.fullmatch(label) for label in labels)):  # fmt: skip
        raise problem
    address = f"{local}@{domain}"
    if len(address) > EMAIL_MAX:
        raise problem
    return address


# ---------------------------------------------------------------------------- views


@dataclass(frozen=True)
class Notification:
    """One thing a member was told, as the notifications page shows it."""

    id: int
    kind: str  # response | accepted | declined
    item_id: str
    item_title: str
    response_id: str
    actor_name: str
    group_name: str
    created: str
    unread: bool

    @property
    def item_uuid(self) -> str:
        return item_rules.uuid_of(self.item_id)

    @property
    def link(self) -> str:
        """Where on this node it is about: the response on the poster's item page, or the
        responder's own responses there."""
        anchor = f"response-{self.response_id}" if self.kind == "response" else "my-responses"
        return f"/items/{self.item_uuid}#{anchor}"


NOTIFICATION_COLUMNS = (
    "id, kind, item_id, item_title, response_id, actor_name, group_name, created,"
    " read IS NULL AS unread"
)
INSERT_NOTIFICATION = (
    "INSERT INTO notifications (user_id, kind, item_id, item_title, response_id, actor_name,"
    " group_name, created)"
)
# For an insert that may repeat (the same message twice): the first one counts.
ON_REPEAT = " ON CONFLICT (user_id, response_id, kind) DO NOTHING RETURNING id, user_id"
DUE_EMAILS_SQL = (
    "SELECT o.notification_id, o.attempts, n.kind, n.item_id, n.item_title, n.response_id,"
    " n.actor_name, n.group_name, u.email, u.display_name, u.disabled, u.language"
    " FROM email_outbox o JOIN notifications n ON n.id = o.notification_id"
    " JOIN users u ON u.id = n.user_id"
    " WHERE o.next_attempt IS NOT NULL AND o.next_attempt <= ?"
    " ORDER BY o.next_attempt, o.notification_id LIMIT ?"
)

# What emails say (translated when sent). Never a contact, never the responder's message
# (which may hold one): what happened, and where to see it.
SUBJECTS = {
    "response": N_("[%(node)s] New response to “%(title)s”"),
    "accepted": N_("[%(node)s] Your response to “%(title)s” was accepted"),
    "declined": N_("[%(node)s] Your response to “%(title)s” was declined"),
}
OPENINGS = {
    "response": N_("%(name)s from %(group)s responded to “%(title)s”, which you posted."),
    "accepted": N_("%(group)s accepted your response to “%(title)s”. They have the contact "
                   "details you gave with it."),
    "declined": N_("%(group)s declined your response to “%(title)s”."),
}
SEE_IT = {
    "response": N_("See the response, and how to reach them, on the item's page:"),
    "accepted": N_("The item's page:"),
    "declined": N_("The item's page:"),
}
GREETING = N_("Hello %(name)s,")
FOOTER = N_("You get these emails because you gave this address on your account page at "
            "%(node)s. To stop them, remove it there: %(link)s")


class Notifications:
    """A node's notifications and the worker that emails them."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._wake = node.wake_event("notifications")
        self._templates = Templates()  # for its translations: emails go out in a language too

    @property
    def store(self):
        return self.node.store

    # ------------------------------------------------------------------------ events

    async def response_received(self, db, item_row, response_id: str, *, name: str,
                                group: str) -> None:  # fmt: skip
        """Someone responded to one of this node's items: its poster is told. Inside the
        transaction that stores the response."""
        if item_row.owner_id is None:  # a poster whose account is gone
            return
        rows = await db.execute_fetchall(
            INSERT_NOTIFICATION + " VALUES (?, 'response', ?, ?, ?, ?, ?, ?)" + ON_REPEAT,
            (item_row.owner_id, item_row.state["id"], item_row.state["title"], response_id,
             name, group, self.node.now_text()),
        )  # fmt: skip
        await self._queue_emails(db, rows)

    async def response_decided_here(self, db, response_id: str, state: str) -> None:
        """At the origin: a response a member of this node made to one of its items was
        accepted or declined; the member is told (unless they decided it themselves)."""
        rows = await db.execute_fetchall(
            INSERT_NOTIFICATION + " SELECT r.responder_id, ?, r.item_id, i.title, r.id, '', ?, ?"
            " FROM responses r JOIN items i ON i.id = r.item_id"
            " WHERE r.id = ? AND r.responder_id IS NOT NULL AND r.responder_id IS NOT r.decided_by"
            + ON_REPEAT,
            (state, self.node.config.name, self.node.now_text(), response_id),
        )  # fmt: skip
        await self._queue_emails(db, rows)

    async def sent_response_decided(self, db, response_id: str, state: str, *,
                                    origin: str) -> None:  # fmt: skip
        """At the responder's node: the item's origin said what became of a response a member
        sent; the member is told. Inside the transaction that records it."""
        group = self.node.peer_names.get(origin) or urlsplit(origin).hostname or origin
        rows = await db.execute_fetchall(
            INSERT_NOTIFICATION + " SELECT user_id, ?, item_id, item_title, id, '', ?, ?"
            " FROM sent_responses WHERE id = ? AND origin = ?" + ON_REPEAT,
            (state, group, self.node.now_text(), response_id, origin),
        )  # fmt: skip
        await self._queue_emails(db, rows)

    async def _queue_emails(self, db, inserted) -> None:
        """Queue an email for each new notification whose member gave an address, if this
        node sends email at all."""
        if not self.node.config.smtp_host:
            return
        for notification_id, user_id in inserted:
            await db.execute(
                "INSERT INTO email_outbox (notification_id, attempts, next_attempt)"
                " SELECT ?, 0, ? FROM users WHERE id = ? AND email IS NOT NULL AND NOT disabled",
                (notification_id, self.node.now_text(), user_id),
            )

    def wake(self) -> None:
        """Have the worker look for emails now (call once the event's transaction is done)."""
        self._wake.set()

    # ------------------------------------------------------------------------ reading

    async def unread_count(self, user: "User") -> int:
        row = await self.store.fetch_one(
            "SELECT count(*) FROM notifications WHERE user_id = ? AND read IS NULL", (user.id,)
        )
        return row[0]

    async def for_user(self, user: "User", limit: int = LIST_MAX) -> list[Notification]:
        rows = await self.store.fetch_all(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = ?"
            " ORDER BY id DESC LIMIT ?",
            (user.id, limit),
        )
        return [Notification(*row[:8], unread=bool(row[8])) for row in rows]

    async def mark_read(self, user: "User", *, up_to: int) -> None:
        """Mark a member's notifications read up to an id: those a page showed (and older
        ones), never one that arrived since."""
        async with self.store.write() as db:
            await db.execute(
                "UPDATE notifications SET read = ? WHERE user_id = ? AND read IS NULL AND id <= ?",
                (self.node.now_text(), user.id, up_to),
            )

    # ------------------------------------------------------------------------ the address

    async def email_of(self, user: "User") -> str | None:
        row = await self.store.fetch_one("SELECT email FROM users WHERE id = ?", (user.id,))
        return row[0] if row else None

    async def set_email(self, user: "User", text: str) -> str | None:
        """Set (or, with an empty field, remove) a member's address; Invalid if unusable."""
        address = check_email(text)
        async with self.store.write() as db:
            await db.execute("UPDATE users SET email = ? WHERE id = ?", (address, user.id))
            if address is None:  # nothing more goes to the old address
                await db.execute(
                    "DELETE FROM email_outbox WHERE notification_id IN"
                    " (SELECT id FROM notifications WHERE user_id = ?)",
                    (user.id,),
                )
        return address

    # ------------------------------------------------------------------------ emails

    def compose(self, row, *, language: str = DEFAULT_LANGUAGE) -> EmailMessage:
        """The email for one notification (a row of DUE_EMAILS_SQL): plain text, what
        happened and a link to the item on this node."""
        _ = self._templates.translations(language).gettext
        config = self.node.config
        kind = row["kind"]
        title = " ".join(row["item_title"].split())  # one line, whatever the title holds
        values = {"node": config.name, "title": title, "name": row["actor_name"],
                  "group": row["group_name"]}  # fmt: skip
        anchor = f"response-{row['response_id']}" if kind == "response" else "my-responses"
        link = f"{config.base_url}/items/{item_rules.uuid_of(row['item_id'])}#{anchor}"
        message = EmailMessage()
        message["From"] = formataddr((config.name, config.smtp_from))
        message["To"] = row["email"]
        message["Subject"] = " ".join((_(SUBJECTS[kind]) % values).split())
        message["Date"] = format_datetime(self.node.now())
        message["Message-ID"] = make_msgid("aidnode", domain=urlsplit(config.base_url).hostname)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
        message.set_content("\n".join([
            _(GREETING) % {"name": row["display_name"]}, "",
            _(OPENINGS[kind]) % values, "",
            _(SEE_IT[kind]), link, "", "-- ",
            _(FOOTER) % {"node": config.name, "link": f"{config.base_url}/account"},
        ]) + "\n")  # fmt: skip
        return message

    def _smtp(self) -> aiosmtplib.SMTP:
        config = self.node.config
        implicit_tls = config.smtp_port == SMTPS_PORT
        return aiosmtplib.SMTP(
            hostname=config.smtp_host, port=config.smtp_port,
            username=config.smtp_username or None, password=config.smtp_password or None,
            use_tls=implicit_tls, start_tls=config.smtp_starttls and not implicit_tls,
            timeout=SMTP_TIMEOUT,
        )  # fmt: skip

    async def send_due_emails(self) -> int:
        """Send every email whose time has come, over one SMTP connection; how many were
        sent. Nothing at all while the node has no `smtp_host`."""
        if not self.node.config.smtp_host:
            return 0
        rows = await self.store.fetch_all(DUE_EMAILS_SQL, (self.node.now_text(), EMAIL_BATCH))
        due = []
        for row in rows:
            if row["email"] is None or row["disabled"]:
                await self._settle(row, sent=True)  # no one to send it to: nothing is owed
            else:
                due.append(row)
        if not due:
            return 0
        smtp = self._smtp()
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            for row in due:
                await self._settle(row, error=f"could not connect: {error}")
            return 0
        sent = 0
        try:
            for position, row in enumerate(due):
                if self.node.stopping.is_set():
                    break  # the rest wait for the next start, no attempt spent
                try:
                    message = self.compose(row, language=row["language"] or DEFAULT_LANGUAGE)
                    await smtp.send_message(message, sender=self.node.config.smtp_from)
                except aiosmtplib.SMTPRecipientsRefused as error:
                    codes = [refused.code for refused in error.recipients]
                    await self._settle(row, error=str(error), final=min(codes, default=0) >= 500)
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as error:
                    # The connection is gone: this one and the rest are tried again later.
                    for left in due[position:]:
                        await self._settle(left, error=f"connection lost: {error}")
                    break
                except aiosmtplib.SMTPResponseException as error:
                    await self._settle(row, error=f"{error.code} {error.message}",
                                       final=error.code >= 500)  # fmt: skip
                except aiosmtplib.SMTPException as error:
                    await self._settle(row, error=str(error))
                else:
                    await self._settle(row, sent=True)
                    sent += 1
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
        return sent

    async def _settle(self, row, *, sent: bool = False, error: str | None = None,
                      final: bool = False) -> None:  # fmt: skip
        """After an attempt: a sent email leaves the outbox; a failure is retried after the
        next delay, or given up (at the last attempt, or when the server refused it for good)."""
        notification_id = row["notification_id"]
        async with self.store.write() as db:
            if sent:
                await db.execute("DELETE FROM email_outbox WHERE notification_id = ?",
                                 (notification_id,))  # fmt: skip
                return
            tries = row["attempts"] + 1
            next_attempt = None
            if not final and tries < EMAIL_ATTEMPTS:
                next_attempt = format_time(self.node.now() + timedelta(
                    seconds=EMAIL_RETRY_DELAYS[tries - 1]))  # fmt: skip
            await db.execute(
                "UPDATE email_outbox SET attempts = ?, next_attempt = ?, last_error = ?"
                " WHERE notification_id = ?",
                (tries, next_attempt, (error or "")[:500], notification_id),
            )
        # The address is the member's own business: the log names the notification only.
        if next_attempt is None:
            log.error("gave up emailing notification %s after %d attempts: %s",
                      notification_id, tries, error)  # fmt: skip
        else:
            log.warning("emailing notification %s failed (attempt %d, next at %s): %s",
                        notification_id, tries, next_attempt, error)  # fmt: skip

    async def run(self) -> None:
        """The worker: send emails as events queue them, and retry failed ones when due."""
        await run_rounds(self.send_due_emails, self._wake, EMAIL_POLL,
                         "sending notification emails", self.node.stopping)  # fmt: skip


# ---------------------------------------------------------------------------- pages


def _render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    return request.app.state.templates.render(request, name, context, status_code)


async def notifications_page(request: Request) -> Response:
    """`GET /notifications`: the member's notifications, newest first. Viewing them is
    reading them: what the page shows is marked read (and flagged new on this page only)."""
    notifications = request.app.state.node.notifications
    user = request.state.user
    shown = await notifications.for_user(user)
    if any(n.unread for n in shown):
        await notifications.mark_read(user, up_to=shown[0].id)
    # The header counts what is still unread (one that arrived meanwhile).
    request.state.unread_notifications = await notifications.unread_count(user)
    return _render(request, "notifications.html", {"notifications": shown})


async def account_context(node: "Node", user: "User") -> dict:
    """What the account page shows about email, and the member's API tokens (see
    `templates/account.html`; server/account_security.py revokes them)."""
    return {"email": await node.notifications.email_of(user),
            "email_sending": bool(node.config.smtp_host),
            "tokens": await node.api_tokens(user.id)}  # fmt: skip


async def set_email_page(request: Request) -> Response:
    """`POST /account/email`: set or remove the member's address for notification emails."""
    node = request.app.state.node
    user = request.state.user
    form = await request.form()
    text = str(form.get("email", ""))[:4 * EMAIL_MAX]
    try:
        await node.notifications.set_email(user, text)
    except Invalid as error:
        translate = request.app.state.templates.gettext(request)
        return _render(request, "account.html", {
            **await account_context(node, user), "token": None,
            "email_values": {"email": text}, "email_errors": {"email": error.translated(translate)},
        }, status_code=error.status)  # fmt: skip
    return RedirectResponse("/account#email-section", status_code=303)


routes = [
    page("/notifications", notifications_page, "member", name="notifications"),
    page("/account/email", set_email_page, "member", methods=("POST",), name="account_email"),
]

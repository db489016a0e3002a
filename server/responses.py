"""Responses (DESIGN §7): a member who can help with an item (or wants an offer) answers it
with a message and how to reach them, and only the item's origin node learns the contact.

Every node plays both parts:

- **Responder's node.** `Responses.send` checks the member's words and, for another node's
  item, signs a `response` message straight to that item's origin inbox and waits for the
  answer: the member hears 202 only once the origin has said 202, 502 if it could not be
  reached (504 on a time-out), and the origin's 404 and 409 as they are. Contact details go
  only to https origins (or anywhere with `allow_private_addresses`, for tests and the demo).
  What was sent is kept in `sent_responses` without the contact, and the origin's later
  `response-status` for it is taken from that origin only. A response to one of this node's
  own items never leaves it: it is stored as received, with the member's id beside it.
- **Origin.** `Responses.receive` takes a `response` from any node that is not blocked
  (routing's `inbox_sender` has already learned an unknown node's key through the address
  guard): strict fields, `from.node` the signer, the item this node's own, federated and
  open, one answer per (from.node, id), and at most a few an hour per sending node (more for
  allies). The poster or a coordinator accepts one (the item becomes `promised` through
  `Node.change_item`, so it is versioned and published) or declines it; the decision goes
  back to the responder's node as `response-status`, queued in `response_status_outbox` and
  sent by `run`, a worker with a few retries, so the click never waits on another node.

    sent_responses.state / responses.state:   pending ──▶ accepted
                                                  └─────▶ declined

The messages' own rules (fields, types, lengths) are `federation.responses`; the node's rules,
the SQL they need (literal strings with bound parameters, as in `server.store`), the API
routes and the pages are here.
"""

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from federation import items as item_rules
from federation import responses as messages
from federation.errors import ProtocolError, ValidationError
from federation.items import N_
from federation.outbound import FetchError
from federation.timefmt import format_time

from .accounts import RateLimiter, per_worker
from .allies import reply_reason
from .api import read_json
from .errors import (
    BadGateway,
    ClientError,
    Conflict,
    Forbidden,
    GatewayTimeout,
    Invalid,
    NotFound,
    TooManyRequests,
)
from .node import has_role
from .routing import SignedBy, api, page, path_uuid
from .workers import run_rounds

if TYPE_CHECKING:
    from .node import ItemView, Node
    from .store import User

log = logging.getLogger("aidnode.responses")

DECISION_VERBS = {"accepted": "accept", "declined": "decline"}  # for the audit log
NEW_RESPONSE_FIELDS = ("item", "message", "contact")
# Responses taken per sending node in a sliding hour: allies (trusted nodes) get more.
RESPONSES_PER_HOUR_ALLY = 60
RESPONSES_PER_HOUR_OTHER = 10
RATE_WINDOW = 3600
SEND_TIMEOUT = 10.0  # seconds the member waits for the origin, at most
# Seconds before each retry of a response-status; after the last one, it is given up.
STATUS_RETRY_DELAYS = (10, 60, 300, 1800, 7200)
STATUS_POLL = 10.0  # seconds between the worker's looks for retries that are due
STATUS_IN_FLIGHT = 4
LIST_MAX = 500


def checked(error: type[ClientError], check, *args):
    """Run a check of `federation.responses`, its ValidationError as `error` (400 for another
    node's message, 422 for a member's)."""
    try:
        return check(*args)
    except ValidationError as problem:
        raise error(problem.message, field=problem.field, params=problem.params) from None


def parse_new_response(data: object) -> tuple[str, str, str]:
    """A member's `POST /api/v1/responses` body: (item id, message, contact), or Invalid."""
    body = checked(Invalid, messages.check_fields, data, NEW_RESPONSE_FIELDS, "a response")
    return (checked(Invalid, messages.check_item_id, body["item"]),
            checked(Invalid, messages.check_text, "message", body["message"], messages.MESSAGE_MAX),
            checked(Invalid, messages.check_text, "contact", body["contact"], messages.CONTACT_MAX))  # fmt: skip


# ---------------------------------------------------------------------------- views


@dataclass(frozen=True)
class Received:
    """A response to one of this node's items, as its poster and coordinators see it."""

    id: str
    item: str
    item_title: str
    from_node: str
    from_name: str
    from_group: str  # the sending node's name, or this node's for a member here
    message: str
    contact: str
    received: str
    state: str
    peer_id: int | None  # the sending node as a peer (None: this node's own member)
    ally: bool  # from this node or a node it trusts

    @property
    def item_uuid(self) -> str:
        return item_rules.uuid_of(self.item)

    def to_json(self) -> dict:
        return {"id": self.id, "item": self.item,
                "from": {"node": self.from_node, "name": self.from_name},
                "message": self.message, "contact": self.contact, "received": self.received,
                "state": self.state}  # fmt: skip


@dataclass(frozen=True)
class Sent:
    """A response a member of this node sent (or made here, to one of its own items)."""

    id: str
    item: str
    item_title: str
    origin: str
    message: str
    created: str
    updated: str
    state: str

    @property
    def item_uuid(self) -> str:
        return item_rules.uuid_of(self.item)

    def to_json(self) -> dict:
        return {"id": self.id, "item": self.item, "item_title": self.item_title,
                "origin": self.origin, "message": self.message, "created": self.created,
                "updated": self.updated, "state": self.state}  # fmt: skip


@dataclass
class ItemResponses:
    """What an item's page shows of responses: the form, the viewer's own, and (for the poster
    and coordinators) what came in, allies' apart from others'."""

    can_respond: bool = False
    why_not: str | None = None
    origin_name: str = ""
    mine: list[Sent] = field(default_factory=list)
    shown: bool = False  # the viewer may see what came in
    from_allies: list[Received] = field(default_factory=list)
    from_others: list[Received] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)


RECEIVED_SQL = (
    "SELECT r.id, r.item_id, i.title, r.from_node, r.from_name, p.name AS peer_name,"
    " r.message, r.contact, r.received, r.state, p.id AS peer_id, p.trust, i.owner_id"
    " FROM responses r JOIN items i ON i.id = r.item_id AND i.is_local"
    " LEFT JOIN peers p ON p.url = r.from_node"
    " WHERE (p.trust IS NULL OR p.trust != 'blocked')"
)
SENT_SQL = (
    "SELECT id, item_id, item_title, origin, message, created, updated, state"
    " FROM sent_responses WHERE user_id = ?"
    " UNION ALL"
    " SELECT r.id, r.item_id, i.title, i.origin, r.message, r.received,"
    " coalesce(r.decided, r.received), r.state"
    " FROM responses r JOIN items i ON i.id = r.item_id WHERE r.responder_id = ?"
)


class Responses:
    """Responses sent and received, for one node; `run` is the worker that tells responders'
    nodes what became of their responses."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        workers = node.config.workers
        self.from_allies = RateLimiter(per_worker(RESPONSES_PER_HOUR_ALLY, workers), RATE_WINDOW)
        self.from_others = RateLimiter(per_worker(RESPONSES_PER_HOUR_OTHER, workers), RATE_WINDOW)
        self._wake = node.wake_event("responses")

    @property
    def store(self):
        return self.node.store

    def _received(self, row) -> Received:
        local = row["from_node"] == self.node.config.base_url
        group = self.node.config.name if local else (row["peer_name"] or row["from_node"])
        return Received(
            id=row["id"], item=row["item_id"], item_title=row["title"], from_node=row["from_node"],
            from_name=row["from_name"], from_group=group, message=row["message"],
            contact=row["contact"], received=row["received"], state=row["state"],
            peer_id=None if local else row["peer_id"], ally=local or row["trust"] == "trusted",
        )  # fmt: skip

    # ------------------------------------------------------------------------ responding

    async def send(self, user: "User", data: object) -> str:
        """A member responds to an item: stored here for this node's own, else delivered to
        its origin, synchronously. Returns the response's id."""
        item_id, message, contact = parse_new_response(data)
        node = self.node
        row = await self.store.item(item_id)
        now = node.now_text()
        if row is None or row.state["status"] not in item_rules.LIVE_STATUSES or row.state["expires"] <= now:
            raise NotFound(N_("no such item"))
        if row.is_local:
            return await self._respond_here(user, row, message, contact)
        if row.state["status"] != "open":
            raise Conflict(N_("this item is no longer open"))
        origin = row.origin
        peer = await self.store.peer_by_url(origin)
        if peer is not None and peer.trust == "blocked":  # its items are gone; be sure
            raise NotFound(N_("no such item"))
        if not origin.startswith("https://") and not node.config.allow_private_addresses:
            raise Forbidden(N_("this item's group is not reached over https, and contact "
                               "details are sent only over https"))  # fmt: skip
        response_id = str(uuid.uuid4())
        body = messages.ResponseMessage(id=response_id, item=item_id, node=node.config.base_url,
                                        name=user.display_name, message=message,
                                        contact=contact, created=now).to_json()  # fmt: skip
        await node.allies._load_key()
        try:
            reply = await node.allies.outbound.request(
                "POST", f"{origin}/federation/inbox", json_body=body, timeout=SEND_TIMEOUT,
                max_bytes=64 * 1024,
            )  # fmt: skip
        except FetchError as error:
            if str(error).startswith("timed out"):
                raise GatewayTimeout(N_("%(url)s did not answer in time: try again later"),
                                     params={"url": origin}) from None
            raise BadGateway(N_("could not reach %(url)s: %(error)s"),
                             params={"url": origin, "error": str(error)}) from None
        self._check_delivery(reply, origin, response_id)
        async with self.store.write() as db:
            await db.execute(
                "INSERT INTO sent_responses (id, user_id, item_id, origin, item_kind, item_title,"
                " message, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (response_id, user.id, item_id, origin, row.state["kind"], row.state["title"],
                 message, now, now),
            )  # fmt: skip
        return response_id

    @staticmethod
    def _check_delivery(reply, origin: str, response_id: str) -> None:
        """Pass on what the origin said, unless it took the response (202 with our id)."""
        if reply.status == 202:
            with contextlib.suppress(ProtocolError):
                answer = reply.json()
                if isinstance(answer, dict) and answer.get("id") == response_id:
                    return
            raise BadGateway(N_("%(url)s answered 202 without this response's id"),
                             params={"url": origin})  # fmt: skip
        if reply.status == 404:
            raise NotFound(N_("the item's group no longer has this item"))
        if reply.status == 409:
            raise Conflict(N_("this item is no longer open at its group"))
        if reply.status == 403:
            raise Forbidden(N_("the item's group does not take responses from this group"))
        if reply.status == 429:
            wait = reply.headers.get("retry-after", "")
            raise TooManyRequests(N_("the item's group has had many responses from this group "
                                     "lately: try again later"),
                                  retry_after=min(int(wait), 86400) if wait.isdigit() else 60)  # fmt: skip
        raise BadGateway(N_("%(url)s answered %(status)s: %(reason)s"),
                         params={"url": origin, "status": reply.status, "reason": reply_reason(reply)})  # fmt: skip

    async def _respond_here(self, user: "User", row, message: str, contact: str) -> str:
        """A response to one of this node's own items: stored as received, nothing sent."""
        if row.owner_id == user.id:
            raise Forbidden(N_("you posted this item: responses are for others"))
        if row.state["status"] != "open":
            raise Conflict(N_("this item is no longer open"))
        response_id = str(uuid.uuid4())
        now = self.node.now_text()
        async with self.store.write() as db:
            await db.execute(
                "INSERT INTO responses (id, from_node, from_name, item_id, message, contact,"
                " created, received, responder_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (response_id, self.node.config.base_url, user.display_name, row.state["id"],
                 message, contact, now, now, user.id),
            )  # fmt: skip
            await self.node.notifications.response_received(
                db, row, response_id, name=user.display_name, group=self.node.config.name)
        self.node.notifications.wake()
        return response_id

    async def sent_by(self, user: "User", item_id: str | None = None) -> list[Sent]:
        """What a member sent (or made here), newest first; for one item if asked."""
        sql = f"SELECT * FROM ({SENT_SQL})"
        params: list[Any] = [user.id, user.id]
        if item_id is not None:
            sql += " WHERE item_id = ?"
            params.append(item_id)
        rows = await self.store.fetch_all(sql + " ORDER BY created DESC, id LIMIT ?",
                                          (*params, LIST_MAX))  # fmt: skip
        return [Sent(*row) for row in rows]

    # ------------------------------------------------------------------------ receiving

    async def receive(self, signer: SignedBy, body: object) -> str:
        """A `response` for one of our items from another node; its id once stored (or
        already held). Raises ClientError for every refusal, having stored nothing."""
        message = checked(ClientError, messages.parse_response_message, body)
        node = self.node
        if signer.trust == "blocked":
            raise Forbidden("this node does not accept responses from yours")
        if message.node != signer.node:
            raise Forbidden("from.node must be the node that signs the response")
        held = await self.store.fetch_one("SELECT from_node FROM responses WHERE id = ?",
                                          (message.id,))  # fmt: skip
        if held is not None:
            if held[0] == signer.node:
                return message.id  # a repeat: answered as the first was, nothing changes
            raise Conflict("a response with this id is held already: choose a new uuid4", field="id")
        limiter = self.from_allies if signer.trust == "trusted" else self.from_others
        wait = limiter.retry_after(signer.node)
        if wait > 0:
            raise TooManyRequests("too many responses from your node: try again later",
                                  retry_after=int(wait) + 1)  # fmt: skip
        limiter.hit(signer.node)
        row = None
        prefix = f"{node.config.base_url}/items/"
        if message.item.startswith(prefix) and item_rules.UUID_RE.fullmatch(message.item[len(prefix):]):
            row = await self.store.item(message.item)
        if row is None or not row.is_local or row.state["reach"] == "local":
            raise NotFound("no such item")  # the same for an unknown and a local-only item
        now = node.now_text()
        if row.state["status"] != "open" or row.state["expires"] <= now:
            raise Conflict("this item is no longer open")
        async with self.store.write() as db:
            cursor = await db.execute(
                "INSERT INTO responses (id, from_node, from_name, item_id, message, contact,"
                " created, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (message.id, message.node, message.name, message.item, message.message,
                 message.contact, message.created, now),
            )  # fmt: skip
            if cursor.rowcount == 0:  # the same id, arrived meanwhile
                rows = await db.execute_fetchall("SELECT from_node FROM responses WHERE id = ?",
                                                 (message.id,))  # fmt: skip
                if rows[0][0] != signer.node:
                    raise Conflict("a response with this id is held already: choose a new uuid4",
                                   field="id")  # fmt: skip
            else:  # the poster is told (server/notifications.py)
                await node.notifications.response_received(
                    db, row, message.id, name=message.name,
                    group=node.peer_names.get(signer.node) or signer.node)  # fmt: skip
        node.notifications.wake()
        log.info("response %s to %s from %s", message.id, message.item, message.node)
        return message.id

    async def status_received(self, signer: SignedBy, body: object) -> dict:
        """A `response-status` from the origin of an item a member of ours responded to."""
        status = checked(ClientError, messages.parse_status_message, body)
        response_id, item_id, state = status.id, status.item, status.state
        if signer.trust == "blocked":
            raise Forbidden("this node does not accept requests from yours")
        async with self.store.write() as db:
            cursor = await db.execute(
                "UPDATE sent_responses SET state = ?, updated = ?"
                " WHERE id = ? AND origin = ? AND item_id = ?",
                (state, self.node.now_text(), response_id, signer.node, item_id),
            )
            if cursor.rowcount == 0:
                raise NotFound("no response with this id was sent from this node to yours "
                               "for that item")  # fmt: skip
            await self.node.notifications.sent_response_decided(db, response_id, state,
                                                                origin=signer.node)  # fmt: skip
        self.node.notifications.wake()
        return {"id": response_id, "state": state}

    async def received_for(self, user: "User", *, item_id: str | None = None) -> list[Received]:
        """Responses to this node's items that `user` may see, newest first: a member's to
        their own items, a coordinator's or admin's all. A blocked node's are not shown."""
        sql, params = RECEIVED_SQL, []
        if not has_role(user, "coordinator"):
            sql += " AND i.owner_id = ?"
            params.append(user.id)
        if item_id is not None:
            sql += " AND r.item_id = ?"
            params.append(item_id)
        rows = await self.store.fetch_all(sql + " ORDER BY r.received DESC, r.row DESC LIMIT ?",
                                          (*params, LIST_MAX))  # fmt: skip
        return [self._received(row) for row in rows]

    async def decide(self, user: "User", response_id: str, state: object) -> Received:
        """The poster or a coordinator accepts or declines a response. Accepting promises the
        item (if it is still open). The responder's node is told by the worker, later."""
        if state not in messages.DECISIONS:
            raise Invalid(N_("state must be accepted or declined"), field="state")
        rows = await self.store.fetch_all(RECEIVED_SQL + " AND r.id = ?", (response_id,))
        if not rows or not (rows[0]["owner_id"] == user.id or has_role(user, "coordinator")):
            raise NotFound(N_("no such response"))
        current = self._received(rows[0])
        if current.state == state:
            return current
        if current.state != "pending":
            raise Conflict(N_("this response was already %(state)s"), params={"state": current.state})
        node = self.node
        if state == "accepted":
            item = await self.store.item(current.item)
            status = item.state["status"] if item else None
            if item is not None and item.state["expires"] <= node.now_text():
                status = "expired"
            if status == "open":
                await node.change_item(user, current.item_uuid, {"status": "promised"})
            elif status != "promised":
                raise Conflict(N_("this item is %(status)s: it can no longer be promised"),
                               params={"status": status or "gone"})  # fmt: skip
        now = node.now_text()
        async with self.store.write() as db:
            cursor = await db.execute(
                "UPDATE responses SET state = ?, decided = ?, decided_by = ?"
                " WHERE id = ? AND state = 'pending'",
                (state, now, user.id, response_id),
            )
            if cursor.rowcount and current.from_node != node.config.base_url:
                await db.execute(
                    "INSERT INTO response_status_outbox (response_id, node, item_id, state,"
                    " attempts, next_attempt) VALUES (?, ?, ?, ?, 0, ?)"
                    " ON CONFLICT (response_id) DO UPDATE SET state = excluded.state,"
                    " attempts = 0, next_attempt = excluded.next_attempt, last_error = NULL",
                    (response_id, current.from_node, current.item, state, now),
                )  # fmt: skip
            if cursor.rowcount:
                await self.store.audit(db, now=now, actor=user, action=f"response.{DECISION_VERBS[state]}",
                                       target=current.item, detail=f"from {current.from_node}")  # fmt: skip
            if cursor.rowcount and current.from_node == node.config.base_url:  # a member here
                await node.notifications.response_decided_here(db, response_id, state)
        self.wake()
        node.notifications.wake()
        rows = await self.store.fetch_all(RECEIVED_SQL + " AND r.id = ?", (response_id,))
        return self._received(rows[0])

    # ------------------------------------------------------------------------ telling responders

    def wake(self) -> None:
        self._wake.set()

    async def send_due_statuses(self) -> int:
        """Send every response-status whose time has come; how many were delivered."""
        rows = await self.store.fetch_all(
            "SELECT response_id, node, item_id, state, attempts FROM response_status_outbox"
            " WHERE next_attempt IS NOT NULL AND next_attempt <= ? ORDER BY next_attempt LIMIT 100",
            (self.node.now_text(),),
        )
        # A few at once, so one slow node delays the others by little.
        sending = asyncio.Semaphore(STATUS_IN_FLIGHT)

        async def one(row) -> int:
            async with sending:
                return await self._send_status(*row)

        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, Exception):
                log.error("sending response-status %s failed", row[0], exc_info=result)
        return sum(r for r in results if isinstance(r, int))

    async def _send_status(self, response_id: str, url: str, item_id: str, state: str,
                           attempts: int) -> int:  # fmt: skip
        peer = await self.store.peer_by_url(url)
        if peer is not None and peer.trust == "blocked":  # blocking stops all traffic to it
            await self._settle(response_id, state, None, give_up=True, error="blocked")
            return 0
        await self.node.allies._load_key()
        body = messages.StatusMessage(id=response_id, item=item_id, state=state).to_json()
        try:
            reply = await self.node.allies.outbound.request(
                "POST", f"{url}/federation/inbox", json_body=body, timeout=SEND_TIMEOUT,
                max_bytes=64 * 1024,
            )  # fmt: skip
        except FetchError as error:
            await self._settle(response_id, state, attempts, error=str(error))
            return 0
        if 200 <= reply.status < 300:
            await self._settle(response_id, state, None)
            return 1
        # A refusal that trying again will not change (the message or its sender is wrong).
        final = 400 <= reply.status < 500 and reply.status not in (401, 408, 429)
        await self._settle(response_id, state, attempts, give_up=final,
                           error=f"{reply.status}: {reply_reason(reply)}")  # fmt: skip
        return 0

    async def _settle(self, response_id: str, state: str, attempts: int | None, *,
                      give_up: bool = False, error: str | None = None) -> None:  # fmt: skip
        """After an attempt: delivered (`error` None) leaves the outbox; a failure is retried
        after the next delay, or given up. A newer decision queued meanwhile is left alone."""
        async with self.store.write() as db:
            if error is None:
                await db.execute("DELETE FROM response_status_outbox WHERE response_id = ?"
                                 " AND state = ?", (response_id, state))  # fmt: skip
                return
            tries = (attempts or 0) + 1
            next_attempt = None
            if not give_up and tries <= len(STATUS_RETRY_DELAYS):
                next_attempt = format_time(self.node.now() + timedelta(
                    seconds=STATUS_RETRY_DELAYS[tries - 1]))  # fmt: skip
            await db.execute(
                "UPDATE response_status_outbox SET attempts = ?, next_attempt = ?, last_error = ?"
                " WHERE response_id = ? AND state = ?",
                (tries, next_attempt, error[:500], response_id, state),
            )
        if next_attempt is None:
            log.warning("gave up sending %s of response %s: %s", state, response_id, error)

    async def run(self) -> None:
        """The worker: send decisions as they are made, and retry failed ones when due."""
        await run_rounds(self.send_due_statuses, self._wake, STATUS_POLL,
                         "sending response-status messages", self.node.stopping)  # fmt: skip

    # ------------------------------------------------------------------------ pages

    async def for_item(self, view: "ItemView", user: "User | None") -> ItemResponses:
        """What the item's page shows about responses to `user`."""
        shown = ItemResponses(origin_name=view.origin_name)
        if user is None:
            return shown
        state = view.state
        own = view.row.is_local and view.row.owner_id == user.id
        if state["status"] != "open" or state["expires"] <= self.node.now_text():
            shown.why_not = N_("This item is no longer open.")
        elif own:
            shown.why_not = None
        elif (not view.row.is_local and not view.row.origin.startswith("https://")
              and not self.node.config.allow_private_addresses):
            shown.why_not = N_("This item's group is not reached over https, so responses "
                               "(which carry contact details) cannot be sent to it.")
        else:
            shown.can_respond = True
        shown.mine = await self.sent_by(user, item_id=state["id"])
        if view.row.is_local and view.can_edit:
            shown.shown = True
            for received in await self.received_for(user, item_id=state["id"]):
                (shown.from_allies if received.ally else shown.from_others).append(received)
        return shown


async def item_responses(node: "Node", view: "ItemView", user: "User | None") -> dict:
    """The item page's context about responses (see `templates/items/_respond.html`)."""
    return {"responding": await node.responses.for_item(view, user)}


# ---------------------------------------------------------------------------- federation


async def inbox_message(node: "Node", signer: SignedBy, body: dict) -> Response:
    """`POST /federation/inbox` with `type: response` (202 `{"id"}`) or `response-status`."""
    if body.get("type") == "response":
        response_id = await node.responses.receive(signer, body)
        return JSONResponse({"id": response_id}, status_code=202)
    return JSONResponse(await node.responses.status_received(signer, body))


# ---------------------------------------------------------------------------- API


def _response_id(request: Request) -> str:
    return path_uuid(request, "id", N_("no such response"))


async def api_list(request: Request) -> Response:
    """`GET /api/v1/responses`: responses to the member's items (coordinators: to all)."""
    node = request.app.state.node
    received = await node.responses.received_for(request.state.user)
    return JSONResponse({"responses": [r.to_json() for r in received]})


async def api_send(request: Request) -> Response:
    """`POST /api/v1/responses {"item", "message", "contact"}` → 202 `{"id"}` once delivered."""
    node = request.app.state.node
    response_id = await node.responses.send(request.state.user, await read_json(request))
    return JSONResponse({"id": response_id}, status_code=202)


async def api_sent(request: Request) -> Response:
    """`GET /api/v1/responses/sent`: what the member sent, and what became of it."""
    node = request.app.state.node
    sent = await node.responses.sent_by(request.state.user)
    return JSONResponse({"responses": [s.to_json() for s in sent]})


async def api_decide(request: Request) -> Response:
    """`PATCH /api/v1/responses/{id} {"state": "accepted"|"declined"}`."""
    node = request.app.state.node
    response_id = _response_id(request)
    body = checked(Invalid, messages.check_fields, await read_json(request), ("state",),
                   "the change")  # fmt: skip
    received = await node.responses.decide(request.state.user, response_id, body["state"])
    return JSONResponse(received.to_json())


# ---------------------------------------------------------------------------- pages


def _render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    return request.app.state.templates.render(request, name, context, status_code)


async def respond_page(request: Request) -> Response:
    """`POST /items/{uuid}/respond`: the respond form on an item's page."""
    node = request.app.state.node
    user = request.state.user
    item_uuid = path_uuid(request, "uuid", N_("no such item"))
    view = await node.item_for(item_uuid, user)
    form = await request.form()
    values = {name: str(form.get(name, ""))[:4 * messages.MESSAGE_MAX]
              for name in ("message", "contact")}  # fmt: skip
    try:
        await node.responses.send(user, {"item": view.state["id"], **values})
    except ClientError as error:
        translate = request.app.state.templates.gettext(request)
        responding = await node.responses.for_item(view, user)
        responding.values = values
        responding.errors = {error.field if error.field in values else "form":
                             error.translated(translate)}  # fmt: skip
        response = _render(request, "items/respond.html",
                           {"view": view, "responding": responding}, status_code=error.status)  # fmt: skip
        response.headers.update(error.headers())
        return response
    return RedirectResponse(f"/items/{item_uuid}#my-responses", status_code=303)


async def decide_page(request: Request) -> Response:
    """`POST /responses/{id}`: accept or decline, from an item's page or the responses page."""
    node = request.app.state.node
    form = await request.form()
    received = await node.responses.decide(request.state.user, _response_id(request),
                                           str(form.get("state", "")))  # fmt: skip
    if form.get("back") == "mine":
        return RedirectResponse(f"/my/responses#response-{received.id}", status_code=303)
    return RedirectResponse(f"/items/{received.item_uuid}#response-{received.id}", status_code=303)


async def my_responses(request: Request) -> Response:
    """`GET /my/responses`: what the member sent, and the responses to their items (all of
    them, for coordinators), non-allies' apart."""
    node = request.app.state.node
    user = request.state.user
    received = await node.responses.received_for(user)
    return _render(request, "items/responses.html", {
        "sent": await node.responses.sent_by(user),
        "from_allies": [r for r in received if r.ally],
        "from_others": [r for r in received if not r.ally],
    })  # fmt: skip


routes = [
    api("/api/v1/responses", api_list, "member", methods=("GET",), name="api_responses"),
    api("/api/v1/responses", api_send, "member", methods=("POST",), name="api_respond"),
    api("/api/v1/responses/sent", api_sent, "member", methods=("GET",), name="api_sent_responses"),
    api("/api/v1/responses/{id}", api_decide, "member", methods=("PATCH",),
        name="api_decide_response"),
    page("/items/{uuid}/respond", respond_page, "member", methods=("POST",), name="respond"),
    page("/responses/{id}", decide_page, "member", methods=("POST",), name="decide_response"),
    page("/my/responses", my_responses, "member", name="my_responses"),
]

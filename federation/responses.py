"""Response messages (DESIGN §7): what a responder's node sends an item's origin, and what the
origin sends back, checked strictly: every field present, of its type and length, and
nothing more. A problem raises `ValidationError` naming the field (dotted inside `from`).

    {"type": "response", "id": <uuid4>, "item": <item id>,
     "from": {"node": <base_url>, "name": <display name>},
     "message": <≤ 2000 code points>, "contact": <≤ 500>, "created": <time>}
    {"type": "response-status", "id": <the response's id>, "item": <item id>,
     "state": "accepted" | "declined"}

Both travel signed (RFC 9421, `federation.httpsig`) to the receiver's `/federation/inbox`;
who may sign which is the receiver's business.
"""

from dataclasses import dataclass
from typing import Any

from .errors import ValidationError
from .items import AUTHOR_MAX, UUID_RE, clean_text
from .timefmt import parse_time

MESSAGE_MAX = 2000  # code points
CONTACT_MAX = 500
NAME_MAX = AUTHOR_MAX
ITEM_ID_MAX = 2048
DECISIONS = ("accepted", "declined")
RESPONSE_FIELDS = ("type", "id", "item", "from", "message", "contact", "created")
FROM_FIELDS = ("node", "name")
STATUS_FIELDS = ("type", "id", "item", "state")


def check_fields(body: object, expected: tuple[str, ...], what: str, prefix: str = "") -> dict:
    """`body` as an object holding exactly the `expected` fields; ValidationError naming the
    first one unknown or missing (as `prefix` + its name)."""
    if not isinstance(body, dict):
        raise ValidationError(prefix.rstrip(".") or "body", f"{what} must be a JSON object")
    unknown = sorted(set(body) - set(expected))
    if unknown:
        name = prefix + unknown[0][:40]
        raise ValidationError(name, f"unknown field {name!r}: {what} holds only "
                                    f"{', '.join(expected)}")  # fmt: skip
    missing = [name for name in expected if name not in body]
    if missing:
        raise ValidationError(prefix + missing[0], f"{what} needs {prefix}{missing[0]}")
    return body


def check_text(name: str, value: Any, max_len: int) -> str:
    """Text as the item rules take it: trimmed, not empty, at most `max_len` code points, no
    control characters (line breaks allowed, except in a name)."""
    return clean_text(name, value, max_len=max_len, multiline=name != "from.name")


def check_item_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= ITEM_ID_MAX:
        raise ValidationError("item", "item must be an item id (its URL)")
    return value


def check_uuid(name: str, value: Any) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise ValidationError(name, f"{name} must be a lowercase uuid4")
    return value


@dataclass(frozen=True)
class ResponseMessage:
    """A `response` message, checked."""

    id: str
    item: str
    node: str
    name: str
    message: str
    contact: str
    created: str

    def to_json(self) -> dict:
        return {"type": "response", "id": self.id, "item": self.item,
                "from": {"node": self.node, "name": self.name}, "message": self.message,
                "contact": self.contact, "created": self.created}  # fmt: skip


def parse_response_message(body: object) -> ResponseMessage:
    """Check a `response` message (its `type` included)."""
    body = check_fields(body, RESPONSE_FIELDS, "a response message")
    if body["type"] != "response":
        raise ValidationError("type", "type must be response")
    sender = check_fields(body["from"], FROM_FIELDS, "from", prefix="from.")
    if not isinstance(sender["node"], str) or not 0 < len(sender["node"]) <= ITEM_ID_MAX:
        raise ValidationError("from.node", "from.node must be the sending node's base URL")
    try:
        parse_time(body["created"])
    except ValueError:
        raise ValidationError("created", "created must be a time like 2026-11-24T18:00:00Z") from None
    return ResponseMessage(
        id=check_uuid("id", body["id"]), item=check_item_id(body["item"]), node=sender["node"],
        name=check_text("from.name", sender["name"], NAME_MAX),
        message=check_text("message", body["message"], MESSAGE_MAX),
        contact=check_text("contact", body["contact"], CONTACT_MAX), created=body["created"],
    )  # fmt: skip


@dataclass(frozen=True)
class StatusMessage:
    """A `response-status` message, checked."""

    id: str
    item: str
    state: str

    def to_json(self) -> dict:
        return {"type": "response-status", "id": self.id, "item": self.item, "state": self.state}


def parse_status_message(body: object) -> StatusMessage:
    """Check a `response-status` message (its `type` included)."""
    body = check_fields(body, STATUS_FIELDS, "a response-status message")
    if body["type"] != "response-status":
        raise ValidationError("type", "type must be response-status")
    if body["state"] not in DECISIONS:
        raise ValidationError("state", "state must be accepted or declined")
    return StatusMessage(id=check_uuid("id", body["id"]), item=check_item_id(body["item"]),
                         state=body["state"])  # fmt: skip

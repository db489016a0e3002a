"""The item model: offers and needs, their rules and their JSON (DESIGN §3).

One module decides what an item may be, so a member's post and a state ingested from another
node are judged by the same code. Three entry points:

- `parse_item_input(data, partial=...)`: what a member sent (API JSON or a web form turned
  into a dict) → cleaned values, or a ValidationError naming the field.
- `create_state` / `change_state` / `expire_state`: the next full protocol state of an item.
  `change_state` returns None for a change that changes nothing (no version bump).
- `validate_state(state, origin=...)`: the whole-state check used on every remote state and as
  the last check before a local write.

Messages are English templates marked with `N_` for translation; pages translate them.
"""

import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import rfc8785

from .errors import ValidationError
from .timefmt import format_time, parse_time


def N_(message: str) -> str:  # noqa: N802 - the conventional gettext marker
    """Mark a message for translation without translating it here."""
    return message


KINDS = ("offer", "need")
CATEGORIES = (
    "food", "housing", "transport", "health", "care", "clothing",
    "household", "money", "skills", "tech", "other",
)  # fmt: skip
URGENCIES = ("low", "normal", "urgent")
STATUSES = ("open", "promised", "fulfilled", "withdrawn", "expired")
LIVE_STATUSES = ("open", "promised")
FINAL_STATUSES = ("fulfilled", "withdrawn", "expired")
REACHES = ("local", "allies", "network")
ESCALATIONS = ("after_delay", "never")

# Who may move an item from one status to another; `expired` is set by the node only.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("promised", "withdrawn"),
    "promised": ("open", "fulfilled", "withdrawn"),
}

TITLE_MAX = 120
BODY_MAX = 4000
TAGS_MAX = 10
TAG_MAX = 32
QUANTITY_MAX = 40
LABEL_MAX = 80
AUTHOR_MAX = 80
GEOHASH_MAX = 5
HOP_LIMIT_MIN, HOP_LIMIT_MAX, HOP_LIMIT_DEFAULT = 1, 3, 2
EXPIRY_DEFAULT = timedelta(days=30)
EXPIRY_MAX = timedelta(days=90)
VERSION_MAX = 2**53 - 1
# An item entry is at most 16 KiB of canonical bytes; the envelope around the state (origin,
# seq, prev, key id, signature) takes well under 2 KiB, so the state itself is capped here.
STATE_MAX_BYTES = 14 * 1024

GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# Protocol fields, in the order the API shows them.
STATE_FIELDS = (
    "id", "kind", "title", "body", "category", "tags", "quantity", "location", "urgency",
    "status", "reach", "hop_limit", "expires", "created", "updated", "version", "author",
)  # fmt: skip
REQUIRED_STATE_FIELDS = (
    "id", "kind", "title", "body", "category", "status", "reach", "expires", "created",
    "updated", "version", "author",
)  # fmt: skip
INPUT_FIELDS = (
    "kind", "title", "body", "category", "tags", "quantity", "location", "urgency", "status",
    "reach", "hop_limit", "expires", "escalation", "share_author",
)  # fmt: skip
REQUIRED_ON_CREATE = ("kind", "title", "body", "category")
NEVER_CHANGED = ("id", "kind", "created", "origin", "updated", "version", "author")


@dataclass
class ItemInput:
    """Cleaned member input: protocol fields plus the node-local options."""

    fields: dict[str, Any] = field(default_factory=dict)
    escalation: str | None = None
    share_author: bool | None = None


# ---------------------------------------------------------------------------- field checks


def _bad_char(text: str, multiline: bool) -> bool:
    """Whether `text` holds a character text may not hold (see `clean_text`)."""
    # Fast path, in C: every character the loop below refuses (Cc, Cs, Co, Cn, U+2028,
    # U+2029) is one that str.isprintable() calls unprintable, so printable text is clean.
    plain = text.replace("\n", "").replace("\t", "") if multiline else text
    if plain.isprintable():
        return False
    for ch in text:
        if multiline and ch in "\n\t":
            continue
        if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") or ch in "\u2028\u2029":
            return True
    return False


def clean_text(name: str, value: Any, *, max_len: int, multiline: bool = False) -> str:
    """A trimmed, non-empty string of at most `max_len` code points, no control characters."""
    if not isinstance(value, str):
        raise ValidationError(name, N_("%(field)s must be text"), field=name)
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = value.strip()
    if not value:
        raise ValidationError(name, N_("%(field)s must not be empty"), field=name)
    if len(value) > max_len:
        raise ValidationError(
            name, N_("%(field)s must be at most %(max)d characters"), field=name, max=max_len
        )
    if _bad_char(value, multiline):
        raise ValidationError(name, N_("%(field)s contains control characters"), field=name)
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValidationError(
            name, N_("%(field)s must be one of: %(choices)s"), field=name, choices=", ".join(choices)
        )
    return value


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValidationError("tags", N_("tags must be a list of words"))
    if len(value) > TAGS_MAX:
        raise ValidationError("tags", N_("at most %(max)d tags"), max=TAGS_MAX)
    tags: list[str] = []
    for tag in value:
        tag = clean_text("tags", tag, max_len=TAG_MAX)
        if tag not in tags:
            tags.append(tag)
    return tags


def _location(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError("location", N_("location must be an object with a label"))
    unknown = set(value) - {"label", "geohash"}
    if unknown:
        name = "location." + sorted(unknown)[0]
        raise ValidationError(name, N_("%(field)s is not a known field"), field=name)
    if "label" not in value:
        raise ValidationError("location.label", N_("a location needs a label"))
    location = {"label": clean_text("location.label", value["label"], max_len=LABEL_MAX)}
    if "geohash" in value:
        geohash = value["geohash"]
        if not isinstance(geohash, str) or not geohash:
            raise ValidationError("location.geohash", N_("geohash must be text"))
        if len(geohash) > GEOHASH_MAX:
            raise ValidationError(
                "location.geohash",
                N_("geohash must be at most %(max)d characters: finer locations are never shared"),
                max=GEOHASH_MAX,
            )
        if any(ch not in GEOHASH_ALPHABET for ch in geohash):
            raise ValidationError("location.geohash", N_("geohash has characters outside its alphabet"))
        location["geohash"] = geohash
    return location


def _hop_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
        HOP_LIMIT_MIN <= value <= HOP_LIMIT_MAX
    ):
        raise ValidationError(
            "hop_limit",
            N_("hop_limit must be a whole number from %(min)d to %(max)d"),
            min=HOP_LIMIT_MIN,
            max=HOP_LIMIT_MAX,
        )
    return value


def _time(name: str, value: Any) -> datetime:
    try:
        return parse_time(value)
    except ValueError:
        raise ValidationError(
            name, N_("%(field)s must be a time like 2026-12-24T00:00:00Z"), field=name
        ) from None


# ---------------------------------------------------------------------------- member input


def parse_item_input(data: Any, *, partial: bool) -> ItemInput:
    """Check what a member sent. `partial` is True for a change (PATCH), False for a new item."""
    if not isinstance(data, dict):
        raise ValidationError("", N_("the item must be a JSON object"))
    result = ItemInput()
    for name, value in data.items():
        if name in NEVER_CHANGED and (partial or name != "kind"):
            raise ValidationError(name, N_("%(field)s cannot be set or changed"), field=name)
        if name not in INPUT_FIELDS:
            raise ValidationError(name, N_("%(field)s is not a known field"), field=name)
        if value is None:
            raise ValidationError(name, N_("%(field)s must not be null"), field=name)
        match name:
            case "kind":
                result.fields[name] = _choice(name, value, KINDS)
            case "title":
                result.fields[name] = clean_text(name, value, max_len=TITLE_MAX)
            case "body":
                result.fields[name] = clean_text(name, value, max_len=BODY_MAX, multiline=True)
            case "category":
                result.fields[name] = _choice(name, value, CATEGORIES)
            case "tags":
                result.fields[name] = _tags(value)
            case "quantity":
                # An empty quantity removes it.
                if value == "":
                    result.fields[name] = ""
                else:
                    result.fields[name] = clean_text(name, value, max_len=QUANTITY_MAX)
            case "location":
                # An empty object removes the location.
                result.fields[name] = {} if value == {} else _location(value)
            case "urgency":
                result.fields[name] = _choice(name, value, URGENCIES)
            case "status":
                result.fields[name] = _choice(name, value, STATUSES)
            case "reach":
                result.fields[name] = _choice(name, value, REACHES)
            case "hop_limit":
                result.fields[name] = _hop_limit(value)
            case "expires":
                _time(name, value)
                result.fields[name] = value
            case "escalation":
                result.escalation = _choice(name, value, ESCALATIONS)
            case "share_author":
                if not isinstance(value, bool):
                    raise ValidationError(name, N_("%(field)s must be true or false"), field=name)
                result.share_author = value
    if not partial:
        for name in REQUIRED_ON_CREATE:
            if name not in result.fields:
                raise ValidationError(name, N_("%(field)s is required"), field=name)
    return result


def _check_expires(state: dict, now: datetime) -> None:
    created = parse_time(state["created"])
    expires = parse_time(state["expires"])
    if expires <= now:
        raise ValidationError("expires", N_("expires must be in the future"))
    if expires - created > EXPIRY_MAX:
        raise ValidationError(
            "expires", N_("expires must be at most %(days)d days after the item was posted"), days=90
        )


def _apply_optional(state: dict, name: str, value: Any) -> None:
    """Set an optional field, or omit it when the value clears it (optional means omitted)."""
    if value in ("", [], {}):
        state.pop(name, None)
    else:
        state[name] = value


def _check_kind_fields(state: dict, inp: ItemInput) -> None:
    if state["kind"] == "offer":
        if "urgency" in inp.fields:
            raise ValidationError("urgency", N_("only needs have an urgency"))
        if inp.escalation is not None:
            raise ValidationError("escalation", N_("only needs escalate"))


def create_state(
    inp: ItemInput, *, origin: str, now: datetime, author: Callable[[str], str],
    item_uuid: str | None = None,
) -> dict:
    """The first state of a new local item. `author(reach)` gives the name to show at a reach."""
    fields = inp.fields
    kind = fields["kind"]
    state: dict[str, Any] = {
        "id": f"{origin}/items/{item_uuid or uuid.uuid4()}",
        "kind": kind,
        "title": fields["title"],
        "body": fields["body"],
        "category": fields["category"],
    }
    _check_kind_fields(state, inp)
    for name in ("tags", "quantity", "location"):
        if name in fields:
            _apply_optional(state, name, fields[name])
    if kind == "need":
        state["urgency"] = fields.get("urgency", "normal")
    if fields.get("status", "open") != "open":
        raise ValidationError("status", N_("a new item is always open"))
    state["status"] = "open"
    state["reach"] = fields.get("reach", "allies" if kind == "offer" else "local")
    if state["reach"] == "network":
        state["hop_limit"] = fields.get("hop_limit", HOP_LIMIT_DEFAULT)
    elif "hop_limit" in fields:
        raise ValidationError("hop_limit", N_("hop_limit applies only at network reach"))
    state["created"] = format_time(now)
    state["expires"] = fields.get("expires", format_time(now + EXPIRY_DEFAULT))
    _check_expires(state, now)
    state["updated"] = state["created"]
    state["version"] = 1
    state["author"] = author(state["reach"])
    return validate_state(state, origin=origin)


def change_state(
    current: dict, inp: ItemInput, *, now: datetime, author: Callable[[str], str]
) -> dict | None:
    """The next state after a change, or None when nothing changes.

    Who may change an item is the server's business; what changes are allowed is decided here,
    the same for a poster and a coordinator.
    """
    fields = inp.fields
    if current["status"] in FINAL_STATUSES and (
        fields or inp.escalation is not None or inp.share_author is not None
    ):
        raise ValidationError(
            "status", N_("this item is %(status)s and can no longer be changed"),
            status=current["status"],
        )
    state = dict(current)
    _check_kind_fields(state, inp)
    for name in ("title", "body", "category", "urgency"):
        if name in fields:
            state[name] = fields[name]
    for name in ("tags", "quantity", "location"):
        if name in fields:
            _apply_optional(state, name, fields[name])
    if "status" in fields and fields["status"] != current["status"]:
        allowed = TRANSITIONS.get(current["status"], ())
        if fields["status"] not in allowed:
            raise ValidationError(
                "status", N_("an item cannot move from %(old)s to %(new)s"),
                old=current["status"], new=fields["status"],
            )
        state["status"] = fields["status"]
    if "reach" in fields:
        if REACHES.index(fields["reach"]) < REACHES.index(current["reach"]):
            raise ValidationError(
                "reach", N_("reach only widens: to take an item back, withdraw it")
            )
        state["reach"] = fields["reach"]
    if state["reach"] == "network":
        hop_limit = fields.get("hop_limit", current.get("hop_limit", HOP_LIMIT_DEFAULT))
        if hop_limit < current.get("hop_limit", HOP_LIMIT_MIN):
            raise ValidationError("hop_limit", N_("hop_limit only grows once a need has gone out"))
        state["hop_limit"] = hop_limit
    elif "hop_limit" in fields:
        raise ValidationError("hop_limit", N_("hop_limit applies only at network reach"))
    if "expires" in fields:
        state["expires"] = fields["expires"]
        _check_expires(state, now)
    state["author"] = author(state["reach"])
    if state == current:
        return None
    state["updated"] = max(format_time(now), current["updated"])
    state["version"] = current["version"] + 1
    return validate_state(state, origin=origin_of(current["id"]))


def expire_state(current: dict, now: datetime) -> dict:
    """The state an item takes when its time runs out: a real change, version +1."""
    state = dict(current, status="expired", version=current["version"] + 1)
    state["updated"] = max(format_time(now), current["updated"])
    return state


# ---------------------------------------------------------------------------- contact details

# What looks like an email address or a phone number (seven or more digits, however spaced
# or punctuated). A hint for a warning, not a rule: it errs towards warning.
_EMAIL_LIKE = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_PHONE_LIKE = re.compile(r"(?:\+\s?)?\d(?:[\s().-]{0,3}\d){6,}")
_DATE_LIKE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b")  # not phones


def looks_like_contact(state: dict) -> bool:
    """Whether an item's text looks like it holds an email address or a phone number, which
    DESIGN §3 keeps out of items: the poster is warned before such an item leaves the group."""
    texts = [state.get("title", ""), state.get("body", ""), state.get("quantity", ""),
             *state.get("tags", []), state.get("location", {}).get("label", "")]  # fmt: skip
    return any(_EMAIL_LIKE.search(text) or _PHONE_LIKE.search(_DATE_LIKE.sub(" ", text))
               for text in texts)  # fmt: skip


def may_leave_the_group(state: dict, escalation: str | None) -> bool:
    """Whether an item is, or will by itself become, visible to other groups."""
    if state["reach"] != "local":
        return True
    return state["kind"] == "need" and state["status"] == "open" and (escalation or "after_delay") == "after_delay"


# ---------------------------------------------------------------------------- whole states


def origin_of(item_id: str) -> str:
    """The base_url part of an item id (everything before `/items/`)."""
    return item_id.rsplit("/items/", 1)[0]


def uuid_of(item_id: str) -> str:
    return item_id.rsplit("/items/", 1)[1]


def _check_id(value: Any, origin: str | None) -> None:
    if not isinstance(value, str) or "/items/" not in value:
        raise ValidationError("id", N_("id must be <origin>/items/<uuid>"))
    item_origin, item_uuid = value.rsplit("/items/", 1)
    if not UUID_RE.fullmatch(item_uuid):
        raise ValidationError("id", N_("id must end in a lowercase uuid4"))
    if origin is not None and item_origin != origin:
        raise ValidationError("id", N_("the item id is not under its origin's base URL"))


def validate_state(state: Any, *, origin: str | None = None, in_entry: bool = False) -> dict:
    """Check a whole protocol state; return it unchanged if valid.

    With `origin`, the id must be under that base_url (a node refuses items it did not make).
    With `in_entry`, the state arrived as the body of an entry that passed the chain checks,
    whose canonical form exists and fits the entry limit: a state is then not canonicalized
    again to measure it (STATE_MAX_BYTES is the publisher's margin to stay under that limit).
    """
    if not isinstance(state, dict):
        raise ValidationError("", N_("the item must be a JSON object"))
    for name in state:
        if name not in STATE_FIELDS:
            raise ValidationError(name, N_("%(field)s is not a known field"), field=name)
    for name in REQUIRED_STATE_FIELDS:
        if name not in state:
            raise ValidationError(name, N_("%(field)s is required"), field=name)
    _check_id(state["id"], origin)
    _choice("kind", state["kind"], KINDS)
    for name, max_len, multiline in (("title", TITLE_MAX, False), ("body", BODY_MAX, True),
                                     ("author", AUTHOR_MAX, False)):
        if clean_text(name, state[name], max_len=max_len, multiline=multiline) != state[name]:
            raise ValidationError(name, N_("%(field)s has surrounding space"), field=name)
    _choice("category", state["category"], CATEGORIES)
    if "tags" in state and (_tags(state["tags"]) != state["tags"] or not state["tags"]):
        raise ValidationError("tags", N_("tags must be distinct, trimmed and non-empty"))
    if "quantity" in state and clean_text(
        "quantity", state["quantity"], max_len=QUANTITY_MAX
    ) != state["quantity"]:
        raise ValidationError("quantity", N_("quantity has surrounding space"))
    if "location" in state and _location(state["location"]) != state["location"]:
        raise ValidationError("location", N_("location has surrounding space"))
    if state["kind"] == "need":
        if "urgency" not in state:
            raise ValidationError("urgency", N_("a need has an urgency"))
        _choice("urgency", state["urgency"], URGENCIES)
    elif "urgency" in state:
        raise ValidationError("urgency", N_("only needs have an urgency"))
    _choice("status", state["status"], STATUSES)
    _choice("reach", state["reach"], REACHES)
    if state["reach"] == "network":
        if "hop_limit" not in state:
            raise ValidationError("hop_limit", N_("a need at network reach has a hop_limit"))
        _hop_limit(state["hop_limit"])
    elif "hop_limit" in state:
        raise ValidationError("hop_limit", N_("hop_limit applies only at network reach"))
    created = _time("created", state["created"])
    updated = _time("updated", state["updated"])
    expires = _time("expires", state["expires"])
    if updated < created:
        raise ValidationError("updated", N_("updated is before created"))
    if expires - created > EXPIRY_MAX:
        raise ValidationError(
            "expires", N_("expires must be at most %(days)d days after the item was posted"), days=90
        )
    version = state["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION_MAX:
        raise ValidationError("version", N_("version must be a whole number from 1"))
    if in_entry:
        return state
    try:
        size = len(rfc8785.dumps(state))
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        raise ValidationError("", N_("the item cannot be put into canonical JSON")) from None
    if size > STATE_MAX_BYTES:
        raise ValidationError(
            "body", N_("the item is too large to publish: shorten the description")
        )
    return state


def ordered(state: dict) -> dict:
    """The state with its fields in the documented order (JSON readers like it so)."""
    return {name: state[name] for name in STATE_FIELDS if name in state}

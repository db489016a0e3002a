"""Fuzzing with hypothesis (issue 8): junk in, a verdict out, never a crash.

Four layers, each fed arbitrary and near-valid input:

- the item rules (`federation.items`): a value is accepted or refused with a ValidationError
  that carries a message; what is accepted follows the rules, checked here independently;
- strict JSON and entries (`federation.strictjson`, `federation.entries`): bytes and texts
  parse or raise MalformedError; entries pass or raise the module's own errors, and no
  altered entry ever passes as the signed one;
- `POST /federation/inbox`, unsigned and signed by a trusted peer: always 2xx or 4xx, and a
  refusal changes no item;
- every `/api/v1` route as a member and as an admin, with random paths, query strings,
  bodies and content types: never a 5xx, and every 4xx a JSON error with a message.

The in-process node (tests/conftest.py) reaches no other node: its address guard refuses
every connection (`cut_off`), so a route that must fetch from another node answers 502,
as documented, instead of touching the network. Hypothesis runs inside one node per test
(anyio runs an async `@given` test's examples in the fixture's event loop).
"""

import copy
import json
import re
import unicodedata
import uuid
from datetime import timedelta
from urllib.parse import quote

import httpcore
import httpx
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from federation import items
from federation.entries import (
    ENTRY_FIELDS,
    ENTRY_TYPES,
    MAX_ENTRY_BYTES,
    ChainState,
    EntryError,
    canonical,
    check_shape,
    entry_hash,
    sign_entry,
)  # fmt: skip
from federation.errors import MalformedError, ValidationError
from federation.httpsig import sign_request
from federation.keys import NodeKey, public_key_text
from federation.strictjson import INT_LIMIT, MAX_DEPTH, loads_strict
from federation.timefmt import format_time
from server.api import encode_cursor
from tests.conftest import BASE_URL, START, csrf_of
from tests.test_authorization import EXPECTED, declared_routes
from tests.test_item_rules import author, valid_inputs

pytestmark = pytest.mark.anyio

PURE = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
IN_NODE = settings(PURE, max_examples=100,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.function_scoped_fixture])  # fmt: skip

ORIGIN = "https://westside.example"

# ---------------------------------------------------------------------------- strategies

# Text that breaks naive code: empty and blank, controls and separators, a lone surrogate,
# digits that are not ASCII (str.isdigit() takes them, int() not always), numbers as text,
# JSON and FTS5 syntax, times on and off the calendar, URLs of every kind.
EDGE_TEXT = (
    "", " ", "\t", "\n", "\r\n", "\x00", "\x7f", "\u2028", "\u200d", "\ufeff", "\ue000",
    "\U000e0080", "²", "١٢", "𝟙", "-1", "0", "01", "1.5", "1e3", "9" * 40, "null", "true",
    "[]", "{}", "%", "%00", "%ff", "..", "/", "\\", "'", '"', "*", "NEAR(", "AND", "OR NOT",
    '"unclosed', "2026-11-24T18:00:00Z", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z", "2026-11-24T18:00:00", BASE_URL, ORIGIN, "http://127.0.0.1:1",
    "https://[::1]", "javascript:alert(1)", "a" * 300,
    *items.KINDS, *items.CATEGORIES, *items.STATUSES, *items.REACHES, *items.URGENCIES,
    *items.ESCALATIONS, "trusted", "unknown", "blocked", "accepted", "declined",
)  # fmt: skip
NO_SURROGATES = st.characters(exclude_categories=("Cs",))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**53), 2**53),
    st.floats(), st.text(max_size=30), st.sampled_from(EDGE_TEXT),
)  # fmt: skip
FIELD_NAMES = sorted({*items.STATE_FIELDS, *items.INPUT_FIELDS, *ENTRY_FIELDS, "origin",
                      "label", "geohash", "type", "entries", "state", "item", "message",
                      "contact", "from", "url", "trust", "relay", "follow", "path", "entry"})  # fmt: skip
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10))
# Any JSON-like value (floats and big integers too: what a lenient reader would hand over).
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=16,
)  # fmt: skip
# What strict reading can give: no floats, integers within ±(2^53−1), no lone surrogates.
STRICT = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-INT_LIMIT, INT_LIMIT),
              st.text(NO_SURROGATES, max_size=20)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(NO_SURROGATES, max_size=8), inner, max_size=5),
    max_leaves=16,
)  # fmt: skip


def nudged(text: str):
    """Text a step away from valid: padded, with a control character, cut, doubled, upper."""
    return st.sampled_from([
        f" {text} ", f"{text}\x00", f"\u2028{text}", f"{text}\ud800", text[:-1], text * 40,
        text.upper(), "", f"{text}\n{text}",
    ])  # fmt: skip


@st.composite
def near(draw, base: dict, names=FIELD_NAMES) -> dict:
    """`base` with one field changed: replaced by junk, nudged, dropped, or a new one added
    (never `base` itself)."""
    value = copy.deepcopy(base)
    name = draw(st.sampled_from(sorted({*base, *names})))
    how = draw(st.sampled_from(["replace", "nudge", "drop"]))
    if how == "drop":
        value.pop(name, None)
    elif how == "nudge" and isinstance(value.get(name), str):
        value[name] = draw(nudged(value[name]))
    else:
        value[name] = draw(JSON)
    assume(value != base)
    return value


def valid_state(data: dict, item_uuid: uuid.UUID) -> dict:
    """The state the item rules make of valid input, posted at West."""
    return items.create_state(items.parse_item_input(data, partial=False), origin=ORIGIN,
                              now=START, author=author, item_uuid=str(item_uuid))  # fmt: skip


STATES = st.builds(valid_state, valid_inputs(), st.uuids(version=4))


# ---------------------------------------------------------------------------- the item rules

_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def clean(value, max_len: int, multiline: bool = False) -> bool:
    """DESIGN §3's text rule, read afresh: trimmed, 1..max_len code points, no controls."""
    allowed = "\n\t" if multiline else ""
    return (isinstance(value, str) and value == value.strip() and 1 <= len(value) <= max_len
            and not any(ch not in allowed and (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn")
                                               or ch in "\u2028\u2029") for ch in value))  # fmt: skip


def broken_rules(state: dict, origin: str | None) -> list[str]:
    """The rules of DESIGN §3 that a whole state breaks, checked independently of the module."""
    broken = []

    def rule(ok: bool, name: str) -> None:
        if not ok:
            broken.append(name)

    rule(set(state) <= set(items.STATE_FIELDS), "fields")
    rule(set(items.REQUIRED_STATE_FIELDS) <= set(state), "required")
    if broken:
        return broken
    item_id = state["id"]
    rule(isinstance(item_id, str) and "/items/" in item_id
         and items.UUID_RE.fullmatch(item_id.rsplit("/items/", 1)[1]) is not None
         and (origin is None or item_id.rsplit("/items/", 1)[0] == origin), "id")  # fmt: skip
    for name, choices in (("kind", items.KINDS), ("category", items.CATEGORIES),
                          ("status", items.STATUSES), ("reach", items.REACHES)):  # fmt: skip
        rule(isinstance(state[name], str) and state[name] in choices, name)
    rule(clean(state["title"], 120), "title")
    rule(clean(state["body"], 4000, multiline=True), "body")
    rule(clean(state["author"], 80), "author")
    if "tags" in state:
        tags = state["tags"]
        rule(isinstance(tags, list) and 1 <= len(tags) <= 10 and all(clean(t, 32) for t in tags)
             and len(set(tags)) == len(tags), "tags")  # fmt: skip
    if "quantity" in state:
        rule(clean(state["quantity"], 40), "quantity")
    if "location" in state:
        location = state["location"]
        rule(isinstance(location, dict) and set(location) <= {"label", "geohash"}
             and clean(location.get("label"), 80)
             and ("geohash" not in location or (isinstance(location["geohash"], str)
                  and 1 <= len(location["geohash"]) <= 5
                  and set(location["geohash"]) <= set(items.GEOHASH_ALPHABET))), "location")  # fmt: skip
    rule(("urgency" in state) == (state["kind"] == "need"), "urgency present")
    if "urgency" in state:
        rule(state["urgency"] in items.URGENCIES, "urgency")
    rule(("hop_limit" in state) == (state["reach"] == "network"), "hop_limit present")
    if "hop_limit" in state:
        rule(type(state["hop_limit"]) is int and 1 <= state["hop_limit"] <= 3, "hop_limit")
    times = [state[name] for name in ("created", "updated", "expires")]
    rule(all(isinstance(t, str) and _TIME.fullmatch(t) for t in times), "times")
    if "times" not in broken:
        try:
            created, updated, expires = (items.parse_time(t) for t in times)
        except ValueError:
            broken.append("calendar")
        else:
            rule(created <= updated, "updated")
            rule(expires - created <= timedelta(days=90), "expires")
    rule(type(state["version"]) is int and 1 <= state["version"] <= 2**53 - 1, "version")
    return broken


def verdict(call, *args, **kwargs):
    """Run `call`: its value, or None when it refused with a ValidationError that says why."""
    try:
        return call(*args, **kwargs)
    except ValidationError as error:
        assert isinstance(error.field, str)
        assert str(error) and isinstance(error.message, str), repr(error)
        return None


def input_again(inp: items.ItemInput) -> dict:
    """The cleaned input as a member could send it again."""
    data = dict(inp.fields)
    if inp.escalation is not None:
        data["escalation"] = inp.escalation
    if inp.share_author is not None:
        data["share_author"] = inp.share_author
    return data


def check_accepted_input(inp: items.ItemInput, partial: bool) -> None:
    """What parse_item_input accepted follows the field rules, and parses to itself again."""
    fields = inp.fields
    assert set(fields) <= set(items.INPUT_FIELDS) - {"escalation", "share_author"}
    if not partial:
        assert set(items.REQUIRED_ON_CREATE) <= set(fields)
    for name, max_len in (("title", 120), ("body", 4000)):
        if name in fields:
            assert clean(fields[name], max_len, multiline=name == "body"), fields[name]
    if fields.get("quantity"):
        assert clean(fields["quantity"], 40)
    if "tags" in fields:
        assert len(fields["tags"]) <= 10 and all(clean(t, 32) for t in fields["tags"])
    again = items.parse_item_input(input_again(inp), partial=partial)
    assert again == inp


@PURE
@given(st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=8)), st.booleans())
def test_any_value_as_member_input_is_accepted_or_refused_with_a_reason(data, partial):
    """parse_item_input on any JSON value: a clean, re-parseable input or a ValidationError."""
    # A verdict, never another exception.
    inp = verdict(items.parse_item_input, data, partial=partial)
    # What passed follows the rules and is a fixed point.
    if inp is not None:
        check_accepted_input(inp, partial)


@PURE
@given(st.data())
def test_near_valid_member_input_makes_a_valid_state_or_is_refused(data):
    """Valid input with one field spoiled: refused with a reason, or a state that follows
    every rule (checked independently) and validates again unchanged."""
    # One field of a valid input replaced, nudged, dropped or added.
    spoiled = data.draw(near(data.draw(valid_inputs()), items.INPUT_FIELDS))
    inp = verdict(items.parse_item_input, spoiled, partial=False)
    if inp is None:
        return
    check_accepted_input(inp, partial=False)
    state = verdict(items.create_state, inp, origin=ORIGIN, now=START, author=author)
    if state is not None:
        assert broken_rules(state, ORIGIN) == []
        assert items.validate_state(copy.deepcopy(state), origin=ORIGIN) == state
        assert len(rfc8785.dumps(state)) <= items.STATE_MAX_BYTES


@PURE
@given(st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=8)),
       st.sampled_from([None, ORIGIN]))  # fmt: skip
def test_any_value_as_a_state_is_accepted_only_if_it_follows_the_rules(state, origin):
    """validate_state on any JSON value: refused with a reason, or a state that follows
    every rule, returned unchanged."""
    # A verdict, never another exception.
    before = copy.deepcopy(state)
    accepted = verdict(items.validate_state, state, origin=origin)
    # What passed is the very value given, unchanged, and it follows the rules.
    if accepted is not None:
        assert accepted is state and state == before
    if isinstance(state, dict):
        assert (accepted is not None) == (broken_rules(state, origin) == [])


@PURE
@given(st.data())
def test_a_valid_state_with_one_field_spoiled_is_refused_exactly_when_it_breaks_a_rule(data):
    """A valid state with one field spoiled: accepted exactly when it still follows every
    rule as read afresh here (and then accepted again, unchanged), else refused with a reason."""
    # A valid state, then one field replaced, nudged, dropped or added.
    state = data.draw(STATES)
    spoiled = data.draw(near(state, items.STATE_FIELDS))
    in_entry = data.draw(st.booleans())
    accepted = verdict(items.validate_state, spoiled, origin=ORIGIN, in_entry=in_entry)
    # The module and the rules read afresh agree.
    assert (accepted is not None) == (broken_rules(spoiled, ORIGIN) == []), broken_rules(
        spoiled, ORIGIN
    )
    if accepted is not None:
        again = items.validate_state(copy.deepcopy(spoiled), origin=ORIGIN, in_entry=in_entry)
        assert again == spoiled


# ---------------------------------------------------------------------------- strict JSON


def strict_depth(value, depth: int = 0) -> int:
    if isinstance(value, dict):
        return max([strict_depth(v, depth + 1) for v in value.values()], default=depth)
    if isinstance(value, list):
        return max([strict_depth(v, depth + 1) for v in value], default=depth)
    return depth


def check_strict_value(value) -> None:
    """What loads_strict returned holds only what the protocol allows."""

    def walk(node) -> None:
        assert type(node) in (dict, list, str, int, bool, type(None)), type(node)
        if type(node) is int:
            assert -INT_LIMIT <= node <= INT_LIMIT
        elif type(node) is str:
            node.encode("utf-8")  # no lone surrogate
        elif type(node) is dict:
            for key, child in node.items():
                walk(key)
                walk(child)
        elif type(node) is list:
            for child in node:
                walk(child)

    walk(value)
    assert strict_depth(value) <= MAX_DEPTH


def strict_verdict(data):
    try:
        value = loads_strict(data)
    except MalformedError as error:
        assert str(error)
        return MalformedError
    check_strict_value(value)
    # The same value written out and read again: strict reading is stable.
    assert loads_strict(json.dumps(value, ensure_ascii=False).encode()) == value
    return value


def nested(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


JSON_TEXTS = st.one_of(
    JSON.map(json.dumps),
    JSON.map(lambda v: json.dumps(v, ensure_ascii=False, indent=1)),
    st.builds(nested, st.integers(0, 3000), st.sampled_from(["list", "dict"])),
    st.builds(lambda k, a, b: f'{{"{k}": {a}, "{k}": {b}}}', st.text("abc", max_size=3),
              st.integers(), st.integers()),
    st.sampled_from([
        "NaN", "-Infinity", "[1.0]", "1e400", "-0", str(2**53), str(-(2**53)), "9" * 5000,
        '"\\ud800"', '"\\udc00\\ud800"', '"\\\\ud800"', '{"a":"\\ud83d\\ude00"}', "\ufeff{}",
        "[1,]", "{'a': 1}", "", " ", "true false", '{"a":1}x',
    ]),
    st.builds(lambda text, cut: text[:cut], JSON.map(json.dumps), st.integers(0, 40)),
)  # fmt: skip


@PURE
@given(st.one_of(st.binary(max_size=200), JSON_TEXTS.map(str.encode),
                 JSON_TEXTS.map(lambda t: t.encode("utf-16")),
                 STRICT.map(lambda v: json.dumps(v).encode()).map(lambda b: b[: len(b) // 2])))  # fmt: skip
def test_any_bytes_parse_strictly_or_are_malformed(data):
    """loads_strict on any bytes: a protocol value (stable when written out again) or a
    MalformedError, never another exception."""
    strict_verdict(data)
    strict_verdict(data.decode("utf-8", "replace"))


@PURE
@given(STRICT, st.booleans())
def test_strict_values_are_read_back_exactly(value, ascii_only):
    """Any value the protocol allows, written as JSON, is read back equal (the strict reader
    refuses only what it must)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert loads_strict(text.encode()) == value


@PURE
@given(st.text("abc", min_size=1, max_size=3), STRICT, STRICT)
def test_duplicate_keys_are_always_refused(key, first, second):
    """Two readers could disagree on an object with a key twice: it is never accepted."""
    text = f'{{"x": [{{{json.dumps(key)}: {json.dumps(first)}, {json.dumps(key)}: {json.dumps(second)}}}]}}'
    with pytest.raises(MalformedError):
        loads_strict(text)


# ---------------------------------------------------------------------------- entries

# West's key: fixed, so every run signs the same bytes.
KEY = NodeKey("main", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def chain_of(bodies: list[tuple[str, dict]], origin: str = ORIGIN, key=KEY) -> list[dict]:
    """Entries 1..n of `origin`'s feed, signed and hash-chained."""
    entries: list[dict] = []
    for kind, body in bodies:
        prev = entry_hash(entries[-1]) if entries else None
        entries.append(sign_entry(origin=origin, seq=len(entries) + 1, prev=prev, type=kind,
                                  at="2026-11-24T17:00:00Z", body=body, key=key))  # fmt: skip
    return entries


def reader(origin: str = ORIGIN, key=KEY, strictly_read: bool = False) -> ChainState:
    return ChainState(origin, 0, None, key.key_id(origin), key.public, strictly_read=strictly_read)


GENUINE = chain_of([("item", valid_state({"kind": "offer", "title": "Soup", "body": "Lentils.",
                                          "category": "food"}, uuid.UUID(int=1, version=4)))])[0]  # fmt: skip
ENTRY_ERRORS = (EntryError, MalformedError)


def entry_verdict(call, *args, **kwargs):
    """`call`'s value, or None when it refused with the entries module's own errors."""
    try:
        return call(*args, **kwargs)
    except ENTRY_ERRORS as error:
        assert str(error)
        return None


@PURE
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(ENTRY_FIELDS), JSON, max_size=9),
                 near(GENUINE, ENTRY_FIELDS)),
       st.sampled_from([None, ORIGIN]))  # fmt: skip
def test_any_value_as_an_entry_has_its_shape_checked_or_is_refused(entry, origin):
    """check_shape on any value: the entry itself, of the documented shape, or EntryError /
    MalformedError; and a chain reader never takes anything but the genuine entry."""
    # The shape check alone.
    checked = entry_verdict(check_shape, entry, origin=origin)
    if checked is not None:
        assert checked is entry and set(entry) == set(ENTRY_FIELDS)
        assert entry["type"] in ENTRY_TYPES and type(entry["seq"]) is int and entry["seq"] >= 1
        assert len(canonical(entry)) <= MAX_ENTRY_BYTES[entry["type"]]
    # The whole check, signature included: only the genuine entry passes.
    accepted = entry_verdict(reader().accept, entry)
    if accepted is not None:
        assert accepted == GENUINE


@PURE
@given(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.integers(0, len(canonical(GENUINE)) - 1), st.integers(1, 255)).map(
        lambda spot: bytes(b ^ spot[1] if i == spot[0] else b
                           for i, b in enumerate(canonical(GENUINE)))),
    st.integers(0, len(canonical(GENUINE))).map(lambda cut: canonical(GENUINE)[:cut]),
))  # fmt: skip
def test_bytes_read_as_an_entry_pass_only_if_they_are_the_signed_entry(data):
    """The reading path (strict JSON, shape, chain, signature) on arbitrary bytes and on the
    genuine entry with one byte flipped or cut: a verdict, and only the signed entry passes."""
    # Strict reading first.
    try:
        value = loads_strict(data)
    except MalformedError:
        return
    # Then the chain reader, on the fast canonical path strict reading allows.
    accepted = entry_verdict(reader(strictly_read=True).accept, value)
    if accepted is not None:
        assert accepted == GENUINE


BODIES = st.one_of(
    STATES,
    STATES.flatmap(lambda s: near(s, items.STATE_FIELDS)),
    st.dictionaries(KEYS, STRICT, max_size=5),
    st.fixed_dictionaries({"entry": st.one_of(st.just(GENUINE), STRICT), "path": STRICT}),
    st.fixed_dictionaries({"key": st.dictionaries(st.sampled_from(["id", "type", "public"]),
                                                  st.one_of(STRICT, st.sampled_from(EDGE_TEXT))),
                           "proof": st.one_of(st.text(max_size=90), st.just("A" * 86))}),
)  # fmt: skip


def sign_or_none(bodies):
    """A chain of these bodies, or None when one is too large (or not JSON) to sign."""
    try:
        return chain_of(bodies)
    except (EntryError, MalformedError, ValidationError):
        return None


@PURE
@given(st.lists(st.tuples(st.sampled_from(ENTRY_TYPES), BODIES), min_size=1, max_size=3))
def test_signed_entries_with_junk_bodies_are_judged_without_crashing(bodies):
    """A properly signed chain whose bodies are junk: item and relay entries pass the chain
    (their content is judged later); a key entry passes only with a valid new key."""
    entries = sign_or_none(bodies)
    assume(entries is not None)
    chain = reader()
    for entry in entries:
        accepted = entry_verdict(chain.accept, copy.deepcopy(entry))
        if entry["type"] == "key":
            assert accepted is None  # junk can never name a new key and prove it
            break
        assert accepted == entry
        # Content validity decides, separately, with a verdict of its own.
        if entry["type"] == "item":
            verdict(items.validate_state, entry["body"], origin=ORIGIN, in_entry=True)


# ---------------------------------------------------------------------------- the inbox
#
# Every input of a test that runs inside the node is drawn up front (in `@given`): a draw
# inside the event loop that hypothesis cuts short would stop anyio's test runner.


def cut_off(harness) -> None:
    """The node reaches no other node: every connection its guard would open is refused."""

    async def refuse(host, port, *args, **kwargs):
        raise httpcore.ConnectError(f"no connections from these tests ({host})")

    harness.node.allies.outbound.guard.connect_tcp = refuse


async def pin_peer(harness, url: str, key, *, trust: str = "trusted",
                   we_follow: str = "accepted") -> int:  # fmt: skip
    """A peer as `peer add` leaves it, followed and with its key pinned."""
    async with harness.node.store.write() as db:
        cursor = await db.execute(
            "INSERT INTO peers (url, name, trust, we_follow, created)"
            " VALUES (?, 'Westside', ?, ?, '2026-11-24T17:00:00Z')",
            (url, trust, we_follow),
        )
        await db.execute("INSERT INTO peer_keys (key_id, peer_id, public) VALUES (?, ?, ?)",
                         (key.key_id(url), cursor.lastrowid, public_key_text(key.public)))  # fmt: skip
    harness.node.peer_names[url] = "Westside"
    return cursor.lastrowid


async def once(harness, name: str, setup):
    """`setup()`'s value, made on the first example of a test and kept on its node."""
    if not hasattr(harness, name):
        setattr(harness, name, await setup())
    return getattr(harness, name)


async def all_items(harness) -> list[dict]:
    """Every stored item, every column."""
    rows = await harness.node.store.fetch_all("SELECT * FROM items ORDER BY row")
    return [dict(row) for row in rows]


async def cursor_of(harness, peer_id: int) -> tuple:
    peer = await harness.node.store.peer(peer_id)
    return peer.received_seq, peer.received_hash


CONTENT_TYPES = st.sampled_from([
    None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/json;", "application/jsonx",
])  # fmt: skip


def as_bytes(body) -> bytes:
    """A body as sent: bytes as they are, anything else as JSON (ASCII, lone surrogates escaped)."""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


# Valid messages of each type, as West would send them; `@item@` stands for the uuid of an
# offer the node holds (posted once the node is up).
MESSAGES = {
    "entries": {"type": "entries", "origin": ORIGIN, "entries": [GENUINE]},
    "subscription": {"type": "subscription", "state": "accepted"},
    "response": {"type": "response", "id": str(uuid.UUID(int=7, version=4)),
                 "item": f"{BASE_URL}/items/@item@", "from": {"node": ORIGIN, "name": "Jo"},
                 "message": "I can help", "contact": "jo@example.org",
                 "created": "2026-11-24T17:00:00Z"},
    "response-status": {"type": "response-status", "id": str(uuid.UUID(int=9, version=4)),
                        "item": f"{ORIGIN}/items/{uuid.UUID(int=10, version=4)}",
                        "state": "declined"},
}  # fmt: skip
# Bytes, any JSON, and messages a field or an entry away from valid: pushes of junk or of the
# genuine first entry spoiled, subscriptions, responses, response statuses.
INBOX_BODIES = st.one_of(
    st.binary(max_size=200),
    JSON,
    st.sampled_from(sorted(MESSAGES)).flatmap(lambda kind: near(MESSAGES[kind])),
    st.builds(lambda entries: {"type": "entries", "origin": ORIGIN, "entries": entries},
              st.one_of(st.lists(JSON, max_size=3), JSON,
                        st.lists(near(GENUINE, ENTRY_FIELDS), min_size=1, max_size=2))),
).map(as_bytes)  # fmt: skip


def inbox_request(harness, body: bytes, content_type: str | None, key=None) -> httpx.Request:
    """A POST to the inbox; signed by `key` as West when one is given."""
    headers = {"content-type": content_type} if content_type else {}
    request = httpx.Request("POST", f"{BASE_URL}/federation/inbox", content=body, headers=headers)
    if key is not None:
        sign_request(request, key, key.key_id(ORIGIN), now=harness.clock())
    return request


async def inbox_setup(harness) -> tuple[int, str]:
    """West, trusted and followed, and an offer of a member's that West may respond to:
    (West's peer id, the offer's uuid). The node reaches no other node."""
    cut_off(harness)
    peer_id = await pin_peer(harness, ORIGIN, KEY)
    member = await harness.api_client("poster")
    offer = (await member.post("/api/v1/items", json={
        "kind": "offer", "title": "Soup", "body": "Lentils.", "category": "food"})).json()  # fmt: skip
    return peer_id, items.uuid_of(offer["id"])


def check_error_body(response: httpx.Response) -> None:
    """An error from a JSON route is `{"error": <a message>}`."""
    answer = response.json()
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], (
        response.status_code, response.text[:300])  # fmt: skip


@IN_NODE
@given(body=INBOX_BODIES, content_type=CONTENT_TYPES)
async def test_unsigned_junk_sent_to_the_inbox_is_refused_and_changes_nothing(
    harness, body, content_type
):
    """Any unsigned body, as any content type: a 4xx JSON error, and no item changes."""
    peer_id, offer = await once(harness, "fuzz_inbox", lambda: inbox_setup(harness))
    body = body.replace(b"@item@", offer.encode())
    before = (await all_items(harness), await cursor_of(harness, peer_id))
    response = await harness.client().send(inbox_request(harness, body, content_type))
    # Refused as a client error, with a message; nothing taken in.
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    check_error_body(response)
    assert (await all_items(harness), await cursor_of(harness, peer_id)) == before


@IN_NODE
@given(body=INBOX_BODIES, content_type=CONTENT_TYPES)
async def test_junk_signed_by_a_trusted_peer_is_answered_and_refusals_change_nothing(
    harness, body, content_type
):
    """Any body, signed by a trusted peer the node follows: 2xx or 4xx, never 5xx; a refusal
    leaves the peer's cursor where it was; no item changes (nothing valid is pushed)."""
    peer_id, offer = await once(harness, "fuzz_inbox", lambda: inbox_setup(harness))
    body = body.replace(b"@item@", offer.encode())
    before_items, before_cursor = await all_items(harness), await cursor_of(harness, peer_id)
    response = await harness.client().send(inbox_request(harness, body, content_type, KEY))
    # An answer, never a server error.
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        check_error_body(response)
        assert await cursor_of(harness, peer_id) == before_cursor
    assert await all_items(harness) == before_items


@st.composite
def pushes(draw) -> tuple[list[dict], int | None]:
    """West's entries 1..n, really signed, whose bodies are valid states, spoiled states or
    junk; maybe one entry altered after signing (its index, else None)."""
    bodies = draw(st.lists(st.tuples(st.sampled_from(["item", "item", "item", "relay", "key"]),
                                     st.one_of(STATES, BODIES)), min_size=1, max_size=4))  # fmt: skip
    entries = sign_or_none(bodies)
    assume(entries is not None)
    if not draw(st.booleans()):
        return entries, None
    altered = draw(st.integers(0, len(entries) - 1))
    spoiled = draw(near(entries[altered], ENTRY_FIELDS))
    return [*entries[:altered], spoiled, *entries[altered + 1 :]], altered


def states_taken_in(accepted: list[dict]) -> dict[str, dict]:
    """What a node that held nothing of West's holds after these entries (DESIGN §4.2, §3):
    each item's newest valid state, unless it is local-only or no longer live."""
    held: dict[str, dict] = {}
    versions: dict[str, int] = {}
    for entry in accepted:
        state = entry["body"]
        if entry["type"] != "item" or broken_rules(state, ORIGIN) or state["reach"] == "local":
            continue
        if versions.get(state["id"], 0) >= state["version"]:
            continue
        versions[state["id"]] = state["version"]
        held.pop(state["id"], None)
        if state["status"] in items.LIVE_STATUSES and state["expires"] > format_time(START):
            held[state["id"]] = state
    return held


@IN_NODE
@given(push=pushes())
async def test_signed_chains_with_junk_content_apply_only_valid_items(harness, push):
    """A trusted peer pushes a chain it really signed, of valid states, spoiled states and
    junk (item, relay and key entries), maybe one entry altered after signing: never a 5xx;
    the answer's cursor is the stored one and stops before the altered entry; the items
    taken in are exactly the valid ones of the accepted entries; no other item changes."""
    entries, altered = push
    peer_id, _ = await once(harness, "fuzz_inbox", lambda: inbox_setup(harness))
    # The peer read afresh, as if never read before (its items dropped, cursor at 0).
    await harness.node.allies.resync(peer_id, None)
    others_before = [row for row in await all_items(harness) if row["origin"] != ORIGIN]
    body = as_bytes({"type": "entries", "origin": ORIGIN, "entries": entries})
    request = inbox_request(harness, body, "application/json", KEY)
    response = await harness.client().send(request)
    # An answer, never a server error; the cursor it gives is the one stored.
    assert response.status_code < 500, (response.status_code, response.text[:300])
    answer, held = response.json(), await cursor_of(harness, peer_id)
    if response.status_code >= 400:
        check_error_body(response)
    if "received" in answer:
        assert (answer["received"]["seq"], answer["received"]["hash"]) == held
    if altered is not None:
        assert held[0] <= altered
    if response.status_code == 200:
        assert held[0] == len(entries)
    # What was taken in is exactly the valid, live, shared states of the entries accepted;
    # nothing else changed.
    stored = {row["id"]: json.loads(row["state"]) for row in await all_items(harness)
              if row["origin"] == ORIGIN}  # fmt: skip
    assert stored == states_taken_in(entries[: held[0]])
    assert [row for row in await all_items(harness) if row["origin"] != ORIGIN] == others_before


# ---------------------------------------------------------------------------- the API

API_ROUTES = sorted((method, path) for method, path in EXPECTED if path.startswith("/api/v1/"))
QUERY_NAMES = ("kind", "category", "q", "status", "origin", "near", "id", "limit", "cursor")
URL_TEXT = st.one_of(st.text(NO_SURROGATES, max_size=20),
                     st.sampled_from([t for t in EDGE_TEXT if "\ud800" not in t]))  # fmt: skip
CURSORS = st.one_of(
    st.sampled_from([{"o": 0}, {"o": 2**53 - 1}, {"o": -1}, {"a": ["", 0]},
                     {"a": ["2026-11-24T18:00:00Z", 2**53 - 1]}, {"a": [1, 1]}, {"a": []}, {}, []]),
    STRICT,
).map(encode_cursor)  # fmt: skip
# Stand-ins for what the node holds, put in once it is seeded (`seed_api`): the uuids of its
# items (the member's own, another member's), a response to the member's item, a peer; and
# in bodies, the other member's item id (`@theirs-id@`).
PATH_VALUES = st.one_of(
    st.sampled_from(["@mine@", "@theirs@", "@response@", "@peer@"]), URL_TEXT, st.uuids().map(str),
    st.uuids(version=4).map(lambda u: str(u).upper()), st.integers(-5, 2**70).map(str),
)  # fmt: skip
NEAR_VALID_BODIES = [
    {"kind": "offer", "title": "Bike", "body": "A bike.", "category": "transport"},
    {"title": "A new title", "status": "promised", "reach": "network", "hop_limit": 3},
    {"url": "https://eastside2.example"}, {"trust": "blocked", "relay": True, "follow": False},
    {"item": "@theirs-id@", "message": "Me", "contact": "me@example.org"}, {"state": "accepted"},
]  # fmt: skip


@st.composite
def api_requests(draw) -> dict:
    """A request to an /api/v1 route: its path filled in, a query string, a body (none, bytes,
    any JSON, or one a field away from valid), a content type, and who sends it."""
    method, path = draw(st.sampled_from(API_ROUTES))
    url = re.sub(r"\{\w+\}", lambda _: quote(draw(PATH_VALUES), safe=""), path)
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "POST", "PATCH", "OPTIONS"]))
    raw_query = draw(st.one_of(st.just(""), st.text("abc=&%;+ 09fF", max_size=12)))
    body = draw(st.one_of(
        st.none(), st.binary(max_size=100), JSON.map(as_bytes),
        st.sampled_from(NEAR_VALID_BODIES).flatmap(lambda b: st.one_of(st.just(b), near(b))).map(as_bytes),
    ))  # fmt: skip
    return {
        "method": method, "path": path, "url": url + (f"?{raw_query}" if raw_query else ""),
        "params": draw(st.lists(st.tuples(st.one_of(st.sampled_from(QUERY_NAMES), URL_TEXT),
                                          st.one_of(URL_TEXT, CURSORS)), max_size=4)),
        "body": body, "content_type": draw(CONTENT_TYPES),
        "role": draw(st.sampled_from(["member", "admin"])),
    }  # fmt: skip


async def seed_api(harness) -> dict:
    """A member, an admin and another member; an item of each member, a response to the
    member's, and a peer. Returns the clients and the stand-ins' values."""
    cut_off(harness)
    member = await harness.api_client("fuzzer")
    admin = await harness.api_client("root", "admin")
    other = await harness.api_client("other")
    mine = (await member.post("/api/v1/items", json={
        "kind": "need", "title": "Ride to the clinic", "body": "Tuesday.", "category": "transport",
    })).json()  # fmt: skip
    theirs = (await other.post("/api/v1/items", json={
        "kind": "offer", "title": "Soup", "body": "Lentils.", "category": "food",
    })).json()  # fmt: skip
    response = (await other.post("/api/v1/responses", json={
        "item": mine["id"], "message": "I can drive you", "contact": "other@example.org",
    })).json()  # fmt: skip
    peer_id = await pin_peer(harness, ORIGIN, KEY)
    values = {
        "@mine@": items.uuid_of(mine["id"]),
        "@theirs@": items.uuid_of(theirs["id"]),
        "@response@": response["id"],
        "@peer@": str(peer_id),
        "@theirs-id@": theirs["id"],
    }
    return {"clients": {"member": member, "admin": admin}, "values": values}


def put_in(text: str, values: dict[str, str]) -> str:
    """`text` with the stand-ins replaced by what they stand for."""
    for stand_in, value in values.items():
        text = text.replace(stand_in, value)
    return text


async def test_the_fuzzed_routes_are_the_apps_api_routes(harness):
    """The routes fuzzed below are every /api/v1 route the app has, and only those."""
    declared = {(method, path) for method, path, _ in declared_routes(harness.app)}
    assert set(API_ROUTES) == {(method, path) for method, path in declared
                               if path.startswith("/api/v1/")}  # fmt: skip


@IN_NODE
@given(request=api_requests())
async def test_every_api_route_answers_junk_without_a_server_error(harness, request):
    """Any /api/v1 route, as a member or an admin with a token, with random path parameters,
    query strings, bodies and content types (or another method): never a 5xx, every 4xx a
    JSON error with a message. The one 5xx allowed is the documented 502 of adding a peer
    that cannot be reached (these tests reach no other node)."""
    seeded = await once(harness, "fuzz_seeded", lambda: seed_api(harness))
    values = seeded["values"]
    method, url = request["method"], put_in(request["url"], values)
    body = request["body"]
    content = None if body is None else put_in(body.decode("latin-1"), values).encode("latin-1")
    headers = {"content-type": request["content_type"]} if request["content_type"] else {}
    response = await seeded["clients"][request["role"]].request(
        method, url, params=request["params"] or None, content=content, headers=headers
    )
    cell = (f"{method} {url} as {request['role']}, {request['params']} {request['content_type']}"
            f" {content!r:.200}: {response.status_code} {response.text[:300]}")  # fmt: skip
    # Never a server error, except a peer that cannot be reached; every error says why.
    if response.status_code == 502:
        assert (method, request["path"]) == ("POST", "/api/v1/peers"), cell
        assert "could not reach" in response.json()["error"], cell
    else:
        assert response.status_code < 500, cell
    if response.status_code >= 400:
        check_error_body(response)


# ---------------------------------------------------------------------------- query strings

# Numbers as text: small ones, digits int() reads (any script's decimal digits) and does not
# (superscripts, fractions: str.isdigit() takes some), and more digits than int() will read.
NUMBERS = st.one_of(
    st.integers(-1, 300).map(str), st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=3),
    st.integers(4290, 4400).map(lambda n: "9" * n), st.integers(4290, 4400).map(lambda n: "0" * n + "5"),
)  # fmt: skip
# Words of the characters search syntaxes give meaning to (FTS5's among them).
SEARCH_TEXT = st.lists(
    st.sampled_from(["\x00", '"', "'", "*", "(", ")", "-", ":", "^", "+", "\\", " ", "\t",
                     "AND", "OR", "NOT", "NEAR", "soup"]), min_size=1, max_size=6,
).map("".join)  # fmt: skip
QUERY_VALUES = st.one_of(URL_TEXT, CURSORS, NUMBERS, SEARCH_TEXT)
# Each listing parameter's valid values (q takes any text: search syntax, edge text); the
# valid cursors are the ones the node gives out (followed in the test).
VALID_QUERY = {
    "kind": st.sampled_from(items.KINDS), "category": st.sampled_from(items.CATEGORIES),
    "q": st.one_of(SEARCH_TEXT, URL_TEXT), "status": st.sampled_from(items.STATUSES[:4]),
    "origin": st.sampled_from(["local", "remote", "all", BASE_URL]),
    "near": st.text(items.GEOHASH_ALPHABET, min_size=1, max_size=5), "id": URL_TEXT,
    "limit": st.integers(1, 200).map(str),
}  # fmt: skip


@st.composite
def query_strings(draw) -> dict:
    """A listing query: known parameters with valid values, then maybe one of them (or an
    unknown one) given any value at all."""
    params = draw(st.fixed_dictionaries({}, optional=VALID_QUERY))
    if draw(st.booleans()):
        params[draw(st.one_of(st.sampled_from(QUERY_NAMES), URL_TEXT))] = draw(QUERY_VALUES)
    return params


@IN_NODE
@given(params=query_strings())
async def test_any_query_string_lists_items_or_is_refused(harness, params):
    """`GET /api/v1/items` and the browse page (which share the listing's query rules) with
    any query string: a page of items or a 400 that names the parameter, never a 5xx."""
    api, browser = await once(harness, "fuzz_clients", lambda: clients(harness))
    response = await api.get("/api/v1/items", params=params)
    assert response.status_code in (200, 400), (params, response.status_code, response.text[:300])
    if response.status_code == 200:
        page = response.json()
        assert set(page) == {"items", "next"}
        # The next page, by the cursor the node gave out, is there too.
        if page["next"] is not None:
            more = await api.get("/api/v1/items", params={**params, "cursor": page["next"]})
            assert more.status_code == 200, (params, more.text[:300])
    else:
        check_error_body(response)
        assert response.json().get("field") in QUERY_NAMES
    page = await browser.get("/items", params=params)
    assert page.status_code in (200, 400), (params, page.status_code)


async def clients(harness):
    """A member's API client, with three items to page through, and a logged-in browser."""
    api = await harness.api_client("lister")
    for title in ("Soup", "Soup and bread", "A ride"):
        await api.post("/api/v1/items", json={"kind": "offer", "title": title,
                                              "body": "Ask.", "category": "food"})  # fmt: skip
    return api, await harness.browser("browser")


@pytest.fixture
async def public_feed(harness_factory):
    """A node whose feed anyone may read."""
    async with harness_factory(feed_public=True) as h:
        yield h


@IN_NODE
@given(params=st.dictionaries(st.sampled_from(["after", "limit", "since", ""]), QUERY_VALUES,
                              max_size=3))  # fmt: skip
async def test_any_query_string_reads_the_public_feed_or_is_refused(public_feed, params):
    """`GET /federation/feed` while the feed is public (anyone may ask) with any query string:
    a page of entries or a 400, never a 5xx."""
    response = await public_feed.client().get("/federation/feed", params=params)
    # (429: more requests than one address may make in a minute, with more examples.)
    assert response.status_code in (200, 400, 429), (
        params,
        response.status_code,
        response.text[:300],
    )
    if response.status_code != 200:
        check_error_body(response)


# ---------------------------------------------------------------------------- the item form

NEED_FORM = {"kind": "need", "title": "Soup", "body": "Lentils.", "category": "food",
             "reach": "network"}  # fmt: skip
FORM_VALUES = st.one_of(URL_TEXT, st.sampled_from(["need", "offer", "network", "2026-12-24", "on"]))
# A valid need's form with fields changed or added: text fields any text, numbers any number.
FORMS = st.fixed_dictionaries({}, optional={
    **{name: FORM_VALUES for name in ("kind", "title", "body", "category", "tags", "quantity",
                                      "location_label", "location_geohash", "urgency",
                                      "escalation", "share_author")},
    "reach": st.one_of(st.sampled_from(items.REACHES), FORM_VALUES),
    "hop_limit": st.one_of(NUMBERS, FORM_VALUES), "expires": st.one_of(NUMBERS, FORM_VALUES),
}).map(lambda changes: {**NEED_FORM, **changes})  # fmt: skip


@IN_NODE
@given(form=FORMS)
async def test_any_item_form_posts_an_item_or_shows_why_not(harness, form):
    """`POST /items/new` (the web form, judged by the same item rules) with any fields: the
    new item (303) or the form again with the problem (4xx), never a 5xx."""
    browser = await once(harness, "fuzz_poster", lambda: harness.browser("poster"))
    token = await once(harness, "fuzz_csrf", lambda: _csrf(browser))
    response = await browser.post("/items/new", data={**form, "csrf_token": token})
    assert response.status_code == 303 or 400 <= response.status_code < 500, (
        form, response.status_code, response.text[:300])  # fmt: skip


async def _csrf(browser) -> str:
    return csrf_of((await browser.get("/items/new")).text)


# ---------------------------------------------------------------------------- regressions
#
# What the fuzzing above found: numbers in query strings and forms that str.isdigit() takes
# and int() does not read (a superscript) or will not read (thousands of digits), each once
# a 500.


async def test_a_listing_limit_of_digits_int_cannot_read_is_a_400(harness):
    """`?limit=²` and a 5000-digit limit were a 500 (ValueError in int())."""
    member = await harness.api_client("jo")
    for limit in ("²", "9" * 5000, "0" * 5000 + "5"):
        response = await member.get("/api/v1/items", params={"limit": limit})
        assert response.status_code == 400, (limit[:10], response.text[:200])
        assert response.json()["field"] == "limit"
    # Numbers in any script's decimal digits still count, as before.
    assert (await member.get("/api/v1/items", params={"limit": "١٢"})).status_code == 200


async def test_a_feed_query_of_thousands_of_digits_is_a_400(public_feed):
    """`GET /federation/feed?after=<5000 digits>` was a 500, for anyone while the feed is public."""
    client = public_feed.client()
    for name in ("after", "limit"):
        response = await client.get("/federation/feed", params={name: "9" * 5000})
        assert response.status_code == 400 and response.json()["field"] == name
    assert (await client.get("/federation/feed", params={"after": "0"})).status_code == 200


async def test_an_item_form_hop_limit_int_cannot_read_shows_the_form_again(harness):
    """A hop limit of "²" (or thousands of digits) on the item form was a 500."""
    browser = await harness.browser("jo")
    for hop_limit in ("²", "9" * 5000):
        response = await browser.post("/items/new", data={
            **NEED_FORM, "hop_limit": hop_limit, "csrf_token": await _csrf(browser)})  # fmt: skip
        assert response.status_code == 422, (hop_limit[:10], response.status_code)
        assert "hop_limit" in response.text or "hop limit" in response.text.lower()
    # A hop limit the form offers still posts the need.
    response = await browser.post("/items/new", data={
        **NEED_FORM, "hop_limit": "3", "csrf_token": await _csrf(browser)})  # fmt: skip
    assert response.status_code == 303


async def test_a_search_holding_a_nul_character_is_searched(harness):
    """`?q=soup%00` was a 500 (FTS5 reads a NUL as the end of the query: "unterminated
    string"); a NUL now separates words, as no item text holds one."""
    member = await harness.api_client("jo")
    await member.post("/api/v1/items", json={"kind": "offer", "title": "Soup on Sundays",
                                             "body": "Lentils.", "category": "food"})  # fmt: skip
    # A NUL alone is no search at all, as blank text is: everything is listed.
    for q in ("soup\x00", "\x00soup", "sun\x00soup", "\x00"):
        response = await member.get("/api/v1/items", params={"q": q})
        assert response.status_code == 200, (q, response.text[:200])
        assert [item["title"] for item in response.json()["items"]] == ["Soup on Sundays"], q
    browser = await harness.browser("sam")
    assert (await browser.get("/items", params={"q": "soup\x00"})).status_code == 200

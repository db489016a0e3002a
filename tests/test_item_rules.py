"""The item rules of DESIGN §3 as federation/items.py enforces them: pure functions, no server.

Each refusal must be a ValidationError naming the offending field; the property tests check that
valid input always makes a valid, JSON-stable state and that junk never raises anything else.
"""

import json
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import items
from federation.errors import ValidationError
from federation.items import (
    change_state,
    create_state,
    expire_state,
    parse_item_input,
    validate_state,
)  # fmt: skip
from federation.timefmt import FixedClock, format_time

NOW = FixedClock(datetime(2026, 11, 24, 18, 0, 0, tzinfo=UTC))()
NOW_TEXT = "2026-11-24T18:00:00Z"
ORIGIN = "https://eastside.example"
GROUP = "Eastside Mutual Aid"

OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household"}  # fmt: skip
NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday morning.",
        "category": "transport"}  # fmt: skip

PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


def author(reach: str) -> str:
    """The node's author rule: the group's name at network reach, the member's name otherwise."""
    return GROUP if reach == "network" else "Jo"


def create(data: dict, *, now: datetime = NOW) -> dict:
    return create_state(parse_item_input(data, partial=False), origin=ORIGIN, now=now,
                        author=author)  # fmt: skip


def change(state: dict, data: dict, *, now: datetime = NOW, by=author) -> dict | None:
    return change_state(state, parse_item_input(data, partial=True), now=now, author=by)


def refused(field: str, call, *args, **kwargs) -> ValidationError:
    """Run `call`; it must raise a ValidationError naming `field`."""
    with pytest.raises(ValidationError) as caught:
        call(*args, **kwargs)
    assert caught.value.field == field, (caught.value.field, str(caught.value))
    return caught.value


def in_status(status: str, base: dict = NEED) -> dict:
    """A valid state of a new item moved (by the allowed moves) to `status`."""
    state = create(base)
    path = {"open": [], "promised": ["promised"], "fulfilled": ["promised", "fulfilled"],
            "withdrawn": ["withdrawn"], "expired": []}[status]  # fmt: skip
    for step in path:
        state = change(state, {"status": step})
    if status == "expired":
        state = expire_state(state, NOW + timedelta(days=31))
    assert state["status"] == status
    return state


# ---------------------------------------------------------------------------- title and text


@pytest.mark.parametrize("char", ["x", "é", "€", "😀", "中"])
def test_title_of_120_code_points_is_accepted(char):
    """The title limit counts code points: 120 of them fit whatever their UTF-8 size."""
    # 120 code points, up to 480 bytes, is a valid title.
    state = create({**OFFER, "title": char * 120})
    assert state["title"] == char * 120


@pytest.mark.parametrize("char", ["x", "é", "€", "😀", "中"])
def test_title_of_121_code_points_is_refused(char):
    """One code point over 120 is refused naming the title."""
    # 121 code points: refused on create and on change.
    refused("title", create, {**OFFER, "title": char * 121})
    refused("title", change, create(OFFER), {"title": char * 121})


@pytest.mark.parametrize("field, value, expected", [
    ("title", "  Ramp to lend \t", "Ramp to lend"),
    ("title", "\n\u00a0Ramp\u3000", "Ramp"),
    ("body", "\n\n  Aluminium, 3 m.\n  ", "Aluminium, 3 m."),
    ("quantity", " 2 ramps ", "2 ramps"),
])  # fmt: skip
def test_surrounding_whitespace_is_trimmed(field, value, expected):
    """Text fields are stored trimmed of surrounding whitespace (ASCII and Unicode)."""
    # Posting with padding stores the trimmed text.
    assert create({**OFFER, field: value})[field] == expected
    # Changing with padding does the same.
    assert change(create(OFFER), {field: value})[field] == expected


def test_tags_and_location_label_are_trimmed():
    """Tags and the location label are trimmed too."""
    # Padded tags and label come out trimmed.
    state = create({**OFFER, "tags": [" ramp ", "\tloan"], "location": {"label": "  Eastside "}})
    assert state["tags"] == ["ramp", "loan"] and state["location"] == {"label": "Eastside"}


def test_trimming_happens_before_counting():
    """Surrounding space does not count towards a limit: 120 code points plus padding fit."""
    # Padding around a title at the limit is trimmed, then the title fits.
    assert create({**OFFER, "title": "  " + "x" * 120 + "  "})["title"] == "x" * 120


@pytest.mark.parametrize("field, value", [
    ("title", ""), ("title", "   "), ("title", "\n\t "), ("title", "\u3000"),
    ("body", ""), ("body", " \n "),
])  # fmt: skip
def test_empty_text_is_refused(field, value):
    """A required text that is empty once trimmed is refused naming its field."""
    # Empty on create.
    refused(field, create, {**OFFER, field: value})
    # Emptied by a change.
    refused(field, change, create(OFFER), {field: value})


@pytest.mark.parametrize("field, value", [
    ("title", 5), ("title", ["x"]), ("title", {"x": 1}), ("title", True),
    ("body", 5), ("body", ["x"]), ("quantity", 3), ("quantity", ["2"]),
])  # fmt: skip
def test_text_fields_must_be_strings(field, value):
    """A non-string text value is refused naming its field."""
    # Non-strings are refused, not coerced.
    refused(field, create, {**OFFER, field: value})


@pytest.mark.parametrize("field, value, reported", [
    ("title", "a\x00b", "title"), ("title", "a\nb", "title"), ("title", "a\tb", "title"),
    ("title", "a\rb", "title"), ("title", "a\x7fb", "title"), ("title", "a\x85b", "title"),
    ("title", "a\u2028b", "title"), ("title", "a\u2029b", "title"),
    ("title", "a\ue000b", "title"), ("title", "a\u0378b", "title"),
    ("body", "a\x00b", "body"), ("body", "a\x1bb", "body"), ("body", "a\x0bb", "body"),
    ("body", "a\x0cb", "body"), ("body", "a\u2028b", "body"), ("body", "a\x7fb", "body"),
    ("quantity", "2\n3", "quantity"), ("quantity", "2\x00", "quantity"),
    ("tags", ["ra\nmp"], "tags"), ("tags", ["ok", "a\x01"], "tags"),
    ("location", {"label": "East\x00side"}, "location.label"),
    ("location", {"label": "East\nside"}, "location.label"),
])  # fmt: skip
def test_control_characters_are_refused(field, value, reported):
    """Control, separator, private-use and unassigned characters are refused inside text."""
    # Refused on create...
    refused(reported, create, {**OFFER, field: value})
    # ...and on change.
    refused(reported, change, create(OFFER), {field: value})


def test_body_keeps_newlines_and_tabs_and_normalises_line_ends():
    """A body is multi-line: newlines and tabs stay, CR LF and lone CR become LF."""
    # Line ends of every kind come out as "\n"; tabs stay.
    state = create({**OFFER, "body": "line one\r\nline two\rline\tthree\n"})
    assert state["body"] == "line one\nline two\nline\tthree"


def test_body_limit_is_4000_code_points():
    """A body of 4000 code points is accepted, 4001 is refused naming the body."""
    # 4000 fits.
    assert len(create({**OFFER, "body": "x" * 4000})["body"]) == 4000
    # 4001 does not, on create or on change.
    refused("body", create, {**OFFER, "body": "x" * 4001})
    refused("body", change, create(OFFER), {"body": "x" * 4001})


def test_body_of_4000_multibyte_code_points_fits():
    """4000 three-byte code points still fit the 14 KiB state cap (DESIGN §4.2: 16 KiB entry)."""
    # 12000 bytes of body is within the state cap.
    assert create({**OFFER, "body": "€" * 4000})["body"] == "€" * 4000


def test_state_over_the_entry_size_is_refused_naming_body():
    """A state too large to publish (16 KiB entry, DESIGN §4.2) is refused naming the body."""
    # 4000 four-byte emoji are 16000 bytes: the post is refused, pointing at the body.
    refused("body", create, {**OFFER, "body": "😀" * 4000})


# ---------------------------------------------------------------------------- category, tags


@pytest.mark.parametrize("category", items.CATEGORIES)
def test_every_category_is_accepted(category):
    """Each of the eleven categories is accepted."""
    # The category is stored as given.
    assert create({**OFFER, "category": category})["category"] == category


@pytest.mark.parametrize("category", ["Food", "cake", "", " food", 1, ["food"], True])
def test_unknown_category_is_refused(category):
    """A category outside the enum (case and spacing included) is refused naming it."""
    # Refused on create and on change.
    refused("category", create, {**OFFER, "category": category})
    refused("category", change, create(OFFER), {"category": category})


def test_ten_tags_of_32_code_points_are_accepted():
    """Ten tags of 32 code points each is the most an item carries."""
    # Ten distinct tags, each at the length limit.
    tags = [f"{i}" + "😀" * 31 for i in range(10)]
    assert create({**OFFER, "tags": tags})["tags"] == tags


@pytest.mark.parametrize("tags", [
    [f"t{i}" for i in range(11)], ["x" * 33], ["ok", "😀" * 33], [""], ["  "], [1], [None],
    [["nested"]], "ramp", "ramp, loan", {"ramp": 1}, 3,
])  # fmt: skip
def test_bad_tags_are_refused(tags):
    """More than 10 tags, a tag over 32 code points, empty or non-string tags: refused as tags."""
    # Refused on create and on change.
    refused("tags", create, {**OFFER, "tags": tags})
    refused("tags", change, create(OFFER), {"tags": tags})


def test_duplicate_tags_are_merged_and_empty_list_omits():
    """Repeated tags (after trimming) are kept once; an empty list leaves the field out."""
    # Duplicates collapse in first-seen order.
    assert create({**OFFER, "tags": ["ramp", " ramp", "loan", "ramp"]})["tags"] == ["ramp", "loan"]
    # No tags: the field is omitted, never [].
    assert "tags" not in create({**OFFER, "tags": []})
    # Clearing tags by a change removes the field.
    assert "tags" not in change(create({**OFFER, "tags": ["ramp"]}), {"tags": []})


# ---------------------------------------------------------------------------- quantity, location


def test_quantity_limit_is_40_and_empty_omits():
    """A quantity is at most 40 code points; an empty one is omitted."""
    # 40 fits, 41 does not.
    assert create({**OFFER, "quantity": "😀" * 40})["quantity"] == "😀" * 40
    refused("quantity", create, {**OFFER, "quantity": "x" * 41})
    refused("quantity", change, create(OFFER), {"quantity": "x" * 41})
    # An empty quantity leaves the field out, and clears it on change.
    assert "quantity" not in create({**OFFER, "quantity": ""})
    assert "quantity" not in change(create({**OFFER, "quantity": "2"}), {"quantity": ""})


def test_location_label_limit_is_80():
    """A location label is at most 80 code points."""
    # 80 fits.
    label = "é" * 80
    assert create({**OFFER, "location": {"label": label}})["location"] == {"label": label}
    # 81 is refused naming location.label.
    refused("location.label", create, {**OFFER, "location": {"label": "é" * 81}})


@pytest.mark.parametrize("location, reported", [
    ({"geohash": "u33db"}, "location.label"),
    ({"label": ""}, "location.label"),
    ({"label": "   "}, "location.label"),
    ({"label": 5}, "location.label"),
    ({"label": "x" * 81}, "location.label"),
    ({"label": "E", "geohash": "u33dbc"}, "location.geohash"),
    ({"label": "E", "geohash": "u33dbcdefghj"}, "location.geohash"),
    ({"label": "E", "geohash": ""}, "location.geohash"),
    ({"label": "E", "geohash": 5}, "location.geohash"),
    ({"label": "E", "geohash": ["u33db"]}, "location.geohash"),
    ({"label": "E", "geohash": "u33da"}, "location.geohash"),
    ({"label": "E", "geohash": "u33di"}, "location.geohash"),
    ({"label": "E", "geohash": "u33dl"}, "location.geohash"),
    ({"label": "E", "geohash": "u33do"}, "location.geohash"),
    ({"label": "E", "geohash": "U33DB"}, "location.geohash"),
    ({"label": "E", "geohash": " u33"}, "location.geohash"),
    ({"label": "E", "geohash": "u3-3"}, "location.geohash"),
    ({"label": "E", "street": "1 Main St"}, "location.street"),
    ({"label": "E", "lat": 51}, "location.lat"),
    ("Eastside", "location"),
    (["Eastside"], "location"),
    (5, "location"),
])  # fmt: skip
def test_bad_locations_are_refused(location, reported):
    """A location needs a label ≤80; its geohash is ≤5 chars of the geohash alphabet."""
    # Refused on create and on change, naming the part that is wrong.
    refused(reported, create, {**OFFER, "location": location})
    refused(reported, change, create(OFFER), {"location": location})


def test_geohash_longer_than_five_is_refused_not_cut():
    """A six-character geohash is an error; nothing is silently shortened."""
    # The longer geohash raises, so no state (cut or not) comes out.
    state = create({**OFFER, "location": {"label": "Eastside", "geohash": "u33db"}})
    refused("location.geohash", change, state,
            {"location": {"label": "Eastside", "geohash": "u33dbc"}})  # fmt: skip
    # The stored state is untouched.
    assert state["location"] == {"label": "Eastside", "geohash": "u33db"}


@pytest.mark.parametrize("geohash", ["u", "u3", "u33", "u33d", "u33db", "0123", "zyxwv"])
def test_geohash_up_to_five_is_accepted(geohash):
    """Geohashes of 1 to 5 characters from the alphabet are kept as given."""
    # The geohash is kept exactly.
    state = create({**OFFER, "location": {"label": "E", "geohash": geohash}})
    assert state["location"] == {"label": "E", "geohash": geohash}


def test_empty_location_omits_it():
    """An empty location object leaves the field out (and clears it on change)."""
    # {} on create: no location field.
    assert "location" not in create({**OFFER, "location": {}})
    # {} on change: the location is removed.
    assert "location" not in change(create({**OFFER, "location": {"label": "E"}}), {"location": {}})


# ---------------------------------------------------------------------------- urgency, hop_limit


def test_need_urgency_defaults_to_normal_and_offers_have_none():
    """A need gets urgency `normal` unless it says otherwise; an offer never has an urgency."""
    # Default and explicit urgencies.
    assert create(NEED)["urgency"] == "normal"
    for urgency in items.URGENCIES:
        assert create({**NEED, "urgency": urgency})["urgency"] == urgency
    # No urgency on an offer.
    assert "urgency" not in create(OFFER)


@pytest.mark.parametrize("urgency", items.URGENCIES)
def test_urgency_on_an_offer_is_refused(urgency):
    """Urgency is for needs only, on create and on change."""
    # An offer with any urgency is refused.
    refused("urgency", create, {**OFFER, "urgency": urgency})
    refused("urgency", change, create(OFFER), {"urgency": urgency})


@pytest.mark.parametrize("urgency", ["high", "URGENT", "", 1, True, ["urgent"]])
def test_unknown_urgency_is_refused(urgency):
    """An urgency outside low|normal|urgent is refused naming urgency."""
    # Refused on create and on change.
    refused("urgency", create, {**NEED, "urgency": urgency})
    refused("urgency", change, create(NEED), {"urgency": urgency})


def test_hop_limit_defaults_to_two_at_network_reach():
    """A network item gets hop_limit 2 by default and keeps 1–3 when given."""
    # Default.
    assert create({**NEED, "reach": "network"})["hop_limit"] == 2
    # 1, 2 and 3 are kept.
    for hop_limit in (1, 2, 3):
        assert create({**NEED, "reach": "network", "hop_limit": hop_limit})["hop_limit"] == hop_limit


@pytest.mark.parametrize("hop_limit", [0, 4, -1, 100, True, False, "2", 2.0, [2]])
def test_hop_limit_outside_one_to_three_is_refused(hop_limit):
    """Only the whole numbers 1, 2, 3 are hop limits: bools, strings and floats are refused."""
    # Refused on create at network reach.
    refused("hop_limit", create, {**NEED, "reach": "network", "hop_limit": hop_limit})
    # Refused on change of a network item.
    refused("hop_limit", change, create({**NEED, "reach": "network", "hop_limit": 1}),
            {"hop_limit": hop_limit})  # fmt: skip


@pytest.mark.parametrize("base, reach", [(OFFER, None), (OFFER, "allies"), (OFFER, "local"),
                                         (NEED, None), (NEED, "local"), (NEED, "allies")])
def test_hop_limit_only_at_network_reach(base, reach):
    """hop_limit is present only at network reach: giving it at another reach is refused."""
    # On create, at the default or an explicit non-network reach.
    data = {**base, "hop_limit": 2, **({"reach": reach} if reach else {})}
    refused("hop_limit", create, data)
    # On change of an item that stays below network reach.
    state = create({**base, **({"reach": reach} if reach else {})})
    refused("hop_limit", change, state, {"hop_limit": 2})
    # And no non-network item carries one.
    assert "hop_limit" not in state


def test_hop_limit_appears_when_reach_widens_to_network():
    """Widening to network adds hop_limit (default 2, or the one given with the change)."""
    # Widening alone gives the default.
    assert change(create(OFFER), {"reach": "network"})["hop_limit"] == 2
    # Widening with a hop_limit uses it.
    assert change(create(OFFER), {"reach": "network", "hop_limit": 3})["hop_limit"] == 3


# ---------------------------------------------------------------------------- expires


def test_expires_defaults_to_30_days_and_may_be_90():
    """Without expires an item lasts 30 days; up to exactly 90 days after created is allowed."""
    # Default: 30 days.
    assert create(OFFER)["expires"] == "2026-12-24T18:00:00Z"
    # Exactly 90 days, and one second from now, are allowed.
    assert create({**OFFER, "expires": "2027-02-22T18:00:00Z"})["expires"] == "2027-02-22T18:00:00Z"
    assert create({**OFFER, "expires": "2026-11-24T18:00:01Z"})["expires"] == "2026-11-24T18:00:01Z"


@pytest.mark.parametrize("expires", [
    "2027-02-22T18:00:01Z",  # 90 days and one second after created
    "2030-01-01T00:00:00Z",
    NOW_TEXT,  # now is not the future
    "2026-11-24T17:59:59Z",
    "2020-01-01T00:00:00Z",
])  # fmt: skip
def test_expires_must_be_future_and_within_90_days(expires):
    """expires must be after now and at most 90 days after created."""
    # Refused on create.
    refused("expires", create, {**OFFER, "expires": expires})
    # Refused on change.
    refused("expires", change, create(OFFER), {"expires": expires})


def test_expires_change_is_measured_from_created_not_now():
    """A change may not push expires past created + 90 days, however late it is made."""
    # Sixty days after posting, the limit is still created + 90 days.
    state = create(OFFER)
    later = NOW + timedelta(days=60)
    assert change(state, {"expires": "2027-02-22T18:00:00Z"}, now=later)["version"] == 2
    refused("expires", change, state, {"expires": "2027-02-22T18:00:01Z"}, now=later)


@pytest.mark.parametrize("expires", [
    "2026-12-24", "2026-12-24T00:00:00", "2026-12-24T00:00:00+00:00", "2026-12-24T00:00:00.000Z",
    "2026-12-24 00:00:00Z", "2026-12-24t00:00:00z", "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z", "2026-12-24T24:00:00Z", " 2026-12-24T00:00:00Z", "", 1798070400,
    ["2026-12-24T00:00:00Z"], True,
])  # fmt: skip
def test_expires_must_be_protocol_time(expires):
    """expires is `YYYY-MM-DDTHH:MM:SSZ`, nothing looser."""
    # Any other shape is refused naming expires.
    refused("expires", parse_item_input, {"expires": expires}, partial=True)


@pytest.mark.parametrize("expires", [
    "２０２６-12-01T00:00:00Z",  # fullwidth digits
    "٢٠٢٦-12-01T00:00:00Z",  # Arabic-Indic digits
    "2026-12-01T1٢:00:00Z",
])  # fmt: skip
def test_expires_digits_must_be_ascii(expires):
    """Protocol times are ASCII: digits from other scripts are refused, not stored as given."""
    # Python's \d and strptime accept any Unicode digit; the protocol does not.
    refused("expires", create, {**OFFER, "expires": expires})


# ---------------------------------------------------------------------------- null, unknown, fixed


@pytest.mark.parametrize("name", items.INPUT_FIELDS)
def test_null_is_refused_for_every_field(name):
    """Optional fields are omitted, never null: null is refused for each field on both paths."""
    # null on create.
    refused(name, parse_item_input, {**NEED, name: None}, partial=False)
    # null on change (kind cannot be changed at all, so it is refused there too).
    refused(name, parse_item_input, {name: None}, partial=True)


@pytest.mark.parametrize("name", ["colour", "contact", "email", "phone", "Title", "title ",
                                  "via", "origin_name", "location.label", ""])
def test_unknown_fields_are_refused(name):
    """A field the model does not know is refused by name, on create and on change."""
    # Unknown on create.
    refused(name, parse_item_input, {**OFFER, name: "x"}, partial=False)
    # Unknown on change.
    refused(name, parse_item_input, {name: "x"}, partial=True)


@pytest.mark.parametrize("name, value", [
    ("id", f"{ORIGIN}/items/{uuid.uuid4()}"), ("kind", "need"), ("kind", "offer"),
    ("created", NOW_TEXT), ("updated", NOW_TEXT), ("version", 7), ("author", "Mallory"),
    ("origin", "https://elsewhere.example"),
])  # fmt: skip
def test_fixed_fields_cannot_be_patched(name, value):
    """id, kind, created, updated, version, author and origin are never set by a change."""
    # Each is refused by name, even with the current value.
    refused(name, parse_item_input, {name: value}, partial=True)


@pytest.mark.parametrize("name, value", [
    ("id", f"{ORIGIN}/items/{uuid.uuid4()}"), ("created", NOW_TEXT), ("updated", NOW_TEXT),
    ("version", 1), ("author", "Mallory"), ("origin", "https://elsewhere.example"),
])  # fmt: skip
def test_node_fields_cannot_be_set_on_create(name, value):
    """A new item's id, times, version, author and origin come from the node, never the member."""
    # Refused by name on create.
    refused(name, parse_item_input, {**OFFER, name: value}, partial=False)


@pytest.mark.parametrize("name", items.REQUIRED_ON_CREATE)
def test_required_fields_on_create(name):
    """kind, title, body and category are required on create."""
    # Leaving one out is refused naming it.
    data = {key: value for key, value in OFFER.items() if key != name}
    refused(name, parse_item_input, data, partial=False)


def test_change_needs_no_field():
    """A change may name any subset of fields, including none."""
    # An empty change parses to nothing.
    parsed = parse_item_input({}, partial=True)
    assert parsed.fields == {} and parsed.escalation is None and parsed.share_author is None


@pytest.mark.parametrize("data", [[], ["kind", "offer"], "offer", 1, None, True])
@pytest.mark.parametrize("partial", [False, True])
def test_item_must_be_an_object(data, partial):
    """Anything but a JSON object is refused (with the empty field name: the whole item)."""
    # Refused naming "".
    refused("", parse_item_input, data, partial=partial)


@pytest.mark.parametrize("kind", ["gift", "Offer", "", 1, ["offer"]])
def test_unknown_kind_is_refused(kind):
    """kind is offer or need."""
    # Refused naming kind.
    refused("kind", create, {**OFFER, "kind": kind})


# ---------------------------------------------------------------------------- escalation, author


def test_escalation_is_for_needs_only():
    """An offer cannot carry an escalation choice; a need takes after_delay or never."""
    # Offers: refused on create and change.
    refused("escalation", create, {**OFFER, "escalation": "never"})
    refused("escalation", change, create(OFFER), {"escalation": "never"})
    # Needs: both values parse; anything else is refused.
    for value in items.ESCALATIONS:
        assert parse_item_input({**NEED, "escalation": value}, partial=False).escalation == value
    refused("escalation", parse_item_input, {**NEED, "escalation": "soon"}, partial=False)


@pytest.mark.parametrize("value", ["true", 1, 0, "yes", [True]])
def test_share_author_must_be_a_boolean(value):
    """share_author is true or false, nothing truthy."""
    # Refused naming share_author.
    refused("share_author", parse_item_input, {"share_author": value}, partial=True)


# ---------------------------------------------------------------------------- status


def test_new_item_is_always_open():
    """A new item starts open; asking for open is fine, any other status is refused."""
    # Explicit open is accepted.
    assert create({**OFFER, "status": "open"})["status"] == "open"
    # Every other status is refused naming status.
    for status in ("promised", "fulfilled", "withdrawn", "expired"):
        refused("status", create, {**OFFER, "status": status})
    refused("status", create, {**OFFER, "status": "done"})


ALLOWED_MOVES = {("open", "promised"), ("promised", "fulfilled"), ("open", "withdrawn"),
                 ("promised", "withdrawn"), ("promised", "open")}  # fmt: skip


@pytest.mark.parametrize("old, new", [
    (old, new) for old in items.STATUSES for new in items.STATUSES if old != new
])  # fmt: skip
def test_status_moves(old, new):
    """open→promised→fulfilled, open|promised→withdrawn, promised→open; nothing else."""
    # An item in the old status.
    state = in_status(old)
    if (old, new) in ALLOWED_MOVES:
        # An allowed move makes a new version with the new status.
        moved = change(state, {"status": new})
        assert moved["status"] == new and moved["version"] == state["version"] + 1
    else:
        # Anything else (expired by a member, leaving a final status) is refused as status.
        refused("status", change, state, {"status": new})


@pytest.mark.parametrize("status", items.FINAL_STATUSES)
@pytest.mark.parametrize("data", [
    {"title": "late edit"}, {"body": "late"}, {"tags": ["x"]}, {"status": "open"},
    {"reach": "network"}, {"expires": "2026-12-01T00:00:00Z"}, {"escalation": "never"},
    {"urgency": "low"}, {"location": {}},
])  # fmt: skip
def test_final_statuses_are_frozen(status, data):
    """A fulfilled, withdrawn or expired item cannot be changed in any field."""
    # Any change to a final item is refused as status.
    refused("status", change, in_status(status), data)


@pytest.mark.parametrize("status", items.FINAL_STATUSES)
def test_share_author_cannot_rewrite_a_final_item(status):
    """Opting in to show one's name does not make a new version of a final network item."""
    # A network need, by the group, then ended.
    state = in_status(status, {**NEED, "reach": "network"})
    assert state["author"] == GROUP
    # Opting in afterwards: the node's author callable now gives the member's name.
    try:
        result = change_state(state, parse_item_input({"share_author": True}, partial=True),
                              now=NOW, author=lambda reach: "Jo")  # fmt: skip
    except ValidationError as error:
        assert error.field == "status"
    else:
        assert result is None, f"a {status} item got version {result['version']}: {result}"


def test_expire_state_is_a_real_change():
    """Expiry by the node is the one way to `expired`, and it adds a version."""
    # The node expires an open item: version +1, updated moves to the expiry time.
    state = create(OFFER)
    expired = expire_state(state, NOW + timedelta(days=30))
    assert expired["status"] == "expired" and expired["version"] == 2
    assert expired["updated"] == "2026-12-24T18:00:00Z"
    assert validate_state(expired, origin=ORIGIN) == expired


# ---------------------------------------------------------------------------- reach


@pytest.mark.parametrize("old, new", [
    (old, new) for old in items.REACHES for new in items.REACHES
])  # fmt: skip
def test_reach_only_widens(old, new):
    """local → allies → network: widening or keeping is allowed, narrowing is refused."""
    # A need posted at the old reach.
    state = create({**NEED, "reach": old})
    if items.REACHES.index(new) < items.REACHES.index(old):
        # Narrowing is refused as reach.
        refused("reach", change, state, {"reach": new})
    else:
        # Widening changes it (keeping it is a no-op).
        result = change(state, {"reach": new})
        assert (result is None) == (old == new)
        if result is not None:
            assert result["reach"] == new


def test_hop_limit_never_shrinks_at_network_reach():
    """Once a network item is out, its hop_limit may grow but not shrink."""
    # Growing is fine, shrinking is refused as hop_limit.
    state = create({**NEED, "reach": "network", "hop_limit": 2})
    assert change(state, {"hop_limit": 3})["hop_limit"] == 3
    refused("hop_limit", change, state, {"hop_limit": 1})


def test_network_reach_uses_the_group_as_author():
    """At network reach the author is whatever the node's author rule gives for network."""
    # Posted at network: the group's name; widened to network: the same.
    assert create({**NEED, "reach": "network"})["author"] == GROUP
    assert change(create(NEED), {"reach": "network"})["author"] == GROUP
    assert create(NEED)["author"] == "Jo"


# ---------------------------------------------------------------------------- versions


@pytest.mark.parametrize("data", [
    {}, {"title": OFFER["title"]}, {"title": "  " + OFFER["title"] + " "},
    {"body": OFFER["body"]}, {"category": OFFER["category"]}, {"status": "open"},
    {"reach": "allies"}, {"tags": ["ramp", "loan"]}, {"tags": [" ramp", "loan", "ramp"]},
    {"location": {"label": "Eastside", "geohash": "u33db"}}, {"quantity": "2"},
    {"expires": "2026-12-24T18:00:00Z"}, {"share_author": False},
])  # fmt: skip
def test_no_op_change_returns_none(data):
    """A change that changes nothing returns None: no new version, no new updated."""
    # An offer with every optional field set.
    state = create({**OFFER, "tags": ["ramp", "loan"], "quantity": "2",
                    "location": {"label": "Eastside", "geohash": "u33db"}})  # fmt: skip
    # The same values again, later: nothing changes.
    assert change(state, data, now=NOW + timedelta(hours=1)) is None


def test_version_grows_by_one_on_every_change():
    """Each real change adds exactly 1 to version and sets updated to the time of the change."""
    # A new need is version 1, updated when created.
    state = create(NEED)
    assert state["version"] == 1 and state["created"] == state["updated"] == NOW_TEXT
    steps = [{"title": "Ride to the clinic, please"}, {"urgency": "urgent"}, {"tags": ["ride"]},
             {"reach": "allies"}, {"reach": "network"}, {"hop_limit": 3}, {"status": "promised"},
             {"status": "open"}, {"location": {"label": "Eastside"}}, {"status": "withdrawn"}]  # fmt: skip
    for number, step in enumerate(steps, start=2):
        # One minute later, one change: version +1, updated = now, created unchanged.
        moment = NOW + timedelta(minutes=number)
        state = change(state, step, now=moment)
        assert state["version"] == number
        assert state["updated"] == format_time(moment) and state["created"] == NOW_TEXT
        assert validate_state(state, origin=ORIGIN) == state


def test_updated_never_goes_back():
    """A change made with an earlier clock keeps the later updated time."""
    # Change at +1h, then at +30 min (the clock stepped back): updated stays at +1h.
    state = change(create(OFFER), {"title": "Ramp"}, now=NOW + timedelta(hours=1))
    again = change(state, {"title": "Ramp, 2 m"}, now=NOW + timedelta(minutes=30))
    assert again["updated"] == "2026-11-24T19:00:00Z" and again["version"] == 3


def test_change_does_not_mutate_the_current_state():
    """change_state works on a copy: the caller's state is left as it was."""
    # Change every mutable field; the original is unchanged.
    state = create({**OFFER, "tags": ["ramp"], "location": {"label": "Eastside"}})
    before = json.loads(json.dumps(state))
    change(state, {"tags": ["x"], "location": {"label": "West"}, "title": "New", "quantity": "1"})
    assert state == before


# ---------------------------------------------------------------------------- validate_state


def valid_state(**overrides) -> dict:
    state = create({**NEED, "tags": ["ride"], "quantity": "1",
                    "location": {"label": "Eastside", "geohash": "u33db"}})  # fmt: skip
    state.update(overrides)
    return state


def test_validate_state_returns_a_valid_state_unchanged():
    """A valid state comes back as the very same dict."""
    # Identity, not a copy.
    state = valid_state()
    assert validate_state(state, origin=ORIGIN) is state
    assert validate_state(state) is state


@pytest.mark.parametrize("item_id", [
    f"https://westside.example/items/{uuid.uuid4()}",
    f"https://eastside.example:8443/items/{uuid.uuid4()}",
    f"http://eastside.example/items/{uuid.uuid4()}",
    f"https://eastside.example/sub/items/{uuid.uuid4()}",
    f"https://eastside.example/items/x/items/{uuid.uuid4()}",
    f"https://EASTSIDE.example/items/{uuid.uuid4()}",
    f"/items/{uuid.uuid4()}",
])  # fmt: skip
def test_validate_state_refuses_ids_not_under_origin(item_id):
    """A receiver refuses any item whose id is not exactly under the origin's base_url."""
    # Refused naming id.
    refused("id", validate_state, valid_state(id=item_id), origin=ORIGIN)


@pytest.mark.parametrize("item_id", [
    f"{ORIGIN}/items/{str(uuid.uuid4()).upper()}", f"{ORIGIN}/items/{uuid.uuid1()}",
    f"{ORIGIN}/items/{uuid.uuid4().hex}", f"{ORIGIN}/items/", f"{ORIGIN}/{uuid.uuid4()}",
    f"{ORIGIN}/items/{uuid.uuid4()}/", 5, None,
])  # fmt: skip
def test_validate_state_refuses_malformed_ids(item_id):
    """An id ends in `/items/<lowercase uuid4>`."""
    # Refused naming id, with or without an origin to check.
    refused("id", validate_state, valid_state(id=item_id), origin=ORIGIN)
    refused("id", validate_state, valid_state(id=item_id))


@pytest.mark.parametrize("name", items.REQUIRED_STATE_FIELDS)
def test_validate_state_requires_fields(name):
    """Every required protocol field must be present."""
    # Removing one is refused naming it.
    state = valid_state()
    del state[name]
    refused(name, validate_state, state, origin=ORIGIN)


@pytest.mark.parametrize("overrides, reported", [
    ({"origin": ORIGIN}, "origin"), ({"escalation": "never"}, "escalation"),
    ({"share_author": True}, "share_author"), ({"via": []}, "via"),
    ({"title": " Ride"}, "title"), ({"title": "x" * 121}, "title"), ({"body": "b\r\nc"}, "body"),
    ({"author": "Jo "}, "author"), ({"author": "x" * 81}, "author"), ({"author": ""}, "author"),
    ({"quantity": "1 "}, "quantity"), ({"quantity": None}, "quantity"),
    ({"tags": []}, "tags"), ({"tags": ["a", "a"]}, "tags"), ({"tags": [" a"]}, "tags"),
    ({"location": {}}, "location.label"), ({"location": {"label": "E "}}, "location"),
    ({"location": {"label": "E", "geohash": "u33dbc"}}, "location.geohash"),
    ({"urgency": "high"}, "urgency"), ({"urgency": None}, "urgency"),
    ({"status": "done"}, "status"), ({"reach": "world"}, "reach"),
    ({"hop_limit": 2}, "hop_limit"), ({"reach": "network"}, "hop_limit"),
    ({"reach": "network", "hop_limit": True}, "hop_limit"),
    ({"reach": "network", "hop_limit": 4}, "hop_limit"),
    ({"created": "2026-11-24T18:00:00"}, "created"), ({"updated": None}, "updated"),
    ({"updated": "2026-11-24T17:59:59Z"}, "updated"),
    ({"expires": "2027-02-22T18:00:01Z"}, "expires"),
    ({"version": 0}, "version"), ({"version": True}, "version"), ({"version": "1"}, "version"),
    ({"version": 2**53}, "version"), ({"version": 1.0}, "version"),
    ({"kind": "offer"}, "urgency"), ({"body": "😀" * 4000}, "body"),
])  # fmt: skip
def test_validate_state_refuses_broken_states(overrides, reported):
    """Each §3 rule holds for a whole state too, naming the field that breaks it."""
    # The broken state is refused naming the field.
    refused(reported, validate_state, valid_state(**overrides), origin=ORIGIN)


def test_validate_state_accepts_a_90_day_remote_state():
    """A remote state may expire exactly 90 days after it was created, and be in the past."""
    # Time checks of a whole state are relative to created, not to now.
    state = valid_state(created="2020-01-01T00:00:00Z", updated="2020-01-02T00:00:00Z",
                        expires="2020-03-31T00:00:00Z")  # fmt: skip
    assert validate_state(state, origin=ORIGIN) is state


@pytest.mark.parametrize("field", ["created", "updated", "expires"])
def test_validate_state_time_digits_must_be_ascii(field):
    """Protocol times in a whole state are ASCII digits only."""
    # A fullwidth year would sort after every real time in the store's text columns.
    refused(field, validate_state, valid_state(**{field: "２０２６-11-24T18:00:00Z"}), origin=ORIGIN)


def test_validate_state_far_future_created_is_a_validation_error():
    """A state created in year 9999 is refused with ValidationError, not an OverflowError."""
    # created + 90 days overflows datetime; the check must still answer as a rule violation.
    state = valid_state(created="9999-12-30T00:00:00Z", updated="9999-12-30T00:00:00Z",
                        expires="9999-12-31T00:00:00Z")  # fmt: skip
    try:
        validate_state(state)
    except ValidationError:
        pass


def test_validate_state_lone_surrogate_is_a_validation_error():
    """Text with a lone surrogate (here in the id) is a ValidationError, never an encoder error."""
    # Without an origin to compare to, the id's prefix is not checked character by character.
    state = valid_state(id="https://east\ud800side.example/items/" + items.uuid_of(valid_state()["id"]))
    try:
        validate_state(state)
    except ValidationError:
        pass


# ---------------------------------------------------------------------------- properties

# Text the model accepts: no control, surrogate, private-use or unassigned code points.
SAFE_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn"),
                           exclude_characters="\u2028\u2029")  # fmt: skip
BODY_CHARS = st.one_of(SAFE_CHARS, st.sampled_from("\n\t\r"))


def text_of(max_len: int, chars=SAFE_CHARS):
    """Valid single-line text of 1..max_len code points, as the model stores it (trimmed)."""
    return st.text(chars, min_size=1, max_size=max_len).map(str.strip).filter(bool)


def padded(strategy):
    """The same text, maybe with surrounding whitespace the model must trim."""
    pad = st.sampled_from(["", " ", "  ", "\t", "\u00a0", "\u3000"])
    return st.tuples(pad, strategy, pad).map("".join)


@st.composite
def valid_inputs(draw) -> dict:
    """Member input built only from valid field values (sizes kept under the 14 KiB state cap)."""
    kind = draw(st.sampled_from(items.KINDS))
    data = {
        "kind": kind,
        "title": draw(padded(text_of(120))),
        # Bodies up to 2000 code points: 4000 four-byte ones are over the entry cap (tested above).
        "body": draw(padded(text_of(2000, BODY_CHARS))),
        "category": draw(st.sampled_from(items.CATEGORIES)),
    }
    optional = {
        "tags": st.lists(padded(text_of(32)), max_size=10),
        "quantity": st.one_of(st.just(""), padded(text_of(40))),
        "location": st.one_of(
            st.just({}),
            st.fixed_dictionaries(
                {"label": padded(text_of(80))},
                optional={"geohash": st.text(items.GEOHASH_ALPHABET, min_size=1, max_size=5)},
            ),
        ),
        "status": st.just("open"),
        "reach": st.sampled_from(items.REACHES),
        "expires": st.integers(1, 90 * 86400).map(
            lambda seconds: format_time(NOW + timedelta(seconds=seconds))
        ),
        "share_author": st.booleans(),
    }
    if kind == "need":
        optional["urgency"] = st.sampled_from(items.URGENCIES)
        optional["escalation"] = st.sampled_from(items.ESCALATIONS)
    for name, strategy in optional.items():
        if draw(st.booleans()):
            data[name] = draw(strategy)
    if data.get("reach") == "network" and draw(st.booleans()):
        data["hop_limit"] = draw(st.integers(1, 3))
    # Field order must not matter.
    keys = draw(st.permutations(list(data)))
    return {key: data[key] for key in keys}


@PROPERTY_SETTINGS
@given(valid_inputs())
def test_valid_input_makes_a_valid_json_stable_state(data):
    """Any input of valid values creates a state that validates and survives JSON unchanged."""
    # Create.
    state = create(data)
    # It validates against its own origin and is a fixed point of validation.
    assert validate_state(state, origin=ORIGIN) is state
    # JSON round trip: same dict, same canonical bytes.
    assert json.loads(json.dumps(state)) == state
    assert json.loads(json.dumps(state, ensure_ascii=False)) == state
    # The fixed invariants of a new item.
    assert state["version"] == 1 and state["status"] == "open"
    assert state["created"] == state["updated"] == NOW_TEXT
    assert items.origin_of(state["id"]) == ORIGIN
    assert all(value not in (None, "", [], {}) for value in state.values())
    assert ("hop_limit" in state) == (state["reach"] == "network")
    assert ("urgency" in state) == (state["kind"] == "need")


@st.composite
def valid_changes(draw, state: dict) -> dict:
    """A change a member may make to an open or promised item."""
    change_data: dict = {}
    candidates = {
        "title": padded(text_of(120)),
        "body": padded(text_of(1000, BODY_CHARS)),
        "category": st.sampled_from(items.CATEGORIES),
        "tags": st.lists(text_of(32), max_size=10),
        "quantity": st.one_of(st.just(""), text_of(40)),
        "location": st.one_of(st.just({}), st.fixed_dictionaries({"label": text_of(80)})),
        "status": st.sampled_from((state["status"], *items.TRANSITIONS[state["status"]])),
        "reach": st.sampled_from(items.REACHES[items.REACHES.index(state["reach"]):]),
        "expires": st.integers(120, 60 * 86400).map(
            lambda seconds: format_time(NOW + timedelta(seconds=seconds))
        ),
    }
    if state["kind"] == "need":
        candidates["urgency"] = st.sampled_from(items.URGENCIES)
    for name, strategy in candidates.items():
        if draw(st.booleans()):
            change_data[name] = draw(strategy)
    reach = change_data.get("reach", state["reach"])
    if reach == "network" and draw(st.booleans()):
        change_data["hop_limit"] = draw(st.integers(state.get("hop_limit", 1), 3))
    return change_data


@PROPERTY_SETTINGS
@given(st.data())
def test_valid_change_makes_next_version_or_nothing(data):
    """A valid change gives None (nothing changed) or a valid state one version on."""
    # A valid item, maybe promised.
    state = create(data.draw(valid_inputs()))
    if data.draw(st.booleans()):
        state = change(state, {"status": "promised"})
    # A valid change to it.
    changes = data.draw(valid_changes(state))
    result = change(state, changes, now=NOW + timedelta(minutes=1))
    if result is None:
        # Nothing changed: every named field already had that value.
        assert all(change(state, {name: value}) is None for name, value in changes.items())
    else:
        # One version on, still valid, same identity, JSON-stable.
        assert result["version"] == state["version"] + 1
        assert {name: result[name] for name in ("id", "kind", "created")} == {
            name: state[name] for name in ("id", "kind", "created")
        }
        assert validate_state(result, origin=ORIGIN) is result
        assert json.loads(json.dumps(result)) == result


HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z]{2,6}){1,2}", fullmatch=True)
ORIGINS = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}{port}",
    st.sampled_from(["https", "http"]), HOSTS,
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}")),
)  # fmt: skip


@PROPERTY_SETTINGS
@given(ORIGINS, ORIGINS, st.uuids(version=4))
def test_ids_not_under_the_origin_are_refused(origin, other, item_uuid):
    """validate_state(state, origin=X) accepts ids under X and refuses every other."""
    # A valid state made by `other`.
    state = create_state(parse_item_input(OFFER, partial=False), origin=other, now=NOW,
                         author=author, item_uuid=str(item_uuid))  # fmt: skip
    assert validate_state(state, origin=other) is state
    if origin == other:
        assert validate_state(state, origin=origin) is state
    else:
        # Any other origin refuses it as id.
        refused("id", validate_state, state, origin=origin)


# Junk: any JSON value, with times that parse (years kept away from 9999, tested above).
TIMES = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.integers(),
    st.floats(allow_nan=True), st.text(max_size=20), TIMES,
    st.sampled_from(items.KINDS + items.CATEGORIES + items.STATUSES + items.REACHES
                    + items.URGENCIES + ("", " ", "u33db", "u33dbc"))  # fmt: skip
)  # fmt: skip
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(("label", "geohash"))),
                      inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
FIELD_NAMES = st.sampled_from(sorted(set(items.INPUT_FIELDS + items.STATE_FIELDS + ("origin",))))
JUNK_DICTS = st.dictionaries(st.one_of(FIELD_NAMES, st.text(max_size=8)), JUNK, max_size=8)


def only_validation_errors(call, *args, **kwargs) -> None:
    try:
        call(*args, **kwargs)
    except ValidationError as error:
        assert isinstance(error.field, str)


@PROPERTY_SETTINGS
@given(st.one_of(JUNK, JUNK_DICTS), st.booleans())
def test_junk_input_only_raises_validation_error(data, partial):
    """parse_item_input raises nothing but ValidationError on any JSON value."""
    # Accepted or refused as a rule violation; never another exception.
    only_validation_errors(parse_item_input, data, partial=partial)


@PROPERTY_SETTINGS
@given(valid_inputs(), st.dictionaries(FIELD_NAMES, JUNK, min_size=1, max_size=3), st.booleans())
def test_valid_input_with_junk_fields_only_raises_validation_error(data, junk, partial):
    """Valid input with some fields swapped for junk is accepted or refused, never crashes."""
    # Parse, and when the parse passes on create, build the state too.
    mixed = {**data, **junk}
    try:
        parsed = parse_item_input(mixed, partial=partial)
        if not partial:
            create_state(parsed, origin=ORIGIN, now=NOW, author=author)
    except ValidationError as error:
        assert isinstance(error.field, str)


@PROPERTY_SETTINGS
@given(st.one_of(JUNK, JUNK_DICTS), st.one_of(st.none(), st.just(ORIGIN)))
def test_junk_state_only_raises_validation_error(state, origin):
    """validate_state raises nothing but ValidationError on any JSON value."""
    # Never another exception.
    only_validation_errors(validate_state, state, origin=origin)


@PROPERTY_SETTINGS
@given(valid_inputs(), st.dictionaries(FIELD_NAMES, JUNK, min_size=1, max_size=3),
       st.lists(FIELD_NAMES, max_size=2))  # fmt: skip
def test_damaged_state_only_raises_validation_error(data, junk, removed):
    """A valid state with fields replaced or removed validates or raises ValidationError only."""
    # Damage a valid state.
    state = {**create(data), **junk}
    for name in removed:
        state.pop(name, None)
    # Whatever comes out is a verdict, not a crash; a pass returns the state itself.
    try:
        assert validate_state(state, origin=ORIGIN) is state
    except ValidationError as error:
        assert isinstance(error.field, str)


def _bad_char_reference(text: str, multiline: bool) -> bool:
    """The rule, character by character, as DESIGN §3 states it."""
    return any(
        not (multiline and ch in "\n\t")
        and (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") or ch in "\u2028\u2029")
        for ch in text
    )


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(codec=None, exclude_categories=())), st.booleans())
def test_the_fast_text_check_agrees_with_the_rule_character_by_character(text, multiline):
    assert items._bad_char(text, multiline) is _bad_char_reference(text, multiline)


@pytest.mark.parametrize("text, multiline, bad", [
    ("Soup\u200don Sundays", False, False),  # a format character (Cf) is allowed
    ("Soup\u00a0on Sundays", False, False),  # so is a no-break space (Zs)
    ("Soup\u2028on Sundays", False, True), ("Soup\x07", False, True), ("Soup\ud800", False, True),
    ("Soup\ue000", False, True), ("Soup\U000e0080", False, True),  # private use, unassigned
    ("Soup\non Sundays", True, False), ("Soup\non Sundays", False, True),
])  # fmt: skip
def test_text_checks_on_the_edges_of_printable(text, multiline, bad):
    assert items._bad_char(text, multiline) is bad

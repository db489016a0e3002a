"""The fast paths of reading and canonicalizing agree with the slow, complete ones.

`canonical_read` writes RFC 8785 bytes with the standard library's C encoder and falls back to
`rfc8785` for text that could sort differently; `loads_strict` checks depth and lone
surrogates only where they can occur. Each is compared here with the reference it replaces,
over generated values that include the awkward corners: control characters, characters at and
above U+E000, keys whose UTF-16 and code point orders differ, integers at the limits."""

import json

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from federation.entries import (
    ENTRY_TYPES,
    body_cut,
    canonical_read,
    check_shape_encoded,
    sign_entry,
    signing_input_cut,
    signing_input_read,
)
from federation.errors import MalformedError
from federation.keys import NodeKey
from federation.strictjson import INT_LIMIT, MAX_DEPTH, _check, loads_strict

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text of any characters strict reading lets through (no lone surrogates), weighted towards
# the ones where encoders differ: controls, quotes, backslashes, U+2028, U+E000 and above.
awkward = st.sampled_from(["\x00", "\x1f", "\x7f", '"', "\\", "\b", "\f", "\n", "\r", "\t",
                           "\u2028", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0001f600",
                           "é", "ñ"])  # fmt: skip
text = st.lists(st.one_of(awkward, st.characters(exclude_categories=["Cs"])), max_size=12).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-INT_LIMIT, INT_LIMIT), text)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(text, children, max_size=5)),  # fmt: skip
    max_leaves=30,
)


@SETTINGS
@given(values)
@example({"\ue000": 1, "\U0001f600": 2})  # UTF-16 puts the emoji first, code points the other
@example({"a": "\U0001f600", "b": [1, -INT_LIMIT, INT_LIMIT, True, None]})
def test_canonical_read_is_rfc8785(value):
    assert canonical_read(value) == rfc8785.dumps(value)


def test_keys_are_sorted_by_utf16_code_units_not_code_points():
    encoded = canonical_read({"\ue000": 1, "\U0001f600": 2})
    assert encoded == '{"\U0001f600":2,"\ue000":1}'.encode()
    # The plain encoder would have put them the other way round: the fallback is needed.
    assert json.dumps({"\ue000": 1, "\U0001f600": 2}, sort_keys=True, ensure_ascii=False) \
        .startswith('{"\ue000"')


def reference_loads(data: str):
    """Strict reading as it was before its fast path: parse, then check every value."""
    value = json.loads(data, object_pairs_hook=dict)
    _check(value)
    return value


@SETTINGS
@given(values, st.booleans())
def test_loads_strict_reads_what_the_reference_reads(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only)  # ascii_only: every non-ASCII as \u escapes
    assert loads_strict(data) == reference_loads(data) == value


@pytest.mark.parametrize("data", [
    '"\\ud800"', '["\\udfff"]', '{"\\udbff": 1}', '{"a": ["x\\uDC00y"]}',
])  # fmt: skip
def test_lone_surrogates_in_escapes_are_refused(data):
    with pytest.raises(MalformedError, match="lone surrogate"):
        loads_strict(data)


def test_an_escaped_backslash_before_ud800_is_plain_text():
    assert loads_strict('"\\\\ud800"') == "\\ud800"


def test_a_surrogate_pair_in_escapes_is_one_character():
    assert loads_strict('"\\ud83d\\ude00"') == "\U0001f600"


def nested(depth: int, leaf: str, kinds: str) -> str:
    """`depth` containers around `leaf`, alternating arrays and objects as `kinds` says."""
    out = leaf
    for level in range(depth):
        out = f"[{out}]" if kinds[level % len(kinds)] == "[" else f'{{"k": {out}}}'
    return out


@pytest.mark.parametrize("kinds", ["[", "{", "[{"])
@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2])
@pytest.mark.parametrize("leaf", ["1", "[]", '"\\u00e9"', '"\\ud83d\\ude00"'])
def test_depth_limit_is_the_references(kinds, depth, leaf):
    data = nested(depth, leaf, kinds)
    try:
        expected = reference_loads(data)
    except MalformedError:
        with pytest.raises(MalformedError, match="nested too deeply"):
            loads_strict(data)
    else:
        assert loads_strict(data) == expected


@pytest.mark.parametrize("data", [str(INT_LIMIT + 1), str(-INT_LIMIT - 1), f"[{10**30}]",
                                  '{"n": 9007199254740992}'])  # fmt: skip
def test_integers_beyond_the_interoperable_range_are_refused(data):
    with pytest.raises(MalformedError, match="interoperable range"):
        loads_strict(data)


def test_integers_at_the_limits_are_read():
    assert loads_strict(f"[{INT_LIMIT}, {-INT_LIMIT}, 0, -0]") == [INT_LIMIT, -INT_LIMIT, 0, 0]


# The signing input cut out of an entry's canonical bytes (`signing_input_cut`) is the one
# canonicalizing the entry without `sig` gives, whatever its body holds: awkward text,
# nested objects with a "sig" of their own (a relay carries a whole entry), even that same
# signature again.
ENTRY_KEY = NodeKey("main", Ed25519PrivateKey.generate())


@SETTINGS
@given(body=st.dictionaries(text, values, max_size=6), kind=st.sampled_from(ENTRY_TYPES),
       nested_sig=st.booleans())  # fmt: skip
def test_the_signing_input_cut_out_is_the_one_encoded(body, kind, nested_sig):
    entry = sign_entry(origin="https://a.example", seq=3, prev="sha256:" + "A" * 43, type=kind,
                       at="2026-11-24T18:00:00Z", body=body, key=ENTRY_KEY)  # fmt: skip
    if nested_sig:  # the same signature, also deep in the body (it then signs nothing)
        entry = {**entry, "body": {**body, "entry": {"sig": entry["sig"], "type": kind, "v": 1}}}
    read = loads_strict(json.dumps(entry))
    shaped, encoded = check_shape_encoded(read, strictly_read=True)
    assert signing_input_cut(shaped, encoded) == signing_input_read(read)


def test_bytes_that_are_not_the_entrys_give_no_signing_input():
    entry = sign_entry(origin="https://a.example", seq=1, prev=None, type="item",
                       at="2026-11-24T18:00:00Z", body={"n": 1}, key=ENTRY_KEY)  # fmt: skip
    encoded = canonical_read(entry)
    assert signing_input_cut(entry, encoded) == signing_input_read(entry)
    assert signing_input_cut({**entry, "type": "key"}, encoded) is None
    assert signing_input_cut({**entry, "sig": entry["sig"][::-1]}, encoded) is None
    assert signing_input_cut(entry, encoded[:-1] + b" }") is None


# An entry's body cut out of its canonical bytes (`body_cut`, what ingest stores as an item's
# state) is the body's own canonical bytes, whatever it holds: text that ends like the member
# after it (`,"key":"`), members named "key" at any depth, characters that sort differently.
@SETTINGS
@given(body=st.dictionaries(text, values, max_size=6), kind=st.sampled_from(ENTRY_TYPES),
       decoy=st.sampled_from(['","key":"', ',"key":"x"}', '"}', "\ue000"]))  # fmt: skip
@example(body={"key": {"key": ',"key":"'}, "z": [{"key": "x"}]}, kind="item", decoy="")
def test_the_body_cut_out_is_the_one_encoded(body, kind, decoy):
    body = {**body, "tail": decoy, "nested": {"key": decoy}}
    entry = sign_entry(origin="https://a.example", seq=3, prev="sha256:" + "A" * 43, type=kind,
                       at="2026-11-24T18:00:00Z", body=body, key=ENTRY_KEY)  # fmt: skip
    read = loads_strict(json.dumps(entry))
    shaped, encoded = check_shape_encoded(read, strictly_read=True)
    cut = body_cut(shaped, encoded)
    assert cut == rfc8785.dumps(read["body"])
    assert loads_strict(cut) == body


def test_bytes_that_do_not_begin_as_the_entrys_give_no_body():
    entry = sign_entry(origin="https://a.example", seq=1, prev=None, type="item",
                       at="2026-11-24T18:00:00Z", body={"n": 1}, key=ENTRY_KEY)  # fmt: skip
    encoded = canonical_read(entry)
    assert body_cut(entry, encoded) == b'{"n":1}'
    assert body_cut({**entry, "at": "2026-11-24T18:00:01Z"}, encoded) is None
    assert body_cut(entry, b" " + encoded) is None
    assert body_cut(entry, encoded.replace(b',"key":"', b',"kez":"')) is None

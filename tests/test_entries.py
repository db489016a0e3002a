"""Signed, hash-chained feed entries (DESIGN §4.2) as federation/entries.py makes and checks them.

Three sources of truth: the aidnode/1 vectors (`tests/vectors/entries.json`, a verbatim copy of
the ones published with the protocol design), RFC 8785's own examples for the canonical bytes,
and properties over item states made by the item rules: whatever is signed verifies after a JSON
round trip, and any change to a chain (a byte, a field, an entry moved, dropped, added or
repeated, a signature re-encoded) is refused. Keys are fixed: the vectors' seed, and two more.
"""

import base64
import copy
import json
import struct
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.encoding import HASH_CHARS, KEY_CHARS, SIGNATURE_CHARS, b64url_decode, b64url_encode
from federation.entries import (
    ENTRY_FIELDS,
    MAX_ENTRY_BYTES,
    ChainState,
    EntryError,
    canonical,
    check_key_entry,
    check_shape,
    entry_hash,
    hash_bytes,
    key_entry_body,
    key_proof_input,
    sign_entry,
    sign_entry_encoded,
    signatures_valid,
    signing_input,
    verify_chain,
    verify_signature,
)  # fmt: skip
from federation.errors import MalformedError
from federation.items import create_state, parse_item_input, validate_state
from federation.keys import NodeKey, fingerprint, parse_public_key, public_key_text
from federation.strictjson import loads_strict
from federation.timefmt import format_time
from tests.test_item_rules import (
    NEED,
    NOW,
    OFFER,
    ORIGIN,
    author,
    change,
    valid_changes,
    valid_inputs,
)  # fmt: skip

VECTORS_PATH = Path(__file__).parent / "vectors" / "entries.json"
VECTORS = json.loads(VECTORS_PATH.read_text("utf-8"))
VECTOR_ENTRIES = [vector["entry"] for vector in VECTORS["entries"]]


def key_from_seed(name: str, seed: bytes) -> NodeKey:
    """A node key from a raw 32-byte Ed25519 seed, as NodeKey holds a loaded key."""
    return NodeKey(name, Ed25519PrivateKey.from_private_bytes(seed))


KEY = key_from_seed("main", bytes.fromhex(VECTORS["key"]["seed_hex"]))  # Eastside's first key
NEXT_KEY = key_from_seed("next", bytes(range(32, 64)))  # the key Eastside rotates to
INTRUDER = key_from_seed("main", bytes(range(64, 96)))  # someone else's key, same name

PROPERTIES = settings(
    max_examples=100, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip


def at(seq: int) -> str:
    return format_time(NOW + timedelta(minutes=seq))


def make_chain(bodies: list[dict], *, key: NodeKey = KEY, start_seq: int = 1,
               prev: str | None = None, type: str = "item") -> list[dict]:  # fmt: skip
    """Sign `bodies` as consecutive entries of Eastside's feed, each chained to the one before."""
    entries = []
    for seq, body in enumerate(bodies, start_seq):
        entry = sign_entry(origin=ORIGIN, seq=seq, prev=prev, type=type, at=at(seq), body=body,
                           key=key)  # fmt: skip
        prev = entry_hash(entry)
        entries.append(entry)
    return entries


def verify(entries: list, **kwargs) -> ChainState:
    """verify_chain from the start of Eastside's feed, its first key pinned."""
    return verify_chain(entries, origin=ORIGIN, key_id=KEY.key_id(ORIGIN), public=KEY.public,
                        **kwargs)  # fmt: skip


def refused(entries: list, match: str | None = None) -> EntryError:
    """verify_chain must refuse `entries` with an EntryError (whose message matches)."""
    with pytest.raises(EntryError, match=match) as caught:
        verify(entries)
    assert str(caught.value)
    return caught.value


def resign(entry: dict, key: NodeKey = KEY) -> dict:
    """The entry signed afresh after an edit, so only the edit itself can make it fail."""
    unsigned = {name: value for name, value in entry.items() if name != "sig"}
    return {**unsigned, "sig": b64url_encode(key.sign(signing_input(unsigned)))}


@st.composite
def item_states(draw) -> dict:
    """A valid item state made by the item rules: a new item, maybe changed once since."""
    inp = parse_item_input(draw(valid_inputs()), partial=False)
    state = create_state(inp, origin=ORIGIN, now=NOW, author=author,
                         item_uuid=str(draw(st.uuids(version=4))))  # fmt: skip
    if draw(st.booleans()):
        state = change(state, draw(valid_changes(state)), now=NOW + timedelta(minutes=1)) or state
    return state


# Where only the chain matters, cheaper states: short titles, the rest fixed by the item rules.
SMALL_STATES = st.builds(
    lambda base, title, item_uuid: create_state(
        parse_item_input({**base, "title": title}, partial=False), origin=ORIGIN, now=NOW,
        author=author, item_uuid=str(item_uuid),
    ),
    st.sampled_from([OFFER, NEED]),
    st.text("Rampé lend€😀 ", min_size=1, max_size=12).map(str.strip).filter(bool),
    st.uuids(version=4),
)  # fmt: skip


@st.composite
def chains(draw, min_size: int = 1, max_size: int = 4, *, any_state: bool = False) -> list[dict]:
    """Eastside's feed: signed item entries carrying valid states; with `any_state`, one of
    them is any valid state (long texts, every optional field) at any place in the chain."""
    bodies = draw(st.lists(SMALL_STATES, min_size=min_size, max_size=max_size))
    if any_state:
        bodies[draw(st.integers(0, len(bodies) - 1))] = draw(item_states())
    return make_chain(bodies)


# ---------------------------------------------------------------------------- shared vectors


def test_vector_key_matches_its_public_text_fingerprint_and_id():
    """The seed gives the published public key, fingerprint and key id (DESIGN §4.1)."""
    # The key from the seed.
    assert public_key_text(KEY.public) == VECTORS["key"]["public"]
    assert fingerprint(KEY.public) == VECTORS["key"]["fingerprint"]
    assert KEY.key_id(ORIGIN) == VECTORS["key"]["id"]
    # The public text parses back to the same key.
    parsed = parse_public_key(VECTORS["key"]["public"])
    assert parsed.public_bytes_raw() == KEY.public.public_bytes_raw()
    # Every vector entry is Eastside's, signed with that key.
    assert {(entry["origin"], entry["key"]) for entry in VECTOR_ENTRIES} == {
        (ORIGIN, KEY.key_id(ORIGIN))
    }


@pytest.mark.parametrize("vector", VECTORS["entries"], ids=lambda v: f"seq{v['entry']['seq']}")
def test_vector_entry_is_reproduced_exactly(vector):
    """signing_input, sign_entry, canonical and entry_hash give the vector's very bytes."""
    entry = vector["entry"]
    jcs = vector["entry_jcs"].encode("utf-8")
    # Signing input and canonical bytes.
    assert signing_input(entry) == vector["signing_input_jcs"].encode("utf-8")
    assert canonical(entry) == jcs
    # The hash, from the entry and from its bytes.
    assert entry_hash(entry) == hash_bytes(jcs) == vector["hash"]
    # Signing the same fields again gives the same signature (Ed25519 is deterministic).
    fields = {name: entry[name] for name in ("origin", "seq", "prev", "type", "at", "body")}
    signed, encoded = sign_entry_encoded(**fields, key=KEY)
    assert signed == entry and signed["sig"] == entry["sig"] and encoded == jcs
    assert sign_entry(**fields, key=KEY) == entry
    # The bytes read back strictly as the same entry, which passes shape and signature.
    loaded = loads_strict(jcs)
    assert loaded == entry and check_shape(loaded, origin=ORIGIN) is loaded
    verify_signature(loaded, KEY.public)


def test_vector_chain_verifies():
    """verify_chain accepts the three vector entries in order, each `prev` the hash before it."""
    # Each prev names the entry before it.
    hashes = [vector["hash"] for vector in VECTORS["entries"]]
    assert [entry["prev"] for entry in VECTOR_ENTRIES] == [None, *hashes[:-1]]
    # The whole chain verifies, every entry passed on in order.
    seen: list[dict] = []
    state = verify(VECTOR_ENTRIES, on_entry=seen.append)
    assert (state.seq, state.hash, state.key_id) == (3, hashes[-1], KEY.key_id(ORIGIN))
    assert seen == VECTOR_ENTRIES
    # A reader holding entry 1 resumes from its seq and hash.
    assert verify(VECTOR_ENTRIES[1:], after_seq=1, after_hash=hashes[0]).hash == hashes[-1]


# ---------------------------------------------------------------------------- RFC 8785

# RFC 8785 §3.2.2: the sample input, and §3.2.4: the UTF-8 bytes of its canonical form.
RFC_SAMPLE_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC_SAMPLE_OUTPUT = (
    r"""{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"""
    r""""string":"€$\u000f\nA'B\"\\\\\"/"}"""
)
RFC_SAMPLE_HEX = """
7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72
75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a
5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31
65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37
5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30
30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d
"""

# RFC 8785 §3.2.3: properties sort by UTF-16 code units, so the emoji (D83D DE00) sorts before
# U+FB33, which code-point order would put first.
RFC_SORTING_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC_SORTING_ORDER = [
    "Carriage Return", "One", "Control", "Latin Small Letter O With Diaeresis", "Euro Sign",
    "Emoji: Grinning Face", "Hebrew Letter Dalet With Dagesh",
]  # fmt: skip


def test_rfc8785_sample_is_canonicalized_as_published():
    """canonical() of RFC 8785's §3.2.2 sample gives the RFC's output and §3.2.4 bytes."""
    # Numbers, escapes, non-ASCII and literals, in the RFC's own words.
    result = canonical(json.loads(RFC_SAMPLE_INPUT))
    assert result == RFC_SAMPLE_OUTPUT.encode("utf-8")
    assert result == bytes.fromhex(RFC_SAMPLE_HEX)


def test_rfc8785_properties_sort_by_utf16_code_units():
    """canonical() sorts the RFC 8785 §3.2.3 example by UTF-16 code units, not code points."""
    # The RFC's sorted output: U+0080 stays raw (only controls below U+0020 are escaped).
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    result = canonical(json.loads(RFC_SORTING_INPUT))
    assert result == expected.encode("utf-8")
    assert list(json.loads(result).values()) == RFC_SORTING_ORDER


# RFC 8785 Appendix B: IEEE 754 doubles and their one canonical text. Entries carry no floats
# (DESIGN §4.2; the strict reader refuses them), but canonical() is plain JCS and accepts them,
# so the RFC's number rules are checked through it.
RFC_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),  # round to even
]


@pytest.mark.parametrize("bits, expected", RFC_NUMBERS)
def test_rfc8785_appendix_b_numbers(bits, expected):
    """Each Appendix B double serializes as the RFC prints it."""
    # The double with exactly these bits.
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical(number) == expected.encode("ascii")
    # Inside a document too.
    assert canonical({"n": number}) == b'{"n":' + expected.encode("ascii") + b"}"


def test_rfc8785_small_numbers_use_exponent_form():
    """Below 1e-6 ECMAScript's Number-to-String (RFC 8785 §3.2.2.3) switches to exponent form."""
    # 1e-7 is "1e-7" (not "0.0000001"); 1e-6 is still "0.000001".
    assert canonical(1e-7) == b"1e-7"
    assert canonical(1e-6) == b"0.000001"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 2**53, -(2**53)])
def test_values_without_a_canonical_form_are_refused(value):
    """NaN and infinities (RFC 8785 Appendix B) and integers beyond I-JSON's 2^53-1 are refused."""
    # Refused as malformed, never written as null or an approximate number.
    with pytest.raises(MalformedError, match="cannot canonicalize"):
        canonical({"n": value})
    # The largest safe integer is fine.
    assert canonical(2**53 - 1) == b"9007199254740991"


# ---------------------------------------------------------------------------- round trip


@PROPERTIES
@given(item_states(), st.integers(1, 2**53 - 1), st.binary(min_size=32, max_size=32))
def test_any_valid_item_state_round_trips_signed(state, seq, prev_digest):
    """Any valid state, signed at any seq, survives canonical bytes → JSON → every check."""
    # Sign it as an entry (prev null only at seq 1).
    prev = None if seq == 1 else "sha256:" + b64url_encode(prev_digest)
    entry, encoded = sign_entry_encoded(origin=ORIGIN, seq=seq, prev=prev, type="item",
                                        at=at(1), body=state, key=KEY)  # fmt: skip
    assert encoded == canonical(entry)
    # The bytes read back (plainly and strictly) as the same entry.
    loaded = json.loads(encoded)
    assert loaded == entry and loads_strict(encoded) == entry
    # Canonical bytes are a fixed point, whatever the field order.
    assert canonical(json.loads(canonical(entry))) == canonical(entry) == encoded
    assert canonical(dict(reversed(loaded.items()))) == encoded
    # Shape, signature and the chain all accept it; the reader's state moves on to it.
    assert check_shape(loaded, origin=ORIGIN) is loaded
    verify_signature(loaded, KEY.public)
    reader = ChainState(ORIGIN, seq - 1, prev, KEY.key_id(ORIGIN), KEY.public)
    assert reader.accept(loaded) is loaded
    assert (reader.seq, reader.hash) == (seq, hash_bytes(encoded))
    # The body is still the valid state it was.
    assert validate_state(loaded["body"], origin=ORIGIN) == state


# ---------------------------------------------------------------------------- tampering


def test_every_byte_flip_of_the_vector_chain_is_refused():
    """Flipping any one byte of any vector entry, if it still parses, breaks the chain."""
    hashes = [vector["hash"] for vector in VECTORS["entries"]]
    reached = 0
    for index, vector in enumerate(VECTORS["entries"]):
        encoded = vector["entry_jcs"].encode("utf-8")
        for position in range(len(encoded)):
            for mask in (0x01, 0x20):  # a low bit; letter case
                tampered_bytes = bytearray(encoded)
                tampered_bytes[position] ^= mask
                try:
                    tampered = json.loads(bytes(tampered_bytes))
                except ValueError:
                    # Not JSON any more: the strict reader refuses it before the chain.
                    with pytest.raises(MalformedError):
                        loads_strict(bytes(tampered_bytes))
                    continue
                # Still JSON: a reader holding the entries before it refuses it.
                with pytest.raises(EntryError):
                    verify([tampered, *VECTOR_ENTRIES[index + 1:]], after_seq=index,
                           after_hash=hashes[index - 1] if index else None)  # fmt: skip
                reached += 1
    # Most flips land in text and still parse: the chain, not the parser, refuses those.
    assert reached > 2900, reached  # 3025 of the 4428


@PROPERTIES
@given(chains(any_state=True), st.data())
def test_any_byte_flip_that_still_parses_is_refused(chain, data):
    """Any one byte changed in any entry of a generated chain: refused if it still parses."""
    # Pick an entry, a byte and a new printable value for it.
    index = data.draw(st.integers(0, len(chain) - 1), label="entry")
    encoded = bytearray(canonical(chain[index]))
    position = data.draw(st.integers(0, len(encoded) - 1), label="byte")
    encoded[position] = data.draw(
        st.integers(0x20, 0x7E).filter(lambda byte: byte != encoded[position]), label="new"
    )
    try:
        tampered = json.loads(bytes(encoded))
    except ValueError:
        # Not JSON any more: the strict reader refuses it.
        with pytest.raises(MalformedError):
            loads_strict(bytes(encoded))
        return
    # Still JSON: the chain refuses it.
    refused([*chain[:index], tampered, *chain[index + 1:]])


def leaf_paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value: each member, element and the containers themselves."""
    paths = [path] if path else []
    if isinstance(value, dict):
        for name, item in value.items():
            paths += leaf_paths(item, (*path, name))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            paths += leaf_paths(item, (*path, number))
    return paths


def get_path(value, path):
    for step in path:
        value = value[step]
    return value


def set_path(value, path, new):
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new


NEW_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=12),
    st.sampled_from(["item", "relay", "key", ORIGIN, KEY.key_id(ORIGIN), at(2), {}, []]),
)  # fmt: skip


@PROPERTIES
@given(chains(any_state=True), st.data())
def test_changing_any_field_value_is_refused(chain, data):
    """Any one value changed (top-level field, body field, nested member or element): refused."""
    # Pick an entry and any path into it: a field, a body field, a location part, a tag.
    index = data.draw(st.integers(0, len(chain) - 1), label="entry")
    path = data.draw(st.sampled_from(leaf_paths(chain[index])), label="path")
    old = get_path(chain[index], path)
    # A new value, different as JSON (1 and true are equal in Python, not in JSON).
    near = [old + " ", old[:-1]] if isinstance(old, str) else []
    near += [old + 1] if isinstance(old, int) else []
    new = data.draw(st.one_of(NEW_VALUES, st.sampled_from(near or [None])), label="new")
    if canonical(new) == canonical(old):
        new = [old]
    tampered = copy.deepcopy(chain[index])
    set_path(tampered, path, new)
    # The chain refuses it.
    refused([*chain[:index], tampered, *chain[index + 1:]])


OTHER_HASH = "sha256:" + b64url_encode(bytes(32))


@pytest.mark.parametrize("field, value, match", [
    ("v", 2, "v must be 1"),
    ("origin", "https://westside.example", "origin is not the expected node"),
    ("seq", 3, "expected entry 2, got 3"),
    ("prev", OTHER_HASH, "prev does not match"),
    ("type", "relay", "signature does not verify"),
    ("at", "2026-11-24T18:02:01Z", "signature does not verify"),
    ("body", {}, "signature does not verify"),
    ("key", f"{ORIGIN}#next", "not the key in force"),
    ("sig", VECTOR_ENTRIES[2]["sig"], "signature does not verify"),
])  # fmt: skip
def test_changing_each_field_of_a_vector_entry_is_refused(field, value, match):
    """Each top-level field of entry 2 changed to a plausible value: refused, saying why."""
    # Entry 2 of the vectors with one field changed, entries 1 and 3 as published.
    tampered = {**VECTOR_ENTRIES[1], field: value}
    refused([VECTOR_ENTRIES[0], tampered, VECTOR_ENTRIES[2]], match)


@pytest.mark.parametrize("field, value, match", [
    ("seq", 3, "expected entry 2, got 3"),
    ("prev", OTHER_HASH, "prev does not match"),
    ("origin", "https://westside.example", "origin is not the expected node"),
])  # fmt: skip
def test_re_signed_edits_are_still_refused_by_the_chain(field, value, match):
    """Even signed by the origin's own key, an entry out of place in the chain is refused."""
    # Entry 2 edited and validly re-signed: the signature is fine, the chain is not.
    tampered = resign({**VECTOR_ENTRIES[1], field: value})
    verify_signature(tampered, KEY.public)
    refused([VECTOR_ENTRIES[0], tampered], match)


@PROPERTIES
@given(chains(min_size=2), st.data())
def test_reordered_entries_are_refused(chain, data):
    """Any other order of a chain's entries is refused."""
    # Any permutation but the identity.
    identity = list(range(len(chain)))
    order = data.draw(st.permutations(identity).filter(lambda order: order != identity))
    refused([chain[number] for number in order])


@PROPERTIES
@given(chains(min_size=2), st.data())
def test_dropping_an_entry_is_refused_unless_it_is_the_last(chain, data):
    """Dropping any entry but the last breaks the chain; dropping the tail cannot be seen here."""
    # Drop one entry before the last: the one after it names a hash that is not there.
    dropped = data.draw(st.integers(0, len(chain) - 2))
    refused([*chain[:dropped], *chain[dropped + 1:]])
    # Dropping the last entry leaves a valid, shorter chain: undetectable by design, since a
    # chain only points backwards; the feed's head (DESIGN §4.3) and the next entry reveal it.
    assert verify(chain[:-1]).seq == len(chain) - 1


@PROPERTIES
@given(chains(), SMALL_STATES, st.data())
def test_inserting_a_validly_signed_entry_is_refused(chain, extra_body, data):
    """An extra entry signed by the origin's own key, chained to its predecessor: refused."""
    # A well-formed entry signed by Eastside's key, at the seq and prev of the slot it takes.
    slot = data.draw(st.integers(0, len(chain) - 1))
    prev = entry_hash(chain[slot - 1]) if slot else None
    (extra,) = make_chain([extra_body], start_seq=slot + 1, prev=prev)
    # Alone in that slot it verifies (a fork is for the reader's store to catch)...
    assert verify([*chain[:slot], extra]).seq == slot + 1
    # ...inserted before the entry that was there, the chain is refused.
    refused([*chain[:slot], extra, *chain[slot:]])


@PROPERTIES
@given(chains(), SMALL_STATES)
def test_appending_an_entry_signed_by_another_key_is_refused(chain, extra_body):
    """A correctly chained entry signed by a key that is not the origin's: refused."""
    # The intruder's key is also called "main": the key id matches, the signature does not.
    (extra,) = make_chain([extra_body], key=INTRUDER, start_seq=len(chain) + 1,
                          prev=entry_hash(chain[-1]))  # fmt: skip
    refused([*chain, extra], "signature does not verify")


@PROPERTIES
@given(chains(), st.data())
def test_duplicated_entry_is_refused(chain, data):
    """An entry repeated right after itself is refused."""
    # Repeat one entry.
    twice = data.draw(st.integers(0, len(chain) - 1))
    refused([*chain[:twice + 1], chain[twice], *chain[twice + 1:]], f"got {twice + 1}")


def test_a_refused_entry_leaves_the_reader_where_it_was():
    """ChainState.accept changes nothing when it refuses; the right entry is then accepted."""
    # The reader holds entry 1.
    reader = ChainState(ORIGIN, 0, None, KEY.key_id(ORIGIN), KEY.public)
    reader.accept(VECTOR_ENTRIES[0])
    before = (reader.seq, reader.hash, reader.key_id)
    # Entry 3 (a gap) and a forged entry 2 are refused without moving it.
    for bad in (VECTOR_ENTRIES[2], {**VECTOR_ENTRIES[1], "at": at(9)}):
        with pytest.raises(EntryError):
            reader.accept(bad)
        assert (reader.seq, reader.hash, reader.key_id) == before
    # The real entry 2 is accepted.
    reader.accept(VECTOR_ENTRIES[1])
    assert (reader.seq, reader.hash) == (2, VECTORS["entries"][1]["hash"])


# ---------------------------------------------------------------------------- strict base64url


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def lenient_decode(text: str) -> bytes:
    """What a lenient decoder makes of text: either alphabet, padding optional, junk skipped."""
    return base64.b64decode(text.translate(str.maketrans("-_", "+/")) + "==", validate=False)


def with_trailing_bits(text: str, low: int = 1) -> str:
    """The same bytes to a lenient decoder: the last character's unused low bits set to `low`."""
    return text[:-1] + ALPHABET[ALPHABET.index(text[-1]) | low]


def re_encodings(text: str, spare_bits: int) -> list[str]:
    """Other spellings of the same bytes: a lenient decoder accepts them, a strict one must not."""
    spellings = [
        text + "=" * (-len(text) % 4),  # padded
        text.translate(str.maketrans("-_", "+/")),  # standard alphabet (when it has - or _)
        *(with_trailing_bits(text, low) for low in range(1, 2**spare_bits)),  # non-zero spare bits
        text[:20] + " " + text[20:], text[:20] + "\n" + text[20:], text + "\n", " " + text,
        "\t" + text, text + "\r\n",
    ]  # fmt: skip
    return [spelling for spelling in spellings if spelling != text]


@PROPERTIES
@given(st.sampled_from([(32, KEY_CHARS, 2), (64, SIGNATURE_CHARS, 4)]), st.data())
def test_base64url_is_decoded_strictly(sizes, data):
    """Only the one canonical spelling of some bytes decodes; every re-encoding is refused."""
    size, chars, spare_bits = sizes
    raw = data.draw(st.binary(min_size=size, max_size=size))
    text = b64url_encode(raw)
    # The canonical spelling round-trips.
    assert len(text) == chars and b64url_decode(text, chars) == raw
    for spelling in re_encodings(text, spare_bits):
        # A lenient decoder takes the spelling as the same bytes; the strict one refuses it.
        assert lenient_decode(spelling) == raw, spelling
        with pytest.raises(MalformedError):
            b64url_decode(spelling, chars)


SIG = VECTOR_ENTRIES[0]["sig"]


@pytest.mark.parametrize("how, spelling", [
    ("padded", SIG + "=="),
    ("standard alphabet", SIG.translate(str.maketrans("-_", "+/"))),
    ("trailing bits", with_trailing_bits(SIG)),
    ("space inside", SIG[:43] + " " + SIG[43:]),
    ("newline after", SIG + "\n"),
    ("space instead of a character", SIG[:-1] + " "),
])  # fmt: skip
def test_a_re_encoded_signature_is_refused(how, spelling):
    """The vector's signature re-encoded (same bytes to a lenient decoder) is refused."""
    # The premise: the signature has - and _, and ends in Q (four zero bits to spare).
    assert "-" in SIG and "_" in SIG and SIG.endswith("Q")
    if how != "space instead of a character":
        assert lenient_decode(spelling) == lenient_decode(SIG)
    # The entry carrying it is refused by shape and by the chain.
    entry = {**VECTOR_ENTRIES[0], "sig": spelling}
    with pytest.raises(EntryError, match="sig is not"):
        check_shape(entry)
    refused([entry], "sig is not")


PREV = VECTOR_ENTRIES[1]["prev"]


@pytest.mark.parametrize("spelling", [
    PREV + "=",
    with_trailing_bits(PREV),
    PREV[:7] + PREV[7:].translate(str.maketrans("-_", "+/")),
    PREV + " ",
])  # fmt: skip
def test_a_re_encoded_prev_hash_is_refused(spelling):
    """A `prev` hash spelled any other way than canonical base64url is refused."""
    # The premise: the same 32 bytes to a lenient decoder.
    assert spelling != PREV and lenient_decode(spelling[7:]) == lenient_decode(PREV[7:])
    with pytest.raises(MalformedError):
        b64url_decode(spelling[7:], HASH_CHARS)
    # Refused, both alone and in the chain.
    entry = {**VECTOR_ENTRIES[1], "prev": spelling}
    with pytest.raises(EntryError, match="prev"):
        check_shape(entry)
    refused([VECTOR_ENTRIES[0], entry], "prev")


# ---------------------------------------------------------------------------- shape


def without(entry: dict, field: str) -> dict:
    return {name: value for name, value in entry.items() if name != field}


E1, E2 = VECTOR_ENTRIES[0], VECTOR_ENTRIES[1]
SHAPE_CASES = [
    *((f"missing {field}", without(E2, field), rf"missing \['{field}'\], unexpected \[\]")
      for field in ENTRY_FIELDS),
    ("extra field", {**E1, "note": "hi"}, r"missing \[\], unexpected \['note'\]"),
    ("not an object", [E1], "must be a JSON object"),
    ("null", None, "must be a JSON object"),
    ("v 2", {**E1, "v": 2}, "v must be 1"),
    ("v 0", {**E1, "v": 0}, "v must be 1"),
    ("v string", {**E1, "v": "1"}, "v must be 1"),
    ("v true", {**E1, "v": True}, "v must be 1"),
    ("v float", {**E1, "v": 1.0}, "v must be 1"),
    ("v null", {**E1, "v": None}, "v must be 1"),
    ("seq true", {**E1, "seq": True}, "seq must be a whole number"),
    ("seq float", {**E1, "seq": 1.0}, "seq must be a whole number"),
    ("seq string", {**E1, "seq": "1"}, "seq must be a whole number"),
    ("seq null", {**E1, "seq": None}, "seq must be a whole number"),
    ("seq 0", {**E1, "seq": 0}, "seq must be a whole number from 1"),
    ("seq negative", {**E1, "seq": -1}, "seq must be a whole number from 1"),
    ("seq beyond 2^53-1", {**E2, "seq": 2**53}, "seq must be a whole number"),
    ("prev at seq 1", {**E1, "prev": E2["prev"]}, "entry 1 must have prev null"),
    ("empty prev at seq 1", {**E1, "prev": ""}, "entry 1 must have prev null"),
    ("null prev at seq 2", {**E2, "prev": None}, "prev must be sha256:"),
    ("prev without prefix", {**E2, "prev": E2["prev"][7:]}, "prev must be sha256:"),
    ("prev other algorithm", {**E2, "prev": "sha512:" + E2["prev"][7:]}, "prev must be sha256:"),
    ("prev upper case", {**E2, "prev": "SHA256:" + E2["prev"][7:]}, "prev must be sha256:"),
    ("prev too short", {**E2, "prev": E2["prev"][:-1]}, "prev must be sha256:"),
    ("unknown type", {**E1, "type": "comment"}, "type must be one of item, relay, key"),
    ("type in capitals", {**E1, "type": "Item"}, "type must be one of"),
    ("type not a string", {**E1, "type": ["item"]}, "type must be one of"),
    ("origin mismatch", {**E1, "origin": "https://westside.example"},
     "origin is not the expected node"),
    ("origin with a slash", {**E1, "origin": ORIGIN + "/"}, "origin is not the expected node"),
    ("origin not a string", {**E1, "origin": None}, "origin is not the expected node"),
    ("at with a space", {**E1, "at": "2026-11-24 18:01:00Z"}, "at must be a time"),
    ("at with an offset", {**E1, "at": "2026-11-24T18:01:00+00:00"}, "at must be a time"),
    ("at with fractions", {**E1, "at": "2026-11-24T18:01:00.000Z"}, "at must be a time"),
    ("at without seconds", {**E1, "at": "2026-11-24T18:01Z"}, "at must be a time"),
    ("at in lower case", {**E1, "at": "2026-11-24t18:01:00z"}, "at must be a time"),
    ("at month 13", {**E1, "at": "2026-13-24T18:01:00Z"}, "at must be a time"),
    ("at fullwidth digits", {**E1, "at": "２０２６-11-24T18:01:00Z"}, "at must be a time"),
    ("at a number", {**E1, "at": 1795543260}, "at must be a time"),
    ("at null", {**E1, "at": None}, "at must be a time"),
    ("body a list", {**E1, "body": []}, "body must be an object"),
    ("body a string", {**E1, "body": "ramp"}, "body must be an object"),
    ("key of another node", {**E1, "key": "https://westside.example#main"}, "key must be one of"),
    ("key under a longer host", {**E1, "key": ORIGIN + ".evil#main"}, "key must be one of"),
    ("key without origin", {**E1, "key": "main"}, "key must be one of"),
    ("key null", {**E1, "key": None}, "key must be one of"),
    ("sig null", {**E1, "sig": None}, "sig is not 86 characters"),
    ("sig empty", {**E1, "sig": ""}, "sig is not 86 characters"),
    ("sig short", {**E1, "sig": E1["sig"][:-1]}, "sig is not 86 characters"),
]


@pytest.mark.parametrize("entry, match", [case[1:] for case in SHAPE_CASES],
                         ids=[case[0] for case in SHAPE_CASES])  # fmt: skip
def test_check_shape_refuses(entry, match):
    """Each malformed entry is refused by check_shape with an EntryError saying what is wrong."""
    # Refused by shape, origin given (as a reader does).
    with pytest.raises(EntryError, match=match):
        check_shape(entry, origin=ORIGIN)


def test_check_shape_accepts_the_vectors_and_checks_origin_only_when_given():
    """Valid entries pass and come back as they are; without an origin any origin's pass."""
    # The vectors pass.
    for entry in VECTOR_ENTRIES:
        assert check_shape(entry, origin=ORIGIN) is entry
    # Another node's entry passes without an expected origin, not with Eastside's.
    westside = resign({**E1, "origin": "https://westside.example",
                       "key": "https://westside.example#main"})  # fmt: skip
    assert check_shape(westside) is westside
    with pytest.raises(EntryError, match="origin is not the expected node"):
        check_shape(westside, origin=ORIGIN)


@pytest.mark.parametrize("type, limit", [
    ("item", 16 * 1024),  # DESIGN §4.2
    ("relay", 20 * 1024),  # DESIGN §4.2
    ("key", MAX_ENTRY_BYTES["key"]),  # the design sets none; the module keeps key entries small
])  # fmt: skip
def test_entry_size_limit_per_type(type, limit):
    """An entry of exactly the limit is made and accepted; one byte more is refused both ways."""
    assert MAX_ENTRY_BYTES[type] == limit
    # Pad a body so the canonical entry is exactly `limit` bytes.
    fields = {"origin": ORIGIN, "seq": 1, "prev": None, "type": type, "at": at(1)}
    empty = len(sign_entry_encoded(**fields, body={"pad": ""}, key=KEY)[1])
    entry, encoded = sign_entry_encoded(**fields, body={"pad": "x" * (limit - empty)}, key=KEY)
    assert len(encoded) == limit
    assert check_shape(entry, origin=ORIGIN) is entry
    # One byte more: the writer refuses to sign it...
    over = {"pad": "x" * (limit - empty + 1)}
    with pytest.raises(EntryError, match=f"at most {limit} bytes"):
        sign_entry(**fields, body=over, key=KEY)
    # ...and a reader refuses it signed by hand.
    oversize = resign({**entry, "body": over})
    with pytest.raises(EntryError, match=f"at most {limit} bytes"):
        check_shape(oversize, origin=ORIGIN)
    refused([oversize], f"at most {limit} bytes")


def test_entries_carry_no_out_of_range_integers():
    """A body integer beyond 2^53-1 cannot be canonicalized, so the entry is refused."""
    # Refused as malformed (a ProtocolError) before any signature check.
    entry = {**E1, "body": {**E1["body"], "version": 2**53}}
    with pytest.raises(MalformedError, match="cannot canonicalize"):
        check_shape(entry, origin=ORIGIN)


# ---------------------------------------------------------------------------- key rotation

ITEM_BODIES = [entry["body"] for entry in VECTOR_ENTRIES]


def rotation_chain(*, key_body: dict | None = None, signer: NodeKey = KEY) -> list[dict]:
    """Eastside's feed: an item under its first key, the hand-over to NEXT_KEY, an item under it."""
    (first,) = make_chain([ITEM_BODIES[0]])
    body = key_body if key_body is not None else key_entry_body(ORIGIN, 2, NEXT_KEY)
    (handover,) = make_chain([body], key=signer, start_seq=2, prev=entry_hash(first), type="key")
    (after,) = make_chain([ITEM_BODIES[1]], key=NEXT_KEY, start_seq=3, prev=entry_hash(handover))
    return [first, handover, after]


def test_key_entry_body_carries_the_new_key_and_its_proof():
    """key_entry_body names the new key and proves it with the new key over {origin, seq, key}."""
    body = key_entry_body(ORIGIN, 2, NEXT_KEY)
    # The new key, as node documents show keys.
    public = public_key_text(NEXT_KEY.public)
    key_doc = {"id": f"{ORIGIN}#next", "type": "Ed25519", "public": public}
    assert body["key"] == key_doc and set(body) == {"key", "proof"}
    # The proof is the new key's signature over the JCS bytes of {origin, seq, key}.
    proof_input = key_proof_input(ORIGIN, 2, key_doc)
    assert proof_input == canonical({"origin": ORIGIN, "seq": 2, "key": key_doc})
    NEXT_KEY.public.verify(b64url_decode(body["proof"], SIGNATURE_CHARS), proof_input)


def test_rotation_hands_over_to_the_new_key():
    """A key entry signed by the old key makes the new key current; later entries use it."""
    chain = rotation_chain()
    # check_key_entry gives the new key.
    key_id, public = check_key_entry(chain[1])
    assert key_id == NEXT_KEY.key_id(ORIGIN)
    assert public.public_bytes_raw() == NEXT_KEY.public.public_bytes_raw()
    # The whole chain verifies from the first key, and ends under the new one.
    state = verify(chain)
    assert (state.seq, state.key_id) == (3, NEXT_KEY.key_id(ORIGIN))
    assert state.public.public_bytes_raw() == NEXT_KEY.public.public_bytes_raw()
    # A reader that held entries 1-2 resumes with the new key.
    resumed = verify_chain(chain[2:], origin=ORIGIN, key_id=NEXT_KEY.key_id(ORIGIN),
                           public=NEXT_KEY.public, after_seq=2,
                           after_hash=entry_hash(chain[1]))  # fmt: skip
    assert resumed.hash == entry_hash(chain[2])


def test_entries_before_the_rotation_still_verify_with_the_old_key():
    """Entries up to and including the hand-over are the old key's, and stay valid."""
    chain = rotation_chain()
    # Entries 1 and 2 verify with the old key alone.
    state = verify(chain[:2])
    assert state.seq == 2
    for entry in chain[:2]:
        verify_signature(entry, KEY.public)
    # They are not the new key's.
    with pytest.raises(EntryError, match="signature does not verify"):
        verify_signature(chain[0], NEXT_KEY.public)


def test_old_key_after_the_rotation_is_refused():
    """Once handed over, the old key signs nothing more: by name or in disguise."""
    first, handover, _ = rotation_chain()
    # Entry 3 signed and named as the old key.
    (old,) = make_chain([ITEM_BODIES[1]], start_seq=3, prev=entry_hash(handover))
    refused([first, handover, old], "not the key in force")
    # Entry 3 naming the new key but signed with the old one.
    disguised = resign({**old, "key": NEXT_KEY.key_id(ORIGIN)}, key=KEY)
    refused([first, handover, disguised], "signature does not verify")


def forged_proof(signer: NodeKey, *, seq: int = 2, public=None) -> dict:
    """A key entry body for NEXT_KEY whose proof is not NEXT_KEY's over this entry."""
    body = key_entry_body(ORIGIN, 2, NEXT_KEY)
    if public is not None:
        body["key"] = {**body["key"], "public": public_key_text(public)}
    body["proof"] = b64url_encode(signer.sign(key_proof_input(ORIGIN, seq, body["key"])))
    return body


@pytest.mark.parametrize("body", [
    pytest.param(forged_proof(INTRUDER), id="proof by another key"),
    pytest.param(forged_proof(KEY), id="proof by the old key"),
    pytest.param(forged_proof(NEXT_KEY, seq=7), id="proof for another seq"),
    pytest.param(forged_proof(NEXT_KEY, public=INTRUDER.public), id="key swapped under the proof"),
    pytest.param({**key_entry_body(ORIGIN, 2, NEXT_KEY), "proof": "A" * 86}, id="proof of zeros"),
])  # fmt: skip
def test_a_key_entry_with_a_forged_proof_is_refused(body):
    """A hand-over whose proof is not the new key's over {origin, seq, key}: refused."""
    # The key entry itself is validly signed by the old key: only its proof is wrong.
    chain = rotation_chain(key_body=body)
    verify_signature(chain[1], KEY.public)
    with pytest.raises(EntryError, match="proof does not verify"):
        check_key_entry(chain[1])
    refused(chain, "proof does not verify")
    # A reader refusing it stays at entry 1, with the old key.
    reader = verify(chain[:1])
    with pytest.raises(EntryError):
        reader.accept(chain[1])
    assert (reader.seq, reader.key_id) == (1, KEY.key_id(ORIGIN))


def bad_key_doc(**changes) -> dict:
    body = key_entry_body(ORIGIN, 2, NEXT_KEY)
    return {**body, "key": {**body["key"], **changes}}


NEXT_PUBLIC = public_key_text(NEXT_KEY.public)


@pytest.mark.parametrize("body, match", [
    pytest.param({"key": key_entry_body(ORIGIN, 2, NEXT_KEY)["key"]}, "body is {key, proof}",
                 id="no proof"),
    pytest.param({**key_entry_body(ORIGIN, 2, NEXT_KEY), "note": "x"}, "body is {key, proof}",
                 id="extra field"),
    pytest.param(bad_key_doc(type="X25519"), "new Ed25519 key", id="not Ed25519"),
    pytest.param(bad_key_doc(id="https://westside.example#next"), "new Ed25519 key",
                 id="another node's key id"),
    pytest.param(bad_key_doc(id=KEY.key_id(ORIGIN)), "new Ed25519 key", id="the same key id"),
    pytest.param(bad_key_doc(id=ORIGIN + "#"), "new Ed25519 key", id="a key id with no name"),
    pytest.param(bad_key_doc(public=with_trailing_bits(NEXT_PUBLIC)),
                 "proof does not verify", id="public key with trailing bits"),
    pytest.param(bad_key_doc(public=NEXT_PUBLIC + "="), "proof does not verify",
                 id="padded public key"),
])  # fmt: skip
def test_a_malformed_key_entry_is_refused(body, match):
    """A key entry that does not name one new Ed25519 key of the origin, strictly: refused."""
    # Signed by the old key, so only the body is at fault.
    chain = rotation_chain(key_body=body)
    with pytest.raises(EntryError, match=match):
        check_key_entry(chain[1])
    refused(chain, match)


def test_a_key_entry_signed_by_the_new_key_is_refused():
    """The hand-over must be signed by the key in force, not by the key it introduces."""
    # Signed and named as the new key.
    refused(rotation_chain(signer=NEXT_KEY), "not the key in force")


def test_signatures_valid_and_what_accept_skips():
    """`signatures_valid` says, entry by entry, which signatures verify; `accept` skips its
    own check only when told the very key in force verified the entry."""
    key, other = NodeKey("main", Ed25519PrivateKey.generate()), NodeKey("main", Ed25519PrivateKey.generate())
    origin = "https://eastside.example"
    good = sign_entry(origin=origin, seq=1, prev=None, type="item", at="2026-11-24T18:00:00Z",
                      body={"n": 1}, key=key)  # fmt: skip
    forged = {**good, "sig": sign_entry(origin=origin, seq=1, prev=None, type="item",
                                        at="2026-11-24T18:00:00Z", body={"n": 2}, key=key)["sig"]}
    read = loads_strict(json.dumps([good, forged, {"sig": 3}, "not an entry"]).encode())
    assert signatures_valid(read, key.public) == [True, False, False, False]
    assert signatures_valid(read[:1], other.public) == [False]

    def chain():
        return ChainState(origin, 0, None, key.key_id(origin), key.public, strictly_read=True)

    with pytest.raises(EntryError, match="signature"):
        chain().accept(read[1], verified_by=other.public)  # another key's word counts for nothing
    with pytest.raises(EntryError, match="signature"):
        chain().accept(read[1])
    assert chain().accept(read[0], verified_by=key.public)["seq"] == 1

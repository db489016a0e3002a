"""Signed, hash-chained feed entries (DESIGN §4.2).

An entry is

    {"v": 1, "origin": base_url, "seq": n, "prev": "sha256:<b64url>" | null, "type": T,
     "at": time, "body": {...}, "key": "<origin>#<name>", "sig": "<b64url>"}

- `sig` is Ed25519 over the RFC 8785 (JCS) bytes of the entry without `sig`;
- its hash is `sha256:` + base64url(sha256(JCS bytes of the whole entry, `sig` included));
- `prev` is the hash of the entry before it (null only for seq 1), so dropping, reordering or
  rewriting any entry breaks every hash after it.

Chain validity (this module: strict shape, signature, origin, seq, prev, size) decides whether
an entry is accepted; content validity (the item rules) is judged separately, by
`federation.items`, and never stops the chain.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .encoding import HASH_CHARS, SIGNATURE_CHARS, b64url_decode, b64url_encode
from .errors import MalformedError, ProtocolError
from .keys import NodeKey, parse_public_key, public_key_text
from .timefmt import parse_time

VERSION = 1
ENTRY_FIELDS = ("v", "origin", "seq", "prev", "type", "at", "body", "key", "sig")
ENTRY_TYPES = ("item", "relay", "key")
MAX_ENTRY_BYTES = {"item": 16 * 1024, "relay": 20 * 1024, "key": 4 * 1024}
SEQ_MAX = 2**53 - 1
_HASH_RE = re.compile(r"sha256:[A-Za-z0-9_-]{43}")


class EntryError(ProtocolError):
    """An entry breaks chain validity: it must not be accepted."""


def canonical(value: object) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes of a JSON value."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as error:
        raise MalformedError(f"cannot canonicalize: {error}") from None


# The standard library's C encoder writes exactly RFC 8785's bytes for the values strict JSON
# reading yields (objects with string keys, arrays, strings, integers within ±(2^53−1), true,
# false, null): the same separators, the same escapes (rfc8785 takes its escape table from
# `json`), integers in plain decimal. The one difference is key order: RFC 8785 sorts keys by
# UTF-16 code units, `sort_keys` by code points, and the two orders differ only for text
# holding a character at or above U+E000. Text with any such character is canonicalized by
# rfc8785 itself. tests/test_canonical.py checks, over generated values, that both agree.
_FAST_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                 allow_nan=False, check_circular=False)  # fmt: skip
_ORDER_MAY_DIFFER = re.compile("[\ue000-\U0010ffff]")


def canonical_read(value: object) -> bytes:
    """RFC 8785 bytes of a value as `strictjson.loads_strict` returns it, fast.

    Only for such values (no floats, integers within the interoperable range, no lone
    surrogates: what strict reading guarantees); anything else goes through `canonical`."""
    text = _FAST_ENCODER.encode(value)
    # isascii() reads a flag the string carries; the search reads every character (2 µs for
    # an entry of 900 bytes, on the event loop for each entry an ally sends).
    if not text.isascii() and _ORDER_MAY_DIFFER.search(text) is not None:
        return canonical(value)
    return text.encode("utf-8")


def hash_bytes(data: bytes) -> str:
    return "sha256:" + b64url_encode(hashlib.sha256(data).digest())


def entry_hash(entry: dict) -> str:
    """The hash the next entry's `prev` must carry."""
    return hash_bytes(canonical(entry))


def signing_input(entry: dict) -> bytes:
    return canonical({name: value for name, value in entry.items() if name != "sig"})


def signing_input_read(entry: dict) -> bytes:
    """`signing_input` of an entry as strict reading returns it (see `canonical_read`)."""
    return canonical_read({name: value for name, value in entry.items() if name != "sig"})


def signing_input_cut(entry: dict, encoded: bytes) -> bytes | None:
    """The signing input of a checked entry (`check_shape_encoded`), cut out of its canonical
    bytes `encoded` rather than encoded again: RFC 8785 sorts an object's members, and
    taking one out leaves the others as they were, so the entry without `sig` is its bytes
    without the `,"sig":"…"` member. At the top level that member comes last but for `type`
    and `v`, whose values a checked entry holds in their only form (a name of ENTRY_TYPES,
    the number 1); nothing in `body`, which comes before, can end the bytes. None if they do
    not end as expected (then they were not the entry's)."""
    tail = b',"type":"%s","v":%d}' % (entry["type"].encode("ascii"), entry["v"])
    member = b',"sig":"' + entry["sig"].encode("ascii") + b'"'
    if not encoded.endswith(member + tail):
        return None
    return encoded[: -len(member) - len(tail)] + tail


def body_cut(entry: dict, encoded: bytes) -> bytes | None:
    """The canonical bytes of a checked entry's body, cut out of the entry's `encoded` rather
    than encoded again. RFC 8785 puts `at` first and `body` second; what follows the body
    (`key` and the members after it) holds no `,"key":"` but where the `key` member begins,
    since a quote inside a string is escaped. None if the bytes do not begin as the entry's."""
    head = b'{"at":"' + entry["at"].encode() + b'","body":'
    end = encoded.rfind(b',"key":"')
    if not encoded.startswith(head) or end < len(head):
        return None
    return encoded[len(head) : end]


def sign_entry(
    *, origin: str, seq: int, prev: str | None, type: str, at: str, body: dict, key: NodeKey
) -> dict:
    """Build and sign an entry. Raises EntryError if it would be too large."""
    return sign_entry_encoded(origin=origin, seq=seq, prev=prev, type=type, at=at, body=body,
                              key=key)[0]  # fmt: skip


def sign_entry_encoded(
    *, origin: str, seq: int, prev: str | None, type: str, at: str, body: dict, key: NodeKey
) -> tuple[dict, bytes]:
    """Build and sign an entry; return it with its canonical bytes (what is stored, served
    and hashed), so a writer canonicalizes each entry only twice: to sign, and to store."""
    entry = {"v": VERSION, "origin": origin, "seq": seq, "prev": prev, "type": type, "at": at,
             "body": body, "key": key.key_id(origin)}  # fmt: skip
    entry["sig"] = b64url_encode(key.sign(signing_input(entry)))
    encoded = canonical(entry)
    if len(encoded) > MAX_ENTRY_BYTES[type]:
        raise EntryError(
            f"a {type} entry is at most {MAX_ENTRY_BYTES[type]} bytes; this one is {len(encoded)}"
        )
    return entry, encoded


def check_shape(entry: object, *, origin: str | None = None, strictly_read: bool = False) -> dict:
    """Strictly check an entry's fields and types (not its signature); return it.

    `strictly_read`: the entry is as `loads_strict` returned it, so its canonical bytes may be
    written by the fast path (`canonical_read`)."""
    return check_shape_encoded(entry, origin=origin, strictly_read=strictly_read)[0]


def check_shape_encoded(entry: object, *, origin: str | None = None,
                        strictly_read: bool = False) -> tuple[dict, bytes]:  # fmt: skip
    """`check_shape`, also returning the entry's canonical bytes (measured for its size, and
    what its hash is taken over), so a reader canonicalizes the whole entry only once."""
    if not isinstance(entry, dict):
        raise EntryError("an entry must be a JSON object")
    if set(entry) != set(ENTRY_FIELDS):
        missing = sorted(set(ENTRY_FIELDS) - set(entry))
        extra = sorted(set(entry) - set(ENTRY_FIELDS))
        raise EntryError(f"entry fields wrong: missing {missing}, unexpected {extra}")
    if isinstance(entry["v"], bool) or not isinstance(entry["v"], int) or entry["v"] != VERSION:
        raise EntryError("entry v must be 1")
    if not isinstance(entry["origin"], str) or (origin is not None and entry["origin"] != origin):
        raise EntryError("entry origin is not the expected node")
    seq = entry["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= SEQ_MAX:
        raise EntryError("entry seq must be a whole number from 1")
    prev = entry["prev"]
    if seq == 1 and prev is not None:
        raise EntryError("entry 1 must have prev null")
    if seq > 1:
        if not isinstance(prev, str) or not _HASH_RE.fullmatch(prev):
            raise EntryError("entry prev must be sha256:<43 base64url characters>")
        try:
            b64url_decode(prev[7:], HASH_CHARS, "prev")
        except MalformedError as error:
            raise EntryError(str(error)) from None
    if entry["type"] not in ENTRY_TYPES:
        raise EntryError(f"entry type must be one of {', '.join(ENTRY_TYPES)}")
    try:
        parse_time(entry["at"])
    except ValueError:
        raise EntryError("entry at must be a time like 2026-11-24T18:00:00Z") from None
    if not isinstance(entry["body"], dict):
        raise EntryError("entry body must be an object")
    if not isinstance(entry["key"], str) or not entry["key"].startswith(entry["origin"] + "#"):
        raise EntryError("entry key must be one of the origin's keys (<origin>#<name>)")
    try:
        b64url_decode(entry["sig"], SIGNATURE_CHARS, "sig")
    except MalformedError as error:
        raise EntryError(str(error)) from None
    encoded = canonical_read(entry) if strictly_read else canonical(entry)
    if len(encoded) > MAX_ENTRY_BYTES[entry["type"]]:
        raise EntryError(f"a {entry['type']} entry is at most {MAX_ENTRY_BYTES[entry['type']]} bytes")
    return entry, encoded


def verify_signature(entry: dict, public: Ed25519PublicKey, *, strictly_read: bool = False) -> None:
    """Raise EntryError unless `sig` is the key's signature over the entry's signing input.
    (`strictly_read` as for `check_shape`.)"""
    signature = b64url_decode(entry["sig"], SIGNATURE_CHARS, "sig")
    message = signing_input_read(entry) if strictly_read else signing_input(entry)
    try:
        public.verify(signature, message)
    except InvalidSignature:
        raise EntryError(f"entry {entry.get('seq')}: the signature does not verify") from None


def signatures_valid(entries: list, public: Ed25519PublicKey) -> list[bool]:
    """For each entry as `loads_strict` returned it, whether its `sig` is `public`'s signature
    over its signing input (False for anything that cannot even be checked).

    What a reader may check ahead of the chain's other checks, so that
    `ChainState.accept(entry, verified_by=public)` skips it. (The node itself checks ahead on
    processes of its own, from signing inputs cut out of bytes it makes anyway: the
    signature checker processes of server/verifying.py; this is their reference.)"""
    valid = []
    for entry in entries:
        try:
            verify_signature(entry, public, strictly_read=True)
        except (EntryError, MalformedError, KeyError, TypeError, AttributeError, ValueError):
            valid.append(False)
        else:
            valid.append(True)
    return valid


def _verify_unless_done(entry: dict, public: Ed25519PublicKey,
                        verified_by: Ed25519PublicKey | None, *, strictly_read: bool) -> None:  # fmt: skip
    """`verify_signature`, unless `verified_by` is `public` (`signatures_valid` checked it)."""
    if verified_by is None or verified_by.public_bytes_raw() != public.public_bytes_raw():
        verify_signature(entry, public, strictly_read=strictly_read)


# ---------------------------------------------------------------------------- key rotation


def key_proof_input(origin: str, seq: int, key_doc: dict) -> bytes:
    return canonical({"origin": origin, "seq": seq, "key": key_doc})


def key_entry_body(origin: str, seq: int, new_key: NodeKey) -> dict:
    """The body of a `key` entry: the new key, and the new key's signature over it."""
    key_doc = {"id": new_key.key_id(origin), "type": "Ed25519", "public": public_key_text(new_key.public)}
    proof = b64url_encode(new_key.sign(key_proof_input(origin, seq, key_doc)))
    return {"key": key_doc, "proof": proof}


def check_key_entry(entry: dict) -> tuple[str, Ed25519PublicKey]:
    """Check a `key` entry's body and proof; return the new key's id and public key."""
    body = entry["body"]
    if not isinstance(body, dict) or set(body) != {"key", "proof"}:
        raise EntryError("a key entry's body is {key, proof}")
    key_doc = body["key"]
    if not isinstance(key_doc, dict) or set(key_doc) != {"id", "type", "public"}:
        raise EntryError("a key entry's key is {id, type, public}")
    prefix = entry["origin"] + "#"
    if key_doc["type"] != "Ed25519" or not isinstance(key_doc["id"], str) or not key_doc[
        "id"
    ].startswith(prefix) or key_doc["id"] in (prefix, entry["key"]):
        raise EntryError("a key entry must name a new Ed25519 key of the origin")
    try:
        public = parse_public_key(key_doc["public"])
        proof = b64url_decode(body["proof"], SIGNATURE_CHARS, "proof")
        public.verify(proof, key_proof_input(entry["origin"], entry["seq"], key_doc))
    except (MalformedError, ValueError, InvalidSignature):
        raise EntryError("a key entry's proof does not verify with the new key") from None
    return key_doc["id"], public


# ---------------------------------------------------------------------------- chains


@dataclass
class ChainState:
    """What a reader knows of an origin's chain: the last seq and hash, and the current key.

    `strictly_read`: every entry given to `accept` is as `loads_strict` returned it (so the
    fast canonical path applies); otherwise each is canonicalized by rfc8785 itself."""

    origin: str
    seq: int
    hash: str | None
    key_id: str
    public: Ed25519PublicKey
    strictly_read: bool = False

    def accept(self, entry: object, *, verified_by: Ed25519PublicKey | None = None,
               shaped: tuple[dict, bytes] | None = None) -> dict:  # fmt: skip
        """Check the next entry against this state; on success advance the state and return it.

        Checks shape, origin, seq (no gap), prev (the hash held), the key in force and the
        signature; a `key` entry, once verified with the old key, makes its new key current.
        `verified_by`: a key this very entry's signature was already verified with
        (`signatures_valid`); the check is skipped only if that is the key in force.
        `shaped`: what `check_shape_encoded(entry, origin=self.origin, strictly_read=…)`
        returned for this very entry, when the caller checked its shape already.
        """
        if shaped is not None and shaped[0] is entry:
            entry, encoded = shaped
        else:
            entry, encoded = check_shape_encoded(entry, origin=self.origin,
                                                 strictly_read=self.strictly_read)  # fmt: skip
        if entry["seq"] != self.seq + 1:
            raise EntryError(f"expected entry {self.seq + 1}, got {entry['seq']}")
        if entry["prev"] != self.hash:
            raise EntryError(f"entry {entry['seq']}: prev does not match the entry before it")
        if entry["key"] != self.key_id:
            raise EntryError(f"entry {entry['seq']}: signed with {entry['key']}, not the key in force")
        _verify_unless_done(entry, self.public, verified_by, strictly_read=self.strictly_read)
        if entry["type"] == "key":
            self.key_id, self.public = check_key_entry(entry)
        self.seq = entry["seq"]
        self.hash = hash_bytes(encoded)
        return entry


def check_detached(entry: object, *, origin: str, key_id: str, public: Ed25519PublicKey,
                   strictly_read: bool = False,
                   verified_by: Ed25519PublicKey | None = None) -> tuple[dict, str]:  # fmt: skip
    """Check one entry without its neighbours: shape, origin, size, the key in force at its
    seq (`key_id`, `public`) and its signature; return it and its hash. For the entries of a
    snapshot, which are not consecutive: their `prev` cannot be checked, only their origin's
    signature. A `key` entry's hand-over is the caller's to check (`check_key_entry`).
    `verified_by` as for `ChainState.accept`."""
    entry, encoded = check_shape_encoded(entry, origin=origin, strictly_read=strictly_read)
    if entry["key"] != key_id:
        raise EntryError(f"entry {entry['seq']}: signed with {entry['key']}, not the key in force")
    _verify_unless_done(entry, public, verified_by, strictly_read=strictly_read)
    return entry, hash_bytes(encoded)


def verify_chain(
    entries: Iterable[dict], *, origin: str, key_id: str, public: Ed25519PublicKey,
    after_seq: int = 0, after_hash: str | None = None,
    on_entry: Callable[[dict], None] | None = None,
) -> ChainState:
    """Verify entries in order from (after_seq, after_hash), the first key being `key_id`."""
    state = ChainState(origin, after_seq, after_hash, key_id, public)
    for entry in entries:
        state.accept(entry)
        if on_entry is not None:
            on_entry(entry)
    return state

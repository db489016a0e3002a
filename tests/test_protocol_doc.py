"""docs/protocol.md says what the code does: every worked example is recomputed here.

Each example in the doc sits in a fenced block after a marker line `<!-- example: NAME -->`.
This module rebuilds every one of them from the project's own code, with the same fixed keys,
times and nonces (Ed25519 is deterministic), and compares: JSON examples after parsing, bytes,
hashes, signatures and HTTP headers as exact text. The `<!-- constants -->` table is compared
with the module constants it names. If the doc and the code drift apart, a test here fails.
"""

import base64
import importlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, algorithms

from federation import httpsig
from federation.encoding import b64url_decode, b64url_encode
from federation.entries import (
    MAX_ENTRY_BYTES,
    ChainState,
    canonical,
    entry_hash,
    key_entry_body,
    key_proof_input,
    sign_entry,
    signing_input,
)
from federation.httpsig import (
    COVERED,
    LABEL,
    MemoryNonces,
    SignatureError,
    sign_request,
    verify_request,
)
from federation.identity import node_document
from federation.items import STATE_MAX_BYTES, validate_state
from federation.keys import NodeKey, fingerprint, public_key_text
from federation.snapshot import check_basis, check_page
from federation.strictjson import MAX_DEPTH
from server.feed import (
    FEED_LIMIT_DEFAULT,
    FEED_LIMIT_MAX,
    FEED_MAX_BYTES,
    Head,
    SnapshotPage,
    page_json,
    snapshot_json,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# The fixed test key of the shared entry vectors, and a second fixed key for the rotation.
SEED_1 = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
SEED_2 = bytes.fromhex("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f")
ORIGIN = "https://eastside.example"
PEER = "https://westside.example"

# What the shared vectors say about entries 1–3 (hard-coded: tests run without the vectors).
VECTOR_PUBLIC = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
VECTOR_FINGERPRINT = "SHA256:Vkdap1RjR0wChd9dvyvKtz2mUTWIOem3dIGy6rEHcIw"
VECTOR_SIGS = (
    "ibxmPAK3cLTElsT3mNZRVkbqZxW_-e-f9kwoGC8sikW3wghNbk3qEpVMifhTWRdGUpkRA6s4EAE9tUcoEl7XBQ",
    "ENpXYnrXLZydgoy-pEjWRMByNg9TsOso8EPzi9tP95wHsmfMQl7aUgafIOlYnDd51gFZWj5WbWKP8sAC_e8CBg",
    "gKV6CKsZQ0wWRR9erwzDk9tm09-KTpEW7BB0U5nJa3Jm8f4xIUuxzEsio2Kjm4H-ecx6JaZP_IVa0eEdsFjRDQ",
)
VECTOR_HASHES = (
    "sha256:qCiJas3OnvGwlQ6ZQLPZ8rDlp3-YOh7NErTR9GJA3do",
    "sha256:Sc_wP_4zEpTe5E-nOu2z17DyICsxIET0ErrT4TslSm8",
    "sha256:-K0NcpzBi4XWSTrVG09O8hsRmpUsX5VVGwitVU4wLvI",
)

RAMP = {
    "id": f"{ORIGIN}/items/0b9f3c1e-6a43-4f57-9a3e-2f1d7c5b8a10",
    "kind": "offer",
    "title": "Wheelchair ramp to lend",
    "body": "Aluminium, 2 m. Pick up on Elm Street \u2014 ask for Jo.",
    "category": "household",
    "tags": ["ramp", "loan"],
    "quantity": "1",
    "location": {"label": "Eastside", "geohash": "u33db"},
    "status": "open",
    "reach": "allies",
    "expires": "2026-12-24T00:00:00Z",
    "created": "2026-11-24T18:00:00Z",
    "updated": "2026-11-24T18:01:00Z",
    "version": 1,
    "author": "Jo",
}
RIDE = {
    "id": f"{ORIGIN}/items/7c2e9a4d-3b1f-4e8a-9c6d-5f0b1a2e3d4c",
    "kind": "need",
    "title": "Ride to the clinic on Tuesday",
    "body": "Appointment at 9:00; I use a folding wheelchair.",
    "category": "transport",
    "urgency": "urgent",
    "status": "open",
    "reach": "network",
    "hop_limit": 2,
    "expires": "2026-12-01T00:00:00Z",
    "created": "2026-11-24T18:05:00Z",
    "updated": "2026-11-24T18:05:00Z",
    "version": 1,
    "author": "Eastside Mutual Aid",
}

# The signed requests: Eastside (key 1) calling Westside, at a fixed time with fixed nonces.
REQUEST_TIME = datetime(2026, 11, 24, 18, 5, 0, tzinfo=UTC)
NONCE_GET = b64url_encode(bytes(range(16)))
NONCE_POST = b64url_encode(bytes(range(16, 32)))
GET_PATH = "/federation/feed?after=3&limit=100"
POST_PATH = "/federation/subscriptions"
POST_BODY = b'{"subscriber":"https://eastside.example"}'


def key_1() -> NodeKey:
    return NodeKey("main", Ed25519PrivateKey.from_private_bytes(SEED_1))


def key_2() -> NodeKey:
    return NodeKey("key2", Ed25519PrivateKey.from_private_bytes(SEED_2))


def build_entries() -> list[dict]:
    """Entries 1–3 (the shared vectors), the key rotation at 4, and an entry under the new key."""
    states = [
        RAMP,
        dict(RAMP, status="promised", updated="2026-11-24T18:02:00Z", version=2),
        dict(RAMP, status="fulfilled", updated="2026-11-24T18:03:00Z", version=3),
    ]
    entries: list[dict] = []
    prev = None
    for seq, state in enumerate(states, start=1):
        entry = sign_entry(origin=ORIGIN, seq=seq, prev=prev, type="item",
                           at=f"2026-11-24T18:0{seq}:00Z", body=state, key=key_1())  # fmt: skip
        entries.append(entry)
        prev = entry_hash(entry)
    rotation = sign_entry(origin=ORIGIN, seq=4, prev=prev, type="key", at="2026-11-24T18:04:00Z",
                          body=key_entry_body(ORIGIN, 4, key_2()), key=key_1())  # fmt: skip
    entries.append(rotation)
    entries.append(sign_entry(origin=ORIGIN, seq=5, prev=entry_hash(rotation), type="item",
                              at="2026-11-24T18:05:00Z", body=RIDE, key=key_2()))  # fmt: skip
    return entries


def key_example(key: NodeKey, seed: bytes) -> dict:
    return {"seed_hex": seed.hex(), "public": public_key_text(key.public),
            "fingerprint": fingerprint(key.public), "id": key.key_id(ORIGIN)}  # fmt: skip


def signed_get() -> httpx.Request:
    request = httpx.Request("GET", PEER + GET_PATH)
    return sign_request(request, key_1(), key_1().key_id(ORIGIN), now=REQUEST_TIME, nonce=NONCE_GET)


def signed_post() -> httpx.Request:
    request = httpx.Request("POST", PEER + POST_PATH, content=POST_BODY,
                            headers={"Content-Type": "application/json"})  # fmt: skip
    return sign_request(request, key_1(), key_1().key_id(ORIGIN), now=REQUEST_TIME,
                        nonce=NONCE_POST)  # fmt: skip


def signature_base(method: str, path: str, body: bytes | None, nonce: str) -> str:
    """What the library signs for these parameters, built on a fresh copy of the request."""
    request = httpx.Request(method, PEER + path, content=body)
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519)
    prepared = signer.prepare(request, key_id=key_1().key_id(ORIGIN), created=REQUEST_TIME,
                              nonce=nonce, label=LABEL, covered_component_ids=COVERED,
                              body=body, include_alg=True)  # fmt: skip
    return prepared.signature_base.decode("ascii")


def http_text(request: httpx.Request) -> str:
    """A request as the doc shows it: request line, the headers that matter, the body."""
    url = request.url
    target = url.raw_path.decode("ascii")
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {url.netloc.decode('ascii')}"]
    for name in ("Content-Type", "Content-Length", "Content-Digest", "Signature-Input", "Signature"):
        if name in request.headers:
            lines.append(f"{name}: {request.headers[name]}")
    if request.content:
        lines += ["", request.content.decode("utf-8")]
    return "\n".join(lines)


def node_document_after_rotation() -> dict:
    return node_document(
        base_url=ORIGIN, name="Eastside Mutual Aid",
        description="Neighbours helping neighbours on the east side.",
        keys=[("main", key_1().public, 4), ("key2", key_2().public, None)], version="0.1.0",
    )  # fmt: skip


def expected_examples() -> dict[str, object]:
    """Every marked example: a str is compared exactly, anything else as parsed JSON."""
    entries = build_entries()
    rotation = entries[3]
    texts = [canonical(entry).decode("utf-8") for entry in entries]
    get, post = signed_get(), signed_post()
    return {
        "key-1": key_example(key_1(), SEED_1),
        "key-2": key_example(key_2(), SEED_2),
        "entry-1-json": entries[0],
        "entry-1-signing-input": signing_input(entries[0]).decode("utf-8"),
        "entry-1-sig": entries[0]["sig"],
        "entry-1-canonical": texts[0],
        "entry-1-hash": entry_hash(entries[0]),
        "entry-2-json": entries[1],
        "entry-2-signing-input": signing_input(entries[1]).decode("utf-8"),
        "entry-2-hash": entry_hash(entries[1]),
        "entry-3-json": entries[2],
        "entry-3-hash": entry_hash(entries[2]),
        "key-proof-input": key_proof_input(ORIGIN, 4, rotation["body"]["key"]).decode("utf-8"),
        "key-entry-json": rotation,
        "key-entry-signing-input": signing_input(rotation).decode("utf-8"),
        "key-entry-hash": entry_hash(rotation),
        "entry-5-json": entries[4],
        "entry-5-hash": entry_hash(entries[4]),
        "node-document": node_document_after_rotation(),
        "feed-page": json.loads(page_json(ORIGIN, texts[4:], Head(5, entry_hash(entries[4])))),
        "feed-empty": json.loads(page_json(ORIGIN, [], Head(0, None))),
        # Entries 1–3 are the ramp, fulfilled: the ride (5) is all that is live.
        "snapshot-page": json.loads(snapshot_json(ORIGIN, SnapshotPage(
            Head(5, entry_hash(entries[4])), keys=[texts[3]], head_entry=texts[4],
            texts=[texts[4]], next=None))),  # fmt: skip
        "request-get": http_text(get),
        "request-get-signature-base": signature_base("GET", GET_PATH, None, NONCE_GET),
        "request-post": http_text(post),
        "request-post-signature-base": signature_base("POST", POST_PATH, POST_BODY, NONCE_POST),
    }


# ---------------------------------------------------------------------------- reading the doc


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_examples() -> dict[str, str]:
    """NAME → the text of the fenced block right after `<!-- example: NAME -->`."""
    found: dict[str, str] = {}
    pattern = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)
    for name, body in pattern.findall(doc_text()):
        assert name not in found, f"example {name} appears twice"
        found[name] = body
    markers = re.findall(r"<!-- example: ([a-z0-9-]+) -->", doc_text())
    assert len(markers) == len(found), "an example marker is not followed by a fenced block"
    return found


def doc_constants() -> list[tuple[str, str]]:
    """(`module.NAME` or `module.NAME["key"]`, value text) rows of the constants table."""
    text = doc_text()
    start = text.index("<!-- constants -->")
    end = text.index("<!-- /constants -->", start)
    rows = []
    for line in text[start:end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        rows.append((cells[0].strip("`"), cells[1].strip("`")))
    return rows


def resolve(reference: str) -> object:
    match = re.fullmatch(r"([a-z_.]+)\.([A-Z_0-9]+)(?:\[\"([a-z]+)\"\])?", reference)
    assert match, f"cannot read the constant reference {reference!r}"
    value = getattr(importlib.import_module(match[1]), match[2])
    return value[match[3]] if match[3] else value


def parse_value(text: str) -> object:
    """`300 s` and `90 days` are durations; anything else is a JSON literal."""
    duration = re.fullmatch(r"(\d+) (s|days)", text)
    if duration:
        unit = "seconds" if duration[2] == "s" else "days"
        return timedelta(**{unit: int(duration[1])})
    return json.loads(text)


# ---------------------------------------------------------------------------- the tests


def test_every_example_matches_the_code():
    """Each marked example is what the code produces, and every example is checked."""
    in_doc = doc_examples()
    expected = expected_examples()
    assert sorted(in_doc) == sorted(expected)
    for name, value in expected.items():
        if isinstance(value, str):
            assert in_doc[name] == value, f"example {name} differs from the code"
        else:
            shown = json.loads(in_doc[name])
            if name == "node-document":  # the software version moves with releases
                assert isinstance(shown["software"]["version"], str)
                shown["software"]["version"] = value["software"]["version"]
            assert shown == value, f"example {name} differs from the code"


def test_first_entries_are_the_shared_vectors():
    """Entries 1–3 of the doc are the shared test vectors, byte for byte."""
    entries = build_entries()
    assert public_key_text(key_1().public) == VECTOR_PUBLIC
    assert fingerprint(key_1().public) == VECTOR_FINGERPRINT
    assert tuple(entry["sig"] for entry in entries[:3]) == VECTOR_SIGS
    assert tuple(entry_hash(entry) for entry in entries[:3]) == VECTOR_HASHES


def test_doc_entries_form_a_valid_chain_through_the_rotation():
    """A reader that knows only the first key accepts entries 1–5 as shown, ending on key 2."""
    examples = doc_examples()
    shown = [json.loads(examples[name]) for name in
             ("entry-1-json", "entry-2-json", "entry-3-json", "key-entry-json", "entry-5-json")]  # fmt: skip
    state = ChainState(ORIGIN, 0, None, key_1().key_id(ORIGIN), key_1().public)
    for entry in shown:
        state.accept(entry)
        if entry["type"] == "item":
            validate_state(entry["body"], origin=ORIGIN)
    assert state.key_id == f"{ORIGIN}#key2" and state.hash == examples["entry-5-hash"]
    # The feed page example (after=4) holds entry 5, and its head is entry 5's hash.
    page = json.loads(examples["feed-page"])
    assert page["entries"] == shown[4:] and page["head"]["hash"] == examples["entry-5-hash"]


def test_doc_snapshot_is_taken_by_a_reader_that_pinned_only_the_first_key():
    """The snapshot example passes a reader's checks (docs/protocol.md §8.1): its key entry
    hands over from key 1, so entry 5 verifies with key 2, and its head entry hashes to the
    head, where the reader's cursor will stand."""
    page = json.loads(doc_examples()["snapshot-page"])
    basis = check_basis(page, origin=ORIGIN, pinned=lambda seq: (key_1().key_id(ORIGIN), key_1().public))
    assert (basis.head_seq, basis.head_hash) == (5, doc_examples()["entry-5-hash"])
    assert basis.key_at(4)[0] == f"{ORIGIN}#main" and basis.key_at(5)[0] == f"{ORIGIN}#key2"
    entries, following = check_page(page, basis, after=0)
    assert entries == [json.loads(doc_examples()["entry-5-json"])] and following is None


class ShownRequest:
    """A request as the doc shows it, parsed back: method, target, headers, body."""

    def __init__(self, text: str) -> None:
        head, _, body = text.partition("\n\n")
        request_line, *header_lines = head.split("\n")
        self.method, self.target, _ = request_line.split(" ")
        self.headers = [tuple(line.split(": ", 1)) for line in header_lines]
        self.body = body.encode("utf-8")

    def verify(self, now: datetime, *, body: bytes | None = None, nonces=None):
        """Verify it as Westside would: target rebuilt from Westside's base URL."""
        return verify_request(
            method=self.method, target_uri=PEER + self.target, headers=self.headers,
            body=self.body if body is None else body, lookup={key_1().key_id(ORIGIN): key_1().public}.get,
            now=now, nonces=MemoryNonces() if nonces is None else nonces,
        )  # fmt: skip


@pytest.mark.parametrize("name, path", [("request-get", GET_PATH), ("request-post", POST_PATH)])
def test_signed_request_examples_verify(name, path):
    """The doc's requests verify at their created time, once, and only within the window."""
    examples = doc_examples()
    shown = ShownRequest(examples[name])
    assert shown.target == path
    # At its created time it verifies, as Eastside's main key; the same nonce again is a replay.
    nonces = MemoryNonces()
    verified = shown.verify(REQUEST_TIME, nonces=nonces)
    assert verified.key_id == f"{ORIGIN}#main" and verified.created == 1795543500
    with pytest.raises(SignatureError, match="replay"):
        shown.verify(REQUEST_TIME, nonces=nonces)
    # Within the window it verifies; one second past it, it does not.
    window = httpsig.CREATED_WINDOW
    shown.verify(REQUEST_TIME + window)
    shown.verify(REQUEST_TIME - window)
    with pytest.raises(SignatureError):
        shown.verify(REQUEST_TIME + window + timedelta(seconds=1))
    # A body swapped under the signature is refused (its Content-Digest no longer matches).
    if shown.body:
        with pytest.raises(SignatureError):
            shown.verify(REQUEST_TIME, body=shown.body.replace(b"eastside", b"westside"))
    # The signature base shown is what the Signature header signs.
    signature = dict(shown.headers)["Signature"]
    raw = base64.b64decode(signature.removeprefix(f"{LABEL}=:").removesuffix(":"))
    key_1().public.verify(raw, examples[f"{name}-signature-base"].encode("ascii"))


def test_key_example_values_decode_strictly():
    examples = doc_examples()
    for name in ("key-1", "key-2"):
        key = json.loads(examples[name])
        assert len(b64url_decode(key["public"], 43)) == 32


REQUIRED_CONSTANTS = {
    "federation.identity.PROTOCOL", "federation.entries.VERSION",
    "federation.entries.ENTRY_FIELDS", "federation.entries.ENTRY_TYPES",
    'federation.entries.MAX_ENTRY_BYTES["item"]', 'federation.entries.MAX_ENTRY_BYTES["relay"]',
    'federation.entries.MAX_ENTRY_BYTES["key"]', "federation.entries.SEQ_MAX",
    "federation.encoding.KEY_CHARS", "federation.encoding.SIGNATURE_CHARS",
    "federation.encoding.HASH_CHARS", "federation.strictjson.MAX_DEPTH",
    "federation.httpsig.CREATED_WINDOW", "federation.httpsig.NONCE_MIN_CHARS",
    "federation.httpsig.NONCE_MAX_CHARS", "federation.httpsig.NONCE_MEMORY_SECONDS",
    "federation.httpsig.COVERED", "federation.httpsig.COVERED_WITH_BODY",
    "federation.httpsig.LABEL", "server.feed.FEED_LIMIT_DEFAULT", "server.feed.FEED_LIMIT_MAX",
    "server.feed.FEED_MAX_BYTES", "server.app.BODY_LIMIT_FEDERATION",
    "federation.items.TITLE_MAX", "federation.items.BODY_MAX", "federation.items.TAGS_MAX",
    "federation.items.TAG_MAX", "federation.items.QUANTITY_MAX", "federation.items.LABEL_MAX",
    "federation.items.AUTHOR_MAX", "federation.items.GEOHASH_MAX",
    "federation.items.GEOHASH_ALPHABET", "federation.items.HOP_LIMIT_MIN",
    "federation.items.HOP_LIMIT_MAX", "federation.items.HOP_LIMIT_DEFAULT",
    "federation.items.EXPIRY_DEFAULT", "federation.items.EXPIRY_MAX",
    "federation.items.VERSION_MAX", "federation.items.STATE_MAX_BYTES",
    "federation.items.KINDS", "federation.items.CATEGORIES", "federation.items.URGENCIES",
    "federation.items.STATUSES", "federation.items.REACHES",
}  # fmt: skip


def test_constants_table_matches_the_code():
    """Every limit and setting the doc states is the value the code enforces."""
    rows = doc_constants()
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a constant is listed twice"
    assert REQUIRED_CONSTANTS <= set(names), sorted(REQUIRED_CONSTANTS - set(names))
    for reference, text in rows:
        actual = resolve(reference)
        stated = parse_value(text)
        if isinstance(actual, tuple):
            actual = list(actual)
        assert stated == actual and type(stated) is type(actual), (
            f"{reference}: the doc says {text}, the code has {actual!r}"
        )


def test_prose_states_the_same_numbers():
    """The sentences that repeat a limit say what the constants table (and the code) say."""
    text = " ".join(doc_text().split())
    window = int(httpsig.CREATED_WINDOW.total_seconds())
    item, relay, key = (MAX_ENTRY_BYTES[name] for name in ("item", "relay", "key"))
    phrases = [
        f"within ±{window} s",
        f"{httpsig.NONCE_MIN_CHARS} to {httpsig.NONCE_MAX_CHARS} characters",
        f"in the last {httpsig.NONCE_MEMORY_SECONDS} s",
        f"1 to {FEED_LIMIT_MAX}, default {FEED_LIMIT_DEFAULT}",
        f"a response of 1 MiB ({FEED_MAX_BYTES} bytes)",
        f"at most {item} bytes for an `item` entry, {relay} for a `relay` entry and {key} for a "
        "`key` entry",
        f"nests deeper than {MAX_DEPTH} levels",
        f"at most {STATE_MAX_BYTES} bytes",
    ]
    for phrase in phrases:
        assert phrase in text, f"the doc no longer says {phrase!r}"

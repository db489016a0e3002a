"""Server-to-server request signatures (DESIGN §4.4) as federation/httpsig.py enforces them.

Requests are built with httpx and verified with `verify_request` directly, as the receiver does
(no sockets). Each test signs a good request, shows it verifies, then changes one thing and
shows it is refused with a SignatureError. The last tests verify RFC 9421 Appendix B.2.6
itself, so the verifier is held to the RFC and not only to our own signer.
"""

import base64
import datetime
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.encoding import KEY_CHARS, b64url_decode, b64url_encode
from federation.httpsig import (
    COVERED,
    LABEL,
    ClockedVerifier,
    MemoryNonces,
    SignatureError,
    VerifiedRequest,
    claimed_key_id,
    new_nonce,
    sign_request,
    verify_request,
)
from federation.keys import NodeKey

NOW = datetime.datetime(2026, 11, 24, 18, 0, 0, tzinfo=datetime.UTC)
EAST = "https://east.test"  # the receiver's base_url
WEST = "https://west.test"  # the signer
KEY_ID = f"{WEST}#main"
# Fixed test key pairs: West's own, and another one nobody pinned for West.
WEST_KEY = NodeKey("main", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
OTHER_KEY = NodeKey("main", Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
NONCE = b64url_encode(bytes(range(16)))  # 22 characters, as new_nonce makes them
FEED = f"{EAST}/federation/feed?after=0&limit=10"
INBOX = f"{EAST}/federation/inbox"
BODY = b'{"type": "subscription", "state": "accepted"}'

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


def pinned(key_id: str):
    """The receiver's pinned keys: West's only."""
    return WEST_KEY.public if key_id == KEY_ID else None


def get(url: str = FEED) -> httpx.Request:
    return httpx.Request("GET", url)


def post(url: str = INBOX, body: bytes = BODY) -> httpx.Request:
    return httpx.Request("POST", url, content=body, headers={"Content-Type": "application/json"})


def signed(request: httpx.Request | None = None, *, key: NodeKey = WEST_KEY, key_id: str = KEY_ID,
           now: datetime.datetime = NOW, nonce: str = NONCE) -> httpx.Request:  # fmt: skip
    """A request signed the way nodes sign them (a GET of the feed by default)."""
    return sign_request(request or get(), key, key_id, now=now, nonce=nonce)


def signed_with(request: httpx.Request, *, algorithm=algorithms.ED25519, covered=COVERED,
                nonce: str | None = NONCE, expires: datetime.datetime | None = None,
                body: bytes | None = None, label: str = LABEL, append: bool = False,
                include_alg: bool = True) -> httpx.Request:  # fmt: skip
    """Sign with the library directly, with West's key, to make what sign_request never would."""
    resolver = MappingKeyResolver(public_keys={}, private_keys={KEY_ID: WEST_KEY.private})
    HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=resolver).sign(
        request, key_id=KEY_ID, created=NOW, expires=expires, nonce=nonce, label=label,
        covered_component_ids=covered, body=body, include_alg=include_alg,
        append_if_signature_exists=append, use_existing_digest="content-digest" in request.headers,
    )  # fmt: skip
    return request


def verify(request: httpx.Request, *, method: str | None = None, target_uri: str | None = None,
           headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
           lookup=pinned, now: datetime.datetime = NOW,
           nonces: MemoryNonces | None = None) -> VerifiedRequest:  # fmt: skip
    """Verify `request` as the receiver would, with any one part replaced (a fresh nonce store
    unless one is given)."""
    return verify_request(
        method=method or request.method,
        target_uri=target_uri or str(request.url),
        headers=request.headers.multi_items() if headers is None else headers,
        body=request.content if body is None else body,
        lookup=lookup, now=now, nonces=MemoryNonces() if nonces is None else nonces,
    )  # fmt: skip


def refused(request: httpx.Request, match: str | None = None, **changes) -> SignatureError:
    """`request` (with `changes`) must be refused with a SignatureError that says why."""
    with pytest.raises(SignatureError, match=match) as caught:
        verify(request, **changes)
    assert str(caught.value).startswith("signature refused: ")
    assert len(str(caught.value)) > len("signature refused: ")
    return caught.value


def edited(request: httpx.Request, changes: dict[str, str | None]) -> list[tuple[str, str]]:
    """The request's field lines with some replaced (or dropped, for None)."""
    fields = [(name, changes.get(name, value)) for name, value in request.headers.multi_items()]
    added = [(name, value) for name, value in changes.items()
             if value is not None and name not in request.headers]  # fmt: skip
    return [(name, value) for name, value in fields if value is not None] + added


def signature_input(request: httpx.Request) -> str:
    return request.headers["signature-input"]


# Round trips


def test_a_signed_get_round_trips():
    """A GET signs @method and @target-uri with created, keyid, alg and nonce, and verifies."""
    request = signed()
    assert signature_input(request) == (
        f'aidnode=("@method" "@target-uri");created={int(NOW.timestamp())};keyid="{KEY_ID}";'
        f'alg="ed25519";nonce="{NONCE}"'
    )
    assert "content-digest" not in request.headers
    asked = []

    def lookup(key_id):
        asked.append(key_id)
        return pinned(key_id)

    verified = verify(request, lookup=lookup)
    assert verified == VerifiedRequest(key_id=KEY_ID, nonce=NONCE, created=int(NOW.timestamp()))
    # The key was looked up by the signed key id.
    assert asked == [KEY_ID]


def test_a_signed_post_round_trips_with_its_content_digest():
    """A POST also signs a sha-256 Content-Digest of its body (RFC 9530)."""
    request = signed(post())
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert request.headers["content-digest"] == f"sha-256=:{digest}:"
    assert signature_input(request).startswith('aidnode=("@method" "@target-uri" "content-digest");')
    assert verify(request) == VerifiedRequest(KEY_ID, NONCE, int(NOW.timestamp()))


def test_sign_request_makes_a_fresh_nonce_by_default():
    first, second = new_nonce(), new_nonce()
    assert len(first) == 22 and first != second
    b64url_decode(first, 22, "nonce")  # strict base64url of 16 bytes
    # Unasked, sign_request signs with such a nonce, and it verifies.
    verified = verify(sign_request(get(), WEST_KEY, KEY_ID, now=NOW))
    assert len(verified.nonce) == 22 and verified.nonce != NONCE


def test_the_host_header_is_not_what_is_signed():
    """Behind a reverse proxy the Host the app sees changes; the rebuilt target URI does not."""
    request = signed()
    assert verify(request, headers=edited(request, {"host": "127.0.0.1:8765"})).key_id == KEY_ID


def test_a_non_ascii_field_line_does_not_break_verification():
    """Field values arrive as Latin-1 text: one nobody signed must not stop a good request,
    and one in the signature fields is a SignatureError, not a crash."""
    request = signed()
    note = edited(request, {"user-agent": "caf\xe9"})
    assert verify(request, headers=note).key_id == KEY_ID
    refused(request, headers=edited(request, {"signature-input": signature_input(request) + "\xe9"}))
    refused(request, headers=edited(request, {"signature": "aidnode=:\u20ac:"}))


# The body


@pytest.mark.parametrize("change", ["another body", "no body", "digest removed",
                                    "digest of the new body"])  # fmt: skip
def test_a_body_swapped_under_a_valid_signature_is_refused(change):
    """DESIGN §4.4: the Content-Digest is checked against the body itself."""
    request = signed(post())
    assert verify(request).key_id == KEY_ID
    swapped = b'{"type": "subscription", "state": "rejected"}'
    if change == "another body":
        # Same headers, Content-Digest and Signature included; other bytes.
        refused(request, "Content-Digest does not match", body=swapped)
    elif change == "no body":
        refused(request, "Content-Digest does not match", body=b"")
    elif change == "digest removed":
        refused(request, "content-digest", headers=edited(request, {"content-digest": None}))
    else:
        # A digest that matches the new body, under the old signature.
        matching = ContentDigest.create(swapped)
        assert ContentDigest.verify(matching, swapped) is None
        refused(request, body=swapped, headers=edited(request, {"content-digest": matching}))


def test_a_body_added_under_a_bodiless_signature_is_refused():
    request = signed()
    refused(request, "content-digest", body=BODY)
    # Even with a Content-Digest for it that the signature does not cover.
    with_digest = edited(request, {"content-digest": ContentDigest.create(BODY)})
    refused(request, "content-digest", body=BODY, headers=with_digest)


@pytest.mark.parametrize("digest_field", [False, True])
def test_a_body_must_be_covered_by_the_signature(digest_field):
    """A POST whose signature leaves out content-digest is refused, with or without the field."""
    request = post()
    if digest_field:
        request.headers["Content-Digest"] = ContentDigest.create(BODY)
    signed_with(request, covered=COVERED)
    # The signature itself is good: the same request without its body would verify.
    assert verify(request, body=b"", headers=edited(request, {"content-digest": None})).nonce == NONCE
    refused(request, "content-digest")


# Replays


def test_a_replayed_nonce_is_refused():
    request = signed()
    nonces = MemoryNonces()
    assert verify(request, nonces=nonces).nonce == NONCE
    refused(request, "already used", nonces=nonces)
    # With a fresh store it verifies: it is the nonce check that refused it.
    assert verify(request, nonces=MemoryNonces()).nonce == NONCE


def test_a_forged_request_does_not_burn_the_nonce():
    """The nonce is remembered only once the signature verifies."""
    nonces = MemoryNonces()
    refused(signed(key=OTHER_KEY), nonces=nonces)
    assert verify(signed(), nonces=nonces).nonce == NONCE


def test_nonces_are_remembered_per_key_id():
    north_id = "https://north.test#main"
    keys = {KEY_ID: WEST_KEY.public, north_id: OTHER_KEY.public}
    nonces = MemoryNonces()
    assert verify(signed(), lookup=keys.get, nonces=nonces).key_id == KEY_ID
    north = signed(key=OTHER_KEY, key_id=north_id)
    assert verify(north, lookup=keys.get, nonces=nonces).key_id == north_id


def test_without_a_nonce_store_the_caller_checks_replays():
    """The node passes nonces=None and remembers the returned nonce in SQLite itself."""
    request = signed()
    for _ in range(2):
        verified = verify_request(
            method="GET", target_uri=FEED, headers=request.headers.multi_items(), body=b"",
            lookup=pinned, now=NOW, nonces=None,
        )  # fmt: skip
        assert verified.nonce == NONCE


def test_memory_nonces_forget_after_600_seconds():
    nonces = MemoryNonces()
    assert nonces.remember(KEY_ID, NONCE, 1000)
    assert not nonces.remember(KEY_ID, NONCE, 1000 + 599)
    assert nonces.remember(KEY_ID, NONCE, 1000 + 601)
    assert not nonces.remember(KEY_ID, NONCE, 1000 + 602)


# Time


@pytest.mark.parametrize("offset", [-300, -299, 0, 299, 300])
def test_created_within_300_seconds_is_accepted(offset):
    request = signed(now=NOW + datetime.timedelta(seconds=offset))
    assert verify(request).created == int(NOW.timestamp()) + offset


@pytest.mark.parametrize("offset", [-301, 301, -86_400])
def test_created_further_than_300_seconds_is_refused(offset):
    request = signed(now=NOW + datetime.timedelta(seconds=offset))
    refused(request, "300 s")
    # The same request verifies at the time it was signed.
    assert verify(request, now=NOW + datetime.timedelta(seconds=offset)).nonce == NONCE


def test_expires_is_refused():
    request = signed_with(get(), expires=NOW + datetime.timedelta(seconds=60))
    assert 'expires=' in signature_input(request)
    refused(request, "expires")


# What the signature is bound to


@pytest.mark.parametrize("target_uri", [
    "https://north.test/federation/feed?after=0&limit=10",  # another node
    "http://east.test/federation/feed?after=0&limit=10",  # another scheme
    "https://east.test:8443/federation/feed?after=0&limit=10",  # another port
    f"{EAST}/federation/cursor?after=0&limit=10",  # another path
    f"{EAST}/federation/feed?after=5&limit=10",  # another query
    f"{EAST}/federation/feed",  # no query
])  # fmt: skip
def test_a_signature_is_bound_to_its_target_uri(target_uri):
    request = signed()
    assert verify(request, target_uri=FEED).key_id == KEY_ID
    refused(request, target_uri=target_uri)


@pytest.mark.parametrize("method", ["POST", "DELETE", "HEAD"])
def test_a_signature_is_bound_to_its_method(method):
    refused(signed(), method=method)


def test_an_unknown_key_id_is_refused_saying_which_key():
    error = refused(signed(), "is not a key this node takes", lookup=lambda key_id: None)
    assert repr(KEY_ID) in str(error)
    long_id = "https://west.test#" + "k" * 5000  # an id the sender chose, cut in the message
    error = refused(signed(key_id=long_id), "is not a key", lookup=lambda key_id: None)
    assert len(str(error)) < 400


def test_a_signature_by_another_key_is_refused():
    """A node cannot sign under a key id whose pinned key is not its own."""
    request = signed(key=OTHER_KEY)
    refused(request)
    assert verify(request, lookup=lambda key_id: OTHER_KEY.public).key_id == KEY_ID


# Exactly one signature, of the protocol's shape


def test_a_second_signature_is_refused():
    """The protocol allows exactly one signature, even when both would verify."""
    request = signed_with(signed(), label="second", append=True)
    assert signature_input(request).startswith('aidnode=("@method" "@target-uri");')
    assert ', second=("@method" "@target-uri");' in signature_input(request)
    refused(request, "Multiple signatures")


def test_the_same_label_twice_is_refused():
    request = signed()
    twice = request.headers.multi_items() + [
        ("signature-input", signature_input(request)), ("signature", request.headers["signature"]),
    ]  # fmt: skip
    refused(request, "Signature-Input", headers=twice)


@pytest.mark.parametrize("nonce", ["n" * 22, "n" * 128])
def test_nonces_of_22_to_128_characters_are_accepted(nonce):
    assert verify(signed(nonce=nonce)).nonce == nonce


@pytest.mark.parametrize("nonce", ["n" * 21, "n" * 129, ""])
def test_nonces_too_short_or_too_long_are_refused(nonce):
    request = signed_with(get(), nonce=nonce)
    assert f'nonce="{nonce}"' in signature_input(request)
    refused(request, "nonce must be 22 to 128")


def test_a_signature_without_a_nonce_is_refused():
    request = signed_with(get(), nonce=None)
    assert "nonce" not in signature_input(request)
    refused(request, "nonce must be")


def test_another_algorithm_is_refused():
    """A signature naming another `alg` is refused even when its bytes are good Ed25519."""

    class Mislabelled(algorithms.ED25519):
        algorithm_id = "rsa-pss-sha512"

    request = signed_with(get(), algorithm=Mislabelled)
    assert 'alg="rsa-pss-sha512"' in signature_input(request)
    refused(request, "algorithm")
    # Leaving `alg` out is allowed (RFC 9421 §2.3): the receiver uses Ed25519 regardless.
    assert verify(signed_with(get(), include_alg=False)).nonce == NONCE


@pytest.mark.parametrize("make, covered", [
    (get, ("@method", "@target-uri", "@authority")),
    (get, ("@method", "@target-uri", "host")),
    (post, ("@method", "@target-uri", "content-type")),
])  # fmt: skip
def test_extra_covered_components_are_refused(make, covered):
    request = make()
    request = signed_with(request, covered=covered, body=request.content or None)
    refused(request, "components other than the protocol's")


# Malformed headers


def _broken(request: httpx.Request, case: str) -> list[tuple[str, str]]:
    sig_input = signature_input(request)
    return {
        "garbage signature-input": edited(request, {"signature-input": "this is (not a dictionary"}),
        "signature-input not a list": edited(request, {"signature-input": "aidnode=1"}),
        "signature not a byte sequence": edited(request, {"signature": 'aidnode="not bytes"'}),
        "signature too short": edited(request, {"signature": "aidnode=:AAAA:"}),
        "signature missing": edited(request, {"signature": None}),
        "signature-input missing": edited(request, {"signature-input": None}),
        "both missing": edited(request, {"signature": None, "signature-input": None}),
        "empty dictionaries": edited(request, {"signature": "", "signature-input": ""}),
        "labels differ": edited(request, {"signature": request.headers["signature"].replace(
            "aidnode=", "other=")}),
        "created not an integer": edited(request, {"signature-input": sig_input.replace(
            f"created={int(NOW.timestamp())}", f'created="{int(NOW.timestamp())}"')}),
        "no keyid": edited(request, {"signature-input": sig_input.replace(
            f';keyid="{KEY_ID}"', "")}),
        "unknown parameter": edited(request, {"signature-input": sig_input + ";extra=1"}),
    }[case]  # fmt: skip


@pytest.mark.parametrize("case", [
    "garbage signature-input", "signature-input not a list", "signature not a byte sequence",
    "signature too short", "signature missing", "signature-input missing", "both missing",
    "empty dictionaries", "labels differ", "created not an integer", "no keyid",
    "unknown parameter",
])  # fmt: skip
def test_malformed_signature_fields_are_signature_errors(case):
    request = signed()
    refused(request, headers=_broken(request, case))


SF_CHARS = 'aidnoe=();:"@-,. *?!01/+_\\\t\xe9\x00'
junk = st.text(max_size=40) | st.text(alphabet=SF_CHARS, max_size=40)


@st.composite
def field_values(draw, valid: str) -> str:
    """Arbitrary text, or the valid value with a slice of it replaced by arbitrary text."""
    text = draw(junk)
    if draw(st.booleans()):
        return text
    start = draw(st.integers(0, len(valid)))
    end = draw(st.integers(start, len(valid)))
    return valid[:start] + text + valid[end:]


VALID = signed(post())


@PROPERTY_SETTINGS
@given(field_values(VALID.headers["signature-input"]), field_values(VALID.headers["signature"]))
def test_junk_signature_fields_only_raise_signature_error(sig_input, signature):
    headers = edited(VALID, {"signature-input": sig_input, "signature": signature})
    try:
        verified = verify(VALID, headers=headers)
    except SignatureError as error:
        assert str(error).startswith("signature refused: ")
    else:
        # Only an untouched pair can verify.
        assert (sig_input, signature) == (VALID.headers["signature-input"],
                                          VALID.headers["signature"])  # fmt: skip
        assert verified.key_id == KEY_ID


# RFC 9421 Appendix B.2.6, through the library's own verify API.
# The vector covers date, @path, @authority and more, not the protocol's components, so it
# goes through ClockedVerifier (the library's verifier with our clock and window), not
# verify_request (which would refuse it for covering other components and having no nonce).

VECTOR = json.loads((Path(__file__).parent / "vectors" / "rfc9421-b26.json").read_text())
VECTOR_CREATED = datetime.datetime(2021, 4, 20, 2, 7, 53, tzinfo=datetime.UTC)


def vector_request(*, method: str | None = None, url: str | None = None,
                   **headers: str) -> httpx.Request:  # fmt: skip
    """The vector's request, with a value changed (header names with `_` for `-`)."""
    given = VECTOR["request"]
    fields = dict(given["headers"])
    for name, value in headers.items():
        fields[name.replace("_", "-").title()] = value
    return httpx.Request(method or given["method"], url or given["url"], headers=fields,
                         content=given["body"].encode())  # fmt: skip


def verify_vector(request: httpx.Request, now: datetime.datetime = VECTOR_CREATED):
    jwk = VECTOR["key"]
    public = Ed25519PrivateKey.from_private_bytes(b64url_decode(jwk["d"], KEY_CHARS)).public_key()
    assert public.public_bytes_raw() == b64url_decode(jwk["x"], KEY_CHARS)
    resolver = MappingKeyResolver(public_keys={jwk["kid"]: public}, private_keys={})
    verifier = ClockedVerifier(now=now, signature_algorithm=algorithms.ED25519,
                               key_resolver=resolver)  # fmt: skip
    return verifier.verify(request, max_age=None)


def test_rfc9421_b26_verifies():
    [result] = verify_vector(vector_request())
    assert result.label == "sig-b26" and result.parameters["keyid"] == "test-key-ed25519"
    # The library rebuilt the RFC's signature base exactly.
    base = "\n".join(f"{name}: {value}" for name, value in result.covered_components.items())
    assert base == VECTOR["signature_base"]
    # The query is not covered by this signature, so changing it changes nothing.
    assert verify_vector(vector_request(url="https://example.com/foo?param=Other"))


@pytest.mark.parametrize("change", [
    {"method": "PUT"},
    {"url": "https://example.com/bar?param=Value&Pet=dog"},  # @path
    {"url": "https://example.org/foo?param=Value&Pet=dog", "host": "example.org"},  # @authority
    {"date": "Tue, 20 Apr 2021 02:07:56 GMT"},
    {"content_type": "text/plain"},
    {"content_length": "19"},
])  # fmt: skip
def test_rfc9421_b26_refuses_any_changed_covered_value(change):
    with pytest.raises(InvalidSignature):
        verify_vector(vector_request(**change))


def test_rfc9421_b26_is_refused_outside_300_seconds():
    assert verify_vector(vector_request(), now=VECTOR_CREATED + datetime.timedelta(seconds=300))
    with pytest.raises(InvalidSignature, match="300 s"):
        verify_vector(vector_request(), now=datetime.datetime(2021, 4, 20, 2, 13, 0,
                                                               tzinfo=datetime.UTC))  # fmt: skip
    with pytest.raises(InvalidSignature, match="300 s"):
        verify_vector(vector_request(), now=VECTOR_CREATED - datetime.timedelta(seconds=301))


def test_the_claimed_key_id_is_read_without_verifying():
    header = 'sig1=("@method" "@target-uri");created=1;keyid="https://x.example#main";nonce="n"'
    assert claimed_key_id(header) == "https://x.example#main"
    for bad in ("", "garbage(((", 'sig1=1', 'a=("x");keyid=2', 'a=("x");keyid="k", b=("y");keyid="j"',
                "ünïcode=1"):  # fmt: skip
        assert claimed_key_id(bad) is None

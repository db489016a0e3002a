"""Server-to-server request signatures: RFC 9421 HTTP Message Signatures (DESIGN §4.4).

Every request between nodes carries exactly one signature, algorithm `ed25519`, whose `keyid`
is a key id of the sending node, covering `@method`, `@target-uri` and, with a body,
`content-digest` (RFC 9530, sha-256), with `created` and a `nonce` of at least 22 characters.
Signing and verifying are done by the `http-message-signatures` package; this module fixes the
policy around it:

- the receiver rebuilds `@target-uri` from its own configured base_url plus the path and query
  (never from Host or X-Forwarded-*), so a signature works behind a reverse proxy and cannot
  be replayed at another node;
- `created` must be within ±300 s of the receiver's clock (the library's own defaults are 5 s of
  skew and a day of age; both are set here), and the clock is injectable;
- the body's Content-Digest is checked against the body itself (`verify(..., body=...)`);
- a (keyid, nonce) pair seen in the last 600 s is a replay: remembering them is the caller's
  job (`NonceStore`), so that it survives restarts.
"""

import datetime
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import http_sf
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from .encoding import b64url_encode
from .errors import ProtocolError
from .keys import NodeKey

CREATED_WINDOW = datetime.timedelta(seconds=300)
NONCE_MEMORY_SECONDS = 600
NONCE_MIN_CHARS = 22
NONCE_MAX_CHARS = 128
COVERED = ("@method", "@target-uri")
COVERED_WITH_BODY = ("@method", "@target-uri", "content-digest")
LABEL = "aidnode"


class SignatureError(ProtocolError):
    """A request's signature is missing, malformed, stale, replayed or wrong: answer 401."""


class NonceStore(Protocol):
    """Remembers (keyid, nonce) pairs for NONCE_MEMORY_SECONDS; answers whether one is new."""

    def remember(self, key_id: str, nonce: str, now: int) -> bool: ...


class MemoryNonces:
    """A NonceStore in memory, for tools and tests (the node keeps its nonces in SQLite, so
    a restart does not reopen the replay window)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def remember(self, key_id: str, nonce: str, now: int) -> bool:
        if len(self._seen) > 10_000:
            self._seen = {k: t for k, t in self._seen.items() if t > now - NONCE_MEMORY_SECONDS}
        seen_at = self._seen.get((key_id, nonce))
        if seen_at is not None and seen_at > now - NONCE_MEMORY_SECONDS:
            return False
        self._seen[(key_id, nonce)] = now
        return True


class _Signing(HTTPSignatureKeyResolver):
    def __init__(self, key: NodeKey) -> None:
        self.key = key

    def resolve_private_key(self, key_id: str):
        return self.key.private


class _Lookup(HTTPSignatureKeyResolver):
    def __init__(self, lookup: Callable[[str], Ed25519PublicKey | None]) -> None:
        self.lookup = lookup
        self.key_id: str | None = None

    def resolve_public_key(self, key_id: str):
        self.key_id = key_id
        public = self.lookup(key_id)
        if public is None:  # said here, not as the library's "Unable to resolve verification key"
            raise InvalidSignature(f"{key_id[:200]!r} is not a key this node takes for this"
                                   " request (from a node it does not know, or does not trust)")
        return public


class ClockedVerifier(HTTPMessageVerifier):
    """The library's verifier with the protocol's ±300 s window on `created`, read against an
    injected clock instead of the wall clock."""

    max_clock_skew = CREATED_WINDOW
    require_created = True

    def __init__(self, *, now: datetime.datetime, **kwargs) -> None:
        super().__init__(**kwargs)
        self._now = now

    def validate_created_and_expires(self, sig_input, max_age=None):
        created = sig_input.params.get("created")
        if type(created) is not int:
            raise InvalidSignature('the signature needs an integer "created" parameter')
        moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
        if abs(moment - self._now) > CREATED_WINDOW:
            raise InvalidSignature("the signature's created time is more than 300 s from now")
        if "expires" in sig_input.params:
            raise InvalidSignature('the signature must not carry "expires"')


def claimed_key_id(signature_input: str) -> str | None:
    """The key id a request's Signature-Input names, read before anything is verified, or
    None. For throttling a node before its request is worth verifying; nothing is granted
    on it, and a forger naming another node's key only slows itself."""
    try:
        fields = http_sf.parse(signature_input.encode("latin-1"), tltype="dictionary")
    except (ValueError, UnicodeEncodeError):
        return None
    if len(fields) != 1:
        return None
    [member] = fields.values()
    key_id = member[1].get("keyid") if isinstance(member, tuple) else None
    return key_id if isinstance(key_id, str) else None


def new_nonce() -> str:
    return b64url_encode(secrets.token_bytes(16))


def sign_request(
    request: httpx.Request, key: NodeKey, key_id: str, *, now: datetime.datetime,
    nonce: str | None = None,
) -> httpx.Request:
    """Sign an httpx request in place (and return it): adds Signature-Input, Signature and,
    with a body, Content-Digest."""
    body = request.content
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Signing(key))
    signer.sign(
        request, key_id=key_id, created=now, nonce=nonce or new_nonce(), label=LABEL,
        covered_component_ids=COVERED, body=body if body else None, include_alg=True,
    )  # fmt: skip
    return request


@dataclass(frozen=True)
class VerifiedRequest:
    key_id: str
    nonce: str
    created: int


def _message(method: str, target_uri: str, headers: Iterable[tuple[str, str]]) -> httpx.Request:
    # Field values arrive decoded as Latin-1 (as Starlette does); given str, httpx would encode
    # them as ASCII and raise on any other byte, even in a field no signature covers.
    fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return httpx.Request(method, target_uri, headers=fields)


def verify_request(
    *, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes,
    lookup: Callable[[str], Ed25519PublicKey | None], now: datetime.datetime,
    nonces: NonceStore | None,
) -> VerifiedRequest:
    """Verify a received request; return who signed it, or raise SignatureError.

    `target_uri` is the receiver's own base_url + path + query. `lookup` gives the public key
    for a key id among pinned peers (or None). The nonce is remembered only after the
    signature verifies, so a forger cannot burn someone else's nonces. With `nonces` None the
    caller must check `VerifiedRequest.nonce` itself (the node does, in SQLite, asynchronously).
    """
    resolver = _Lookup(lookup)
    verifier = ClockedVerifier(now=now, signature_algorithm=algorithms.ED25519, key_resolver=resolver)
    required = COVERED_WITH_BODY if body else COVERED
    try:
        message = _message(method, target_uri, headers)
        [result] = verifier.verify(message, max_age=None, require_components=required, body=body)
    except (InvalidSignature, HTTPMessageSignaturesException, ValueError, httpx.InvalidURL) as error:
        raise SignatureError(f"signature refused: {str(error) or 'it does not verify'}") from None
    params = result.parameters
    if set(result.covered_components) - {'"@method"', '"@target-uri"', '"content-digest"', '"@signature-params"'}:
        raise SignatureError("signature refused: it covers components other than the protocol's")
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not NONCE_MIN_CHARS <= len(nonce) <= NONCE_MAX_CHARS:
        raise SignatureError(f"signature refused: the nonce must be {NONCE_MIN_CHARS} to "
                             f"{NONCE_MAX_CHARS} characters")  # fmt: skip
    key_id = params["keyid"]
    if nonces is not None and not nonces.remember(key_id, nonce, int(now.timestamp())):
        raise SignatureError("signature refused: this nonce was already used (a replay)")
    return VerifiedRequest(key_id=key_id, nonce=nonce, created=params["created"])

"""Strict unpadded base64url (RFC 4648 §5) for keys, signatures and hashes (DESIGN §4.2).

A lenient decoder (padding optional, stray characters skipped, non-zero trailing bits
ignored) would let anyone re-encode one signature as several strings; here a value is valid
only if it uses the alphabet `A-Za-z0-9_-`, has the exact expected length, and re-encodes to
the very same string.
"""

import base64
import re

from .errors import MalformedError

_ALPHABET_RE = re.compile(r"[A-Za-z0-9_-]*")

KEY_CHARS = 43  # 32 bytes
SIGNATURE_CHARS = 86  # 64 bytes
HASH_CHARS = 43  # 32 bytes


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, length: int, what: str = "value") -> bytes:
    """Decode `text`, which must be exactly `length` characters of canonical base64url."""
    if not isinstance(text, str) or len(text) != length or not _ALPHABET_RE.fullmatch(text):
        raise MalformedError(f"{what} is not {length} characters of unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise MalformedError(f"{what} is not canonical base64url")
    return raw

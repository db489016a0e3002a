"""Ed25519 node keys: generate, save (mode 0600), load, and show them (DESIGN §4.1).

A key's fingerprint is `SHA256:` + base64url(sha256(raw public key)), what admins compare out
of band before trusting a node.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .encoding import KEY_CHARS, b64url_decode, b64url_encode
from .errors import MalformedError


def public_key_text(public: Ed25519PublicKey) -> str:
    """The base64url of the raw 32 public-key bytes, as node documents carry it."""
    return b64url_encode(public.public_bytes_raw())


def fingerprint(public: Ed25519PublicKey) -> str:
    return "SHA256:" + b64url_encode(hashlib.sha256(public.public_bytes_raw()).digest())


def parse_public_key(text: object) -> Ed25519PublicKey:
    """Load a public key from its base64url text, strictly."""
    return Ed25519PublicKey.from_public_bytes(b64url_decode(text, KEY_CHARS, "public key"))


@dataclass(frozen=True)
class NodeKey:
    """A node's signing key and its name (the part after `#` in the key id)."""

    name: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def key_id(self, base_url: str) -> str:
        return f"{base_url}#{self.name}"

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def generate_key(name: str = "main") -> NodeKey:
    return NodeKey(name, Ed25519PrivateKey.generate())


def save_key(key: NodeKey, path: Path) -> None:
    """Write the private key as PKCS#8 PEM, created with mode 0600 (never world-readable)."""
    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def load_key(path: Path, name: str) -> NodeKey:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise MalformedError(f"{path} is not a PEM Ed25519 private key") from error
    if not isinstance(private, Ed25519PrivateKey):
        raise MalformedError(f"{path} does not hold an Ed25519 key")
    return NodeKey(name, private)

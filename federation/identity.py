"""Node identity: the base_url and the node document (DESIGN §4.1).

A node *is* its base_url, `scheme://host[:port]`: lowercase, no path, no trailing slash, and
https unless the host is loopback (a node only its own machine can reach) or the operator
allows private addresses (tests and the demo). Item ids embed it, so it is checked strictly
and never normalised behind the caller's back.
"""

import ipaddress
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import BaseUrlError
from .keys import public_key_text

PROTOCOL = "aidnode/1"
SOFTWARE_NAME = "aidnode"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_base_url(url: object, *, allow_private_addresses: bool = False) -> str:
    """Return `url` if it is a valid base_url, else raise BaseUrlError saying why."""
    if not isinstance(url, str) or not url:
        raise BaseUrlError("the base URL must be a non-empty string")
    if url != url.strip() or any(ch.isspace() for ch in url):
        raise BaseUrlError("the base URL must not contain spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise BaseUrlError(f"the base URL is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise BaseUrlError("the base URL must start with https:// (or http:// for loopback)")
    if parts.username is not None or parts.password is not None:
        raise BaseUrlError("the base URL must not contain a user name or password")
    if parts.path or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise BaseUrlError("the base URL must have no path, query or trailing slash")
    host = parts.hostname or ""
    if not host:
        raise BaseUrlError("the base URL has no host")
    if url != url.lower():
        raise BaseUrlError(f"the base URL must be lowercase: {url.lower()}")
    if port is not None and port == {"http": 80, "https": 443}[parts.scheme]:
        raise BaseUrlError("the base URL must omit the scheme's default port")
    if parts.scheme == "http" and not (is_loopback_host(host) or allow_private_addresses):
        raise BaseUrlError(
            "the base URL must use https:// unless its host is loopback "
            "(or allow_private_addresses is on, for tests)"
        )
    return url


def node_document(
    *,
    base_url: str,
    name: str,
    description: str,
    keys: list[tuple[str, Ed25519PublicKey, int | None]],
    version: str,
) -> dict:
    """Build the node document served at `/.well-known/aidnode`.

    `keys` lists (key name, public key, retired_at_seq or None), current key last.
    """
    key_docs = []
    for key_name, public, retired_at_seq in keys:
        doc = {"id": f"{base_url}#{key_name}", "type": "Ed25519", "public": public_key_text(public)}
        if retired_at_seq is not None:
            doc["retired_at_seq"] = retired_at_seq
        key_docs.append(doc)
    return {
        "protocol": PROTOCOL,
        "id": base_url,
        "name": name,
        "description": description,
        "keys": key_docs,
        "feed": f"{base_url}/federation/feed",
        "inbox": f"{base_url}/federation/inbox",
        "subscriptions": f"{base_url}/federation/subscriptions",
        "software": {"name": SOFTWARE_NAME, "version": version},
    }

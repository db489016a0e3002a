"""Node identity: the base_url and the node document (DESIGN §4.1).

A node *is* its base_url, `scheme://host[:port]`: lowercase, no path, no trailing slash, and
https unless the host is loopback (a node only its own machine can reach) or the operator
allows private addresses (tests and the demo). Item ids embed it, so it is checked strictly
and never normalised behind the caller's back.
"""

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import BaseUrlError, MalformedError
from .items import N_
from .keys import parse_public_key, public_key_text

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
        raise BaseUrlError(N_("the base URL must be a non-empty string"))
    if url != url.strip() or any(ch.isspace() for ch in url):
        raise BaseUrlError(N_("the base URL must not contain spaces"))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise BaseUrlError(N_("the base URL is not a valid URL: %(error)s"), error=str(error)) from None
    if parts.scheme not in ("http", "https"):
        raise BaseUrlError(N_("the base URL must start with https:// (or http:// for loopback)"))
    if parts.username is not None or parts.password is not None:
        raise BaseUrlError(N_("the base URL must not contain a user name or password"))
    if parts.path or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise BaseUrlError(N_("the base URL must have no path, query or trailing slash"))
    host = parts.hostname or ""
    if not host:
        raise BaseUrlError(N_("the base URL has no host"))
    if url != url.lower():
        raise BaseUrlError(N_("the base URL must be lowercase: %(url)s"), url=url.lower())
    if port is not None and port == {"http": 80, "https": 443}[parts.scheme]:
        raise BaseUrlError(N_("the base URL must omit the scheme's default port"))
    if parts.scheme == "http" and not (is_loopback_host(host) or allow_private_addresses):
        raise BaseUrlError(N_(
            "the base URL must use https:// unless its host is loopback "
            "(or allow_private_addresses is on, for tests)"
        ))
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


NAME_MAX = 200
DESCRIPTION_MAX = 2000


@dataclass(frozen=True)
class NodeDocument:
    """A node document another node served, checked (see `parse_node_document`)."""

    url: str
    name: str
    description: str
    keys: list[tuple[str, str, int | None]]  # (key id, public key text, retired_at_seq)

    @property
    def current_key(self) -> tuple[str, str]:
        key_id, public, _ = self.keys[-1]
        return key_id, public


def parse_node_document(doc: object, url: str) -> NodeDocument:
    """Check a node document fetched from `url` (its base URL); raise MalformedError saying why.

    The document must speak for the URL it came from, list at least one key, every key an
    Ed25519 key of that node, exactly one (the last) without `retired_at_seq`, retirements in
    increasing order; its endpoints must be the protocol's, under the same URL.
    """
    def fail(why: str) -> MalformedError:
        return MalformedError(f"the node document at {url} {why}")

    if not isinstance(doc, dict):
        raise fail("is not a JSON object")
    if doc.get("protocol") != PROTOCOL:
        raise fail(f"does not speak {PROTOCOL}")
    if doc.get("id") != url:
        raise fail(f"names another node ({str(doc.get('id'))[:100]})")
    for field, limit in (("name", NAME_MAX), ("description", DESCRIPTION_MAX)):
        value = doc.get(field, "" if field == "description" else None)
        if not isinstance(value, str) or len(value) > limit or (field == "name" and not value.strip()):
            raise fail(f"has no valid {field} (text of at most {limit} characters)")
    for endpoint in ("feed", "inbox", "subscriptions"):
        if doc.get(endpoint) != f"{url}/federation/{endpoint}":
            raise fail(f"gives an unexpected {endpoint} URL")
    keys = doc.get("keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= 100:
        raise fail("lists no keys")
    parsed: list[tuple[str, str, int | None]] = []
    last_retired = 0
    for number, key in enumerate(keys, 1):
        if not isinstance(key, dict) or not {"id", "type", "public"} <= set(key) <= {
            "id", "type", "public", "retired_at_seq"
        }:
            raise fail(f"has a malformed key {number}")
        key_id, retired = key["id"], key.get("retired_at_seq")
        if (not isinstance(key_id, str) or not key_id.startswith(url + "#")
                or len(key_id) == len(url) + 1 or len(key_id) > len(url) + 65):
            raise fail(f"has a key {number} that is not one of its own")
        if key["type"] != "Ed25519":
            raise fail(f"has a key {number} that is not Ed25519")
        try:
            parse_public_key(key["public"])
        except (MalformedError, ValueError):
            raise fail(f"has a key {number} whose public key is malformed") from None
        is_last = number == len(keys)
        if is_last != (retired is None):
            raise fail("must list its retired keys first and its one current key last")
        if retired is not None:
            if type(retired) is not int or not last_retired < retired <= 2**53 - 1:
                raise fail(f"has a key {number} with a bad retired_at_seq")
            last_retired = retired
        parsed.append((key_id, key["public"], retired))
    if len({key_id for key_id, _, _ in parsed}) != len(parsed):
        raise fail("lists a key twice")
    return NodeDocument(url=url, name=doc["name"].strip(), description=doc.get("description", ""),
                        keys=parsed)  # fmt: skip

"""Relay: how a need travels beyond the origin's direct allies, hop by hop (DESIGN §6).

A relay entry is an entry of the relaying node's own feed:

    {"type": "relay", "body": {"entry": <the origin's item entry, verbatim>,
                               "path": [relayer base URLs, the writer last]}}

Each reader decides for itself, from what it can check:

- the relay entry is chain-valid in the relayer's feed (signed by the relayer, in order);
- the inner entry is checked with the *origin's* pinned key, never a key the relayer gives, so
  a relayer can pass a need on or withhold it, but never forge or alter it;
- the reader's distance from the origin is `len(path) + 1` (a direct ally reading the
  origin's own feed is at distance 1), and it holds a need it did not hold before only within
  the need's `hop_limit`; it passes the need on while its distance is below the hop limit;
- a relay whose origin or path names the reader is ignored, and each (origin, uuid) is held
  once, at its highest version, so rings and diamonds neither loop nor duplicate.

This module checks shapes and answers those questions from values; fetching keys, storing
and appending belong to the server.
"""

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .entries import EntryError, check_shape, verify_signature
from .errors import BaseUrlError, ProtocolError, ValidationError
from .identity import parse_base_url
from .items import HOP_LIMIT_MAX, N_, validate_state

PATH_MAX = HOP_LIMIT_MAX - 1  # a path this long puts its reader at the largest hop limit


class RelayIgnored(ProtocolError):
    """A relay this reader takes no part in (it is the origin, or on the path already)."""


@dataclass(frozen=True)
class Relayed:
    """What a relay entry carries, once its shape is checked (not yet its signature)."""

    inner: dict  # the origin's entry
    path: list[str]
    origin: str
    item_id: str

    @property
    def distance(self) -> int:
        """The reader's distance from the origin through this relay."""
        return len(self.path) + 1


def relay_body(inner: dict, path: list[str]) -> dict:
    """The body of a relay entry carrying `inner` along `path` (the writer last)."""
    return {"entry": inner, "path": list(path)}


def open_relay(body: object, *, relayer: str, reader: str, allow_private_addresses: bool = False,
               strictly_read: bool = True) -> Relayed:  # fmt: skip
    """Check a relay entry's body as read from `relayer`'s feed by `reader`.

    Raises RelayIgnored when the reader is the origin or on the path (normal in rings), and
    EntryError (a ProtocolError) when the body is malformed, the path does not end with the
    relayer, names a node twice or the origin, or the inner entry is not an item entry."""
    if not isinstance(body, dict) or set(body) != {"entry", "path"}:
        raise EntryError("a relay entry's body is {entry, path}")
    path, inner = body["path"], body["entry"]
    if not isinstance(path, list) or not 1 <= len(path) <= PATH_MAX:
        raise EntryError(f"a relay path lists 1 to {PATH_MAX} nodes")
    for hop in path:
        try:
            if not isinstance(hop, str) or parse_base_url(
                hop, allow_private_addresses=allow_private_addresses
            ) != hop:
                raise EntryError("a relay path lists base URLs")
        except BaseUrlError:
            raise EntryError("a relay path lists base URLs") from None
    if path[-1] != relayer:
        raise EntryError("a relay path must end with the node that wrote the relay")
    if len(set(path)) != len(path):
        raise EntryError("a relay path names a node twice")
    origin = inner.get("origin") if isinstance(inner, dict) else None
    if not isinstance(origin, str):
        raise EntryError("a relayed entry must be an entry object with an origin")
    if origin == reader or reader in path:
        raise RelayIgnored("this node is the origin of the relayed need or on its path")
    if origin in path:
        raise EntryError("a relay path must not name the origin")
    inner = check_shape(inner, origin=origin, strictly_read=strictly_read)
    if inner["type"] != "item":
        raise EntryError("only item entries are relayed")
    item_id = inner["body"].get("id")
    if not isinstance(item_id, str):
        raise EntryError("a relayed item has no id")
    return Relayed(inner=inner, path=path, origin=origin, item_id=item_id)


def check_relayed(relayed: Relayed, public: Ed25519PublicKey, *, strictly_read: bool = True) -> dict:
    """Verify the inner entry with the origin's key (the one pinned for its key id) and check
    the need it carries; return its state.

    EntryError when the signature fails (the relay is refused); ValidationError when the
    state breaks an item rule or is not a need at network reach."""
    verify_signature(relayed.inner, public, strictly_read=strictly_read)
    state = validate_state(relayed.inner["body"], origin=relayed.origin, in_entry=True)
    if state["kind"] != "need" or state["reach"] != "network":
        raise ValidationError("reach", N_("only needs at network reach are relayed"))
    return state


def within_reach(state: dict, distance: int) -> bool:
    """Whether a node at `distance` from the origin may take in a need it does not hold yet."""
    return state.get("reach") == "network" and distance <= state.get("hop_limit", 1)


def passes_on(state: dict, distance: int) -> bool:
    """Whether a node at `distance` passes a need on (relays it) to its own followers."""
    return (state.get("kind") == "need" and state.get("reach") == "network"
            and distance < state.get("hop_limit", 1))  # fmt: skip

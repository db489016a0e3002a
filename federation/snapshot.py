"""Reading a snapshot: a node's live state without its history (docs/protocol.md §8.1).

`GET /federation/snapshot` pages through the latest entry of every live item a node's feed
carries, in seq order. Its entries are not consecutive, so a reader cannot check their `prev`
(§5.3, check 3): what it checks instead is what makes each one the origin's own word.

- The first page names the feed's head and carries the entry at the head and every `key`
  entry of the feed. The key entries must hand the feed over one to the next from the key the
  reader pinned, each signed by the key in force before it and proved by the next (§7); that
  gives the key in force at every seq. The head entry must be signed by the key in force at
  its seq, and hash to the head's hash: that hash is where the reader's cursor will stand, so
  the next feed page it reads must chain onto it.
- Every entry must be an `item` or `relay` entry of that origin, of the right shape and size,
  signed by the key in force at its seq, in seq order after the page's `after`.

Entries after the first page's head (items changed while the reader paged) are left out: the
feed from that head carries them, checked as a chain. What the entries carry is then judged
by the reader's own item and relay rules, as for any entry of the feed.
"""

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .entries import SEQ_MAX, EntryError, check_detached, check_key_entry
from .errors import ProtocolError

SNAPSHOT_TYPES = ("item", "relay")  # what a snapshot's `entries` may hold


@dataclass
class SnapshotBasis:
    """What a reader took from a snapshot's first page: the head its cursor will stand at, the
    feed's `key` entries (checked), and which key signs which seqs."""

    origin: str
    head_seq: int
    head_hash: str | None
    key_entries: list[dict]
    # (key id, public key, the last seq it signs; None for the key in force at the head)
    schedule: list[tuple[str, Ed25519PublicKey, int | None]]

    def key_at(self, seq: int) -> tuple[str, Ed25519PublicKey]:
        for key_id, public, last in self.schedule:
            if last is None or seq <= last:
                return key_id, public
        raise ProtocolError(f"no key covers entry {seq}")  # not reached: the last is open


def page_head(page: dict) -> tuple[int, str | None]:
    """The (seq, hash) of the head a snapshot page names (ProtocolError if it names none)."""
    head = page.get("head")
    seq = head.get("seq") if isinstance(head, dict) else None
    if type(seq) is not int or not 0 <= seq <= SEQ_MAX:
        raise ProtocolError("the snapshot has no head")
    if (seq == 0) != (head.get("hash") is None) or not isinstance(head.get("hash"), str | None):
        raise ProtocolError("the snapshot's head has a seq without a hash, or a hash without a seq")
    return seq, head["hash"]


def _envelope(page: object, origin: str) -> dict:
    if not isinstance(page, dict) or page.get("origin") != origin:
        raise ProtocolError("the snapshot page is not from the node asked")
    if not isinstance(page.get("entries"), list) or not isinstance(page.get("keys"), list):
        raise ProtocolError("the snapshot page has no entries or keys")
    after = page.get("next")
    if after is not None and (type(after) is not int or not 0 <= after <= SEQ_MAX):
        raise ProtocolError("the snapshot page's next is not a seq or null")
    return page


def check_basis(page: object, *, origin: str,
                pinned: Callable[[int], tuple[str, Ed25519PublicKey]]) -> SnapshotBasis:  # fmt: skip
    """Check a snapshot's first page: its head, head entry and key entries. `pinned(seq)`
    gives the reader's pinned key in force at a seq. Raises ProtocolError."""
    page = _envelope(page, origin)
    head_seq, head_hash = page_head(page)
    raw_keys = page["keys"]
    if raw_keys:
        first = raw_keys[0].get("seq") if isinstance(raw_keys[0], dict) else None
        if type(first) is not int:
            raise EntryError("the snapshot's first key entry has no seq")
        start = pinned(first)
    else:
        start = pinned(max(head_seq, 1))
    key_id, public = start
    schedule: list[tuple[str, Ed25519PublicKey, int | None]] = []
    key_entries: list[dict] = []
    last_seq = 0
    for raw in raw_keys:
        entry, _ = check_detached(raw, origin=origin, key_id=key_id, public=public,
                                  strictly_read=True)  # fmt: skip
        if entry["type"] != "key" or not last_seq < entry["seq"] <= head_seq:
            raise EntryError(f"entry {entry['seq']} is not a key entry of the feed up to its head, "
                             "in order")  # fmt: skip
        schedule.append((key_id, public, entry["seq"]))
        key_id, public = check_key_entry(entry)
        key_entries.append(entry)
        last_seq = entry["seq"]
    schedule.append((key_id, public, None))
    basis = SnapshotBasis(origin, head_seq, head_hash, key_entries, schedule)
    raw_head = page.get("head_entry")
    if head_seq == 0:
        if raw_head is not None or page["entries"] or raw_keys:
            raise ProtocolError("an empty feed's snapshot holds no entries")
        return basis
    seq = raw_head.get("seq") if isinstance(raw_head, dict) else None
    if seq != head_seq:
        raise EntryError("the snapshot's head_entry is not the entry at its head")
    head_key, head_public = basis.key_at(head_seq)
    _, hashed = check_detached(raw_head, origin=origin, key_id=head_key, public=head_public,
                               strictly_read=True)  # fmt: skip
    if hashed != head_hash:
        raise EntryError(f"the snapshot's head_entry does not hash to its head ({head_hash})")
    return basis


def check_page(page: object, basis: SnapshotBasis, *, after: int,
               verified_by: list | None = None) -> tuple[list[dict], int | None]:  # fmt: skip
    """Check the entries of a snapshot page asked for `after` a seq; return those up to the
    basis's head (the feed carries the rest) and the `after` of the next page (None: done).
    Raises ProtocolError at the first entry that is not the origin's own. `verified_by`: for
    each entry, a key its signature was already verified with, or None
    (`entries.signatures_valid`, as ingest does)."""
    page = _envelope(page, basis.origin)
    if page_head(page)[0] < basis.head_seq:
        raise ProtocolError("the snapshot's head went back while it was read")
    taken: list[dict] = []
    last = after
    for index, raw in enumerate(page["entries"]):
        seq = raw.get("seq") if isinstance(raw, dict) else None
        if type(seq) is not int or seq <= last:
            raise EntryError(f"snapshot entries must be in seq order after {last}")
        last = seq
        if seq > basis.head_seq:
            continue  # changed while we paged: read with the feed, from the head on
        key_id, public = basis.key_at(seq)
        entry, _ = check_detached(raw, origin=basis.origin, key_id=key_id, public=public,
                                  strictly_read=True,
                                  verified_by=verified_by[index] if verified_by else None)  # fmt: skip
        if entry["type"] not in SNAPSHOT_TYPES:
            raise EntryError(f"entry {seq}: a snapshot holds item and relay entries only")
        taken.append(entry)
    following = page["next"]
    if following is not None and (following < last or following <= after):
        raise ProtocolError(f"the snapshot page's next ({following}) goes back")
    return taken, following

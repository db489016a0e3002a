"""The node's own signed feed: appending entries, reading pages of it, rotating keys, and
checking the whole chain (DESIGN §4.2–4.3).

Appends happen inside the caller's write transaction (see `Store.write_item`): the entry and the
change it records commit together or not at all. The signing key is read from the database in
that same transaction, so a key rotated by `aidnode key rotate` while the node is serving takes
effect at the very next entry, and the chain never mixes keys out of order.
"""

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from federation import items as item_rules
from federation.entries import (
    ChainState,
    EntryError,
    canonical,
    check_key_entry,
    entry_hash,
    hash_bytes,
    key_entry_body,
    sign_entry_encoded,
)  # fmt: skip
from federation.errors import ProtocolError
from federation.keys import (
    NodeKey,
    generate_key,
    load_key,
    parse_public_key,
    public_key_text,
    save_key,
)
from federation.strictjson import loads_strict

from .errors import Unavailable

log = logging.getLogger("aidnode")

HOLD_KEY = "feed_hold"  # node_meta: why appending is on hold (server/backup.py); absent if not

FEED_LIMIT_DEFAULT = 100
FEED_LIMIT_MAX = 1000
FEED_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str | None

    def to_json(self) -> dict:
        return {"seq": self.seq, "hash": self.hash}


class Feed:
    """Appends to and reads from one node's feed. Keys are files in `keys_dir`."""

    def __init__(self, base_url: str, keys_dir: Path) -> None:
        self.base_url = base_url
        self.keys_dir = keys_dir
        # Why appending is on hold (see server/backup.py), or None: set by the node at start.
        self.hold: str | None = None
        self._keys: dict[str, NodeKey] = {}
        # (write generation, head, key in force) as the last append left them: see `append`.
        self._tip: tuple[int, Head, NodeKey] | None = None

    def key(self, name: str) -> NodeKey:
        key = self._keys.get(name)
        if key is None:
            key = load_key(self.keys_dir / f"{name}.pem", name)
            self._keys[name] = key
        return key

    async def ensure_first_key(self, db: aiosqlite.Connection) -> None:
        """A node made before feeds existed gets its key recorded as the first key."""
        async with db.execute("SELECT count(*) FROM node_keys") as cursor:
            (count,) = await cursor.fetchone()
        if count == 0:
            await db.execute(
                "INSERT INTO node_keys (name, public, first_seq) VALUES ('main', ?, 1)",
                (public_key_text(self.key("main").public),),
            )

    async def current_key(self, db: aiosqlite.Connection) -> NodeKey:
        async with db.execute("SELECT name FROM node_keys WHERE retired_at_seq IS NULL") as cursor:
            row = await cursor.fetchone()
        return self.key(row[0])

    async def _head_and_key(self, db: aiosqlite.Connection) -> tuple[Head, NodeKey]:
        """Both in one query: read inside the write transaction, never cached, so another
        process (`aidnode key rotate`) appending or rotating is always seen."""
        rows = await db.execute_fetchall(
            "SELECT (SELECT seq FROM feed ORDER BY seq DESC LIMIT 1),"
            " (SELECT hash FROM feed ORDER BY seq DESC LIMIT 1),"
            " (SELECT name FROM node_keys WHERE retired_at_seq IS NULL)"
        )
        seq, hash_, name = rows[0]
        return Head(seq or 0, hash_), self.key(name)

    @staticmethod
    async def head(db: aiosqlite.Connection) -> Head:
        async with db.execute("SELECT seq, hash FROM feed ORDER BY seq DESC LIMIT 1") as cursor:
            row = await cursor.fetchone()
        return Head(0, None) if row is None else Head(row[0], row[1])

    async def held(self, db: aiosqlite.Connection) -> str | None:
        """Why the feed is on hold, or None. While it is, the database is asked again each
        time (an admin's `aidnode resume-feed` lifts it from another process); once it is
        not, this costs nothing."""
        if self.hold is not None:
            rows = await db.execute_fetchall("SELECT value FROM node_meta WHERE key = ?", (HOLD_KEY,))
            self.hold = rows[0][0] if rows else None
        return self.hold

    async def append(
        self, db: aiosqlite.Connection, type: str, body: dict, *, at: str,
        item_id: str | None = None, key: NodeKey | None = None, generation: int | None = None,
    ) -> dict:
        """Sign and append one entry inside the caller's write transaction.

        `generation` is the store's `write_generation` (see `Store.write`): while it is the
        same as at this feed's last append, the transaction is the same and nothing was rolled
        back, so the head and key that append left are still the feed's, and are not read
        again. Without it, they are read.
        """
        if await self.held(db) is not None:
            raise Unavailable(item_rules.N_("this node's feed is on hold, so nothing can be "
                                            "published now: %(reason)s"), params={"reason": self.hold})  # fmt: skip
        tip = self._tip
        if generation is not None and key is None and tip is not None and tip[0] == generation:
            head, current = tip[1], tip[2]
        else:
            head, current = await self._head_and_key(db)
        self._tip = None
        signer = key or current
        entry, encoded = sign_entry_encoded(
            origin=self.base_url, seq=head.seq + 1, prev=head.hash, type=type, at=at, body=body,
            key=signer,
        )  # fmt: skip
        entry_hash_text = hash_bytes(encoded)
        await db.execute(
            "INSERT INTO feed (seq, hash, type, item_id, at, entry) VALUES (?, ?, ?, ?, ?, ?)",
            (entry["seq"], entry_hash_text, type, item_id, at, encoded.decode("utf-8")),
        )
        if generation is not None and signer is current:
            self._tip = (generation, Head(entry["seq"], entry_hash_text), current)
        return entry

    async def rotate_key(self, db: aiosqlite.Connection, *, at: str) -> tuple[NodeKey, dict]:
        """Append a `key` entry, signed by the current key, that hands over to a new key."""
        old = await self.current_key(db)
        async with db.execute("SELECT count(*) FROM node_keys") as cursor:
            (count,) = await cursor.fetchone()
        name = f"key{count + 1}"
        new = generate_key(name)
        path = self.keys_dir / f"{name}.pem"
        if path.exists():
            # Left by a rotation whose transaction never committed (the node was killed in
            # between): no entry names that key, so no one has ever trusted it.
            log.warning("removing %s: a key from a rotation that never completed", path)
            path.unlink()
        save_key(new, path)  # refuses to overwrite; removed again if the transaction fails
        try:
            seq = (await self.head(db)).seq + 1
            entry = await self.append(db, "key", key_entry_body(self.base_url, seq, new), at=at, key=old)
            await db.execute("UPDATE node_keys SET retired_at_seq = ? WHERE name = ?", (seq, old.name))
            await db.execute(
                "INSERT INTO node_keys (name, public, first_seq) VALUES (?, ?, ?)",
                (name, public_key_text(new.public), seq + 1),
            )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._keys[name] = new
        return new, entry


async def node_keys(db: aiosqlite.Connection) -> list[tuple[str, str, int, int | None]]:
    """(name, public, first_seq, retired_at_seq) of every key, oldest first."""
    async with db.execute(
        "SELECT name, public, first_seq, retired_at_seq FROM node_keys ORDER BY first_seq"
    ) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def rows_within(cursor: aiosqlite.Cursor, limit: int, max_bytes: int) -> tuple[list, bool]:
    """Rows of a query whose first column is an entry's text: up to `limit` of them, about
    `max_bytes` of text in all at most (always at least one row if there is one), and whether
    any row was left. Rows are read one by one, so what is left is never loaded."""
    rows: list = []
    size = 0
    async for row in cursor:
        size += len(row[0].encode("utf-8")) + 1
        if len(rows) == limit or (rows and size > max_bytes):
            return rows, True
        rows.append(row)
    return rows, False


async def read_texts(db: aiosqlite.Connection, after: int, limit: int, max_bytes: int) -> list[str]:
    """Canonical texts of up to `limit` entries after `after`, about `max_bytes` in all at
    most (always at least one entry if there is one): a feed page, or a push."""
    async with db.execute(
        "SELECT entry FROM feed WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ) as cursor:
        rows, _ = await rows_within(cursor, limit, max_bytes)
    return [row[0] for row in rows]


async def read_page(db: aiosqlite.Connection, after: int, limit: int) -> tuple[list[str], Head]:
    """A feed page (at most FEED_MAX_BYTES with its envelope) and the feed's head, read in
    one read transaction, so the head is never behind the page."""
    await db.execute("BEGIN")
    try:
        head = await Feed.head(db)
        texts = await read_texts(db, after, limit, FEED_MAX_BYTES - 512)
    finally:
        await db.execute("COMMIT")
    return texts, head


def page_json(origin: str, texts: list[str], head: Head) -> bytes:
    """The feed response, built from stored canonical texts without re-parsing them."""
    prefix = json.dumps({"origin": origin, "head": head.to_json()}, separators=(",", ":"))[:-1]
    return f'{prefix},"entries":[{",".join(texts)}]}}'.encode()


@dataclass(frozen=True)
class SnapshotPage:
    """One page of `GET /federation/snapshot` (docs/protocol.md §8.1), as stored texts."""

    head: Head
    keys: list[str]  # every `key` entry of the feed, in order
    head_entry: str | None  # the entry at `head`, so a reader can check the head's hash
    texts: list[str]  # the latest entry of each live item after `after`, in seq order
    next: int | None  # the `after` of the next page; None: this page is the last


SNAPSHOT_ENTRIES = (
    # The live items our feed carries (our own, and needs we relayed that we still hold),
    # by the seq of their latest entry: `items_in_snapshot` holds only live rows, so a page
    # never reads the history between them (named, since a planner without statistics would
    # rather sort all open items). Items past their expiry that the expiry worker has not
    # marked yet are left out, as ended.
    "SELECT f.entry, f.seq FROM items i INDEXED BY items_in_snapshot"
    " JOIN feed f ON f.seq = i.feed_seq"
    " WHERE i.feed_seq IS NOT NULL AND i.status IN ('open', 'promised') AND i.feed_seq > ?"
    " AND i.expires > ? AND i.reach != 'local' ORDER BY i.feed_seq LIMIT ?"
)


async def read_snapshot_page(db: aiosqlite.Connection, after: int, limit: int,
                             now: str) -> SnapshotPage:  # fmt: skip
    """A snapshot page (at most FEED_MAX_BYTES with its envelope, the key entries and the
    head entry), read in one read transaction, so the head is never behind the page."""
    await db.execute("BEGIN")
    try:
        head = await Feed.head(db)
        keys = [row[0] for row in await db.execute_fetchall(
            "SELECT entry FROM feed WHERE type = 'key' ORDER BY seq")]  # fmt: skip
        found = await db.execute_fetchall("SELECT entry FROM feed WHERE seq = ?", (head.seq,))
        head_entry = found[0][0] if found else None
        budget = FEED_MAX_BYTES - 512 - sum(len(text.encode("utf-8")) + 1 for text in keys)
        budget -= len(head_entry.encode("utf-8")) if head_entry else 0
        async with db.execute(SNAPSHOT_ENTRIES, (after, now, limit + 1)) as cursor:
            rows, more = await rows_within(cursor, limit, budget)
    finally:
        await db.execute("COMMIT")
    return SnapshotPage(head, keys, head_entry, [row[0] for row in rows],
                        rows[-1][1] if more else None)  # fmt: skip


def snapshot_json(origin: str, page: SnapshotPage) -> bytes:
    """The snapshot response, built from stored canonical texts without re-parsing them."""
    prefix = json.dumps({"origin": origin, "head": page.head.to_json()}, separators=(",", ":"))[:-1]
    return (f'{prefix},"keys":[{",".join(page.keys)}],"head_entry":{page.head_entry or "null"},'
            f'"entries":[{",".join(page.texts)}],"next":{json.dumps(page.next)}}}').encode()  # fmt: skip


class ChainProblem(Exception):
    """What `aidnode check` found wrong, first problem only."""


async def iter_entries(db: aiosqlite.Connection, batch: int = 1000) -> AsyncIterator[tuple]:
    after = 0
    while True:
        async with db.execute(
            "SELECT seq, hash, type, item_id, entry FROM feed WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, batch),
        ) as cursor:
            rows = await cursor.fetchall()
        if not rows:
            return
        for row in rows:
            yield tuple(row)
        after = rows[-1][0]


async def check_feed(db: aiosqlite.Connection, base_url: str) -> dict:
    """Re-verify the whole chain, that every federated local item's state is its latest
    entry, and that each item's `feed_seq` (what a snapshot serves it by) names its latest
    entry in the feed, or a relay entry of it for another node's item. Raises ChainProblem
    with the first problem; returns counts when all is well."""
    keys = await node_keys(db)
    if not keys:
        raise ChainProblem("the node has no keys recorded")
    first_name, first_public, _, _ = keys[0]
    state = ChainState(base_url, 0, None, f"{base_url}#{first_name}", parse_public_key(first_public),
                       strictly_read=True)  # fmt: skip
    latest: dict[str, dict] = {}
    latest_seq: dict[str, int] = {}  # item id → the seq of its latest item entry
    relayed: dict[str, set[int]] = {}  # another node's item id → the seqs of our relays of it
    count = 0
    async for seq, stored_hash, type_, item_id, text in iter_entries(db):
        try:
            entry = loads_strict(text)
            if canonical(entry).decode("utf-8") != text:
                raise ChainProblem(f"entry {seq} is not stored in canonical form")
            state.accept(entry)
        except (EntryError, ProtocolError, ValueError) as error:
            raise ChainProblem(f"entry {seq}: {error}") from None
        if entry["seq"] != seq or entry_hash(entry) != stored_hash or entry["type"] != type_:
            raise ChainProblem(f"entry {seq}: the stored seq, hash or type does not match it")
        if type_ == "key":
            key_id, public = check_key_entry(entry)
            recorded = {f"{base_url}#{n}": (p, first) for n, p, first, _ in keys}
            if key_id not in recorded or recorded[key_id] != (public_key_text(public), seq + 1):
                raise ChainProblem(f"entry {seq}: the key it hands over to is not the one recorded")
        if type_ == "item":
            if entry["body"].get("id") != item_id:
                raise ChainProblem(f"entry {seq}: the stored item id does not match its body")
            latest[item_id] = entry["body"]
            latest_seq[item_id] = seq
        if type_ == "relay":
            relayed.setdefault(_relayed_id(entry), set()).add(seq)
        count += 1
    if keys[-1][0] != state.key_id.rsplit("#", 1)[1]:
        raise ChainProblem("the current key is not the one the chain hands over to")
    async with db.execute(
        "SELECT id, state, reach, feed_seq FROM items WHERE is_local ORDER BY id"
    ) as cursor:
        rows = await cursor.fetchall()
    federated = 0
    for item_id, text, reach, feed_seq in rows:
        item_state = json.loads(text)
        if feed_seq != latest_seq.get(item_id):
            raise ChainProblem(f"item {item_id}: its feed_seq is {feed_seq}, but its latest"
                               f" feed entry is {latest_seq.get(item_id)}")  # fmt: skip
        if reach == "local":
            if item_id in latest:
                raise ChainProblem(f"item {item_id} is local but has feed entries")
            continue
        federated += 1
        if latest.get(item_id) != item_state:
            raise ChainProblem(f"item {item_id}: its stored state is not its latest feed entry")
        item_rules.validate_state(item_state, origin=base_url)
    stray = set(latest) - {row[0] for row in rows}
    if stray:
        raise ChainProblem(f"feed entries for an item the node does not hold: {sorted(stray)[0]}")
    # Another node's item is carried by our feed only in relay entries; its row may have been
    # dropped and taken in again since (then none of them is its feed_seq yet).
    async with db.execute(
        "SELECT id, feed_seq FROM items WHERE NOT is_local AND feed_seq IS NOT NULL ORDER BY id"
    ) as cursor:
        async for item_id, feed_seq in cursor:
            if feed_seq not in relayed.get(item_id, ()):
                raise ChainProblem(f"item {item_id}: its feed_seq {feed_seq} is not a relay"
                                   " entry of it in the feed")  # fmt: skip
    return {"entries": count, "federated_items": federated, "keys": len(keys)}


def _relayed_id(entry: dict) -> str | None:
    """The id of the item a relay entry of ours carries (None if it names none)."""
    inner = entry["body"].get("entry") if isinstance(entry["body"], dict) else None
    body = inner.get("body") if isinstance(inner, dict) else None
    item_id = body.get("id") if isinstance(body, dict) else None
    return item_id if isinstance(item_id, str) else None

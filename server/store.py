"""The node's SQLite store: one file, WAL mode, one writer, a few readers.

Approach (after Datasette): every write goes through a single connection, serialised by an
asyncio lock, inside `BEGIN IMMEDIATE … COMMIT`, with writers that arrive together sharing one
COMMIT (group commit, see `Store.write`); reads use a small pool of their own
connections, which WAL lets run beside the writer. SQL is written out here as literal strings
with bound parameters. The schema changes only through the numbered files in
`server/migrations/`, applied in order at start.

Every item write goes through `Store.write_item`, inside the caller's write transaction: the
one place where an item's row, its search index and its feed entry change together, so a
crash never leaves one without the other.
"""

import asyncio
import collections
import functools
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

READERS = 4
MAX_BATCH = 64  # writes committed together at most, so a steady stream still commits often
# Checkpoints (copying the write-ahead log back into the database file) run on a connection
# of their own after commits (`Store._checkpoint_soon`), not inside the writer's COMMIT; the
# writer checkpoints itself only once the log holds this many pages (SQLite's default is
# 1,000), which under a steady stream of writes is what lets the log start over.
CHECKPOINT_BACKSTOP = 4000
NONCE_SWEEP_SECONDS = 60  # expired request nonces are deleted this often, at most

log = logging.getLogger("aidnode.store")
LOOK_UP = object()  # `write_item`: the stored version is not known to the caller


class StoreError(Exception):
    """The database cannot be used (missing FTS5, a failed migration)."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    role: str
    disabled: bool
    created: str
    language: str | None = None  # chosen on the account page; None: the browser's


class ItemRow:
    """An item as stored: its protocol state and the node's notes about it.

    A row read back keeps its state as the stored JSON text until something asks for `state`:
    most of a listing's cards are kept rendered already (`templating.Cards`, keyed by `text`),
    and decoding thirty states was a seventh of what a browse page cost."""

    __slots__ = ("_state", "_text", "created", "origin", "is_local", "owner_id", "escalation",
                 "share_author", "row", "via")  # fmt: skip

    def __init__(self, *, origin: str, is_local: bool, owner_id: int | None,
                 escalation: str | None, share_author: bool, row: int,
                 via: list[str] | None = None, state: dict | None = None,
                 text: str | None = None, created: str | None = None) -> None:  # fmt: skip
        if (state is None) == (text is None) or (state is None and created is None):
            raise TypeError("an ItemRow holds its state, or the stored text and its created time")
        self._state, self._text = state, text
        self.created: str = created if created is not None else state["created"]
        self.origin, self.is_local, self.owner_id = origin, is_local, owner_id
        self.escalation, self.share_author, self.row = escalation, share_author, row
        self.via = via  # relaying nodes, for a relayed copy of a remote need

    @property
    def state(self) -> dict:
        if self._state is None:
            self._state = json.loads(self._text)
        return self._state

    @property
    def text(self) -> str:
        """The state as JSON text: as stored, for a row read back."""
        if self._text is None:
            self._text = json.dumps(self._state, ensure_ascii=False)
        return self._text

    def __repr__(self) -> str:
        return f"ItemRow(row={self.row}, origin={self.origin!r}, is_local={self.is_local})"


PEER_COLUMNS = (
    "id, url, name, description, trust, relay, we_follow, they_follow, received_seq,"
    " received_hash, head_seq, delivered_seq, last_success, last_error, failures, next_attempt,"
    " push_failures, push_next_attempt, push_stopped, created"
)


@dataclass(frozen=True)
class Peer:
    """Another node, as this node knows it (DESIGN §4.5)."""

    id: int
    url: str
    name: str
    description: str
    trust: str  # blocked | unknown | trusted
    relay: bool
    we_follow: str  # none | pending | accepted | rejected
    they_follow: str
    received_seq: int
    received_hash: str | None
    head_seq: int
    delivered_seq: int
    last_success: str | None
    last_error: str | None
    failures: int
    next_attempt: str | None
    push_failures: int
    push_next_attempt: str | None
    push_stopped: bool
    created: str

    @property
    def forked(self) -> bool:
        return (self.last_error or "").startswith("fork:")


def _peer(row: aiosqlite.Row | None) -> Peer | None:
    if row is None:
        return None
    values = dict(row)
    values["relay"] = bool(values["relay"])
    values["push_stopped"] = bool(values["push_stopped"])
    return Peer(**values)


class _Batch:
    """One write transaction shared by the writers that joined it (see `Store.write`)."""

    def __init__(self) -> None:
        self.open = True
        self.members = 0  # writers whose changes are in it, waiting for its COMMIT
        self.error: BaseException | None = None


def _user(row: aiosqlite.Row | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["username"], row["display_name"], row["role"],
                bool(row["disabled"]), row["created"], row["language"])  # fmt: skip


def _item(row: aiosqlite.Row) -> ItemRow:
    return ItemRow(
        text=row["state"], created=row["created"], origin=row["origin"],
        is_local=bool(row["is_local"]),
        owner_id=row["owner_id"], escalation=row["escalation"],
        share_author=bool(row["share_author"]), row=row["row"],
        via=json.loads(row["via"]) if row["via"] else None,
    )  # fmt: skip


class Session(NamedTuple):
    """A live session, as a page needs it."""

    user: "User"
    csrf_token: str
    unread_notifications: int


USER_COLUMNS = "id, username, display_name, role, disabled, created, language"
ITEM_COLUMNS = "row, state, created, origin, is_local, owner_id, escalation, share_author, via"


_ITEM_INSERT = (
    "INSERT INTO items (id, uuid, origin, is_local, kind, category, status, reach,"
    " urgency, geohash, title, body, tags, created, updated, expires, version, state,"
    " owner_id, escalation, share_author, via, source_peer)"
)
_ITEM_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ITEM_ON_CONFLICT = (
    " ON CONFLICT (id) DO UPDATE SET category = excluded.category,"
    " status = excluded.status, reach = excluded.reach, urgency = excluded.urgency,"
    " geohash = excluded.geohash, title = excluded.title, body = excluded.body,"
    " tags = excluded.tags, updated = excluded.updated, expires = excluded.expires,"
    " version = excluded.version, state = excluded.state,"
    " escalation = excluded.escalation, share_author = excluded.share_author,"
    " via = excluded.via, source_peer = excluded.source_peer"
)
# Rows one statement of `write_remote_items` writes at most: 23 parameters each, within the
# 999 that SQLite allowed a statement before 3.32.
ROWS_A_STATEMENT = 40
IDS_A_STATEMENT = 500  # ids in one statement's IN list, at most


@functools.lru_cache(maxsize=ROWS_A_STATEMENT)
def _item_upsert_rows(count: int) -> str:
    """The upsert of `count` item rows in one statement."""
    return _ITEM_INSERT + " VALUES " + ", ".join([_ITEM_ROW] * count) + _ITEM_ON_CONFLICT


ITEM_UPSERT = _item_upsert_rows(1)
ITEM_BY_UUID = f"""
WITH RECURSIVE origins(origin) AS (
    SELECT min(origin) FROM items
    UNION ALL
    SELECT (SELECT min(origin) FROM items WHERE origin > origins.origin) FROM origins
        WHERE origins.origin IS NOT NULL
)
SELECT {ITEM_COLUMNS} FROM items
    WHERE id IN (SELECT origin || '/items/' || ?1 FROM origins WHERE origin IS NOT NULL)
    ORDER BY is_local DESC LIMIT 1
"""


def _item_params(state: dict, origin: str, is_local: bool, owner_id: int | None,
                 escalation: str | None, share_author: bool, via: list[str] | None = None,
                 source_peer: int | None = None, text: str | None = None) -> tuple:  # fmt: skip
    """The parameters of ITEM_UPSERT for one item state (`text`: its JSON, if at hand)."""
    location = state.get("location", {})
    return (
        state["id"], state["id"].rsplit("/items/", 1)[1], origin, int(is_local),
        state["kind"], state["category"], state["status"], state["reach"],
        state.get("urgency"), location.get("geohash"), state["title"], state["body"],
        " ".join(state.get("tags", [])), state["created"], state["updated"],
        state["expires"], state["version"],
        json.dumps(state, ensure_ascii=False) if text is None else text,
        owner_id, escalation, int(share_author), json.dumps(via) if via else None, source_peer,
    )  # fmt: skip


WHOLE_TERMS = 20  # a search word covering more whole terms than this is left a prefix
_PLAIN_WORD = re.compile(r"[0-9A-Za-z]+")  # folded by FTS5's unicode61 to its lower case alone
_WHOLE_TERMS_SQL = """
WITH RECURSIVE word(i, prefix) AS (VALUES {values}),
found(i, prefix, n, term) AS (
    SELECT i, prefix, 0, (SELECT term FROM items_fts_terms WHERE term >= prefix LIMIT 1) FROM word
    UNION ALL
    SELECT i, prefix, n + 1,
        (SELECT term FROM items_fts_terms WHERE term >= found.term || char(1) LIMIT 1)
    FROM found WHERE substr(term, 1, length(prefix)) = prefix AND n < {cap}
)
SELECT i, term FROM found WHERE substr(term, 1, length(prefix)) = prefix"""


def search_words(text: str) -> list[str]:
    """A member's search, word by word. A NUL ends FTS5's reading of a query (an
    unterminated string): it separates words instead, as no item text holds one."""
    return text.replace("\x00", " ").split()


def fts_query(text: str, whole: dict[int, list[str]] | None = None) -> str:
    """Member text as an FTS5 query, quoted term by term (never raw MATCH syntax): every word
    must match, each as a prefix, or as the OR of the whole terms `whole[i]` it covers."""
    def quoted(term: str) -> str:
        return '"' + term.replace('"', '""') + '"'

    parts = []
    for i, word in enumerate(search_words(text)):
        terms = (whole or {}).get(i)
        parts.append(f"({' OR '.join(map(quoted, terms))})" if terms else quoted(word) + "*")
    return " AND ".join(parts)


async def whole_terms(db: aiosqlite.Connection, text: str) -> dict[int, list[str]] | None:
    """The whole terms of the search index each plain word of `text` is a prefix of, by the
    word's position; None when some word is a prefix of none (so nothing matches). A word
    covering more than WHOLE_TERMS is left out, to stay a prefix, as is one FTS5 reads other
    than as itself in lower case (punctuation splits it, or letters beyond ASCII fold)."""
    plain = [(i, word.lower()) for i, word in enumerate(search_words(text))
             if _PLAIN_WORD.fullmatch(word)]  # fmt: skip
    if not plain:
        return {}
    sql = _WHOLE_TERMS_SQL.format(values=", ".join("(?, ?)" for _ in plain), cap=WHOLE_TERMS)
    found: dict[int, list[str]] = {i: [] for i, _ in plain}
    for i, term in await db.execute_fetchall(sql, [value for pair in plain for value in pair]):
        found[i].append(term)
    if any(not terms for terms in found.values()):
        return None
    return {i: terms for i, terms in found.items() if len(terms) <= WHOLE_TERMS}


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, SQL) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("server.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def _connect(path: Path, *, readonly: bool) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    db.row_factory = aiosqlite.Row
    await db.execute("PRAGMA busy_timeout = 10000")
    await db.execute("PRAGMA foreign_keys = ON")
    if readonly:
        await db.execute("PRAGMA query_only = ON")
    else:
        await db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit survives power loss, not only a crash of the process.
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_BACKSTOP}")
    return db


class FairPool:
    """A pool of reader connections handed out first come, first served.

    `asyncio.Queue` lets a newcomer take a connection that was put back for a reader already
    waiting (the waiter is woken, finds the queue empty and queues again at the back), so
    under load some readers wait many times over: at 20 pages at once, a page took from 3 ms
    to 275 ms. Here a connection put back goes straight to the longest waiter."""

    def __init__(self) -> None:
        self._free: list[aiosqlite.Connection] = []
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    def put(self, connection: aiosqlite.Connection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._free.append(connection)

    async def get(self) -> aiosqlite.Connection:
        if self._free and not self._waiters:
            return self._free.pop()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.put(waiter.result())  # handed over as the waiter was cancelled
            raise


class Store:
    """The node's database. Open with `await Store.open(path)`, close with `await close()`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers = FairPool()
        self._all_readers: list[aiosqlite.Connection] = []
        self._batch: _Batch | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpointing: asyncio.Task | None = None
        self._checkpoint_again = False  # commits came while a checkpoint ran
        self._nonces_swept_at = 0  # when expired request nonces were last deleted
        self._work_waiting = 0  # writers waiting for the lock with changes to make
        # Moves whenever a transaction begins or ends or a writer's savepoint is rolled back,
        # so a cache of what the transaction holds (the feed's head) knows when to drop it.
        self.write_generation = 0
        # The node's feed (server.feed.Feed), set by the node: write_item appends through it.
        self.feed = None

    @classmethod
    async def open(cls, path: Path, *, readers: int = READERS) -> "Store":
        store = cls(path)
        try:
            store._writer = await _connect(store.path, readonly=False)
            await store._check_fts5()
            await store._migrate()
            store._checkpointer = await _connect(store.path, readonly=True)
            for _ in range(readers):
                reader = await _connect(store.path, readonly=True)
                store._all_readers.append(reader)
                store._readers.put(reader)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        for reader in self._all_readers:
            await reader.close()
        self._all_readers.clear()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    async def _check_fts5(self) -> None:
        try:
            await self._writer.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
            await self._writer.execute("DROP TABLE temp.fts5_probe")
        except sqlite3.OperationalError:
            raise StoreError(
                "this Python's SQLite has no FTS5 full-text search: install a Python built "
                f"with FTS5 (SQLite {sqlite3.sqlite_version} here)"
            ) from None

    async def _migrate(self) -> None:
        db = self._writer
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL) STRICT"
        )
        async with db.execute("SELECT number FROM schema_migrations") as cursor:
            done = {row[0] async for row in cursor}
        for number, name, sql in migrations():
            if number in done:
                continue
            try:
                await db.executescript(
                    "BEGIN IMMEDIATE;\n" + sql + "\nINSERT INTO schema_migrations VALUES ("
                    f"{number}, '{name}', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));\nCOMMIT;"
                )
            except sqlite3.Error as error:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise StoreError(f"migration {name} failed: {error}") from None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put(reader)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One atomic write: commits with the caller's changes in it, or raises and changes nothing.

        Group commit: writers that arrive while another is writing add their changes to the
        same `BEGIN IMMEDIATE` transaction, each inside its own savepoint, and the transaction
        commits (one fsync) once no one else is waiting or it holds `MAX_BATCH` writes. A
        writer whose block raises is rolled back to its savepoint and leaves the others' work
        alone. No writer returns before the COMMIT holding its changes has succeeded; if that
        COMMIT fails, every writer in the batch raises. A writer cancelled after its block
        finished may still be committed (as with any cancellation that arrives after COMMIT).
        """
        db = self._writer
        self._work_waiting += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._work_waiting -= 1
        try:
            batch = self._batch
            if batch is None:
                await db.execute("BEGIN IMMEDIATE")
                self.write_generation += 1
                batch = self._batch = _Batch()
            # The first writer of a batch needs no savepoint: if it fails, the whole
            # transaction, which holds nothing else, is rolled back.
            savepoint = batch.members > 0
            if savepoint:
                await db.execute("SAVEPOINT write")
        except BaseException:
            await asyncio.shield(self._abandon_if_empty())
            raise
        try:
            yield db
        except BaseException:
            await asyncio.shield(self._finish(batch, ok=False, savepoint=savepoint))
            raise
        # Shielded: a writer cancelled here still sees its batch committed or ended, so a
        # transaction is never left open with no one to commit it.
        await asyncio.shield(self._finish(batch, ok=True, savepoint=savepoint))
        if batch.error is not None:
            raise StoreError(f"the change could not be saved: {batch.error}") from batch.error

    async def _finish(self, batch: "_Batch", *, ok: bool, savepoint: bool) -> None:
        await self._leave(batch, ok=ok, savepoint=savepoint)
        if ok and batch.open:
            # Writers joined after us: wait for the turn after theirs; the last of them
            # normally commits, and if none could, we do.
            async with self._write_lock:
                if batch.open:
                    await self._commit(batch)

    async def _leave(self, batch: "_Batch", *, ok: bool, savepoint: bool) -> None:
        """End one writer's part of the batch; commit it if no one else is waiting to write.
        Runs holding the write lock, and releases it."""
        db = self._writer
        try:
            if ok:
                if savepoint:
                    try:
                        await db.execute("RELEASE write")
                    except sqlite3.Error as error:
                        # Which changes remain is unknowable: end the whole batch.
                        await self._rollback(batch, error)
                        return
                batch.members += 1
                if self._work_waiting == 0 or batch.members >= MAX_BATCH:
                    await self._commit(batch)
                return
            if not savepoint:  # the batch holds this writer's changes and nothing else
                await self._rollback(batch, None)
                return
            self.write_generation += 1
            try:
                await db.execute("ROLLBACK TO write")
                await db.execute("RELEASE write")
            except sqlite3.Error as error:
                await self._rollback(batch, error)
                return
            if not db.in_transaction:
                # SQLite itself rolled the whole transaction back (a full disk, an I/O error):
                # the earlier writers' changes went with it.
                self._close(batch, sqlite3.OperationalError("the transaction was rolled back"))
            # Otherwise the earlier writers, waiting in `_finish`, see the batch committed.
        finally:
            self._write_lock.release()

    async def _abandon_if_empty(self) -> None:
        """BEGIN or SAVEPOINT failed: end a transaction no one has written in; free the lock."""
        try:
            batch = self._batch
            if batch is None:
                # A cancelled BEGIN may still run on the connection's thread: wait for it.
                await self._writer.execute_fetchall("SELECT 1")
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
                self.write_generation += 1
            elif batch.members == 0:
                await self._rollback(batch, None)
        finally:
            self._write_lock.release()

    async def _commit(self, batch: "_Batch") -> None:
        try:
            await self._writer.execute("COMMIT")
        except sqlite3.Error as error:
            await self._rollback(batch, error)
            return
        self._close(batch, None)
        self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """Copy what was just committed from the write-ahead log into the database file, on
        the checkpointer's connection (its own thread), while the writer goes on.

        Inside the writer's COMMIT (SQLite's automatic checkpoint, every 1,000 pages), that
        copy and the database file's fsync were on every writer's path: on a node of 100,000
        items an ingest batch's COMMIT took 8 ms, 3.5 ms without. A PASSIVE checkpoint never
        waits for readers or the writer; what commits while it runs is left for the next one.
        The log starts over only when a writer finds it all copied, which a steady stream of
        commits never lets a checkpoint beside it finish in time for: the writer's own
        checkpoint at CHECKPOINT_BACKSTOP pages, mostly copied already, sees to that."""
        if self._checkpointer is None:
            return
        if self._checkpointing is not None:
            self._checkpoint_again = True
            return
        self._checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            while True:
                self._checkpoint_again = False
                try:
                    await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as error:  # another process checkpointing, a full disk:
                    log.warning("a checkpoint of the database failed: %s", error)  # the writer's own
                    return  # checkpoint (CHECKPOINT_BACKSTOP) keeps the log bounded meanwhile
                if not self._checkpoint_again:
                    return
        finally:
            self._checkpointing = None

    async def checkpointed(self) -> None:
        """Wait until no checkpoint is running (for tests)."""
        while self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)

    async def _rollback(self, batch: "_Batch", error: BaseException | None) -> None:
        if self._writer.in_transaction:
            await self._writer.execute("ROLLBACK")
        self._close(batch, error)

    def _close(self, batch: "_Batch", error: BaseException | None) -> None:
        self.write_generation += 1
        batch.open = False
        batch.error = error
        if self._batch is batch:
            self._batch = None

    async def fetch_one(self, sql: str, params: tuple = ()) -> aiosqlite.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: tuple = ()) -> list[aiosqlite.Row]:
        # One trip to the connection's thread (`execute` + `fetchall` + `close` would be three).
        async with self.read() as db:
            return list(await db.execute_fetchall(sql, params))

    # ------------------------------------------------------------------------ node meta

    async def get_meta(self, key: str) -> str | None:
        row = await self.fetch_one("SELECT value FROM node_meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    async def set_meta(self, key: str, value: str) -> None:
        async with self.write() as db:
            await db.execute(
                "INSERT INTO node_meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def ping(self) -> bool:
        """Whether the database answers a real query (one that reads the file, not `SELECT 1`)."""
        row = await self.fetch_one("SELECT count(*) FROM node_meta")
        return row is not None and row[0] > 0

    # ------------------------------------------------------------------------ users

    async def add_user(
        self, db: aiosqlite.Connection, *, username: str, display_name: str,
        password_hash: str, role: str, now: str,
    ) -> int:
        cursor = await db.execute(
            "INSERT INTO users (username, display_name, password_hash, role, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (username, display_name, password_hash, role, now),
        )
        return cursor.lastrowid

    async def username_taken(self, db: aiosqlite.Connection, username: str) -> bool:
        async with db.execute("SELECT 1 FROM users WHERE username = ?", (username,)) as cursor:
            return await cursor.fetchone() is not None

    async def user_by_id(self, user_id: int) -> User | None:
        return _user(await self.fetch_one(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)))

    async def user_by_username(self, username: str) -> User | None:
        return _user(
            await self.fetch_one(f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username,))
        )

    async def password_hash(self, user_id: int) -> str | None:
        row = await self.fetch_one("SELECT password_hash FROM users WHERE id = ?", (user_id,))
        return None if row is None else row[0]

    async def list_users(self) -> list[User]:
        rows = await self.fetch_all(f"SELECT {USER_COLUMNS} FROM users ORDER BY username")
        return [_user(row) for row in rows]

    async def count_admins(self) -> int:
        row = await self.fetch_one("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled")
        return row[0]

    async def set_user_role(self, db: aiosqlite.Connection, user_id: int, role: str) -> None:
        await db.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))

    async def set_user_language(self, db: aiosqlite.Connection, user_id: int,
                                language: str | None) -> None:  # fmt: skip
        await db.execute("UPDATE users SET language = ? WHERE id = ?", (language, user_id))

    async def set_user_disabled(self, db: aiosqlite.Connection, user_id: int, disabled: bool) -> None:
        await db.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))
        if disabled:
            await db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            await db.execute("UPDATE api_tokens SET revoked = 1 WHERE user_id = ?", (user_id,))

    # ------------------------------------------------------------------------ sessions, tokens

    async def add_session(
        self, *, token_hash: str, user_id: int, csrf_token: str, now: str, expires: str
    ) -> None:
        async with self.write() as db:
            await db.execute(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, created, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash, user_id, csrf_token, now, expires),
            )

    async def session(self, token_hash: str, now: str) -> "Session | None":
        """The live session's user, CSRF token and unread notifications, or None: one query,
        since every page asks all three."""
        row = await self.fetch_one(
            f"SELECT csrf_token, {', '.join('u.' + c for c in USER_COLUMNS.split(', '))},"
            " (SELECT count(*) FROM notifications n WHERE n.user_id = u.id AND n.read IS NULL)"
            " AS unread FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.token_hash = ? AND s.expires > ? AND NOT u.disabled",
            (token_hash, now),
        )
        return None if row is None else Session(_user(row), row["csrf_token"], row["unread"])

    async def delete_session(self, token_hash: str) -> None:
        async with self.write() as db:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def delete_expired_sessions(self, now: str) -> int:
        async with self.write() as db:
            cursor = await db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            return cursor.rowcount

    async def insert_session(
        self, db: aiosqlite.Connection, *, token_hash: str, user_id: int, csrf_token: str,
        now: str, expires: str,
    ) -> None:
        """`add_session` inside the caller's transaction."""
        await db.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created, expires)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_hash, user_id, csrf_token, now, expires),
        )

    async def set_password_hash(self, db: aiosqlite.Connection, user_id: int,
                                password_hash: str) -> None:  # fmt: skip
        """A new password ends every session of the member (the caller opens a new one)."""
        await db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
        await db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    async def add_api_token(self, *, token_hash: str, user_id: int, label: str, now: str) -> None:
        async with self.write() as db:
            await db.execute(
                "INSERT INTO api_tokens (token_hash, user_id, label, created) VALUES (?, ?, ?, ?)",
                (token_hash, user_id, label, now),
            )

    async def user_by_api_token(self, token_hash: str) -> User | None:
        return _user(
            await self.fetch_one(
                f"SELECT {', '.join('u.' + c for c in USER_COLUMNS.split(', '))}"
                " FROM api_tokens t JOIN users u ON u.id = t.user_id"
                " WHERE t.token_hash = ? AND NOT t.revoked AND NOT u.disabled",
                (token_hash,),
            )
        )

    async def api_token_in_use(self, token_hash: str) -> tuple[User, int, str | None] | None:
        """A live token's member, its id and when it was last used, or None."""
        row = await self.fetch_one(
            f"SELECT t.id AS token_id, t.last_used, {', '.join('u.' + c for c in USER_COLUMNS.split(', '))}"
            " FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.token_hash = ? AND NOT t.revoked AND NOT u.disabled",
            (token_hash,),
        )
        return None if row is None else (_user(row), row["token_id"], row["last_used"])

    async def touch_api_token(self, token_id: int, now: str) -> None:
        async with self.write() as db:
            await db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, token_id))

    async def api_tokens_of(self, user_id: int) -> list[aiosqlite.Row]:
        """A member's live tokens, newest first (never their secrets: only hashes are kept)."""
        return await self.fetch_all(
            "SELECT id, label, created, last_used FROM api_tokens"
            " WHERE user_id = ? AND NOT revoked ORDER BY created DESC, id DESC",
            (user_id,),
        )

    async def revoke_api_token(self, db: aiosqlite.Connection, token_id: int, user_id: int) -> bool:
        cursor = await db.execute(
            "UPDATE api_tokens SET revoked = 1 WHERE id = ? AND user_id = ? AND NOT revoked",
            (token_id, user_id),
        )
        return cursor.rowcount == 1

    # ------------------------------------------------------------------------ invites

    async def add_invite(
        self, *, code_hash: str, role: str, created_by: int | None, now: str, expires: str
    ) -> None:
        async with self.write() as db:
            await db.execute(
                "INSERT INTO invites (code_hash, role, created_by, created, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (code_hash, role, created_by, now, expires),
            )

    async def open_invite(self, code_hash: str, now: str) -> aiosqlite.Row | None:
        return await self.fetch_one(
            "SELECT id, role FROM invites"
            " WHERE code_hash = ? AND used_by IS NULL AND NOT revoked AND expires > ?",
            (code_hash, now),
        )

    async def use_invite(
        self, db: aiosqlite.Connection, code_hash: str, user_id: int, now: str
    ) -> str | None:
        """Mark an open invite used, inside the caller's transaction; its role, or None."""
        async with db.execute(
            "UPDATE invites SET used_by = ?, used_at = ?"
            " WHERE code_hash = ? AND used_by IS NULL AND NOT revoked AND expires > ?"
            " RETURNING role",
            (user_id, now, code_hash, now),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def list_invites(self) -> list[aiosqlite.Row]:
        return await self.fetch_all(
            "SELECT i.id, i.role, i.created, i.expires, i.used_at, i.revoked,"
            " c.username AS created_by, u.username AS used_by"
            " FROM invites i LEFT JOIN users c ON c.id = i.created_by"
            " LEFT JOIN users u ON u.id = i.used_by ORDER BY i.created DESC, i.id DESC LIMIT 200"
        )

    async def revoke_invite(self, db: aiosqlite.Connection, invite_id: int) -> bool:
        cursor = await db.execute(
            "UPDATE invites SET revoked = 1 WHERE id = ? AND used_by IS NULL AND NOT revoked",
            (invite_id,),
        )
        return cursor.rowcount == 1

    async def revoke_unused_invites(self, db: aiosqlite.Connection, role: str) -> None:
        await db.execute(
            "UPDATE invites SET revoked = 1 WHERE role = ? AND created_by IS NULL AND used_by IS NULL",
            (role,),
        )

    # ------------------------------------------------------------------------ audit log

    async def audit(
        self, db: aiosqlite.Connection, *, now: str, actor: User | None, action: str,
        target: str, detail: str = "",
    ) -> None:
        await db.execute(
            "INSERT INTO audit_log (at, actor_id, actor, action, target, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (now, actor.id if actor else None, actor.username if actor else "node", action,
             target, detail),
        )  # fmt: skip

    async def audit_entries(self, limit: int = 200) -> list[aiosqlite.Row]:
        return await self.fetch_all(
            "SELECT at, actor_id, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )

    # ------------------------------------------------------------------------ items

    async def write_item(
        self, db: aiosqlite.Connection, state: dict, *, origin: str, is_local: bool,
        owner_id: int | None = None, escalation: str | None = None, share_author: bool = False,
        now: str | None = None, held_version: "int | None | object" = LOOK_UP,
    ) -> int:
        """Insert or replace an item's stored state, inside the caller's write transaction;
        return its row number.

        The single path for every item write (see the module docstring). A local item whose
        reach is not `local` gets a feed entry carrying its new state whenever its version
        moves; node-local notes (escalation, share_author) change no version and add no entry.
        A caller that has just read the item in this transaction passes `held_version` (None
        for an item it has just made), which saves a query.
        """
        publish = False
        if is_local and state["reach"] != "local":
            if held_version is LOOK_UP:
                held = await db.execute_fetchall(
                    "SELECT version FROM items WHERE id = ?", (state["id"],)
                )
                held_version = held[0][0] if held else None
            publish = held_version is None or held_version < state["version"]
        returned = await db.execute_fetchall(
            ITEM_UPSERT + " RETURNING row",
            _item_params(state, origin, is_local, owner_id, escalation, share_author),
        )
        if publish:
            await self.feed.append(db, "item", state, at=now or state["updated"],
                                   item_id=state["id"], generation=self.write_generation)  # fmt: skip
        return returned[0][0]

    async def write_remote_items(self, db: aiosqlite.Connection, states: list[dict], *,
                                 origin: str | None = None, source_peer: int | None = None,
                                 via: dict[str, list[str]] | None = None,
                                 texts: dict[str, str] | None = None) -> list[aiosqlite.Cursor]:  # fmt: skip
        """Store the latest states of items from other nodes: ingest's batched form of
        `write_item` for remote items (which have no feed entry here). Returns the
        statements' cursors (see `_ItemChanges.write_soon` in allies.py for why a caller may
        keep them).

        Up to ROWS_A_STATEMENT items a statement, not a statement per item: each execution of
        a statement whose triggers write the search index (items_fts) begins a statement
        savepoint, at which FTS5 writes out what it holds in memory, so item by item each
        row left a segment of its own behind it. On a node of 100,000 items that made an item
        cost 55 µs to write instead of 31.

        Each item's origin is the one its id names (`origin`, when given, must agree);
        `source_peer` is the peer whose feed they were read from, `via` the relay path of
        each relayed one, by item id."""
        via = via or {}
        params = []
        for state in states:
            item_origin = state["id"].rsplit("/items/", 1)[0]
            if origin is not None and item_origin != origin:
                raise ValueError(f"{state['id']} is not an item of {origin}")
            params.append(_item_params(state, item_origin, False, None, None, False,
                                       via.get(state["id"]), source_peer,
                                       texts.get(state["id"]) if texts else None))  # fmt: skip
        cursors = []
        for start in range(0, len(params), ROWS_A_STATEMENT):
            rows = params[start : start + ROWS_A_STATEMENT]
            cursors.append(await db.execute(_item_upsert_rows(len(rows)),
                                            [value for row in rows for value in row]))  # fmt: skip
        return cursors

    async def _fetch_for_ids(self, db: aiosqlite.Connection | None, sql: str,
                             ids: list[str]) -> list:  # fmt: skip
        """The rows of `sql`, whose `{ids}` stands for an IN list, over these ids, a few
        hundred a statement; on `db` (inside a write transaction) or a reader."""
        rows: list = []
        unique = sorted(set(ids))
        for start in range(0, len(unique), IDS_A_STATEMENT):
            chunk = unique[start : start + IDS_A_STATEMENT]
            query = sql.format(ids=", ".join("?" * len(chunk)))
            rows.extend(await db.execute_fetchall(query, chunk) if db is not None
                        else await self.fetch_all(query, tuple(chunk)))  # fmt: skip
        return rows

    # ------------------------------------------------------------------------ relay

    async def origin_keys_in(self, db: aiosqlite.Connection, urls: list[str]
                             ) -> dict[str, tuple[int, str, list[tuple]]]:  # fmt: skip
        """For each of these nodes that is pinned: (peer id, trust, its keys as
        `peer_keys_in` gives them), read inside a write transaction."""
        found: dict[str, tuple[int, str, list[tuple]]] = {}
        for url in sorted(set(urls)):
            rows = await db.execute_fetchall("SELECT id, trust FROM peers WHERE url = ?", (url,))
            if rows:
                found[url] = (rows[0][0], rows[0][1], await self.peer_keys_in(db, rows[0][0]))
        return found

    async def relays_in(self, db: aiosqlite.Connection, item_ids: list[str]) -> dict[str, dict]:
        """What this node has relayed (or holds waiting to relay) of these items, by item id:
        {"path", "version", "state", "first_relayed", "status", "relayed_at"}."""
        rows = await self._fetch_for_ids(
            db, "SELECT item_id, path, version, state, first_relayed, status, relayed_at"
            " FROM relays WHERE item_id IN ({ids})", item_ids,
        )  # fmt: skip
        names = ("version", "state", "first_relayed", "status", "relayed_at")
        return {item_id: {"path": json.loads(path), **dict(zip(names, rest, strict=True))}
                for item_id, path, *rest in rows}  # fmt: skip

    async def relays_since(self, db: aiosqlite.Connection, origin: str, since: str) -> int:
        """How many of an origin's needs this node began relaying since `since`."""
        rows = await db.execute_fetchall(
            "SELECT count(*) FROM relays WHERE origin = ? AND first_relayed >= ?", (origin, since)
        )
        return rows[0][0]

    async def save_relay(self, db: aiosqlite.Connection, item_id: str, *, origin: str,
                         path: list[str], version: int, state: str, entry: str | None,
                         status: str, now: str) -> None:  # fmt: skip
        """Record that a version of an item was relayed (`state` relayed, with its status) or
        waits (`waiting`, with the entry to relay) for the origin's quota or the edit
        interval."""
        await db.execute(
            "INSERT INTO relays (item_id, origin, path, version, state, entry, first_relayed,"
            " status, relayed_at, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
            " CASE WHEN ?5 = 'relayed' THEN ?8 END, CASE WHEN ?5 = 'relayed' THEN ?7 END,"
            " CASE WHEN ?5 = 'relayed' THEN ?8 END, ?8)"
            " ON CONFLICT (item_id) DO UPDATE SET version = excluded.version,"
            " state = excluded.state, entry = excluded.entry, updated = excluded.updated,"
            " first_relayed = coalesce(relays.first_relayed, excluded.first_relayed),"
            " status = coalesce(excluded.status, relays.status),"
            " relayed_at = coalesce(excluded.relayed_at, relays.relayed_at)",
            (item_id, origin, json.dumps(path), version, state, entry, status, now),
        )

    async def forget_relay(self, db: aiosqlite.Connection, item_id: str) -> None:
        await db.execute("DELETE FROM relays WHERE item_id = ?", (item_id,))

    async def waiting_relays(self, limit: int = 200) -> list[tuple[str, str]]:
        """(item id, origin) of relays waiting for their origin's quota, oldest first."""
        rows = await self.fetch_all(
            "SELECT item_id, origin FROM relays WHERE state = 'waiting' ORDER BY updated LIMIT ?",
            (limit,),
        )
        return [(row[0], row[1]) for row in rows]

    async def waiting_relay_in(self, db: aiosqlite.Connection, item_id: str) -> tuple | None:
        """(entry text, what `relays_in` gives) of a relay still waiting, read in a write
        transaction; None if it is not waiting."""
        rows = await db.execute_fetchall(
            "SELECT entry FROM relays WHERE item_id = ? AND state = 'waiting'", (item_id,)
        )
        if not rows:
            return None
        return rows[0][0], (await self.relays_in(db, [item_id]))[item_id]

    async def record_sightings(self, db: aiosqlite.Connection,
                               seen: list[tuple[str, str]], at: str) -> None:  # fmt: skip
        """Note that our own needs were relayed: (item id, relaying node) each."""
        await db.executemany(
            "INSERT INTO relay_sightings (item_id, relayer, seen) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(item_id, relayer, at) for item_id, relayer in seen],
        )

    async def pending_responses(self, item_ids: list[str]) -> dict[str, int]:
        """How many responses to each of our own items wait for a decision, by item id."""
        found: dict[str, int] = {item_id: 0 for item_id in item_ids}
        found.update(tuple(row) for row in await self._fetch_for_ids(
            None, "SELECT item_id, count(*) FROM responses WHERE state = 'pending'"
            " AND item_id IN ({ids}) GROUP BY item_id", item_ids))  # fmt: skip
        return found

    async def sightings(self, item_ids: list[str]) -> dict[str, list[str]]:
        """The nodes seen relaying each of our own items, by item id."""
        found: dict[str, list[str]] = {item_id: [] for item_id in item_ids}
        rows = await self._fetch_for_ids(
            None, "SELECT item_id, relayer FROM relay_sightings WHERE item_id IN ({ids})"
            " ORDER BY seen, relayer", item_ids,
        )  # fmt: skip
        for item_id, relayer in rows:
            found[item_id].append(relayer)
        return found

    async def item_versions_in(self, db: aiosqlite.Connection, item_ids: list[str]
                               ) -> tuple[dict[str, int], set[str]]:  # fmt: skip
        """The stored version of each of these items that is stored, and which of them are
        relayed copies, read inside a write transaction, in a few queries."""
        versions: dict[str, int] = {}
        relayed: set[str] = set()
        rows = await self._fetch_for_ids(
            db, "SELECT id, version, via IS NOT NULL FROM items WHERE id IN ({ids})", item_ids
        )
        for item_id, version, is_relayed in rows:
            versions[item_id] = version
            if is_relayed:
                relayed.add(item_id)
        return versions, relayed

    async def item_in(self, db: aiosqlite.Connection, item_id: str) -> ItemRow | None:
        """An item read inside a write transaction (so a change sees the latest state)."""
        rows = await db.execute_fetchall(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    async def item(self, item_id: str) -> ItemRow | None:
        row = await self.fetch_one(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return None if row is None else _item(row)

    async def item_by_uuid(self, item_uuid: str) -> ItemRow | None:
        """A local item if there is one with that uuid, else a remote one, else None.

        Its id is probed under each origin the node holds items of (migration 0014): the
        origins walked one index seek each (a loose index scan of items_browse_origin), the
        ids looked up in the index of ids."""
        row = await self.fetch_one(ITEM_BY_UUID, (item_uuid,))
        return None if row is None else _item(row)

    async def due_for_expiry(self, now: str, limit: int = 500) -> list[str]:
        rows = await self.fetch_all(
            "SELECT id FROM items WHERE is_local AND status IN ('open', 'promised')"
            " AND expires <= ? ORDER BY expires LIMIT ?",
            (now, limit),
        )
        return [row[0] for row in rows]

    async def due_for_escalation(self, *, urgent_before: str, other_before: str,
                                 limit: int = 500) -> list[str]:  # fmt: skip
        """Local needs still open and in the group whose delay has passed (DESIGN §6)."""
        rows = await self.fetch_all(
            "SELECT id FROM items WHERE is_local AND kind = 'need' AND status = 'open'"
            " AND reach = 'local' AND coalesce(escalation, 'after_delay') = 'after_delay'"
            " AND created <= CASE WHEN urgency = 'urgent' THEN ? ELSE ? END"
            " ORDER BY created LIMIT ?",
            (urgent_before, other_before, limit),
        )
        return [row[0] for row in rows]

    async def list_items(self, query: "ItemQuery") -> list[ItemRow]:
        async with self.read() as db:
            whole = await whole_terms(db, query.q) if query.q else {}
            if whole is None:
                return []  # a word of the search begins no term the index holds
            sql, params = query.sql(whole)
            return [_item(row) for row in await db.execute_fetchall(sql, params)]

    # ------------------------------------------------------------------------ federation

    async def peers(self) -> list[Peer]:
        return [_peer(row) for row in await self.fetch_all(
            f"SELECT {PEER_COLUMNS} FROM peers ORDER BY name COLLATE NOCASE, id")]  # fmt: skip

    async def peer(self, peer_id: int) -> Peer | None:
        return _peer(await self.fetch_one(f"SELECT {PEER_COLUMNS} FROM peers WHERE id = ?",
                                          (peer_id,)))  # fmt: skip

    async def peer_by_url(self, url: str) -> Peer | None:
        return _peer(await self.fetch_one(f"SELECT {PEER_COLUMNS} FROM peers WHERE url = ?",
                                          (url,)))  # fmt: skip

    async def peer_in(self, db: aiosqlite.Connection, peer_id: int) -> Peer | None:
        """A peer read inside a write transaction (its cursor as this transaction sees it)."""
        rows = await db.execute_fetchall(f"SELECT {PEER_COLUMNS} FROM peers WHERE id = ?",
                                         (peer_id,))  # fmt: skip
        return _peer(rows[0]) if rows else None

    async def peer_keys_in(self, db: aiosqlite.Connection, peer_id: int) -> list[tuple]:
        """(key id, public, retired_at_seq) of a peer's pinned keys, in the order they served."""
        rows = await db.execute_fetchall(
            "SELECT key_id, public, retired_at_seq FROM peer_keys WHERE peer_id = ?"
            " ORDER BY retired_at_seq IS NULL, retired_at_seq, rowid",
            (peer_id,),
        )
        return [tuple(row) for row in rows]

    async def update_peer(self, db: aiosqlite.Connection, peer_id: int, **fields: Any) -> None:
        """Set some of a peer's columns (names from PEER_COLUMNS only)."""
        allowed = set(PEER_COLUMNS.replace(" ", "").split(",")) - {"id", "url", "created"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not peer columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await db.execute(f"UPDATE peers SET {assignments} WHERE id = ?",
                         (*fields.values(), peer_id))  # fmt: skip

    async def record_refusals(self, db: aiosqlite.Connection, peer_id: int,
                              refused: list[tuple[int, str | None, str]], at: str) -> None:  # fmt: skip
        """Record why entries' states were not applied: (seq, item id, reason) each."""
        await db.executemany(
            "INSERT INTO ingest_refusals (peer_id, seq, item_id, reason, at) VALUES (?, ?, ?, ?, ?)",
            [(peer_id, seq, item_id, reason, at) for seq, item_id, reason in refused],
        )

    async def refusals(self, peer_id: int, limit: int = 20) -> list[aiosqlite.Row]:
        return await self.fetch_all(
            "SELECT seq, item_id, reason, at FROM ingest_refusals WHERE peer_id = ?"
            " ORDER BY id DESC LIMIT ?",
            (peer_id, limit),
        )

    async def drop_remote_items(self, db: aiosqlite.Connection, origin: str) -> int:
        """Remove a node's items, and those read from its feed (the needs it relayed)."""
        cursor = await db.execute(
            "DELETE FROM items WHERE NOT is_local AND (origin = ?1 OR source_peer ="
            " (SELECT id FROM peers WHERE url = ?1))",
            (origin,),
        )
        return cursor.rowcount

    async def drop_remote_items_by_id(self, db: aiosqlite.Connection,
                                      item_ids: list[str]) -> list[aiosqlite.Cursor]:  # fmt: skip
        """Remove these remote items, a few hundred a statement (not one each, for the reason
        `write_remote_items` gives); the statements' cursors, as that returns them."""
        cursors = []
        for start in range(0, len(item_ids), IDS_A_STATEMENT):
            chunk = item_ids[start : start + IDS_A_STATEMENT]
            cursors.append(await db.execute(
                f"DELETE FROM items WHERE NOT is_local AND id IN ({', '.join('?' * len(chunk))})",
                chunk))  # fmt: skip
        return cursors

    async def drop_items_read_from(self, db: aiosqlite.Connection, peer_id: int) -> int:
        """Remove the remote items last read from a peer's feed (taking back a snapshot
        that failed, server/allies.py)."""
        cursor = await db.execute("DELETE FROM items WHERE NOT is_local AND source_peer = ?",
                                  (peer_id,))  # fmt: skip
        return cursor.rowcount

    async def drop_expired_remote_items(self, now: str) -> int:
        async with self.write() as db:
            cursor = await db.execute(
                "DELETE FROM items WHERE NOT is_local AND expires <= ?", (now,)
            )
            return cursor.rowcount

    async def request_keys(self) -> dict[str, tuple[int, str, str, bool]]:
        """Current pinned keys of every known node: key id → (peer id, public key, trust,
        whether pushing to it is paused)."""
        rows = await self.fetch_all(
            "SELECT k.key_id, k.peer_id, k.public, p.trust,"
            " p.push_stopped OR p.push_next_attempt IS NOT NULL FROM peer_keys k"
            " JOIN peers p ON p.id = k.peer_id WHERE k.retired_at_seq IS NULL"
        )
        return {row[0]: (row[1], row[2], row[3], bool(row[4])) for row in rows}

    async def feed_head_seq(self) -> int:
        row = await self.fetch_one("SELECT max(seq) FROM feed")
        return row[0] or 0

    async def remember_nonce(self, key_id: str, nonce: str, now: int, window: int) -> bool:
        """Record a request nonce; False if the same key used it within `window` seconds."""
        async with self.write() as db:
            return await self.remember_nonce_in(db, key_id, nonce, now, window)

    async def remember_nonce_in(self, db: aiosqlite.Connection, key_id: str, nonce: str,
                                now: int, window: int) -> bool:  # fmt: skip
        """`remember_nonce` inside the caller's write transaction, so that the request's
        nonce commits with what the request did, or not at all. The write connection sees
        what writers before it in the transaction recorded: of two requests with one nonce,
        the second is refused even before the first commits.

        One statement: a nonce seen before but longer than `window` ago counts as new (its
        row is renewed). Rows older than the window are swept away at most once every
        NONCE_SWEEP_SECONDS, not by every request (a statement, and a trip to the writer's
        thread, for each push)."""
        if now - self._nonces_swept_at >= NONCE_SWEEP_SECONDS:
            await db.execute("DELETE FROM seen_nonces WHERE seen_at <= ?", (now - window,))
            self._nonces_swept_at = now
        cursor = await db.execute(
            "INSERT INTO seen_nonces (key_id, nonce, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key_id, nonce) DO UPDATE SET seen_at = excluded.seen_at"
            " WHERE seen_nonces.seen_at <= ?",
            (key_id, nonce, now, now - window),
        )
        return cursor.rowcount == 1

    async def nonce_seen(self, key_id: str, nonce: str, now: int, window: int) -> bool:
        """Whether a committed request used this nonce within `window` seconds: a look, on a
        reader, that refuses a replay early; only `remember_nonce(_in)` decides."""
        row = await self.fetch_one(
            "SELECT 1 FROM seen_nonces WHERE key_id = ? AND nonce = ? AND seen_at > ?",
            (key_id, nonce, now - window),
        )
        return row is not None

    async def count_items(self) -> dict[str, int]:
        rows = await self.fetch_all(
            "SELECT kind, count(*) FROM items WHERE is_local GROUP BY kind"
        )
        return {row[0]: row[1] for row in rows}

    # ------------------------------------------------------------------------ operations

    async def metrics_counts(self, now: str) -> dict[str, dict]:
        """What /metrics reads at scrape time (server/metrics.py): feed entries by type, items
        by (origin, status), and the depth of each queue of waiting work."""
        async with self.read() as db:
            feed = await db.execute_fetchall("SELECT type, count(*) FROM feed GROUP BY type")
            items = await db.execute_fetchall(
                "SELECT CASE WHEN is_local THEN 'local' ELSE 'remote' END, status, count(*)"
                " FROM items GROUP BY 1, 2"
            )
            (queues,) = await db.execute_fetchall(
                "SELECT (SELECT count(*) FROM relays WHERE state = 'waiting'),"
                " (SELECT count(*) FROM response_status_outbox WHERE next_attempt IS NOT NULL),"
                " (SELECT count(*) FROM items WHERE is_local AND status IN ('open', 'promised')"
                "  AND expires <= ?)",
                (now,),
            )
        return {
            "feed_entries": {row[0]: row[1] for row in feed},
            "items": {(row[0], row[1]): row[2] for row in items},
            "queues": dict(zip(("relays_waiting", "response_status", "expiry_due"), queues,
                               strict=True)),
        }  # fmt: skip

    async def usage_counts(self, *, month_ago: str, halfyear_ago: str) -> dict[str, int]:
        """For NodeInfo: active accounts, and those that signed in (a session begun) or posted
        an item since each time. Sessions end at logout, so activity is a lower bound."""
        row = await self.fetch_one(
            "WITH active(user_id, at) AS (SELECT user_id, created FROM sessions"
            "  UNION ALL SELECT owner_id, created FROM items WHERE is_local AND owner_id IS NOT NULL),"
            " live(id) AS (SELECT id FROM users WHERE NOT disabled)"
            " SELECT (SELECT count(*) FROM live),"
            " (SELECT count(DISTINCT user_id) FROM active WHERE at >= ?1 AND user_id IN live),"
            " (SELECT count(DISTINCT user_id) FROM active WHERE at >= ?2 AND user_id IN live)",
            (month_ago, halfyear_ago),
        )
        return {"total": row[0], "activeMonth": row[1], "activeHalfyear": row[2]}

    # ------------------------------------------------------------------------ matching, queue

    async def match_candidates(
        self, *, kind: str, category: str, now: str, pool: int, category_pool: int
    ) -> list["MatchCandidate"]:
        """The pool matching scores (server/matching.py): the newest `pool` open, live items of
        `kind` and the newest `category_pool` of them in `category`, each once. Two index
        range reads (migration 0009), whatever the node holds; each candidate's full row is
        parsed only if it is shown."""
        newest = ("SELECT row FROM items WHERE kind = ?1 AND status = 'open' {also}"
                  " AND expires > ?2 ORDER BY created DESC, row DESC LIMIT {limit}")  # fmt: skip
        rows = await self.fetch_all(
            f"WITH pool(row) AS (SELECT row FROM ({newest.format(also='', limit='?3')})"
            f" UNION SELECT row FROM ({newest.format(also='AND category = ?4', limit='?5')}))"
            " SELECT row, category, coalesce(geohash, ''), title, tags, body, created,"
            f" {ITEM_COLUMNS} FROM items WHERE row IN pool",
            (kind, now, pool, category, category_pool),
        )
        return [MatchCandidate(*row[:7], row) for row in rows]

    async def unmet_local_needs(self, now: str, limit: int) -> list[ItemRow]:
        """This node's open, live needs: urgent first, then normal, then low; oldest first."""
        rows = await self.fetch_all(
            f"SELECT {ITEM_COLUMNS} FROM items"
            " WHERE is_local AND kind = 'need' AND status = 'open' AND expires > ?"
            " ORDER BY CASE urgency WHEN 'urgent' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END,"
            " created, row LIMIT ?",
            (now, limit),
        )
        return [_item(row) for row in rows]

    async def latest_feed_seqs(self, item_ids: list[str]) -> dict[str, int]:
        """The seq of the latest feed entry of each of these items that has one."""
        rows = await self._fetch_for_ids(
            None, "SELECT item_id, max(seq) FROM feed WHERE item_id IN ({ids}) GROUP BY item_id",
            item_ids,
        )  # fmt: skip
        return {row[0]: row[1] for row in rows}


class MatchCandidate(NamedTuple):
    """An open, live item as matching weighs it: the columns it is scored on, and its full
    row, parsed (`item()`) only for the few that are shown. A tuple: hundreds are made per
    page, and a dataclass costs several times more to make."""

    row: int
    category: str
    geohash: str  # "" for none
    title: str
    tags: str
    body: str
    created: str
    columns: aiosqlite.Row

    def item(self) -> ItemRow:
        return _item(self.columns)


@dataclass
class ItemQuery:
    """A filtered, paged item listing. Visibility rules are the caller's to set:
    `now` hides expired items (even before the expiry worker marks them), `statuses` limits
    status (None shows expired ones too, for a poster's history), `public_only` keeps this node's own federated open offers only (for visitors: allies shared theirs with our members, not with the public)."""

    now: str | None
    statuses: tuple[str, ...] = ("open", "promised")
    kind: str | None = None
    category: str | None = None
    q: str | None = None
    origin: str = "all"
    item_id: str | None = None
    owner_id: int | None = None
    limit: int = 50
    after: tuple[str, int] | None = None  # (created, row) of the last item of the page before
    after_row: int | None = None  # with `q`: the row of the last item of the page before
    public_only: bool = False
    near: str | None = None  # a geohash prefix

    def sql(self, whole: dict[int, list[str]] | None = None) -> tuple[str, tuple[Any, ...]]:
        """The query and its parameters; `whole` as fts_query takes it."""
        where = ["1"]
        params: list[Any] = []
        if self.now is not None:
            where.append("i.expires > ?")
            params.append(self.now)
        where.append(f"i.status IN ({', '.join('?' * len(self.statuses))})")
        params.extend(self.statuses)
        for column, value in (("i.kind", self.kind), ("i.category", self.category),
                              ("i.id", self.item_id), ("i.owner_id", self.owner_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if self.origin == "local":
            where.append("i.is_local")
        elif self.origin == "remote":
            where.append("NOT i.is_local")
        elif self.origin != "all":  # one group, by its base URL
            where.append("i.origin = ?")
            params.append(self.origin)
        if self.near is not None:  # geohashes hold only [0-9a-z]: no LIKE wildcards in them
            where.append("substr(i.geohash, 1, ?) = ?")
            params.extend([len(self.near), self.near])
        if self.public_only:
            where.append("i.is_local AND i.kind = 'offer' AND i.status = 'open' AND i.reach != 'local'")
        join = ""
        order = "i.created DESC, i.row DESC"
        if self.q and fts_query(self.q):
            # Matches newest first, by the row the item was stored in: FTS5 walks its index in
            # rowid order and stops at the page's end, so a search costs about the same
            # whatever the node holds. (Ordering by bm25 rank would score every match first:
            # 100 ms and more for a common word among 100,000 items.)
            join = " JOIN items_fts f ON f.rowid = i.row"
            where.append("items_fts MATCH ?")
            params.append(fts_query(self.q, whole))
            order = "f.rowid DESC"
            if self.after_row is not None:
                where.append("f.rowid < ?")
                params.append(self.after_row)
        elif self.after is not None:
            where.append("(i.created, i.row) < (?, ?)")
            params.extend(self.after)
        sql = (
            f"SELECT {', '.join('i.' + c for c in ITEM_COLUMNS.split(', '))} FROM items i{join}"
            f" WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        )
        params.append(self.limit)
        return sql, tuple(params)


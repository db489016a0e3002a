"""Allies: the other nodes this one trusts, follows and reads (DESIGN §4.5–4.6).

Adding a peer fetches its node document through the address guard (`federation.outbound`),
pins its keys, trusts it and follows it; the admin sees its name and key fingerprint to
compare out of band. Following means reading its feed: `pull` asks for the entries after our
cursor, page by page, and `ingest` takes them in. A new ally of a node with a long history
first takes its live state from its snapshot (`sync_from_snapshot`), judged by the same rules,
and reads the feed from the snapshot's head on.

Ingest keeps two questions apart:

- chain validity (strict JSON, shape, origin, seq, prev, key, signature: `ChainState`) decides
  whether an entry is accepted and moves the cursor. The first invalid entry ends the batch;
  a fork (an entry, validly signed, that contradicts what we hold) stops ingest from that node
  until an admin re-syncs it;
- content validity (the item rules, the id under its origin, a newer version) decides whether
  an accepted item state is applied and shown; a refusal is recorded on the peer with its
  reason, and the chain goes on.

The accepted entries, the states applied and the new cursor commit in one transaction (with,
for a push, the request's nonce: one COMMIT a push): ingest is idempotent (entries at or below
the cursor are skipped), and nothing counts as received before it is on disk.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiosqlite

from federation import items as item_rules
from federation import relay as relay_rules
from federation import snapshot as snapshot_rules
from federation.encoding import SIGNATURE_CHARS, b64url_decode
from federation.entries import (
    ChainState,
    body_cut,
    canonical,
    check_key_entry,
    check_shape_encoded,
    hash_bytes,
    signing_input_cut,
    verify_signature,
)  # fmt: skip
from federation.errors import BaseUrlError, ProtocolError, ValidationError
from federation.identity import NodeDocument, parse_base_url, parse_node_document
from federation.items import N_
from federation.keys import NodeKey, fingerprint, parse_public_key
from federation.outbound import FetchError, Outbound
from federation.strictjson import loads_strict
from federation.timefmt import format_time, parse_time

from .errors import BadGateway, ClientError, Invalid, NotFound
from .feed import read_texts
from .store import Peer
from .verifying import Verifier
from .workers import first_of, run_rounds

if TYPE_CHECKING:
    from .accounts import User
    from .node import Node
    from .routing import PendingNonce

log = logging.getLogger("aidnode.allies")

PULL_LIMIT = 1000  # entries asked for per page (the feed's maximum)
PULL_PAGES_PER_ROUND = 200  # a bound on one round of pulling one peer
BACKOFF_FIRST = 10  # seconds; doubles with each consecutive failure
BACKOFF_MAX = 3600
TRUSTS = ("blocked", "unknown", "trusted")
PUSH_BATCH = 100  # entries per push, at most (DESIGN §4.5)
PUSH_MAX_BYTES = 512 * 1024
INGEST_BATCH = 100  # entries taken in per write transaction
WRITE_AHEAD = 20  # accepted entries whose items are written while the batch's rest is checked
# Signatures of a batch are checked ahead on the signature checker processes
# (server/verifying.py), for batches of at least VERIFY_AHEAD_MIN entries.
VERIFY_AHEAD_MIN = 8
VERIFY_CHUNK = 10  # entries a checker task checks
# Seconds a batch waits for a checker's answer; then its remaining signatures are checked here
# (a checker hung or starved of CPU by a busy node costs speed, never progress).
ANSWER_WAIT = 2.0
PUSH_LAG_MAX = 1000  # a follower further behind than this catches up by pulling pages
# While entries keep coming, pushes start about this many times a second in all, at most: each
# of n followers is then pushed to every n / 50 s (1 s for 50), in batches (`Allies._push`).
PUSH_STREAM_RATE = 50
PUSH_GIVE_UP = timedelta(days=7)  # then pushing stops until that node is heard from again
LEARN_IN_FLIGHT = 2  # node documents of unknown nodes fetched at once, at most
LEARN_PER_MINUTE = 30
LEARN_FAILURE_MEMORY = 600  # seconds a failed fetch is remembered (and not repeated)
# A feed longer than this, of which we hold nothing, is taken from its snapshot (live state
# only) rather than replayed; the same bound as push lag, so a new ally far behind is never
# pushed to while it reads (docs/protocol.md §8.1).
SNAPSHOT_AFTER = PUSH_LAG_MAX
SNAPSHOT_LIMIT = 1000  # live entries asked for per snapshot page (the most a node serves)
SNAPSHOT_PAGES_MAX = 10_000  # a bound on one snapshot: ten million live items


def key_in_force(keys: list[tuple[str, str, int | None]], seq: int) -> tuple[str, str]:
    """The (key id, public) that signs entry `seq`, from keys in the order they served."""
    for key_id, public, retired_at in keys:
        if retired_at is None or retired_at >= seq:
            return key_id, public
    raise ProtocolError("no pinned key covers this part of the feed")


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failures: doubling, capped, jittered."""
    base = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))
    return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def peer_json(peer: Peer, key_fingerprint: str | None) -> dict:
    """A peer as `GET /api/v1/peers` shows it (DESIGN §8)."""
    return {
        "id": peer.id, "url": peer.url, "name": peer.name, "fingerprint": key_fingerprint,
        "trust": peer.trust, "relay": peer.relay, "we_follow": peer.we_follow,
        "they_follow": peer.they_follow, "received_seq": peer.received_seq,
        "delivered_seq": peer.delivered_seq, "last_error": peer.last_error,
    }  # fmt: skip


class Allies:
    """Peers and reading their feeds, for one node."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._key: tuple[NodeKey, str] | None = None
        self.outbound = Outbound(
            allow_private_addresses=node.config.allow_private_addresses,
            signer=self._signer, clock=node.clock,
        )  # fmt: skip
        self._wake = node.wake_event("pull")
        self._deliver = node.wake_event("deliver")
        self._learning = asyncio.Semaphore(LEARN_IN_FLIGHT)
        self._learned_at: list[float] = []  # monotonic times of recent fetches
        self._learn_failures: dict[str, tuple[float, str]] = {}
        self._pushing: set[int] = set()  # peers with a delivery running
        self._missed: set[int] = set()  # of those, peers a round skipped: another round is due
        self._push_tasks: set[asyncio.Task] = set()
        self._followers = 0  # that we deliver to, as the last round counted them
        # The node's checkers, shared out among its worker processes (at least one each).
        config = node.config
        self.verifier = Verifier(-(-config.verify_processes // config.workers))

    async def close(self) -> None:
        await self.outbound.aclose()
        await self.verifier.close()

    def _signer(self) -> tuple[NodeKey, str]:
        if self._key is None:
            raise RuntimeError("the signing key was not loaded")
        return self._key

    async def _load_key(self) -> None:
        """The key requests are signed with: read each time, as `key rotate` may change it."""
        async with self.node.store.read() as db:
            key = await self.node.feed.current_key(db)
        self._key = (key, key.key_id(self.node.config.base_url))

    @property
    def store(self):
        return self.node.store

    # -------------------------------------------------------------------- peers

    async def fingerprints(self) -> dict[int, str]:
        """The fingerprint of each peer's current pinned key, by peer id."""
        rows = await self.store.fetch_all(
            "SELECT peer_id, public FROM peer_keys WHERE retired_at_seq IS NULL"
        )
        return {row[0]: fingerprint(parse_public_key(row[1])) for row in rows}

    async def fetch_document(self, url: str) -> NodeDocument:
        """Fetch and check a node's document; BadGateway (502) saying why if that fails."""
        try:
            reply = await self.outbound.request("GET", f"{url}/.well-known/aidnode", signed=False,
                                                max_bytes=64 * 1024)  # fmt: skip
            if reply.status != 200:
                raise BadGateway(N_("%(url)s answered %(status)s for its node document"),
                                 params={"url": url, "status": reply.status})  # fmt: skip
            return parse_node_document(reply.json(), url)
        except FetchError as error:
            raise BadGateway(N_("could not reach %(url)s: %(error)s"),
                             params={"url": url, "error": str(error)}) from None
        except ProtocolError as error:
            raise BadGateway(str(error)) from None

    def parse_url(self, url: object) -> str:
        try:
            url = parse_base_url(url.strip() if isinstance(url, str) else url,
                                 allow_private_addresses=self.node.config.allow_private_addresses)
        except BaseUrlError as error:
            raise Invalid(error.message, field="url", params=error.params) from None
        if url == self.node.config.base_url:
            raise Invalid(N_("that is this node's own address"), field="url")
        return url

    async def add_peer(self, url: object, actor: "User | None") -> tuple[Peer, bool]:
        """Trust and follow a node by its base URL; (peer, whether it is new).

        A new node's document is fetched (502 if it cannot be), its keys pinned; a node
        already known (say, one whose subscription waits) is trusted and followed."""
        url = self.parse_url(url)
        now = self.node.now_text()
        known = await self.store.peer_by_url(url)
        if known is not None:
            peer = await self.set_peer(known.id, actor, trust="trusted", follow=True)
            return peer, False
        doc = await self.fetch_document(url)
        async with self.store.write() as db:
            cursor = await db.execute(
                "INSERT INTO peers (url, name, description, trust, relay, we_follow, created)"
                " VALUES (?, ?, ?, 'trusted', 1, 'pending', ?) ON CONFLICT (url) DO NOTHING",
                (url, doc.name, doc.description, now),
            )
            if cursor.rowcount == 0:  # added meanwhile by someone else
                peer_id = (await self.store.peer_by_url(url)).id
            else:
                peer_id = cursor.lastrowid
                for key_id, public, retired in doc.keys:
                    await db.execute(
                        "INSERT INTO peer_keys (key_id, peer_id, public, retired_at_seq)"
                        " VALUES (?, ?, ?, ?)",
                        (key_id, peer_id, public, retired),
                    )
                await self.store.audit(db, now=now, actor=actor, action="peer.add", target=url,
                                       detail=fingerprint(parse_public_key(doc.keys[-1][1])))  # fmt: skip
        self.node.peer_names[url] = doc.name
        peer = await self.store.peer(peer_id)
        await self.subscribe(peer)
        self.wake()
        return await self.store.peer(peer_id), True

    async def set_peer(self, peer_id: int, actor: "User | None", *, trust: str | None = None,
                       relay: bool | None = None, follow: bool | None = None) -> Peer:  # fmt: skip
        """Change what this node decides about a peer. Blocking drops its items from every
        view at once and forgets its feed (trusting it again reads the feed anew)."""
        if trust is not None and trust not in TRUSTS:
            raise Invalid(f"trust must be one of: {', '.join(TRUSTS)}", field="trust")
        now = self.node.now_text()
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is None:
                raise NotFound(N_("no such peer"))
            fields: dict[str, Any] = {}
            changes = []
            tell = None  # what to tell them of their subscription, once committed
            if trust is not None and trust != peer.trust:
                fields["trust"] = trust
                changes.append(f"trust {peer.trust} → {trust}")
                if trust == "blocked":
                    await self.store.drop_remote_items(db, peer.url)
                    fields.update(received_seq=0, received_hash=None, head_seq=0, failures=0,
                                  next_attempt=None, last_error=None)  # fmt: skip
                    if peer.they_follow in ("pending", "accepted"):
                        fields["they_follow"] = "rejected"
                elif trust == "trusted" and peer.they_follow == "pending":
                    fields.update(they_follow="accepted", push_stopped=0, push_failures=0,
                                  push_next_attempt=None)  # fmt: skip
                    tell = "accepted"
            if relay is not None and relay != peer.relay:
                fields["relay"] = int(relay)
                changes.append(f"relay {'on' if relay else 'off'}")
            if follow is not None:
                wanted = ("pending" if peer.we_follow in ("none", "rejected") else peer.we_follow)
                state = wanted if follow else "none"
                if state != peer.we_follow:
                    fields["we_follow"] = state
                    changes.append("follow" if follow else "unfollow")
            if follow or trust == "trusted":  # an admin's say-so is a retry, both ways
                if peer.next_attempt is not None:
                    fields["next_attempt"] = None
                if peer.push_stopped or peer.push_next_attempt is not None:
                    fields.update(push_stopped=0, push_next_attempt=None)
            if fields:
                await self.store.update_peer(db, peer_id, **fields)
            if changes:
                await self.store.audit(db, now=now, actor=actor, action="peer.change",
                                       target=peer.url, detail=", ".join(changes))  # fmt: skip
        changed = await self.store.peer(peer_id)
        if tell is not None:
            await self._tell_subscription(changed, tell)
        if follow is True and changed.trust == "trusted" and changed.we_follow != "accepted":
            await self.subscribe(changed)
        elif follow is False and peer.we_follow != "none":
            await self._unsubscribe(changed)
        self.wake()
        self.wake_delivery()
        return await self.store.peer(peer_id)

    async def resync(self, peer_id: int, actor: "User | None") -> Peer:
        """Forget what we hold of a peer's feed (after a fork, say) and read it anew."""
        now = self.node.now_text()
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is None:
                raise NotFound(N_("no such peer"))
            await self.store.drop_remote_items(db, peer.url)
            await self.store.update_peer(db, peer_id, received_seq=0, received_hash=None,
                                         head_seq=0, last_error=None, failures=0,
                                         next_attempt=None)  # fmt: skip
            await self.store.audit(db, now=now, actor=actor, action="peer.resync",
                                   target=peer.url)  # fmt: skip
        self.wake()
        return await self.store.peer(peer_id)

    # -------------------------------------------------------------------- subscriptions

    async def learn_node(self, key_id: str) -> NodeDocument:
        """A signed request from a node not met before: fetch its document (through the guard,
        rate-limited, failures remembered) to learn the key. Nothing is kept until the request
        verifies with that key (`pin_node`), so naming a node is not enough to be listed.

        Raises Unauthorized when the key cannot be learned this way, Forbidden for a blocked node."""
        from .errors import Forbidden, Unauthorized

        url = key_id.rsplit("#", 1)[0]
        try:
            url = parse_base_url(url, allow_private_addresses=self.node.config.allow_private_addresses)
        except BaseUrlError:
            raise Unauthorized("signature refused: its keyid names no node") from None
        known = await self.store.peer_by_url(url)
        if known is not None:
            if known.trust == "blocked":
                raise Forbidden("this node does not accept requests from yours")
            # A key we never pinned, from a node we know: only a `key` entry can change keys.
            await self._note(known.id, f"key: a request was signed with {key_id[:200]}, a key "
                                       "not announced in its feed; refused")  # fmt: skip
            raise Unauthorized("signature refused: that key is not the one pinned for your node")
        try:
            doc = await self._fetch_unknown(url)
        except ClientError as error:
            raise Unauthorized(f"signature refused: {error.message}") from None
        if key_id != doc.current_key[0]:
            raise Unauthorized("signature refused: not signed with the node's current key")
        return doc

    async def _fetch_unknown(self, url: str) -> NodeDocument:
        """The document of a node not met before, within the limits on such fetches (DESIGN
        §4.4: two at once, 30 a minute, failures remembered ten minutes); ClientError if not."""
        loop = asyncio.get_running_loop()
        failed = self._learn_failures.get(url)
        if failed is not None and loop.time() - failed[0] < LEARN_FAILURE_MEMORY:
            raise ClientError(f"the node document could not be read: {failed[1]}")
        self._learned_at = [t for t in self._learned_at if loop.time() - t < 60]
        if len(self._learned_at) >= LEARN_PER_MINUTE:
            raise ClientError("too many unknown nodes at once; try again later")
        self._learned_at.append(loop.time())
        async with self._learning:
            try:
                return await self.fetch_document(url)
            except BadGateway as error:
                self._learn_failures[url] = (loop.time(), error.message)
                raise ClientError(error.message) from None

    async def pin_node(self, doc: NodeDocument) -> int:
        """Keep a node whose request verified with its document's key, as `unknown`; its id."""
        async with self.store.write() as db:
            cursor = await db.execute(
                "INSERT INTO peers (url, name, description, trust, relay, created)"
                " VALUES (?, ?, ?, 'unknown', 1, ?) ON CONFLICT (url) DO NOTHING",
                (doc.url, doc.name, doc.description, self.node.now_text()),
            )
            if not cursor.rowcount:  # kept meanwhile, by a request that came at the same time
                rows = await db.execute_fetchall("SELECT id FROM peers WHERE url = ?", (doc.url,))
                return rows[0][0]
            for pinned_id, public, retired in doc.keys:
                await db.execute(
                    "INSERT OR IGNORE INTO peer_keys (key_id, peer_id, public, retired_at_seq)"
                    " VALUES (?, ?, ?, ?)",
                    (pinned_id, cursor.lastrowid, public, retired),
                )
        self.node.peer_names.setdefault(doc.url, doc.name)
        return cursor.lastrowid

    async def heard_from(self, peer_id: int) -> None:
        """A signed request from a peer: if pushing to it had stopped or was backing off, it is
        reachable again, so resume now."""
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is None or not (peer.push_stopped or peer.push_next_attempt):
                return
            await self.store.update_peer(db, peer_id, push_stopped=0, push_next_attempt=None)
        self.wake_delivery()

    async def _note(self, peer_id: int, error: str) -> None:
        async with self.store.write() as db:
            await self.store.update_peer(db, peer_id, last_error=error[:500])

    async def subscription_requested(self, peer_id: int) -> str:
        """A node asked to follow us: accepted if we trust it, else pending for an admin."""
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            state = "accepted" if peer.trust == "trusted" else "pending"
            await self.store.update_peer(db, peer_id, they_follow=state, push_stopped=0,
                                         push_failures=0, push_next_attempt=None)  # fmt: skip
        self.wake_delivery()
        return state

    async def subscription_ended(self, peer_id: int) -> None:
        async with self.store.write() as db:
            await self.store.update_peer(db, peer_id, they_follow="none")

    async def subscription_answered(self, peer_id: int, state: str) -> None:
        """The node we asked to follow told us its answer."""
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer.we_follow != "none":
                await self.store.update_peer(db, peer_id, we_follow=state)
        if state == "accepted":
            self.wake()

    async def subscribe(self, peer: Peer) -> None:
        """Ask a trusted node to let us follow it; its answer (accepted or pending) is kept."""
        if peer.trust != "trusted" or peer.we_follow == "none":
            return
        await self._load_key()
        try:
            reply = await self.outbound.request(
                "POST", f"{peer.url}/federation/subscriptions",
                json_body={"subscriber": self.node.config.base_url},
            )  # fmt: skip
        except FetchError as error:
            await self._note(peer.id, f"subscribing failed: {error}")
            return
        state = None
        if reply.status == 202:
            with contextlib.suppress(ProtocolError):
                body = reply.json()
                if isinstance(body, dict) and body.get("state") in ("pending", "accepted"):
                    state = body["state"]
        if state is None:
            await self._note(peer.id, f"subscribing failed: {reply.status}: {reply_reason(reply)}")
            return
        async with self.store.write() as db:
            current = await self.store.peer_in(db, peer.id)
            if current is not None and current.we_follow != "none" and current.we_follow != "accepted":
                await self.store.update_peer(db, peer.id, we_follow=state)

    async def _unsubscribe(self, peer: Peer) -> None:
        await self._load_key()
        with contextlib.suppress(FetchError):
            await self.outbound.request("DELETE", f"{peer.url}/federation/subscriptions")

    async def _tell_subscription(self, peer: Peer, state: str) -> None:
        await self._load_key()
        try:
            await self.outbound.request("POST", f"{peer.url}/federation/inbox",
                                        json_body={"type": "subscription", "state": state})  # fmt: skip
        except FetchError as error:
            log.info("telling %s of its subscription failed: %s", peer.url, error)

    # -------------------------------------------------------------------- pushing ours

    def wake_delivery(self) -> None:
        """New entries, or a new follower: push now rather than at the next interval."""
        self._deliver.set()

    def delivers_to(self, peer: Peer) -> bool:
        return peer.trust == "trusted" and peer.they_follow == "accepted" and not peer.push_stopped

    async def deliver(self, peer: Peer, bodies: dict | None = None) -> int:
        """Push our entries after the peer's delivered cursor, in batches; entries delivered.

        `bodies` caches push bodies by (after, batch size) for one round, so followers at the
        same cursor share one body: the stored canonical texts are joined, never re-parsed.
        The delivered cursor is saved once, when the round for this peer ends: should the node
        stop before, it pushes some entries again, which the receiver skips."""
        # The cursor as it stands now: a round reads every peer, and a push to this one that
        # ended meanwhile has moved it (started from the round's copy, this push would send
        # that push's entries again).
        peer = await self.store.peer(peer.id)
        if peer is None or not self.delivers_to(peer):
            return 0
        await self._load_key()
        head = await self.store.feed_head_seq()
        if head - peer.delivered_seq > PUSH_LAG_MAX:
            # Push is for what is new. A follower this far behind (back from days away, or
            # just arrived) reads pages of 1,000 itself, and meanwhile would take pushes only
            # to find it has them already. Ask it what it holds: it may have caught up.
            held = await self._their_cursor(peer)
            if held is None or head - held > PUSH_LAG_MAX:
                self.node.metrics.pushed("behind")
                return 0
            async with self.store.write() as db:
                await self.store.update_peer(db, peer.id, delivered_seq=held)
            peer = dataclasses.replace(peer, delivered_seq=held)
        bodies = {} if bodies is None else bodies
        origin = json.dumps(self.node.config.base_url)
        batch, total, delivered, failed = PUSH_BATCH, 0, peer.delivered_seq, False
        try:
            for _ in range(PULL_PAGES_PER_ROUND):
                cached = bodies.get((delivered, batch))
                if cached is None:
                    async with self.store.read() as db:
                        texts = await read_texts(db, delivered, batch, PUSH_MAX_BYTES)
                    last = json.loads(texts[-1])["seq"] if texts else delivered
                    body = (f'{{"type":"entries","origin":{origin},"entries":['
                            + ",".join(texts) + "]}").encode()  # fmt: skip
                    cached = bodies[(delivered, batch)] = (bool(texts), last, body)
                has_entries, last, body = cached
                if not has_entries:
                    return total
                try:
                    reply = await self.outbound.request("POST", f"{peer.url}/federation/inbox",
                                                        json_bytes=body)  # fmt: skip
                except FetchError as error:
                    failed = True
                    self.node.metrics.pushed("error")
                    await self._push_failed(peer, str(error))
                    return total
                if reply.status == 413 and batch > 1:
                    self.node.metrics.pushed("too_large")
                    batch //= 2
                    continue
                received = _received(reply) if reply.status in (200, 409) else None
                if received is None:
                    stop = 400 <= reply.status < 500 and reply.status not in (401, 408, 429)
                    failed = True
                    self.node.metrics.pushed("stopped" if stop else "error")
                    await self._push_failed(peer, f"pushing: {reply.status}: {reply_reason(reply)}",
                                            stop=stop)  # fmt: skip
                    return total
                # The receiver says what it holds: go on from there (a 409 may move us back).
                self.node.metrics.pushed("ok" if reply.status == 200 else "conflict")
                now_at = min(received, last)
                progressed = now_at > delivered
                total += max(0, now_at - delivered)
                delivered = now_at
                if not progressed and reply.status == 200:
                    return total  # it took nothing new: try again later, not in a tight loop
                if delivered >= head:
                    # Up to date with the feed as it was when we began. What came since is
                    # for the next round, after a pause if it came during our pushes
                    # (`_push`): a stream of posts goes out in batches, not a request each.
                    return total
            return total
        finally:
            if delivered != peer.delivered_seq or total:
                async with self.store.write() as db:
                    fields: dict[str, Any] = {"delivered_seq": delivered}
                    if total and not failed:
                        fields.update(push_failures=0, push_next_attempt=None)
                    await self.store.update_peer(db, peer.id, **fields)

    async def _their_cursor(self, peer: Peer) -> int | None:
        """What a follower says it holds of our feed (`GET /federation/cursor`), at most our
        head, or None."""
        held = await self.cursor_at(peer)
        return None if held is None else min(held[0], await self.store.feed_head_seq())

    async def cursor_at(self, peer: Peer) -> tuple[int, str | None] | None:
        """(seq, hash) of what a node says it holds of our feed, or None if it cannot say."""
        await self._load_key()
        try:
            reply = await self.outbound.request("GET", f"{peer.url}/federation/cursor")
        except FetchError:
            return None
        seq = _received(reply) if reply.status == 200 else None
        if seq is None:
            return None
        held_hash = reply.json()["received"].get("hash")
        return seq, held_hash if isinstance(held_hash, str) else None

    async def _push_failed(self, peer: Peer, reason: str, *, stop: bool = False) -> None:
        failures = peer.push_failures + 1
        give_up = stop or (peer.last_success is not None and self.node.now() - parse_time(
            peer.last_success) > PUSH_GIVE_UP and failures > 10)  # fmt: skip
        async with self.store.write() as db:
            await self.store.update_peer(
                db, peer.id, last_error=reason[:500], push_failures=failures,
                push_next_attempt=format_time(self.node.now() + timedelta(seconds=backoff(failures))),
                push_stopped=int(give_up),
            )  # fmt: skip
        log.info("pushing to %s failed: %s", peer.url, reason)

    async def deliver_all(self) -> int:
        """Start a push to every follower that is due, each in its own task, and return how
        many were started without waiting for them: a slow follower delays no one, not even
        the others' next entries (a round waiting for it would hold those back).

        A follower still being pushed to is not started twice. A round that skips it notes it,
        and when that push ends it asks for another round, so entries that came meanwhile are
        not left for the interval; while entries keep coming, after a pause that makes them
        a batch (PUSH_STREAM_RATE)."""
        now = self.node.now()
        bodies: dict = {}  # shared by the pushes started here (see `deliver`)
        started, followers = 0, 0
        for peer in await self.store.peers():
            if not self.delivers_to(peer):
                continue
            followers += 1
            if peer.push_next_attempt and parse_time(peer.push_next_attempt) > now:
                continue  # backing off
            if peer.id in self._pushing:
                self._missed.add(peer.id)
                continue
            self._pushing.add(peer.id)
            task = asyncio.create_task(self._push(peer, bodies))
            self._push_tasks.add(task)
            task.add_done_callback(self._push_tasks.discard)
            started += 1
        self._followers = followers
        return started

    async def _push(self, peer: Peer, bodies: dict) -> None:
        began = asyncio.get_running_loop().time()
        try:
            try:
                await self.deliver(peer, bodies)
            except Exception:
                log.exception("pushing to %s failed unexpectedly", peer.url)
            if peer.id in self._missed:
                # Entries came while we were pushing: a stream. Let the next ones gather
                # until n / PUSH_STREAM_RATE seconds after this push began, so that each push
                # carries a batch and 50 followers do not take 50 requests per entry. A
                # follower that was idle is pushed to at once.
                every = self._followers / PUSH_STREAM_RATE
                waited = asyncio.get_running_loop().time() - began
                await first_of(self.node.stopping, timeout=max(0.0, every - waited))
        finally:
            self._pushing.discard(peer.id)
            if peer.id in self._missed:
                self._missed.discard(peer.id)
                self.wake_delivery()

    async def run_delivery(self) -> None:
        """The pusher: on new entries or followers, and every `poll_interval` for retries.
        Once stopping, it lets the pushes on their way finish (the lifespan cancels what is
        left after its grace, and then the pushes too)."""
        try:
            await run_rounds(self.deliver_all, self._deliver, self.node.config.poll_interval,
                             "pushing to followers", self.node.stopping)  # fmt: skip
            await asyncio.gather(*self._push_tasks, return_exceptions=True)
        finally:
            tasks = list(self._push_tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def received_push(self, peer_id: int, body: dict, *,
                            nonce: "PendingNonce | None" = None) -> tuple[int, dict]:  # fmt: skip
        """`POST /federation/inbox` with `type: entries` from a node we follow: (status, answer).

        `nonce`: the request's, not recorded yet (`routing.identify_node`): it commits with
        the batch, or, for a push refused before ingest, on its own, before the answer."""
        peer = await self.store.peer(peer_id)
        refusal = _push_refusal(peer, body)
        if refusal is not None:
            if nonce is not None:
                await nonce.remember(self.store)
            if refusal[0] == 409:
                self.wake()  # a gap: read their feed from our cursor rather than wait for pushes
            return refusal
        entries = body["entries"]
        last = entries[-1].get("seq") if isinstance(entries[-1], dict) else None
        head = last if type(last) is int else 0
        _, problem, cursor = await self._ingest_read(peer, entries, head, nonce)
        if cursor is None:
            peer = await self.store.peer(peer_id)
            cursor = (peer.received_seq, peer.received_hash)
        answer = {"received": {"seq": cursor[0], "hash": cursor[1]}}
        if problem is not None:
            return 422, {**answer, "error": problem}
        return 200, answer

    # -------------------------------------------------------------------- reading feeds

    def follows(self, peer: Peer) -> bool:
        return peer.trust == "trusted" and peer.we_follow != "none" and not peer.forked

    async def pull(self, peer: Peer) -> int:
        """Read a followed peer's feed from our cursor to its head; entries accepted.

        Holding nothing of it yet, we first ask for one entry, which tells its head: a feed
        longer than SNAPSHOT_AFTER is taken from its snapshot and read on from the head the
        snapshot named, or, should the snapshot fail, read from the start."""
        if not self.follows(peer):
            return 0
        if peer.we_follow == "pending" and (peer.last_error or "").startswith("subscribing failed"):
            await self.subscribe(peer)  # the last attempt did not get through: ask again
        await self._load_key()
        total = 0
        snapshot_tried = False
        for _ in range(PULL_PAGES_PER_ROUND):
            fresh = peer.received_seq == 0 and not snapshot_tried
            if fresh and peer.head_seq > SNAPSHOT_AFTER:
                snapshot_tried = True
                await self.sync_from_snapshot(peer)
                peer = await self.store.peer(peer.id)
                if peer is None or not self.follows(peer):
                    return total
                continue
            limit = 1 if fresh else PULL_LIMIT
            url = f"{peer.url}/federation/feed?after={peer.received_seq}&limit={limit}"
            try:
                reply = await self.outbound.request("GET", url)
                if reply.status != 200:
                    raise FetchError(f"the feed answered {reply.status}: {reply_reason(reply)}")
                entries, head_seq = _page(reply.json(), peer.url)
            except (FetchError, ProtocolError) as error:
                await self._failed(peer.id, str(error))
                return total
            if not entries:
                await self._succeeded(peer.id, head_seq)
                return total
            if fresh and head_seq > SNAPSHOT_AFTER:
                peer = dataclasses.replace(peer, head_seq=head_seq)
                continue  # a long history: its snapshot, rather than this page
            # A transaction a hundred entries at a time, so members' posts and other writes
            # wait for one short batch, never for a whole page.
            problem = None
            for start in range(0, len(entries), INGEST_BATCH):
                accepted, problem = await self.ingest(
                    peer.id, entries[start : start + INGEST_BATCH], head_seq=head_seq
                )
                total += accepted
                if problem is not None:
                    break
            peer = await self.store.peer(peer.id)
            if problem is not None or peer is None or peer.received_seq >= head_seq:
                return total
        return total

    async def ingest(self, peer_id: int, entries: list, *, head_seq: int = 0,
                     nonce: "PendingNonce | None" = None) -> tuple[int, str | None]:  # fmt: skip
        """Take in entries of a peer's feed, in order, in one transaction.

        Returns (entries accepted, the chain problem that stopped the batch or None).
        `nonce`: of the push that brought them, recorded first in that transaction (a
        replay raises Unauthorized and changes nothing)."""
        peer = await self.store.peer(peer_id)
        if peer is None:
            return 0, "not reading this node's feed"
        accepted, problem, _ = await self._ingest_read(peer, entries, head_seq, nonce)
        return accepted, problem

    async def _ingest_read(self, peer: Peer, entries: list, head_seq: int,
                           nonce: "PendingNonce | None") -> tuple[int, str | None, tuple | None]:  # fmt: skip
        """`ingest` of a peer just read (its cursor tells the key to verify with ahead),
        also returning the cursor committed, (seq, hash), or None if nothing was taken in."""
        keys = await self._pinned_keys(peer.id) if len(entries) >= VERIFY_AHEAD_MIN else []
        ahead = self._verify_ahead(peer, entries, keys)
        try:
            return await self._ingest(peer.id, entries, head_seq, ahead, nonce)
        finally:
            ahead.cancel()

    async def _pinned_keys(self, peer_id: int) -> list[tuple]:
        async with self.store.read() as db:
            return await self.store.peer_keys_in(db, peer_id)

    async def _ingest(self, peer_id: int, entries: list, head_seq: int, ahead: "_Ahead",
                      nonce: "PendingNonce | None") -> tuple[int, str | None, tuple | None]:  # fmt: skip
        nonce = await self._learn_relay_origins(entries, nonce)
        now = self.node.now_text()
        async with self.store.write() as db:
            # The transaction's reads, and the nonce's write, sent together: the writer's
            # thread runs them one after another, with no trip back to the event loop between.
            _, peer, keys, judged_against = await _together(
                nonce.remember_in(self.store, db) if nonce is not None else _nothing(),
                self.store.peer_in(db, peer_id), self.store.peer_keys_in(db, peer_id),
                self._judged_against(db, entries),
            )  # fmt: skip
            if peer is None or not (peer.trust == "trusted" and not peer.forked):
                return 0, "not reading this node's feed", None
            key_id, public = key_in_force(keys, peer.received_seq + 1)
            # Entries reach here from pages and pushes read by `loads_strict`.
            chain = ChainState(peer.url, peer.received_seq, peer.received_hash, key_id,
                               parse_public_key(public), strictly_read=True)  # fmt: skip
            changes = _ItemChanges(self, peer, now, **judged_against)
            try:
                accepted, problem = await self._accept_all(db, peer_id, entries, chain, ahead,
                                                           changes)  # fmt: skip
            finally:
                await changes.written()
            relayed, _ = await _together(changes.write(db), self.store.update_peer(
                db, peer_id, received_seq=chain.seq, received_hash=chain.hash,
                head_seq=max(head_seq, chain.seq, peer.head_seq),
                **self._read_health(peer, problem, answered=True),
            ))  # fmt: skip
        self.node.metrics.took_in(accepted=accepted, refused=len(changes.refused),
                                  invalid=int(problem is not None))  # counted once committed
        if relayed:
            self.wake_delivery()
        if problem is not None:
            log.warning("ingest from %s stopped: %s", peer.url, problem)
        return accepted, problem, (chain.seq, chain.hash)

    async def _accept_all(self, db: aiosqlite.Connection, peer_id: int, entries: list,
                          chain: ChainState, ahead: "_Ahead",
                          changes: "_ItemChanges") -> tuple[int, str | None]:  # fmt: skip
        """Check a batch's entries in order against `chain` and judge each one accepted,
        writing their items every WRITE_AHEAD entries meanwhile: (accepted, the problem that
        stopped the batch or None)."""
        accepted, problem = 0, None
        for index, raw in enumerate(entries):
            # Only a seq from 1 can be held already: an entry numbered 0 or below is no
            # entry at all, refused by the chain check below rather than skipped as held
            # (skipped, a push of them was answered 200 and a page of them read as success).
            seq = raw.get("seq") if isinstance(raw, dict) else None
            if type(seq) is int and 1 <= seq <= chain.seq:
                problem = _overlap_fork(chain, raw)  # held already: a page or push that
                if problem is not None:              # overlaps, unless it contradicts ours
                    break
                continue
            before = (chain.seq, chain.hash, chain.key_id, chain.public)
            shaped = ahead.shape(index)
            try:
                entry = chain.accept(raw, verified_by=await ahead.valid_by(index), shaped=shaped)
                if entry["type"] == "key":
                    await self._take_key(db, peer_id, entry, old_key=before[2])
            except ProtocolError as error:
                chain.seq, chain.hash, chain.key_id, chain.public = before
                problem = _chain_problem(chain, raw, error)
                break
            accepted += 1
            if entry["type"] == "item":
                changes.judge(entry, encoded=shaped[1] if shaped and shaped[0] is entry else None)
            elif entry["type"] == "relay":
                changes.judge_relay(entry)
            if accepted % WRITE_AHEAD == 0:
                changes.write_soon(db)
        return accepted, problem

    def _verify_ahead(self, peer: Peer, entries: list, keys: list[tuple]) -> "_Ahead":
        """Start checking a batch's signatures on the checker processes, a few entries a
        task, with the key the peer's next entry is due to be signed with (`peer` as just read,
        `keys` its pinned keys as `peer_keys_in` gives them).

        Nothing is decided here: ingest checks every entry in order as before, waiting for
        each one's result as it comes to it (so the checkers work while it checks the rest),
        and skips only the signature check of an entry found valid under the key it finds in
        force: a key rotated meanwhile, or one in the batch, costs a second check, no more.
        With no checker ready (`Verifier.check`), ingest checks every signature itself."""
        if len(entries) < VERIFY_AHEAD_MIN or not self.verifier.available():
            return _Ahead(None, [], 1)
        public = parse_public_key(key_in_force(keys, peer.received_seq + 1)[1])
        ahead = _Ahead(public, [], VERIFY_CHUNK)
        key = public.public_bytes_raw()
        # Shape checked here, and each entry's signing input cut out of the bytes that check
        # makes, a chunk at a time: the checkers start on the first chunk meanwhile. The
        # chain checks take the shapes (`_Ahead.shape`) rather than making them again.
        for start in range(0, len(entries), VERIFY_CHUNK):
            pairs = [ahead.shape_and_cut(raw, peer.url)
                     for raw in entries[start : start + VERIFY_CHUNK]]  # fmt: skip
            ahead.tasks.append(self.verifier.submit(pairs, key))
        return ahead

    async def _judged_against(self, db: aiosqlite.Connection, entries: list) -> dict[str, Any]:
        """What a batch of a peer's entries will be judged against (`_ItemChanges`' keyword
        arguments), read inside the write transaction, its queries sent together: the items,
        relays and relayed needs' origins it names."""
        ids, origins = _batch_ids(entries)
        (versions, relayed_copies), relays, origin_keys = await _together(
            self.store.item_versions_in(db, ids), self.store.relays_in(db, ids),
            self.store.origin_keys_in(db, origins),
        )  # fmt: skip
        return {"versions": versions, "relayed_copies": relayed_copies, "relays": relays,
                "origins": origin_keys}  # fmt: skip

    # -------------------------------------------------------------------- snapshots

    async def sync_from_snapshot(self, peer: Peer) -> bool:
        """Take a followed peer's live state from its snapshot (docs/protocol.md §8.1), when
        we hold nothing of a long feed: True once the cursor stands at the head it named.

        Each page is checked (`federation.snapshot`: the key entries from our pinned key on,
        the head entry's hash, every entry signed by the key in force at its seq), judged by
        the rules of ingest (`_ItemChanges`) and written as ingest writes. Only once every
        page is in does the cursor move, in one transaction with the key entries' hand-overs,
        to the head the first page named; entries changed since are after that head, and the
        feed carries them. Should anything fail before (an older node answers 404), what the
        pages wrote is taken back, the reason noted on the peer, and False: the caller reads
        the whole feed instead. Each write gives up (`_take_snapshot_entries`) if the peer
        changed under us: blocked, unfollowed, or its cursor moved by a push."""
        await self._load_key()
        async with self.store.read() as db:
            pinned = await self.store.peer_keys_in(db, peer.id)

        def pinned_at(seq: int) -> tuple[str, Any]:
            key_id, public = key_in_force(pinned, seq)
            return key_id, parse_public_key(public)

        basis, after, head_seen = None, 0, 0
        try:
            for _ in range(SNAPSHOT_PAGES_MAX):
                url = f"{peer.url}/federation/snapshot?after={after}&limit={SNAPSHOT_LIMIT}"
                reply = await self.outbound.request("GET", url)
                if reply.status != 200:
                    raise FetchError(f"it answered {reply.status}: {reply_reason(reply)}")
                page = reply.json()
                if basis is None:
                    basis = snapshot_rules.check_basis(page, origin=peer.url, pinned=pinned_at)
                # Signatures first, on the checker processes, by the key in force at the head
                # (all but entries from before a rotation, which are checked as they come).
                current = basis.schedule[-1][1]
                listed = page.get("entries") if isinstance(page, dict) else None
                listed = listed if isinstance(listed, list) else []  # check_page says why
                pairs = [_signed_pair(raw, peer.url)[1] for raw in listed]
                valid = await _checked(self.verifier.check(pairs, current, VERIFY_CHUNK) or [])
                if len(valid) != len(listed):  # not checked ahead: check_page checks them all
                    valid = [False] * len(listed)
                entries, following = snapshot_rules.check_page(
                    page, basis, after=after, verified_by=[current if ok else None for ok in valid])
                head_seen = max(head_seen, snapshot_rules.page_head(page)[0])
                # As for ingest, a hundred entries a transaction, so members' posts and other
                # writes wait for one short batch, never for a whole page.
                for start in range(0, len(entries), INGEST_BATCH):
                    if not await self._take_snapshot_entries(peer.id,
                                                             entries[start : start + INGEST_BATCH]):
                        return False
                if following is None:
                    break
                after = following
            else:
                raise ProtocolError(f"it did not end within {SNAPSHOT_PAGES_MAX} pages")
            async with self.store.write() as db:
                current = await self.store.peer_in(db, peer.id)
                if current is None or not self.follows(current) or current.received_seq != 0:
                    return False
                signer = basis.schedule[0][0]
                for entry in basis.key_entries:
                    await self._take_key(db, peer.id, entry, old_key=signer)
                    signer = entry["body"]["key"]["id"]
                await self.store.update_peer(
                    db, peer.id, received_seq=basis.head_seq, received_hash=basis.head_hash,
                    head_seq=max(head_seen, current.head_seq),
                    **self._read_health(current, None, answered=True),
                )  # fmt: skip
        except (FetchError, ProtocolError) as error:
            await self._snapshot_failed(peer.id, str(error))
            return False
        self.node.metrics.snapshots.labels("taken").inc()
        log.info("took the live state of %s from its snapshot, up to entry %d", peer.url,
                 basis.head_seq)  # fmt: skip
        return True

    async def _take_snapshot_entries(self, peer_id: int, entries: list[dict]) -> bool:
        """Judge and write checked snapshot entries, in one transaction; False (nothing
        written) if we no longer read that peer, or hold some of its feed now."""
        await self._learn_relay_origins(entries)
        now = self.node.now_text()
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is None or not self.follows(peer) or peer.received_seq != 0:
                return False
            changes = _ItemChanges(self, peer, now, **await self._judged_against(db, entries))
            for entry in entries:
                if entry["type"] == "item":
                    changes.judge(entry)
                else:
                    changes.judge_relay(entry)
            relayed = await changes.write(db)
        self.node.metrics.took_in_snapshot(entries=len(entries), refused=len(changes.refused))
        if relayed:
            self.wake_delivery()
        return True

    async def _snapshot_failed(self, peer_id: int, reason: str) -> None:
        """Take back what a failed snapshot wrote (while we hold nothing of the feed, all we
        hold read from it is what the snapshot gave) and note why on the peer."""
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is None:
                return
            if peer.received_seq == 0:
                await self.store.drop_items_read_from(db, peer_id)
            note = f"snapshot refused: {reason}; reading the whole feed instead"
            await self.store.update_peer(db, peer_id, last_error=note[:500])
        self.node.metrics.snapshots.labels("fallback").inc()
        log.warning("the snapshot of %s was not taken: %s", peer.url, reason)

    async def _learn_relay_origins(self, entries: list,
                                   nonce: "PendingNonce | None" = None) -> "PendingNonce | None":  # fmt: skip
        """Pin the origins of relayed needs not met before, before the write transaction (a
        fetch must not hold it): their document, through the address guard and the same
        limits as any unknown node's. A relay whose origin cannot be learned is refused
        later, with the reason recorded on the peer.

        A push's `nonce` is recorded before any of this is done (pinning writes); the nonce
        still to record, with the batch, is returned (None once recorded)."""
        _, origins = _batch_ids(entries)
        own = self.node.config.base_url
        for url in sorted(set(origins) - {own}):
            if await self.store.peer_by_url(url) is not None:
                continue
            if nonce is not None:
                await nonce.remember(self.store)
                nonce = None
            try:
                url = parse_base_url(url, allow_private_addresses=self.node.config.allow_private_addresses)
                doc = await self._fetch_unknown(url)
            except (BaseUrlError, ClientError) as error:
                log.info("could not learn %s, the origin of a relayed need: %s", url[:200], error)
                continue
            await self.pin_node(doc)
        return nonce

    async def relay(self, db: aiosqlite.Connection, inner: dict, path: list[str], *, now: str,
                    known: dict | None) -> int:  # fmt: skip
        """Pass an origin's need on: append a relay entry carrying `inner` verbatim along
        `path` (this node last) to our feed, inside the caller's transaction; 1 if appended.
        `known` is what `relays` holds of the item (None: never relayed nor waiting).

        Two limits bound what one origin can make us send (DESIGN §6). A need not relayed
        before counts against its origin's quota (RELAYS_PER_ORIGIN_PER_DAY a day): beyond
        it, the newest version waits, and one that ends while waiting is dropped, since no
        one got it. Edits to a need already relayed are coalesced: while its status is the
        one last relayed, a version goes out at most once every RELAY_EDIT_INTERVAL, the
        newest waiting meanwhile; a change of status always goes out at once. Waiting
        versions are sent by `relay_waiting`."""
        state = inner["body"]
        item_id, origin = state["id"], inner["origin"]
        if known is None or known["first_relayed"] is None:
            since = format_time(self.node.now() - timedelta(days=1))
            wait = await self.store.relays_since(db, origin, since) >= RELAYS_PER_ORIGIN_PER_DAY
            if wait and state["status"] not in item_rules.LIVE_STATUSES:
                await self.store.forget_relay(db, item_id)
                return 0
        else:
            wait = (known["status"] == state["status"]
                    and parse_time(known["relayed_at"]) + RELAY_EDIT_INTERVAL > self.node.now())  # fmt: skip
        if wait or await self.store.feed.held(db) is not None:  # after a restore, relays wait too
            await self.store.save_relay(db, item_id, origin=origin, path=path, version=state["version"],
                                        state="waiting", entry=canonical(inner).decode(),
                                        status=state["status"], now=now)  # fmt: skip
            return 0
        await self.store.feed.append(db, "relay", relay_rules.relay_body(inner, path), at=now,
                                     generation=self.store.write_generation)  # fmt: skip
        await self.store.save_relay(db, item_id, origin=origin, path=path, version=state["version"],
                                    state="relayed", entry=None, status=state["status"], now=now)  # fmt: skip
        return 1

    async def relay_waiting(self) -> int:
        """Send versions that waited for their origin's quota or the edit interval, as far as
        those now allow."""
        sent = 0
        for item_id, _origin in await self.store.waiting_relays():
            async with self.store.write() as db:
                waiting = await self.store.waiting_relay_in(db, item_id)
                if waiting is None:
                    continue
                text, known = waiting
                sent += await self.relay(db, loads_strict(text), known["path"],
                                         now=self.node.now_text(), known=known)  # fmt: skip
        if sent:
            self.wake_delivery()
        return sent

    async def _take_key(self, db: aiosqlite.Connection, peer_id: int, entry: dict,
                        old_key: str) -> None:  # fmt: skip
        """A valid `key` entry hands the feed to a new key: pin it, retire the old one."""
        new_id, new_public = check_key_entry(entry)
        public_text = entry["body"]["key"]["public"]
        rows = await db.execute_fetchall(
            "SELECT peer_id, public FROM peer_keys WHERE key_id = ?", (new_id,)
        )
        if rows and (rows[0][0] != peer_id or rows[0][1] != public_text):
            raise ProtocolError(
                f"entry {entry['seq']} hands over to a key {new_id} that differs from the one "
                "pinned for it"
            )
        await db.execute("UPDATE peer_keys SET retired_at_seq = ? WHERE key_id = ?",
                         (entry["seq"], old_key))  # fmt: skip
        if not rows:
            await db.execute(
                "INSERT INTO peer_keys (key_id, peer_id, public, retired_at_seq) VALUES (?, ?, ?, NULL)",
                (new_id, peer_id, public_text),
            )

    def _read_health(self, peer: Peer, problem: str | None, *, answered: bool) -> dict[str, Any]:
        """A peer's health columns after reading its feed: `answered` if it let us read,
        `problem` what went wrong (None: nothing did). Failures back off."""
        fields: dict[str, Any] = {}
        if answered and peer.we_follow == "pending":
            fields["we_follow"] = "accepted"  # they let us read their feed
        if problem is None:
            fields.update(last_success=self.node.now_text(), last_error=None, failures=0,
                          next_attempt=None)  # fmt: skip
        else:
            failures = peer.failures + 1
            fields.update(last_error=problem[:500], failures=failures, next_attempt=format_time(
                self.node.now() + timedelta(seconds=backoff(failures))))  # fmt: skip
        return fields

    async def _succeeded(self, peer_id: int, head_seq: int) -> None:
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is not None:
                await self.store.update_peer(db, peer_id, head_seq=head_seq,
                                             **self._read_health(peer, None, answered=True))  # fmt: skip

    async def _failed(self, peer_id: int, reason: str) -> None:
        async with self.store.write() as db:
            peer = await self.store.peer_in(db, peer_id)
            if peer is None:
                return
            await self.store.update_peer(db, peer_id,
                                         **self._read_health(peer, reason, answered=False))  # fmt: skip
        log.info("reading %s failed: %s", peer.url, reason)

    async def pull_all(self, *, due_only: bool = False) -> int:
        """Pull every followed peer (with `due_only`, those not backing off); entries accepted."""
        now = self.node.now()
        total = 0
        for peer in await self.store.peers():
            if not self.follows(peer):
                continue
            if due_only and peer.next_attempt and parse_time(peer.next_attempt) > now:
                continue
            total += await self.pull(peer)
        return total

    def wake(self) -> None:
        """Have the worker pull now rather than at its next interval."""
        self._wake.set()

    async def run(self) -> None:
        """The worker: pull on start, when woken, and every `poll_interval`."""
        await run_rounds(lambda: self.pull_all(due_only=True), self._wake,
                         self.node.config.poll_interval, "pulling allies' feeds",
                         self.node.stopping)  # fmt: skip


def reply_reason(reply) -> str:
    try:
        body = reply.json()
    except ProtocolError:
        return "no readable error"
    error = body.get("error") if isinstance(body, dict) else None
    return str(error)[:200] if error else "no error message"


def _received(reply) -> int | None:
    """The `received.seq` of an inbox answer, if it has one."""
    try:
        body = reply.json()
    except ProtocolError:
        return None
    received = body.get("received") if isinstance(body, dict) else None
    seq = received.get("seq") if isinstance(received, dict) else None
    return seq if type(seq) is int and seq >= 0 else None


def _push_refusal(peer: Peer, body: dict) -> tuple[int, dict] | None:
    """Why a push is refused before ingest, as (status, answer); None if it is not."""
    if peer.we_follow == "none":
        return 403, {"error": "this node does not follow yours"}
    entries = body.get("entries")
    if not isinstance(entries, list) or not 1 <= len(entries) <= PUSH_BATCH:
        return 400, {"error": f"entries must be a list of 1 to {PUSH_BATCH} entries"}
    first = entries[0].get("seq") if isinstance(entries[0], dict) else None
    if type(first) is not int or first > peer.received_seq + 1:
        return 409, {"received": {"seq": peer.received_seq, "hash": peer.received_hash},
                     "error": f"the batch must start at or before entry {peer.received_seq + 1}"}
    return None


def _page(page: object, origin: str) -> tuple[list, int]:
    """The entries and head seq of a feed page, checked for shape."""
    if not isinstance(page, dict) or page.get("origin") != origin:
        raise ProtocolError("the feed page is not from the node asked")
    head, entries = page.get("head"), page.get("entries")
    if not isinstance(head, dict) or type(head.get("seq")) is not int or not isinstance(entries, list):
        raise ProtocolError("the feed page has no head or entries")
    return entries, head["seq"]


class _Ahead:
    """The signature checks of one batch running on the checker processes (`_verify_ahead`),
    and the entries' shapes, checked to cut their signing inputs out."""

    def __init__(self, public, tasks: list[asyncio.Future], size: int) -> None:
        self.public, self.tasks, self.size = public, tasks, size
        self.shapes: list[tuple[dict, bytes] | None] = []

    def shape_and_cut(self, raw: object, origin: str) -> tuple[bytes, bytes] | None:
        """Check the next entry's shape and keep it; its (signing input, signature), or None
        (`_signed_pair`)."""
        shaped, pair = _signed_pair(raw, origin)
        self.shapes.append(shaped)
        return pair

    def shape(self, index: int) -> tuple[dict, bytes] | None:
        return self.shapes[index] if index < len(self.shapes) else None

    async def valid_by(self, index: int):
        """The key entry `index`'s signature verified with, or None (not checked, or not
        valid). Once an answer has been waited for ANSWER_WAIT seconds, None for the rest of
        the batch."""
        if self.public is None:
            return None
        task = self.tasks[index // self.size]
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), ANSWER_WAIT)
            except TimeoutError:
                log.warning("a signature checker did not answer within %g s: the batch's "
                            "signatures are checked here", ANSWER_WAIT)  # fmt: skip
                self.public = None
                return None
        results = task.result()
        return self.public if results is not None and results[index % self.size] else None

    def cancel(self) -> None:
        """Checks not started are dropped (the batch stopped early, or the caller went away)."""
        for task in self.tasks:
            task.cancel()


async def _checked(tasks: list[asyncio.Future]) -> list[bool]:
    """The answers of these checker tasks, in order, as one list; short (so: not checked) if
    one answered None or not within ANSWER_WAIT."""
    if not tasks:
        return []
    _, late = await asyncio.wait(tasks, timeout=ANSWER_WAIT)
    for task in late:
        task.cancel()
    if late:
        log.warning("a signature checker did not answer within %g s: the page's signatures are "
                    "checked here", ANSWER_WAIT)  # fmt: skip
        return []
    return [ok for task in tasks if task.result() is not None for ok in task.result()]


async def _together(*steps: Awaitable) -> list:
    """Run these at once (statements on one connection then go to its thread together, in
    order) and give their results; raise the first exception, once every one has ended."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def _nothing() -> None:
    return None


def _signed_pair(raw: object, origin: str) -> tuple[tuple[dict, bytes] | None,
                                                   tuple[bytes, bytes] | None]:  # fmt: skip
    """An entry's shape (`check_shape_encoded`) and its (signing input, signature) for the
    checker processes; (None, None) if its shape is wrong (checked again, and said, where it
    is taken)."""
    try:
        entry, encoded = check_shape_encoded(raw, origin=origin, strictly_read=True)
        message = signing_input_cut(entry, encoded)
        signature = b64url_decode(entry["sig"], SIGNATURE_CHARS, "sig")
    except ProtocolError:
        return None, None
    return (entry, encoded), (None if message is None else (message, signature))


def _overlap_fork(chain: ChainState, raw: dict) -> str | None:
    """An entry at our cursor's seq that is validly signed but is not the entry we hold there
    is a fork (DESIGN §4.2): what a node restored from an old backup writes once it reaches
    what its allies hold. Entries further back are not compared (only the cursor's hash is
    kept)."""
    if raw["seq"] != chain.seq or chain.hash is None:
        return None
    try:
        entry, encoded = check_shape_encoded(raw, origin=chain.origin, strictly_read=True)
        if hash_bytes(encoded) == chain.hash or entry["key"] != chain.key_id:
            return None
        verify_signature(entry, chain.public, strictly_read=True)
    except ProtocolError:
        return None  # not validly signed: nothing the origin said, so no fork
    return (f"fork: entry {chain.seq} is validly signed but is not the entry {chain.seq} we hold "
            f"({chain.hash})")


def _chain_problem(chain: ChainState, raw: object, error: ProtocolError) -> str:
    """Name what stopped ingest: a fork, or an entry refused."""
    if (isinstance(raw, dict) and raw.get("seq") == chain.seq + 1 and chain.seq > 0
            and raw.get("prev") != chain.hash and raw.get("key") == chain.key_id):
        try:
            verify_signature(raw, chain.public, strictly_read=True)
        except ProtocolError:
            pass
        else:
            return (f"fork: entry {chain.seq + 1} is validly signed but does not follow entry "
                    f"{chain.seq} as we hold it ({chain.hash})")
    seq = raw.get("seq") if isinstance(raw, dict) else None
    return f"entry {seq if type(seq) is int else '?'} refused: {error}"[:500]



def _batch_ids(entries: list) -> tuple[list[str], list[str]]:
    """The item ids a batch of raw entries speaks of (item entries and relayed ones), and the
    origins of the needs relayed in it: read before judging, in a few queries."""
    ids, origins = [], []
    for raw in entries:
        if not isinstance(raw, dict) or not isinstance(raw.get("body"), dict):
            continue
        body = raw["body"]
        if raw.get("type") == "relay" and isinstance(body.get("entry"), dict):
            inner = body["entry"]
            if isinstance(inner.get("origin"), str):
                origins.append(inner["origin"])
            body = inner.get("body") if isinstance(inner.get("body"), dict) else {}
        if isinstance(body.get("id"), str):
            ids.append(body["id"])
    return ids, origins


RELAYS_PER_ORIGIN_PER_DAY = 20  # new needs a node begins relaying for one origin (DESIGN §6)
RELAY_EDIT_INTERVAL = timedelta(minutes=5)  # edits to one relayed need go out this often at most


class _ItemChanges:
    """What one ingest batch does to remote items and relays, judged entry by entry in memory
    and written at the end in a few statements (not one per entry).

    `versions` holds the stored version of the batch's items and is kept current as states
    are judged, so a later entry of the same item is judged against the earlier one; only
    each item's last outcome (a state to store, or a removal) is written. `relays` holds what
    this node has relayed of them; `origins` the pinned keys of relayed needs' origins."""

    def __init__(self, allies: "Allies", peer: Peer, now: str, *, versions: dict[str, int],
                 relayed_copies: set[str], relays: dict[str, dict],
                 origins: dict[str, tuple]) -> None:  # fmt: skip
        self.allies = allies
        self.own = allies.node.config.base_url
        self.peer, self.now = peer, now
        self.versions, self.relays, self.origins = versions, relays, origins
        self.relayed_copies = relayed_copies
        self.stored: dict[str, dict | None] = {}  # item id → state to store, or None: remove
        self.texts: dict[str, str] = {}  # item id → its stored state's JSON, where it is cut
        self.via: dict[str, list[str]] = {}  # item id → relay path, for relayed copies
        self.refused: list[tuple[int, str | None, str]] = []
        self.to_relay: dict[str, tuple[dict, list[str]]] = {}  # item id → (entry, path)
        self.sightings: list[tuple[str, str]] = []
        self._writing: list[asyncio.Future] = []  # writes started by `write_soon`

    def _refuse(self, entry: dict, item_id: str | None, reason: str) -> None:
        self.refused.append((entry["seq"], item_id, reason[:500]))

    def judge(self, entry: dict, *, encoded: bytes | None = None) -> None:
        """Content validity of an accepted item entry, read from its origin's own feed.
        `encoded`: the entry's canonical bytes, if at hand: its state's JSON is cut out of
        them to be stored (`body_cut`), rather than encoded again on the event loop."""
        state = entry["body"]
        item_id = state.get("id") if isinstance(state.get("id"), str) else None
        try:
            item_rules.validate_state(state, origin=self.peer.url, in_entry=True)
        except ValidationError as error:
            self._refuse(entry, item_id, f"{error.field or 'item'}: {error}")
            return
        if state["reach"] == "local":
            self._refuse(entry, item_id, "reach: a local item is not for other nodes")
            return
        held = self.versions.get(item_id)
        if held is not None and held >= state["version"]:
            if not (held == state["version"] and item_id in self.relayed_copies):
                self._refuse(entry, item_id, f"version {state['version']} is not newer than {held}")
            return
        self._apply(state, via=None)
        if encoded is not None and self.stored.get(state["id"]) is state:
            text = body_cut(entry, encoded)
            if text is not None:
                self.texts[state["id"]] = text.decode()
        self._consider_relay(entry, state, path=[], distance=1)

    def judge_relay(self, entry: dict) -> None:
        """A relay entry in the peer's feed: check what it carries with the origin's own key,
        hold the need if it is new to us and within reach, and pass it on if we should."""
        try:
            relayed = relay_rules.open_relay(
                entry["body"], relayer=self.peer.url, reader=self.own,
                allow_private_addresses=self.allies.node.config.allow_private_addresses,
            )  # fmt: skip
        except relay_rules.RelayIgnored:
            inner = entry["body"]["entry"]
            item_id = inner.get("body", {}).get("id") if isinstance(inner.get("body"), dict) else None
            if inner.get("origin") == self.own and isinstance(item_id, str):
                self.sightings.extend((item_id, hop) for hop in entry["body"]["path"])
            return
        except ProtocolError as error:
            self._refuse(entry, None, f"relay: {error}")
            return
        item_id = relayed.item_id
        known = self.origins.get(relayed.origin)
        if known is None:
            self._refuse(entry, item_id, f"relay: the key of {relayed.origin} could not be learned")
            return
        _, trust, keys = known
        if trust == "blocked":
            self._refuse(entry, item_id, f"relay: {relayed.origin} is blocked here")
            return
        try:
            key_id, public = key_in_force(keys, relayed.inner["seq"])
            if relayed.inner["key"] != key_id:
                raise ProtocolError(f"not signed with {relayed.origin}'s key in force ({key_id})")
            state = relay_rules.check_relayed(relayed, parse_public_key(public))
        except ValidationError as error:
            self._refuse(entry, item_id, f"relay: {error.field or 'item'}: {error}")
            return
        except ProtocolError as error:
            self._refuse(entry, item_id, f"relay: {error}")
            return
        held = self.versions.get(item_id)
        if held is not None and held >= state["version"]:
            return  # a copy we hold already, by another way (diamonds and rings)
        if held is None and not relay_rules.within_reach(state, relayed.distance):
            self._refuse(entry, item_id, f"relay: beyond the need's hop limit ({state.get('hop_limit')})")
            return
        self._apply(state, via=relayed.path)
        self._consider_relay(relayed.inner, state, path=relayed.path, distance=relayed.distance)

    def _apply(self, state: dict, *, via: list[str] | None) -> None:
        item_id = state["id"]
        held = self.versions.get(item_id)
        self.texts.pop(item_id, None)
        if state["status"] not in item_rules.LIVE_STATUSES or state["expires"] <= self.now:
            if held is not None:
                self.stored[item_id] = None
                del self.versions[item_id]
            self.via.pop(item_id, None)
            return
        self.stored[item_id] = state
        self.versions[item_id] = state["version"]
        if via:
            self.via[item_id] = via
        else:
            self.via.pop(item_id, None)

    def _consider_relay(self, inner: dict, state: dict, *, path: list[str], distance: int) -> None:
        """Relay every later version of what we relayed; begin relaying a live need at network
        reach while our distance is below its hop limit, if we relay this peer's needs."""
        item_id = state["id"]
        if item_id in self.relays:
            self.to_relay[item_id] = (inner, self.relays[item_id]["path"])
        elif item_id in self.to_relay:  # begun in this batch: send its newest version instead,
            _, first_path = self.to_relay[item_id]  # unless it ended before anyone got it
            if state["status"] in item_rules.LIVE_STATUSES and state["expires"] > self.now:
                self.to_relay[item_id] = (inner, first_path)
            else:
                del self.to_relay[item_id]
        elif (self.peer.relay and relay_rules.passes_on(state, distance)
              and state["status"] in item_rules.LIVE_STATUSES and state["expires"] > self.now):  # fmt: skip
            self.to_relay[item_id] = (inner, [*path, self.own])

    def write_soon(self, db: aiosqlite.Connection) -> None:
        """Start writing the item states and removals decided so far, while the batch's other
        entries are judged: SQLite works on the writer's thread meanwhile. `write` waits for
        them; statements on `db` run in the order they are sent, so a later outcome for the
        same item is written after an earlier one.

        Each write's cursor is kept until every write has finished (`written`). A cursor let
        go on the event loop's thread resets its statement there, and the next write of the
        same SQL, running meanwhile on the connection's thread, uses that very statement
        (sqlite3 keeps one per SQL text): SQLite answered "bad parameter or other API
        misuse", and could do worse."""
        if self.stored:
            stored, self.stored = self.stored, {}
            texts, self.texts = self.texts, {}
            self._writing.append(asyncio.ensure_future(self._write_items(db, stored, texts)))

    async def _write_items(self, db: aiosqlite.Connection, stored: dict[str, dict | None],
                           texts: dict[str, str]) -> list:  # fmt: skip
        """Write these outcomes (`texts`: states' JSON where cut out already); the statements'
        cursors, for the caller to keep (above)."""
        store, cursors = self.allies.store, []
        states = [state for state in stored.values() if state is not None]
        removed = [item_id for item_id, state in stored.items() if state is None]
        if states:
            cursors += await store.write_remote_items(db, states, source_peer=self.peer.id,
                                                      via=self.via, texts=texts)  # fmt: skip
        if removed:
            cursors += await store.drop_remote_items_by_id(db, removed)
        return cursors

    async def written(self) -> None:
        """Wait for the writes `write_soon` started, then let their cursors go; raise what
        failed (the transaction, and with it the whole batch, is then rolled back). Called
        however the batch ends."""
        writing, self._writing = self._writing, []
        results = await asyncio.gather(*writing, return_exceptions=True)
        failed = next((result for result in results if isinstance(result, BaseException)), None)
        del results, writing  # every write is done: no statement is in use on the thread
        if failed is not None:
            raise failed

    async def write(self, db: aiosqlite.Connection) -> int:
        """Write what the batch decided; the number of relay entries appended to our feed."""
        store = self.allies.store
        await self.written()
        await self._write_items(db, self.stored, self.texts)
        self.stored, self.texts = {}, {}
        if self.refused:
            await store.record_refusals(db, self.peer.id, self.refused, self.now)
        if self.sightings:
            await store.record_sightings(db, self.sightings, self.now)
        appended = 0
        for item_id, (inner, path) in self.to_relay.items():
            appended += await self.allies.relay(db, inner, path, now=self.now,
                                                known=self.relays.get(item_id))  # fmt: skip
        return appended

"""Operations metrics, `GET /metrics` in the Prometheus text format (DESIGN §8).

Each node has its own `CollectorRegistry` (never prometheus_client's global one: tests build
many nodes in one process). Two kinds of metric, by where the truth already is:

- what the database holds is read from it at scrape time (`DatabaseCollector`): feed entries
  by type (the feed is append-only, so its count is a true counter, and survives restarts),
  peer and push lag, queue depths, items by origin and status. Nothing elsewhere has to
  remember to count it;
- events that leave no durable trace are counted in memory where they happen, from zero at
  each start as Prometheus counters may: HTTP requests and their durations (the
  `request_observer`, fed by `logs.ObserveRequests`), entries taken in from allies (`Allies.ingest`), their snapshots
  (`Allies.sync_from_snapshot`) and pushes to followers (`Allies.deliver`).

Labels stay bounded: requests by route *name*, never by path (item ids would make a series
each); peers by base URL, a set the admin controls. The endpoint reveals the alliance graph,
so only loopback or an admin token may read it (`loopback_or_admin`; the route is in
server/wellknown.py).
"""

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

from . import __version__
from .store import Peer

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("aidnode.metrics")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Outcomes of one push request to a follower (`Allies.deliver`).
PUSH_OUTCOMES = (
    "ok",         # 200: it took the batch (or held it already)
    "conflict",   # 409: it holds less than we thought; delivery goes on from its cursor
    "too_large",  # 413: the batch is halved and sent again
    "error",      # unreachable, or any other answer: the follower is backed off, then retried
    "stopped",    # refused for good (a 4xx): pushing stops until that node is heard from
    "behind",     # too far behind to push to: it catches up by reading pages of the feed
)  # fmt: skip
# What became of each entry of an ally's feed that ingest looked at (`Allies.ingest`).
INGEST_OUTCOMES = (
    "accepted",  # valid in the chain, and its content applied (or nothing to apply)
    "refused",   # valid in the chain, its content refused (the peer's refusals say why)
    "invalid",   # broke the chain (shape, seq, hash, key, signature): the batch stopped there
)  # fmt: skip

# What became of a snapshot of an ally's feed (`Allies.sync_from_snapshot`).
SNAPSHOT_OUTCOMES = (
    "taken",     # every page taken in; the cursor moved to the head the first page named
    "fallback",  # refused, or not served: what it gave was taken back, the whole feed is read
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """What a scrape reads from the database."""

    head_seq: int
    feed_entries: dict[str, int]
    items: dict[tuple[str, str], int]
    queues: dict[str, int]
    peers: list[Peer]
    feed_on_hold: bool


async def read_snapshot(node: "Node") -> Snapshot:
    counts = await node.store.metrics_counts(node.now_text())
    return Snapshot(
        head_seq=await node.store.feed_head_seq(), feed_entries=counts["feed_entries"],
        items=counts["items"], queues=counts["queues"], peers=await node.store.peers(),
        feed_on_hold=getattr(node.feed, "hold", None) is not None,
    )  # fmt: skip


class DatabaseCollector:
    """The metrics a scrape reads from the database: set `snapshot`, then collect."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.database_up = True

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("aidnode_database_up", "1 if the database answered this scrape.")
        up.add_metric([], 1 if self.database_up else 0)
        yield up
        snap = self.snapshot
        if snap is None:
            return
        head = GaugeMetricFamily("aidnode_feed_head_seq", "Seq of the last entry of our own feed.")
        head.add_metric([], snap.head_seq)
        yield head
        entries = CounterMetricFamily("aidnode_feed_entries", "Entries appended to our own feed, "
                                      "by type (the feed is append-only).", labels=["type"])  # fmt: skip
        for kind in sorted({"item", "relay", "key", *snap.feed_entries}):
            entries.add_metric([kind], snap.feed_entries.get(kind, 0))
        yield entries
        hold = GaugeMetricFamily("aidnode_feed_on_hold", "1 while the feed is on hold after a "
                                 "restore (nothing is appended).")  # fmt: skip
        hold.add_metric([], 1 if snap.feed_on_hold else 0)
        yield hold
        items = GaugeMetricFamily("aidnode_items", "Items held, by origin (local or remote) "
                                  "and status.", labels=["origin", "status"])  # fmt: skip
        for (origin, status), count in sorted(snap.items.items()):
            items.add_metric([origin, status], count)
        yield items
        queues = GaugeMetricFamily("aidnode_queue_depth", "Work waiting: relays held for their "
                                   "origin's quota or edit interval (relays_waiting), "
                                   "response-status messages to send (response_status), local "
                                   "items past their expiry not yet expired (expiry_due).",
                                   labels=["queue"])  # fmt: skip
        for queue, count in sorted(snap.queues.items()):
            queues.add_metric([queue], count)
        yield queues
        peers = GaugeMetricFamily("aidnode_peers", "Known nodes, by trust.", labels=["trust"])
        for trust in ("blocked", "trusted", "unknown"):
            peers.add_metric([trust], sum(1 for p in snap.peers if p.trust == trust))
        yield peers
        lag = GaugeMetricFamily("aidnode_peer_lag", "Entries of a followed peer's feed not yet "
                                "read: its head as last seen minus what we hold.",
                                labels=["peer"])  # fmt: skip
        push = GaugeMetricFamily("aidnode_push_lag", "Entries of our feed a follower has not "
                                 "acknowledged: our head minus its delivered cursor.",
                                 labels=["peer"])  # fmt: skip
        for peer in sorted(snap.peers, key=lambda p: p.url):
            if peer.trust != "trusted":
                continue
            if peer.we_follow != "none":
                lag.add_metric([peer.url], max(0, peer.head_seq - peer.received_seq))
            if peer.they_follow == "accepted":
                push.add_metric([peer.url], max(0, snap.head_seq - peer.delivered_seq))
        yield lag
        yield push


class Metrics:
    """One node's registry and the counters its code increments."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # With several worker processes (server/cli.py), prometheus_client keeps counters in
        # files under PROMETHEUS_MULTIPROC_DIR, which serve sets before they start, and a
        # scrape, whichever process answers it, adds up every process's files.
        self.shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aidnode_http_requests", "HTTP requests answered, by method, route name and status "
            "class.", ["method", "route", "status_class"], registry=self.registry,
        )  # fmt: skip
        self.request_duration = Histogram(
            "aidnode_http_request_duration_seconds", "Time to answer an HTTP request in full, by "
            "route name.", ["route"], registry=self.registry,
        )  # fmt: skip
        self.ingested = Counter(
            "aidnode_ingested_entries", "Entries of allies' feeds taken in since start, by "
            "outcome (accepted, refused, invalid).", ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.pushes = Counter(
            "aidnode_pushes", "Push requests to followers since start, by outcome (ok, conflict, "
            "too_large, error, stopped, behind).", ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.snapshots = Counter(
            "aidnode_snapshots", "Snapshots of allies' feeds read since start, by outcome "
            "(taken: the cursor moved to the head it named; fallback: the whole feed is read "
            "instead).", ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.snapshot_entries = Counter(
            "aidnode_snapshot_entries", "Entries of allies' snapshots taken in since start, by "
            "outcome (accepted, refused).", ["outcome"], registry=self.registry,
        )  # fmt: skip
        for outcome in INGEST_OUTCOMES:
            self.ingested.labels(outcome)
        for outcome in SNAPSHOT_OUTCOMES:
            self.snapshots.labels(outcome)
        for outcome in ("accepted", "refused"):
            self.snapshot_entries.labels(outcome)
        for outcome in PUSH_OUTCOMES:
            self.pushes.labels(outcome)
        self.software = Info("aidnode", "The software this node runs.", registry=self.registry)
        self.software.info({"version": __version__})
        self.database = DatabaseCollector()
        self.registry.register(self.database)
        self.exposed = self.registry
        if self.shared_dir:
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=self.shared_dir)
            self.exposed.register(self.software)
            self.exposed.register(self.database)

    def pushed(self, outcome: str) -> None:
        self.pushes.labels(outcome).inc()

    def took_in(self, *, accepted: int, refused: int, invalid: int) -> None:
        """Count one committed ingest batch (`accepted` counts chain-valid entries, refused
        ones among them)."""
        self.ingested.labels("accepted").inc(max(0, accepted - refused))
        self.ingested.labels("refused").inc(refused)
        self.ingested.labels("invalid").inc(invalid)

    def took_in_snapshot(self, *, entries: int, refused: int) -> None:
        """Count one committed snapshot page (`entries` taken in, `refused` among them)."""
        self.snapshot_entries.labels("accepted").inc(max(0, entries - refused))
        self.snapshot_entries.labels("refused").inc(refused)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, f"{status // 100}xx").inc()
        self.request_duration.labels(route).observe(seconds)

    async def render(self, node: "Node") -> bytes:
        """The text exposition, with what the database holds read now."""
        try:
            snapshot = await read_snapshot(node)
        except Exception as error:  # the scrape still answers, with aidnode_database_up 0
            log.warning("metrics: the database did not answer: %r", error)
            snapshot = None
        # No await between setting the snapshot and collecting: scrapes cannot interleave.
        self.database.snapshot, self.database.database_up = snapshot, snapshot is not None
        try:
            return generate_latest(self.exposed)
        finally:
            self.database.snapshot = None


def route_name(scope: Scope) -> str:
    """The name of the route that answered (a bounded label), never the raw path."""
    route = scope.get("route")
    return getattr(route, "name", None) or "unmatched"


def request_observer(metrics: "Metrics"):
    """An observer for `logs.ObserveRequests`: count and time each request, by method, route
    name and status class."""

    def observe(scope: Scope, status: int, duration: float) -> None:
        metrics.observe_request(scope["method"], route_name(scope), status, duration)

    return observe


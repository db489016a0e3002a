"""The coordinator queue (DESIGN §1, §5, §6): this node's unmet needs, most pressing first.

A need is unmet while it is open (and not past its expiry). Each entry says how long it has
waited, how far it reaches, what its escalation will do (DESIGN §6: `escalate_after`, or
`escalate_after_urgent` for urgent needs, counted from `created`), its best matches, and which
followers have taken in its latest state: those whose acknowledged `delivered_seq` is at or
past the feed entry that carries it. Followers are the trusted nodes whose subscription to us
is accepted, the ones this node pushes its feed to (DESIGN §4.6).
"""

from dataclasses import dataclass, field
from datetime import timedelta

from federation.timefmt import format_time, parse_time

from .matching import Match, matches_for_each
from .node import ItemView, Node
from .store import Peer, User

QUEUE_MAX = 200
QUEUE_MATCHES = 3


@dataclass(frozen=True)
class Escalation:
    """What happens to a need's reach, in one of four named states:

    - `gone_out`: its reach is already `allies` or `network` (whatever its setting: reach
      only widens);
    - `kept`: the poster or a coordinator keeps it in the group (`escalation = never`);
    - `scheduled`: it will ask allies at `at`, if still unmet;
    - `due`: it was to ask allies at `at`, and has not yet.
    """

    state: str
    at: str | None = None


@dataclass
class QueueEntry:
    """One unmet need and what a coordinator wants to know about it."""

    view: ItemView
    age_seconds: int
    escalation: Escalation
    matches: list[Match] = field(default_factory=list)
    reached: list[Peer] = field(default_factory=list)  # followers holding its latest state
    not_reached: list[Peer] = field(default_factory=list)  # followers it has yet to reach
    relayed_by: list[str] = field(default_factory=list)  # groups seen relaying it further
    responses_waiting: int = 0  # responses no one has accepted or declined yet


def escalation_of(node: Node, view: ItemView) -> Escalation:
    """The need's escalation state now (DESIGN §6)."""
    state = view.state
    if state["reach"] != "local":
        return Escalation("gone_out")
    if view.row.escalation == "never":
        return Escalation("kept")
    at = format_time(parse_time(state["created"]) + timedelta(seconds=node.escalation_delay(state)))
    return Escalation("due" if at <= node.now_text() else "scheduled", at)


async def unmet_needs(node: Node, viewer: User, *, limit: int = QUEUE_MAX) -> list[QueueEntry]:
    """This node's open, live needs, urgent first, then oldest first, with their best matches."""
    now = node.now()
    views = [node.view(row, viewer)
             for row in await node.store.unmet_local_needs(format_time(now), limit)]  # fmt: skip
    followers = [peer for peer in await node.store.peers()
                 if peer.trust == "trusted" and peer.they_follow == "accepted"]  # fmt: skip
    latest = await node.store.latest_feed_seqs([view.state["id"] for view in views])
    sightings = await node.store.sightings([view.state["id"] for view in views])
    waiting = await node.store.pending_responses([view.state["id"] for view in views])
    matches = await matches_for_each(node, views, viewer, limit=QUEUE_MATCHES)
    entries = []
    for view, found in zip(views, matches, strict=True):
        seq = latest.get(view.state["id"])  # None: never published (reach local)
        entries.append(QueueEntry(
            view=view,
            age_seconds=max(0, int((now - parse_time(view.state["created"])).total_seconds())),
            escalation=escalation_of(node, view),
            matches=found,
            reached=[p for p in followers if seq is not None and p.delivered_seq >= seq],
            not_reached=[p for p in followers if seq is not None and p.delivered_seq < seq],
            relayed_by=[node.peer_names.get(url, url) for url in sightings[view.state["id"]]],
            responses_waiting=waiting[view.state["id"]],
        ))  # fmt: skip
    return entries

"""Pushing our feed to followers (`Allies.deliver`), against a scripted receiver: batches, the
cursor taken from the receiver's answers, 413 halving, 409 resuming, backoff and stopping.
(Real nodes pushing to each other: tests/test_allies_live.py.)"""

import json

import httpx
import pytest

from federation.outbound import FetchError, Reply
from tests.test_ingest import WEST, WestFeed, add_west

pytestmark = pytest.mark.anyio

OFFER = {"kind": "offer", "title": "Soup", "body": "Lentil soup.", "category": "food"}


class Receiver:
    """Stands in for a follower's inbox: answers from a script, records what it was sent."""

    def __init__(self, *answers, holds: int | None = None) -> None:
        self.answers = list(answers)
        self.sent: list[dict] = []
        self.holds = holds  # what it says it holds of our feed, if asked
        self.asked = 0

    async def request(self, method, url, *, json_bytes=None, **kwargs) -> Reply:
        if (method, url) == ("GET", f"{WEST}/federation/cursor"):
            self.asked += 1
            payload = {"received": {"seq": self.holds, "hash": None}}
            return Reply(status=200, headers=httpx.Headers(), body=json.dumps(payload).encode())
        assert (method, url) == ("POST", f"{WEST}/federation/inbox")
        body = json.loads(json_bytes)
        self.sent.append(body)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, received = answer
        if received == "all":
            received = body["entries"][-1]["seq"]
        payload = {} if received is None else {"received": {"seq": received, "hash": None}}
        return Reply(status=status, headers=httpx.Headers(), body=json.dumps(payload).encode())


async def follower(harness, monkeypatch, receiver: Receiver, posts: int):
    api = await harness.api_client("jo")
    for i in range(posts):
        await api.post("/api/v1/items", json={**OFFER, "title": f"Soup {i}"})
    peer_id = await add_west(harness, WestFeed())
    async with harness.node.store.write() as db:
        await harness.node.store.update_peer(db, peer_id, they_follow="accepted")
    monkeypatch.setattr(harness.node.allies.outbound, "request", receiver.request)
    return peer_id


async def test_entries_go_in_batches_as_stored_and_the_cursor_follows_the_answers(harness, monkeypatch):
    receiver = Receiver((200, "all"), (200, "all"), (200, "all"))
    peer_id = await follower(harness, monkeypatch, receiver, posts=250)
    store = harness.node.store
    assert await harness.node.allies.deliver(await store.peer(peer_id)) == 250
    assert [len(b["entries"]) for b in receiver.sent] == [100, 100, 50]
    assert {b["origin"] for b in receiver.sent} == {harness.config.base_url}
    stored = [json.loads(r[0]) for r in await store.fetch_all("SELECT entry FROM feed ORDER BY seq")]
    assert [e for b in receiver.sent for e in b["entries"]] == stored
    peer = await store.peer(peer_id)
    assert (peer.delivered_seq, peer.push_failures, peer.push_stopped) == (250, 0, False)
    # Nothing new: nothing sent.
    assert await harness.node.allies.deliver(peer) == 0 and len(receiver.sent) == 3


async def test_a_push_starts_from_the_cursor_as_stored_not_from_the_rounds_copy(harness,
                                                                               monkeypatch):  # fmt: skip
    """A round reads every peer and starts their pushes; a push to one of them that ended in
    between has moved its cursor. The new push starts there, sending nothing twice."""
    receiver = Receiver((200, "all"), (200, "all"))
    peer_id = await follower(harness, monkeypatch, receiver, posts=150)
    store = harness.node.store
    stale = await store.peer(peer_id)  # the round's copy: delivered_seq 0
    async with store.write() as db:  # the push that ended meanwhile
        await store.update_peer(db, peer_id, delivered_seq=120)
    assert await harness.node.allies.deliver(stale) == 30
    assert [(b["entries"][0]["seq"], len(b["entries"])) for b in receiver.sent] == [(121, 30)]
    assert (await store.peer(peer_id)).delivered_seq == 150


async def test_413_halves_the_batch_and_409_resumes_where_the_receiver_is(harness, monkeypatch):
    receiver = Receiver((413, None), (409, 20), (200, "all"), (200, "all"))
    peer_id = await follower(harness, monkeypatch, receiver, posts=120)
    async with harness.node.store.write() as db:
        await harness.node.store.update_peer(db, peer_id, delivered_seq=30)
    await harness.node.allies.deliver(await harness.node.store.peer(peer_id))
    firsts = [(b["entries"][0]["seq"], len(b["entries"])) for b in receiver.sent]
    assert firsts == [(31, 90), (31, 50), (21, 50), (71, 50)]
    assert (await harness.node.store.peer(peer_id)).delivered_seq == 120


@pytest.mark.parametrize("failure, stopped", [
    ((503, None), False), ((401, None), False), ((429, None), False),
    (FetchError("connection refused"), False), ((400, None), True), ((404, None), True),
])  # fmt: skip
async def test_failures_back_off_or_stop_and_keep_what_was_delivered(harness, monkeypatch,
                                                                     failure, stopped):  # fmt: skip
    receiver = Receiver((200, "all"), failure)
    peer_id = await follower(harness, monkeypatch, receiver, posts=150)
    assert await harness.node.allies.deliver(await harness.node.store.peer(peer_id)) == 100
    peer = await harness.node.store.peer(peer_id)
    assert peer.delivered_seq == 100 and peer.push_failures == 1
    assert peer.push_next_attempt is not None and peer.push_stopped is stopped
    assert peer.last_error
    assert harness.node.allies.delivers_to(peer) is not stopped
    # A follower backing off is not pushed to until its time comes.
    assert await harness.node.allies.deliver_all() == 0 and len(receiver.sent) == 2


@pytest.mark.parametrize("holds, pushed_from", [(0, None), (12, 13), (None, None)])
async def test_a_follower_far_behind_is_left_to_pull_until_it_says_it_has_caught_up(
        harness, monkeypatch, holds, pushed_from):  # fmt: skip
    from server import allies

    monkeypatch.setattr(allies, "PUSH_LAG_MAX", 10)
    receiver = Receiver((200, "all"), holds=holds)
    if holds is None:  # it cannot be asked: no answer at all
        async def unreachable(method, url, **kwargs):
            raise FetchError("connection refused")
    peer_id = await follower(harness, monkeypatch, receiver, posts=20)
    if holds is None:
        monkeypatch.setattr(harness.node.allies.outbound, "request", unreachable)
    delivered = await harness.node.allies.deliver(await harness.node.store.peer(peer_id))
    peer = await harness.node.store.peer(peer_id)
    if pushed_from is None:
        assert delivered == 0 and receiver.sent == [] and peer.delivered_seq == 0
    else:
        assert receiver.asked == 1 and receiver.sent[0]["entries"][0]["seq"] == pushed_from
        assert delivered == 20 - holds and peer.delivered_seq == 20

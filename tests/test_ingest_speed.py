"""What makes a push cheaper keeps every check: a push's nonce commits with its entries (one
COMMIT a push), and a replay is still refused, also two at once, also of a push refused."""

import asyncio
import gc
import json
import weakref

import httpx
import pytest

from federation.entries import canonical
from federation.httpsig import new_nonce, sign_request
from server import allies as allies_module
from tests.test_ingest import WEST, WestFeed, add_west, item, remote_titles

pytestmark = pytest.mark.anyio


def pushed(harness, feed: WestFeed, entries: list, *, nonce: str | None = None,
           origin: str = WEST) -> httpx.Request:  # fmt: skip
    """A push of `entries`, signed by West (with `nonce`, default a fresh one)."""
    body = {"type": "entries", "origin": origin, "entries": entries}
    request = httpx.Request("POST", harness.config.base_url + "/federation/inbox", json=body)
    return sign_request(request, feed.key, feed.key_id, now=harness.clock(), nonce=nonce)


async def nonces_held(harness) -> int:
    return (await harness.node.store.fetch_one("SELECT count(*) FROM seen_nonces"))[0]


async def test_a_push_commits_its_nonce_and_its_entries_together(harness, monkeypatch):
    """One COMMIT (one fsync) a push: the request's nonce is recorded in the batch's own
    transaction, not in one of its own before it."""
    feed = WestFeed()
    await add_west(harness, feed)
    for n in range(12):
        feed.append(item(n + 1))
    store = harness.node.store
    commits = []
    commit = store._commit

    async def counted(batch):
        commits.append(batch)
        await commit(batch)

    monkeypatch.setattr(store, "_commit", counted)
    # West pushes twelve entries.
    response = await harness.client().send(pushed(harness, feed, feed.entries))
    assert response.status_code == 200, response.text
    assert response.json()["received"]["seq"] == 12
    assert len(commits) == 1
    assert await nonces_held(harness) == 1
    assert len(await remote_titles(harness)) == 1  # twelve items, all titled alike


async def test_a_replayed_push_is_refused_and_changes_nothing(harness):
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    feed.append(item(1))
    nonce = new_nonce()
    # West pushes entry 1.
    first = await harness.client().send(pushed(harness, feed, feed.entries, nonce=nonce))
    assert first.status_code == 200
    # Someone replays the request once more, with entry 2 as the body (signed anew with
    # West's key and the same nonce: only the nonce is what refuses it).
    feed.append(item(2, title="Bread"))
    again = await harness.client().send(pushed(harness, feed, feed.entries, nonce=nonce))
    assert again.status_code == 401 and "already used" in again.json()["error"]
    assert (await harness.node.store.peer(peer_id)).received_seq == 1
    assert await remote_titles(harness) == {"Soup on Sundays"}


async def test_two_pushes_with_one_nonce_at_once_are_taken_once(harness):
    """The nonce is only looked up before the transaction; the transaction decides, so of
    two requests that arrive together only one is taken."""
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(20):
        feed.append(item(n + 1, title=f"Offer {n}"))
    nonce = new_nonce()
    client = harness.client()
    # The same signed push, sent twice at the same moment.
    answers = await asyncio.gather(
        client.send(pushed(harness, feed, feed.entries, nonce=nonce)),
        client.send(pushed(harness, feed, feed.entries[:10], nonce=nonce)),
    )  # fmt: skip
    assert sorted(answer.status_code for answer in answers) == [200, 401]
    refused = next(answer for answer in answers if answer.status_code == 401)
    assert "already used" in refused.json()["error"]
    taken = next(answer for answer in answers if answer.status_code == 200)
    held = (await harness.node.store.peer(peer_id)).received_seq
    assert taken.json()["received"]["seq"] == held and held in (10, 20)
    assert await nonces_held(harness) == 1


@pytest.mark.parametrize("case", ["gap", "another origin", "not a list", "extra field"])
async def test_a_push_refused_before_ingest_still_records_its_nonce(harness, case):
    """A push answered 4xx before its entries are looked at cannot be replayed either."""
    feed = WestFeed()
    await add_west(harness, feed)
    feed.append(item(1))
    feed.append(item(2))
    nonce = new_nonce()
    if case == "gap":
        request = pushed(harness, feed, feed.entries[1:], nonce=nonce)
    elif case == "another origin":
        request = pushed(harness, feed, feed.entries, nonce=nonce, origin="https://east.example")
    elif case == "not a list":
        request = pushed(harness, feed, {"seq": 1}, nonce=nonce)  # type: ignore[arg-type]
    else:
        body = {"type": "entries", "origin": WEST, "entries": feed.entries, "also": 1}
        request = sign_request(
            httpx.Request("POST", harness.config.base_url + "/federation/inbox", json=body),
            feed.key, feed.key_id, now=harness.clock(), nonce=nonce,
        )  # fmt: skip
    first = await harness.client().send(request)
    assert 400 <= first.status_code < 500 and first.status_code != 401, first.text
    again = await harness.client().send(request)
    assert again.status_code == 401 and "already used" in again.json()["error"]


async def test_items_written_while_a_batch_is_checked_are_all_stored(harness, monkeypatch):
    """A batch's item states are written every WRITE_AHEAD entries while the rest is checked
    (`_ItemChanges.write_soon`); each write's cursors are kept until every such write is done
    (a cursor let go on the event loop's thread resets its statement there, while the next
    write may be running the same statement on the connection's thread)."""
    assert await harness.node.allies.verifier.wait_ready() == 2  # so the loop waits, and writes run
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(1, 61):
        feed.append(item(n, title=f"Offer {n}"))
    feed.append(item(3, title="Offer 3, again", version=2))  # a later state of an item written
    store = harness.node.store
    write = store.write_remote_items
    returned: list[weakref.ref] = []
    at_each_write = []  # (cursors alive, cursors returned) as each write begins

    async def watched(db, states, **kwargs):
        at_each_write.append((sum(ref() is not None for ref in returned), len(returned)))
        cursors = await write(db, states, **kwargs)
        returned.extend(weakref.ref(cursor) for cursor in cursors)
        return cursors

    # The checkers may answer the whole batch before ingest waits for any of them, and then
    # every write is sent before the first is done: the second check looked at waits until
    # the first write has returned, so that later writes begin while earlier cursors live.
    valid_by = allies_module._Ahead.valid_by

    async def after_the_first_write(ahead, index):
        if index == 5:
            for _ in range(500):
                if returned:
                    break
                await asyncio.sleep(0.01)
        return await valid_by(ahead, index)

    monkeypatch.setattr(allies_module._Ahead, "valid_by", after_the_first_write)
    monkeypatch.setattr(store, "write_remote_items", watched)
    monkeypatch.setattr(allies_module, "WRITE_AHEAD", 5)
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (61, None)
    # Written every 5 entries, then the rest: as each write begins while the batch is checked,
    # every cursor an earlier one returned is still alive; the writes did overlap.
    streamed = at_each_write[:-1]
    assert len(at_each_write) == 13
    assert all(alive == before for alive, before in streamed)
    assert any(before > 0 for _, before in streamed)
    gc.collect()
    assert all(ref() is None for ref in returned)
    titles = {row[0] for row in await store.fetch_all("SELECT title FROM items WHERE NOT is_local")}
    assert len(titles) == 60 and "Offer 3, again" in titles and "Offer 3" not in titles
    assert (await store.peer(peer_id)).received_seq == 61


async def test_the_state_stored_for_an_item_is_the_body_its_entry_signed(harness):
    """An item's state is stored as its body's canonical JSON, cut out of the bytes its entry
    was hashed over (`body_cut`); the same with the checkers at work or not, awkward text
    included."""
    assert await harness.node.allies.verifier.wait_ready() == 2  # batches of 8 or more go there
    feed = WestFeed()
    peer_id = await add_west(harness, feed)
    for n in range(1, 11):
        feed.append(item(n, title=f"Offre n° {n} 🍲 ﬁ ✓", body='He said "key": ,"key":"'))
    feed.append(item(4, title="Offer 4, again", version=2))
    assert await harness.node.allies.ingest(peer_id, feed.entries) == (11, None)
    feed.append(item(11, title="One alone"))  # a batch too small for the checkers
    assert await harness.node.allies.ingest(peer_id, feed.entries[-1:]) == (1, None)
    latest = {entry["body"]["id"]: entry["body"] for entry in feed.entries}
    rows = await harness.node.store.fetch_all("SELECT id, state FROM items WHERE NOT is_local")
    assert {row[0]: json.loads(row[1]) for row in rows} == latest
    cut = {row[0]: row[1] for row in rows if row[0] != item(11)["id"]}
    assert cut == {item_id: canonical(body).decode() for item_id, body in latest.items()
                   if item_id != item(11)["id"]}  # fmt: skip
    assert "One alone" in await remote_titles(harness)

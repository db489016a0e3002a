"""The coordinator queue, `/coordinate`: this node's unmet needs, urgent first then oldest,
with their escalation state, best matches and the followers they have reached."""

import re

import pytest

from tests.test_matching import hold_remote, post, remote_state

pytestmark = pytest.mark.anyio


def card(html: str, view) -> str:
    """The queue's entry for one need."""
    match = re.search(rf'<li class="card need" id="need-{view.uuid}">(.*?)</li>\s*(?=<li class="card need"|</ol>)',
                      html, re.S)  # fmt: skip
    assert match, f"{view.state['title']} is not in the queue"
    return " ".join(match.group(1).split())


def field(entry: str, name: str) -> str:
    """The text of one dd in an entry, tags removed."""
    match = re.search(rf"<dt>{name}</dt> <dd[^>]*>(.*?)</dd>", entry)
    assert match, name
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split()).replace(" ,", ",")


async def add_peer(harness, url, *, trust="trusted", they_follow="accepted", delivered_seq=0):
    # A peer as the allies code keeps it: trust, their subscription to us, what they acknowledged
    async with harness.node.store.write() as db:
        await db.execute(
            "INSERT INTO peers (url, name, trust, they_follow, delivered_seq, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (url, url.split("//")[1].split(".")[0].title(), trust, they_follow, delivered_seq,
             harness.node.now_text()),
        )  # fmt: skip


async def test_members_are_refused_and_coordinators_see_the_queue(harness):
    """A member gets 403 and no nav link; coordinators and admins get the page and the link."""
    member = await harness.browser("kim")
    assert (await member.get("/coordinate")).status_code == 403
    assert 'href="/coordinate"' not in (await member.get("/")).text
    for name, role in (("cora", "coordinator"), ("ada", "admin")):
        browser = await harness.browser(name, role)
        page = await browser.get("/coordinate")
        assert page.status_code == 200 and "Unmet needs" in page.text
        assert 'href="/coordinate"' in (await browser.get("/")).text


async def test_queue_orders_urgent_first_then_oldest(harness):
    """Urgent needs come first, then normal, then low; within each, the longest waiting first;
    offers, remote needs and needs that are not open are left out."""
    jo = await harness.add_user("jo")
    coordinator = await harness.browser("cora", "coordinator")
    # Needs posted an hour apart
    normal_old = await post(harness, jo, kind="need", title="Normal, oldest")
    harness.clock.advance(hours=1)
    low = await post(harness, jo, kind="need", title="Low, older", urgency="low")
    harness.clock.advance(hours=1)
    urgent_old = await post(harness, jo, kind="need", title="Urgent, older", urgency="urgent")
    harness.clock.advance(hours=1)
    normal_new = await post(harness, jo, kind="need", title="Normal, newer")
    urgent_new = await post(harness, jo, kind="need", title="Urgent, newest", urgency="urgent")
    # Not unmet needs of ours
    await post(harness, jo, title="An offer")
    promised = await post(harness, jo, kind="need", title="Promised need")
    await harness.node.change_item(jo, promised.uuid, {"status": "promised"})
    await hold_remote(
        harness, remote_state(harness, kind="need", title="Remote need", urgency="urgent")
    )
    page = (await coordinator.get("/coordinate")).text
    order = [v.state["title"] for v in (urgent_old, urgent_new, normal_old, normal_new, low)]
    positions = [page.index(f">{title}</a></h2>") for title in order]
    assert positions == sorted(positions)
    for absent in ("An offer", "Promised need", "Remote need"):
        assert f">{absent}</a></h2>" not in page
    assert page.count("</a></h2>") == 5
    # The age counts from creation
    assert field(card(page, normal_old), "Waiting").startswith("for 3 hours")
    assert field(card(page, urgent_new), "Waiting").startswith("for 0 minutes")


async def test_escalation_state_says_when_a_need_asks_allies(harness_factory):
    """Each need says whether it is kept in the group, has gone out, or when it asks allies
    (escalate_after, or escalate_after_urgent for urgent needs, from creation)."""
    async with harness_factory(escalate_after=6 * 3600, escalate_after_urgent=1800) as h:
        jo = await h.add_user("jo")
        coordinator = await h.browser("cora", "coordinator")
        # Created at 2026-11-24 18:00 UTC
        normal = await post(h, jo, kind="need", title="Normal need")
        urgent = await post(h, jo, kind="need", title="Urgent need", urgency="urgent")
        kept = await post(h, jo, kind="need", title="Kept need", escalation="never")
        out = await post(h, jo, kind="need", title="Asked allies", reach="network", hop_limit=2)
        page = (await coordinator.get("/coordinate")).text
        assert field(card(page, normal), "Escalation") == (
            "Will ask allies at 2026-11-25 00:00 UTC if still unmet"
        )
        assert field(card(page, urgent), "Escalation") == (
            "Will ask allies at 2026-11-24 18:30 UTC if still unmet"
        )
        assert field(card(page, kept), "Escalation") == "Kept in the group: it will not ask allies"
        assert field(card(page, out), "Escalation") == "Gone out beyond the group"
        assert field(card(page, out), "Reach") == "Allies and their allies (up to 2 hops)"
        assert field(card(page, normal), "Reach") == "Only our group"
        # An hour later the urgent need's time has come
        h.clock.advance(hours=1)
        page = (await coordinator.get("/coordinate")).text
        assert (
            field(card(page, urgent), "Escalation")
            == "Due to ask allies since 2026-11-24 18:30 UTC"
        )
        assert field(card(page, normal), "Escalation").startswith("Will ask allies")


async def test_queue_shows_the_followers_a_need_has_reached(harness):
    """Reached: trusted followers whose acknowledged seq is at or past the need's latest entry."""
    jo = await harness.add_user("jo")
    coordinator = await harness.browser("cora", "coordinator")
    need = await post(harness, jo, kind="need", title="Bed for tonight", category="housing",
                      reach="allies")  # fmt: skip
    local = await post(harness, jo, kind="need", title="Local need", category="housing")
    seq = await harness.node.store.feed_head_seq()
    assert seq >= 1
    page = (await coordinator.get("/coordinate")).text
    assert field(card(page, need), "Has reached") == "No allied group follows us yet"
    # Peers that are caught up or behind; ones that do not follow us, or are not trusted
    await add_peer(harness, "https://north.example", delivered_seq=seq)
    await add_peer(harness, "https://south.example", delivered_seq=seq - 1)
    await add_peer(harness, "https://pending.example", they_follow="pending", delivered_seq=seq)
    await add_peer(harness, "https://stranger.example", trust="unknown", delivered_seq=seq)
    page = (await coordinator.get("/coordinate")).text
    reached = field(card(page, need), "Has reached")
    assert reached == "North Not yet: South"
    assert "Pending" not in page and "Stranger" not in page
    assert field(card(page, local), "Has reached") == "Only our group"
    # A change makes a new entry: North has not acknowledged that one yet
    await harness.node.change_item(jo, need.uuid, {"title": "Bed for tonight, two people"})
    page = (await coordinator.get("/coordinate")).text
    assert field(card(page, need), "Has reached") == (
        "No allied group has taken it in yet Not yet: North, South"
    )


async def test_queue_shows_each_needs_best_matches(harness):
    """Each entry lists up to three matching offers, best first, local or remote."""
    jo = await harness.add_user("jo")
    coordinator = await harness.browser("cora", "coordinator")
    need = await post(harness, jo, kind="need", title="Ride to the clinic", body="Tuesday.")
    lonely = await post(harness, jo, kind="need", title="Piano lessons", body="Beginner.",
                        category="skills")  # fmt: skip
    for n in range(4):
        await post(harness, jo, title=f"Clinic ride {n}", body="By car.")
    await hold_remote(harness, remote_state(harness, title="Ride to the clinic", body="Tuesday."))
    page = (await coordinator.get("/coordinate")).text
    matches = field(card(page, need), "Best matches")
    assert matches.startswith("Ride to the clinic · from https://north.example")
    assert matches.count("·") == 3
    assert field(card(page, lonely), "Best matches") == "No offer matches yet"


async def test_queue_text_is_escaped(harness):
    """A need's title and a peer's name are shown escaped, never as markup."""
    jo = await harness.add_user("jo")
    coordinator = await harness.browser("cora", "coordinator")
    await post(harness, jo, kind="need", title="<b>bold</b> need", reach="allies")
    async with harness.node.store.write() as db:
        await db.execute(
            "INSERT INTO peers (url, name, trust, they_follow, delivered_seq, created)"
            " VALUES ('https://x.example', '<img src=x onerror=alert(1)>', 'trusted', 'accepted',"
            " 99, '2026-11-24T18:00:00Z')"
        )
    page = (await coordinator.get("/coordinate")).text
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt; need" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


async def test_the_queue_shows_which_groups_relayed_a_need(harness):
    """Relays of our need seen in allies' feeds appear as "Passed on by" on the queue."""
    coordinator = await harness.browser("cora", role="coordinator")
    member = await harness.api_client("ana")
    posted = (await member.post("/api/v1/items", json={
        "kind": "need", "title": "Ramp", "body": "For the steps", "category": "household",
        "reach": "network", "hop_limit": 3,
    })).json()  # fmt: skip
    harness.node.peer_names["https://westside.example"] = "Westside <i>Aid</i>"
    async with harness.node.store.write() as db:
        await harness.node.store.record_sightings(
            db, [(posted["id"], "https://westside.example")], "2026-11-24T18:00:00Z")
    page = await coordinator.get("/coordinate")
    assert page.status_code == 200
    assert "Passed on by Westside &lt;i&gt;Aid&lt;/i&gt;" in page.text


async def test_the_queue_counts_responses_waiting_for_a_decision(harness):
    """A need with an undecided response says so, and links to the need's page."""
    coordinator = await harness.browser("cora", role="coordinator")
    member = await harness.api_client("ana")
    posted = (await member.post("/api/v1/items", json={
        "kind": "need", "title": "Ramp", "body": "For the steps", "category": "household",
    })).json()  # fmt: skip
    async with harness.node.store.write() as db:
        for n, state in enumerate(("pending", "pending", "declined")):
            await db.execute(
                "INSERT INTO responses (id, from_node, from_name, item_id, message, contact,"
                " created, received, state) VALUES (?, 'https://westside.example', 'Jo', ?,"
                " 'I can', 'jo@example.org', '2026-11-24T18:00:00Z', '2026-11-24T18:00:00Z', ?)",
                (f"00000000-0000-4000-8000-00000000000{n}", posted["id"], state),
            )
    page = await coordinator.get("/coordinate")
    assert page.status_code == 200
    assert "2 responses to decide on" in page.text

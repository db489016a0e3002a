"""Matching (DESIGN §5): a need's page suggests open offers, local and remote, ranked by
category, words in common and location; an offer's page suggests the needs it might meet."""

from datetime import timedelta

import pytest

from federation import items as item_rules
from federation.timefmt import format_time
from server import matching
from server.matching import match_terms, matches_for

pytestmark = pytest.mark.anyio

NORTH = "https://north.example"


async def post(harness, user, kind="offer", title="Ride to the clinic", body="By car.",
               category="transport", **fields):  # fmt: skip
    """Post an item as `user` through the node, as the API and the form do."""
    return await harness.node.post_item(user, {"kind": kind, "title": title, "body": body,
                                               "category": category, **fields})  # fmt: skip


def remote_state(harness, kind="offer", title="Ride to the clinic", body="By car.",
                 category="transport", origin=NORTH, **fields) -> dict:  # fmt: skip
    """A valid item state from another node, as ingest would hold it."""
    inp = item_rules.parse_item_input({"kind": kind, "title": title, "body": body,
                                       "category": category, "reach": "allies", **fields},
                                      partial=False)  # fmt: skip
    return item_rules.create_state(inp, origin=origin, now=harness.clock(), author=lambda _: "Sam")


async def hold_remote(harness, *states, origin=NORTH) -> None:
    # The node holds these as if ingested from the ally's feed.
    async with harness.node.store.write() as db:
        await harness.node.store.write_remote_items(db, list(states), origin=origin)


def titles(matches) -> list[str]:
    return [match.view.state["title"] for match in matches]


async def test_need_page_suggests_local_and_remote_offers(harness):
    """A need's page lists matching offers from this node and from allies, and not unrelated ones."""
    jo = await harness.add_user("jo")
    browser = await harness.browser("kim")
    # Jo posts a need; the group and an ally hold offers
    need = await post(harness, jo, kind="need", title="Ride to the clinic", body="Tuesday 9am.")
    await post(harness, jo, title="Car rides on weekdays", body="I drive most mornings.")
    await post(harness, jo, title="Soup for the week", body="Lentil soup.", category="food")
    await hold_remote(harness, remote_state(harness, title="Lift to the clinic", body="Van."))
    # Kim opens the need
    page = await browser.get(f"/items/{need.uuid}")
    assert page.status_code == 200
    assert "Offers that might help" in page.text
    assert "Car rides on weekdays" in page.text and "Lift to the clinic" in page.text
    assert f"From {NORTH}" in page.text
    assert "Soup for the week" not in page.text


async def test_offer_page_suggests_needs_it_might_meet(harness):
    """An offer's page lists open needs, remote ones too, that it might meet."""
    jo = await harness.add_user("jo")
    browser = await harness.browser("kim")
    offer = await post(
        harness, jo, title="Spare bed", body="A single bed, free.", category="housing"
    )
    await post(
        harness, jo, kind="need", title="Bed for a child", body="Any bed.", category="household"
    )
    await hold_remote(harness, remote_state(harness, kind="need", title="Somewhere to sleep",
                                            body="Two nights.", category="housing"))  # fmt: skip
    page = await browser.get(f"/items/{offer.uuid}")
    assert "Needs this might meet" in page.text
    assert "Bed for a child" in page.text  # words in common, another category
    assert "Somewhere to sleep" in page.text  # same category, from an ally


async def test_same_category_ranks_above_another_category(harness):
    """With the same words, the offer in the need's category comes first; no category and no
    words in common is no match."""
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need", title="Wheelchair ramp", body="For the front step.",
                      category="household")  # fmt: skip
    # Posted first, so being newer does not put it first
    await post(
        harness, jo, title="Wheelchair ramp", body="For the front step.", category="household"
    )
    await post(harness, jo, title="Wheelchair ramp", body="For the front step.", category="health")
    await post(harness, jo, title="Tutoring", body="Maths, evenings.", category="skills")
    matches = await matches_for(harness.node, need, jo)
    assert [m.view.state["category"] for m in matches] == ["household", "health"]
    assert matches[0].same_category and not matches[1].same_category
    assert matches[1].words_in_common


async def test_more_words_in_common_rank_higher(harness):
    """Within a category, the closest wording comes first and partial overlap still matches."""
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need", title="Ride to the clinic",
                      body="Wheelchair accessible, please.", tags=["wheelchair"])  # fmt: skip
    # Posted best first, so being newer does not decide the order
    await post(harness, jo, title="Wheelchair ride to the clinic", body="Accessible van.",
               tags=["wheelchair"])  # fmt: skip
    await post(harness, jo, title="Moving boxes", body="A van for moving day.")
    await post(harness, jo, title="Clinic runs", body="Most days.")
    matches = await matches_for(harness.node, need, jo)
    assert titles(matches) == ["Wheelchair ride to the clinic", "Clinic runs", "Moving boxes"]
    assert [m.words_in_common for m in matches] == [True, True, False]


async def test_a_longer_shared_geohash_prefix_ranks_higher(harness):
    """Among equal offers, the one sharing more leading geohash characters comes first."""
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need", location={"label": "Eastside", "geohash": "u33db"})
    # Offers alike in all but where they are (a location's label is not searched)
    for label, geohash in (("Far", "u0"), ("Region", "u33"), ("Same cell", "u33db"),
                           ("Next cell", "u33dc")):  # fmt: skip
        await post(harness, jo, location={"label": label, "geohash": geohash})
    await post(harness, jo)
    await hold_remote(
        harness, remote_state(harness, location={"label": "North", "geohash": "u33dc"})
    )
    matches = await matches_for(harness.node, need, jo, limit=10)
    where = [m.view.state.get("location", {}).get("label", "nowhere") for m in matches]
    assert where[0] == "Same cell"
    assert set(where[1:3]) == {"Next cell", "North"}  # four characters shared, local or remote
    assert where[3:] == ["Region", "Far", "nowhere"]
    assert [m.shared_geohash for m in matches] == [5, 4, 4, 3, 1, 0]
    assert [m.closeness for m in matches] == ["nearby", "nearby", "nearby", "region", None, None]


async def test_ended_expired_and_the_item_itself_are_not_suggested(harness):
    """Only open, live offers are suggested: not withdrawn, promised or expired ones, local or
    remote, and never the item itself."""
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need")
    withdrawn = await post(harness, jo, title="Ride to the clinic (withdrawn)")
    await harness.node.change_item(jo, withdrawn.uuid, {"status": "withdrawn"})
    promised = await post(harness, jo, title="Ride to the clinic (promised)")
    await harness.node.change_item(jo, promised.uuid, {"status": "promised"})
    soon = format_time(harness.clock() + timedelta(hours=1))
    await post(harness, jo, title="Ride to the clinic (expiring)", expires=soon)
    await hold_remote(harness, remote_state(harness, title="Ride to the clinic (remote, expiring)",
                                            expires=soon))  # fmt: skip
    await post(harness, jo, title="Ride to the clinic (open)")
    assert "Ride to the clinic (expiring)" in titles(await matches_for(harness.node, need, jo))
    # Time passes: the expiring ones are past their time, though no worker has marked them
    harness.clock.advance(hours=2)
    matches = await matches_for(harness.node, need, jo)
    assert titles(matches) == ["Ride to the clinic (open)"]
    assert need.state["id"] not in [m.view.state["id"] for m in matches]
    # A need that is no longer open gets no suggestions at all
    await harness.node.change_item(jo, need.uuid, {"status": "withdrawn"})
    ended = await harness.node.item_for(need.uuid, jo)
    assert await matches_for(harness.node, ended, jo) == []


async def test_fts_syntax_in_member_text_is_only_words(harness):
    """Quotes, stars, OR, NEAR( and column filters in member text neither break nor steer matching."""
    jo = await harness.add_user("jo")
    browser = await harness.browser("kim")
    need = await post(harness, jo, kind="need", title='"ride" OR NEAR( clinic* title:bike',
                      body='AND NOT -x ^start "unclosed {a b} (c) :: **', category="other")  # fmt: skip
    await post(harness, jo, title="A bike", body="Red.", category="skills")
    await post(harness, jo, title="Near the station", body="Umbrellas to lend.", category="skills")
    await post(harness, jo, title="Shoes", body="Size 40.", category="clothing")
    page = await browser.get(f"/items/{need.uuid}")
    assert page.status_code == 200
    found = titles(await matches_for(harness.node, need, jo))
    # "near" and "title" are plain words here: an offer containing "near" matches by text, and
    # "title:bike" did not restrict the search to titles (a column filter would miss "Red.").
    assert "Near the station" in found and "A bike" in found and "Shoes" not in found
    # The terms are the words alone: no quotes, stars, brackets or colons survive
    assert match_terms(need.state) == ["ride", "near", "clinic", "title", "bike", "start",
                                       "unclosed"]  # fmt: skip


async def test_visitors_see_no_matches(harness_factory):
    """With public_offers on, a visitor sees the offer but none of the needs it might meet."""
    async with harness_factory(public_offers=True) as h:
        jo = await h.add_user("jo")
        offer = await post(h, jo, title="Spare bed", body="Single bed.", category="housing")
        await post(
            h, jo, kind="need", title="A bed for tonight", body="Anywhere.", category="housing"
        )
        visitor = h.client()
        page = await visitor.get(f"/items/{offer.uuid}")
        assert page.status_code == 200 and "Spare bed" in page.text
        assert "Needs this might meet" not in page.text and "A bed for tonight" not in page.text
        assert await matches_for(h.node, offer, None) == []
        # A member sees the same offer with its match
        member = await h.browser("kim")
        assert "A bed for tonight" in (await member.get(f"/items/{offer.uuid}")).text


async def test_match_text_is_escaped(harness):
    """A suggested item's title is shown escaped, never as markup."""
    jo = await harness.add_user("jo")
    browser = await harness.browser("kim")
    need = await post(harness, jo, kind="need", title="Ride to the clinic")
    await post(harness, jo, title="<script>alert(1)</script> clinic ride")
    page = await browser.get(f"/items/{need.uuid}")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; clinic ride" in page.text


def test_match_terms_drop_common_words_and_repeat():
    """Terms are the item's distinct, meaningful words, title first."""
    terms = match_terms({"title": "Need a ride to the Clinic", "body": "The clinic, please!",
                         "tags": ["ride"]})  # fmt: skip
    assert terms == ["ride", "clinic"]


async def test_only_the_newest_items_are_candidates(harness, monkeypatch):
    """Candidates are the newest open items of the wanted kind, and the newest of them in the
    item's category: an older item beyond both is not suggested, however well it matches."""
    monkeypatch.setattr(matching, "MATCH_POOL", 3)
    monkeypatch.setattr(matching, "MATCH_POOL_CATEGORY", 2)
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need", title="Ride to the clinic", body="Tuesday.")

    async def offer(title, category):
        harness.clock.advance(minutes=1)
        await post(harness, jo, title=title, body="Ask Jo.", category=category)

    # Oldest first: offers with the need's words, and offers in its category without them
    await offer("Clinic ride, oldest", "health")
    await offer("Bus tokens, oldest", "transport")
    await offer("Van seats", "transport")
    await offer("Taxi fares", "transport")
    await offer("Clinic ride, newer", "health")
    await offer("Clinic ride, newest", "food")
    await offer("Pool filler, no match", "skills")
    found = titles(await matches_for(harness.node, need, jo, limit=10))
    # The 3 newest offers (one matching nothing), and the 2 newest in the category, which
    # are older than those 3: they come from the category's own pool
    assert sorted(found) == ["Clinic ride, newer", "Clinic ride, newest", "Taxi fares",
                             "Van seats"]  # fmt: skip
    # With room for every offer, the older ones match too
    monkeypatch.setattr(matching, "MATCH_POOL", 300)
    found = titles(await matches_for(harness.node, need, jo, limit=10))
    assert "Clinic ride, oldest" in found and "Bus tokens, oldest" in found


async def test_words_match_without_case_or_diacritics(harness):
    """A word matches with or without its diacritics (café, cafe), either way round and however
    the accent is encoded."""
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need", title="Meals at a café", body="Evenings.",
                      category="food")  # fmt: skip
    await post(harness, jo, title="Cafe vouchers", body="Two.", category="other")
    await post(harness, jo, title="CAFÉ tables", body="Folding.", category="household")
    await post(harness, jo, title="Cafe\u0301 cups", body="Six.", category="household")
    await post(harness, jo, title="Cab fare", body="One trip.", category="transport")
    matches = await matches_for(harness.node, need, jo, limit=10)
    assert sorted(titles(matches)) == ["CAFÉ tables", "Cafe vouchers", "Cafe\u0301 cups"]
    assert all(m.words_in_common and not m.same_category for m in matches)
    # And the other way round: an offer written without the accent finds the accented need
    offer = await post(harness, jo, title="Cafe", body="Free coffee.", category="other")
    assert titles(await matches_for(harness.node, offer, jo)) == ["Meals at a café"]


async def test_long_words_match_as_prefixes_short_words_exactly(harness):
    """A word of PREFIX_MIN letters or more finds longer words it begins ("clinic" finds
    "clinics"); a shorter one only itself ("car" finds "car", not "care")."""
    jo = await harness.add_user("jo")
    need = await post(harness, jo, kind="need", title="Car to a clinic", body="Monday.",
                      category="health")  # fmt: skip
    await post(harness, jo, title="Walk-in clinics", body="Open late.", category="household")
    await post(harness, jo, title="Care packages", body="Boxed.", category="household")
    await post(harness, jo, title="Cardboard", body="Flat.", category="household")
    await post(harness, jo, title="A car seat", body="Clean.", category="household")
    await post(harness, jo, title="Clin", body="Short for nothing.", category="household")
    found = titles(await matches_for(harness.node, need, jo, limit=10))
    assert sorted(found) == ["A car seat", "Walk-in clinics"]


async def test_matches_for_each_item_are_each_items_matches(harness):
    """Matching several items at once (the coordinator queue, the home page) suggests for each
    what matching it alone would."""
    jo = await harness.add_user("jo")
    needs = [await post(harness, jo, kind="need", title="Ride to the clinic"),
             await post(harness, jo, kind="need", title="Soup", body="Hot.", category="food"),
             await post(harness, jo, kind="need", title="A clinic lift", category="health")]  # fmt: skip
    offer = await post(harness, jo, title="Clinic runs", body="Most days.")
    await post(harness, jo, title="Lentil soup", body="Weekly.", category="food")
    await post(harness, jo, title="Bread", body="Fresh.", category="food")
    views = [*needs, offer]
    together = await matching.matches_for_each(harness.node, views, jo, limit=2)
    alone = [await matches_for(harness.node, view, jo, limit=2) for view in views]
    assert [titles(found) for found in together] == [titles(found) for found in alone]
    assert [titles(found) for found in together] == [
        ["Clinic runs"], ["Lentil soup", "Bread"], ["Clinic runs"],
        ["Ride to the clinic", "A clinic lift"],
    ]  # fmt: skip

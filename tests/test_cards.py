"""Item cards in listings are rendered once and kept (server/templating.py `Cards`): what is
kept must never be shown once the item, its age, its poster's name or the language changed."""

import re

import pytest

from server import templating
from tests.conftest import post_form

pytestmark = pytest.mark.anyio

OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household"}  # fmt: skip


def cards(html: str) -> list[str]:
    return re.findall(r'<li class="card.*?</li>', html, flags=re.S)


async def test_a_kept_card_follows_edits_age_and_language(harness):
    api = await harness.api_client("jo")
    browser = await harness.browser("sam")
    item = (await api.post("/api/v1/items", json=OFFER)).json()
    uuid = item["id"].rsplit("/", 1)[1]
    first = cards((await browser.get("/items")).text)
    assert len(first) == 1 and "Wheelchair ramp to lend" in first[0] and "1 minute ago" in first[0]
    assert cards((await browser.get("/items")).text) == first  # the kept card, unchanged

    await api.patch(f"/api/v1/items/{uuid}", json={"title": "Ramp, 2 m", "status": "promised"})
    edited = cards((await browser.get("/items")).text)[0]
    assert "Ramp, 2 m" in edited and "Wheelchair" not in edited and "Promised" in edited

    harness.clock.advance(hours=3)
    assert "3 hours ago" in cards((await browser.get("/items")).text)[0]

    chosen = await post_form(browser, "/account", {"action": "language", "language": "es"})
    assert chosen.status_code == 303
    spanish = cards((await browser.get("/items")).text)[0]
    assert "hace 3 horas" in spanish and "Prometida" in spanish


async def test_the_posters_name_shown_follows_share_author(harness):
    api = await harness.api_client("jo")
    browser = await harness.browser("sam")
    item = (await api.post("/api/v1/items", json={**OFFER, "reach": "network"})).json()
    assert "Eastside Mutual Aid" in cards((await browser.get("/items")).text)[0]
    uuid = item["id"].rsplit("/", 1)[1]
    shared = (await api.patch(f"/api/v1/items/{uuid}", json={"share_author": True})).json()
    assert shared["author"] == "Jo"
    card = cards((await browser.get("/items")).text)[0]
    assert "Jo" in card and "Eastside Mutual Aid" not in card


async def test_only_the_newest_cards_are_kept(harness, monkeypatch):
    monkeypatch.setattr(templating, "CARD_CACHE_SIZE", 3)
    api = await harness.api_client("jo")
    browser = await harness.browser("sam")
    for i in range(5):
        await api.post("/api/v1/items", json={**OFFER, "title": f"Ramp {i}"})
    assert len(cards((await browser.get("/items")).text)) == 5
    kept = harness.app.state.templates.environment("en").globals["card"]._kept
    assert len(kept) == 3
    # The last three rendered (the page lists newest first: Ramp 2, 1, 0 came last).
    titles = {item["id"]: item["title"] for item in
              (await api.get("/api/v1/items")).json()["items"]}  # fmt: skip
    assert sorted(titles[key[0]] for key in kept) == ["Ramp 0", "Ramp 1", "Ramp 2"]

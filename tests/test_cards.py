"""Item cards in listings are rendered once and kept (server/templating.py `Cards`): what is
kept must never be shown once the item, its age, its poster's name or the language changed."""

import dataclasses
import json
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
    assert sorted(json.loads(key[0])["title"] for key in kept) == ["Ramp 0", "Ramp 1", "Ramp 2"]


def filter_form(html: str) -> str:
    [form] = re.findall(r'<form method="get" action="/items".*?</form>', html, flags=re.S)
    return form


async def test_the_kept_filter_form_shows_the_filters_asked_for_and_the_groups_known(harness):
    """The filter form is kept per language, filters and groups: a kept one never shows
    another page's choices, another language, a group since gone, or a member's filters to a
    visitor."""
    browser = await harness.browser("sam")
    plain = filter_form((await browser.get("/items")).text)
    assert 'value="need" selected' not in plain
    needs = filter_form((await browser.get("/items?kind=need&q=%3Cb%3Eramp")).text)
    assert 'value="need" selected' in needs and 'value="&lt;b&gt;ramp"' in needs
    assert filter_form((await browser.get("/items")).text) == plain  # kept, and not the other
    harness.node.peer_names["http://127.0.0.1:9"] = "Pantry <West>"
    grouped = filter_form((await browser.get("/items")).text)
    assert '<option value="http://127.0.0.1:9">Pantry &lt;West&gt;</option>' in grouped
    del harness.node.peer_names["http://127.0.0.1:9"]
    assert filter_form((await browser.get("/items")).text) == plain
    chosen = await post_form(browser, "/account", {"action": "language", "language": "es"})
    assert chosen.status_code == 303
    assert "Todas las categorías" in filter_form((await browser.get("/items")).text)
    harness.node.config = dataclasses.replace(harness.node.config, public_offers=True)
    visitor = await harness.browser()
    shown = filter_form((await visitor.get("/items")).text)
    assert 'name="q"' in shown and 'name="kind"' not in shown and 'name="origin"' not in shown

"""Browse and the items API filter by one group (its base URL) and by distance (a geohash
prefix), and refuse what is neither, clearly."""

import pytest

pytestmark = pytest.mark.anyio

WEST = "https://westside.example"
AT = "2026-11-24T17:00:00Z"


def remote(n: int, geohash: str | None) -> dict:
    state = {
        "id": f"{WEST}/items/00000000-0000-4000-8000-{n:012d}", "kind": "offer",
        "title": f"West offer {n}", "body": "Lentil soup.", "category": "food", "status": "open",
        "reach": "allies", "created": AT, "updated": AT, "expires": "2026-12-24T17:00:00Z",
        "version": 1, "author": "Jo",
    }  # fmt: skip
    if geohash:
        state["location"] = {"label": "West", "geohash": geohash}
    return state


@pytest.fixture
async def stocked(harness):
    member = await harness.api_client("ana")
    for title, geohash in (("Near soup", "u33db"), ("Far soup", "gcpvj"), ("Nowhere soup", None)):
        body = {"kind": "offer", "title": title, "body": "Soup.", "category": "food"}
        if geohash:
            body["location"] = {"label": "Here", "geohash": geohash}
        assert (await member.post("/api/v1/items", json=body)).status_code == 201
    async with harness.node.store.write() as db:
        await harness.node.store.write_remote_items(db, [remote(1, "u33dc"), remote(2, None)])
    harness.node.peer_names[WEST] = "Westside"
    return harness, member


async def titles(client, **params) -> set[str]:
    answer = await client.get("/api/v1/items", params=params)
    assert answer.status_code == 200, answer.text
    return {item["title"] for item in answer.json()["items"]}


async def test_one_group_by_its_base_url(stocked):
    harness, member = stocked
    assert await titles(member, origin=WEST) == {"West offer 1", "West offer 2"}
    assert await titles(member, origin=harness.config.base_url) == {"Near soup", "Far soup", "Nowhere soup"}


async def test_near_a_geohash_prefix(stocked):
    _, member = stocked
    assert await titles(member, near="u33d") == {"Near soup", "West offer 1"}
    assert await titles(member, near="u33db") == {"Near soup"}
    assert await titles(member, near="u", origin=WEST) == {"West offer 1"}


@pytest.mark.parametrize("params, field", [
    ({"origin": "https://unknown.example"}, "origin"), ({"origin": "elsewhere"}, "origin"),
    ({"near": "u33dbc"}, "near"), ({"near": "a"}, "near"), ({"near": "u3%"}, "near"),
])  # fmt: skip
async def test_bad_filters_are_refused_clearly(stocked, params, field):
    _, member = stocked
    answer = await member.get("/api/v1/items", params=params)
    assert answer.status_code == 400 and answer.json()["field"] == field


async def test_the_browse_page_offers_each_group_and_the_near_filter(stocked):
    harness, _ = stocked
    browser = await harness.browser("bo")
    page = await browser.get("/items", params={"origin": WEST, "near": "u33d"})
    assert page.status_code == 200
    assert f'<option value="{WEST}" selected>Westside</option>' in page.text
    assert 'name="near" value="u33d"' in page.text
    assert "West offer 1" in page.text and "Near soup" not in page.text and "West offer 2" not in page.text
    # Badges: an ally's item says so and how long ago it was posted.
    assert "Allied" in page.text and "1 hour ago" in page.text  # posted at 17:00, now 18:00

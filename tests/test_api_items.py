"""The items API: create, read, list, change, and what each answer looks like."""

import asyncio

import pytest

from server.api import encode_cursor

pytestmark = pytest.mark.anyio

OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household", "tags": ["ramp", "loan"],
         "location": {"label": "Eastside", "geohash": "u33db"}}  # fmt: skip
NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday morning.",
        "category": "transport", "urgency": "urgent"}  # fmt: skip


async def test_post_offer_returns_full_item(harness):
    """A new offer answers 201 with every protocol field, defaults filled in."""
    api = await harness.api_client("jo")
    response = await api.post("/api/v1/items", json=OFFER)
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["id"].startswith(harness.config.base_url + "/items/")
    assert response.headers["location"] == item["id"]
    assert item["reach"] == "allies" and item["status"] == "open" and item["version"] == 1
    assert item["created"] == item["updated"] == "2026-11-24T18:00:00Z"
    assert item["expires"] == "2026-12-24T18:00:00Z"
    assert item["author"] == "Jo" and item["origin_name"] == "Eastside Mutual Aid"
    assert "urgency" not in item and "hop_limit" not in item and "quantity" not in item


async def test_need_defaults_to_local_with_delayed_escalation(harness):
    api = await harness.api_client("jo")
    item = (await api.post("/api/v1/items", json=NEED)).json()
    assert item["reach"] == "local" and item["escalation"] == "after_delay"
    assert item["urgency"] == "urgent"


async def test_network_need_gets_hop_limit_and_group_author(harness):
    """At network reach the author is the group's name unless the poster opts in."""
    api = await harness.api_client("jo")
    item = (await api.post("/api/v1/items", json={**NEED, "reach": "network"})).json()
    assert item["hop_limit"] == 2 and item["author"] == "Eastside Mutual Aid"
    shared = (await api.post("/api/v1/items", json={**NEED, "reach": "network",
                                                    "share_author": True})).json()  # fmt: skip
    assert shared["author"] == "Jo"


async def test_get_and_patch_bump_version_once(harness):
    api = await harness.api_client("jo")
    item = (await api.post("/api/v1/items", json=OFFER)).json()
    uuid = item["id"].rsplit("/", 1)[1]
    harness.clock.advance(minutes=5)
    changed = await api.patch(f"/api/v1/items/{uuid}", json={"title": "Ramp, 2 m"})
    assert changed.status_code == 200
    assert changed.json()["version"] == 2 and changed.json()["updated"] == "2026-11-24T18:05:00Z"
    # The same change again is a no-op: no new version.
    again = await api.patch(f"/api/v1/items/{uuid}", json={"title": "Ramp, 2 m"})
    assert again.json()["version"] == 2
    fetched = await api.get(f"/api/v1/items/{uuid}")
    assert fetched.json() == again.json()


async def test_status_moves_follow_the_rules(harness):
    api = await harness.api_client("jo")
    uuid = (await api.post("/api/v1/items", json=NEED)).json()["id"].rsplit("/", 1)[1]
    bad = await api.patch(f"/api/v1/items/{uuid}", json={"status": "fulfilled"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    for status in ("promised", "open", "promised", "fulfilled"):
        response = await api.patch(f"/api/v1/items/{uuid}", json={"status": status})
        assert response.status_code == 200 and response.json()["status"] == status
    final = await api.patch(f"/api/v1/items/{uuid}", json={"title": "late edit"})
    assert final.status_code == 422
    expired = await api.patch(f"/api/v1/items/{uuid}", json={"status": "expired"})
    assert expired.status_code == 422


async def test_reach_only_widens(harness):
    api = await harness.api_client("jo")
    uuid = (await api.post("/api/v1/items", json=OFFER)).json()["id"].rsplit("/", 1)[1]
    narrowed = await api.patch(f"/api/v1/items/{uuid}", json={"reach": "local"})
    assert narrowed.status_code == 422 and narrowed.json()["field"] == "reach"


async def test_others_cannot_change_but_coordinators_can(harness):
    jo = await harness.api_client("jo")
    sam = await harness.api_client("sam")
    coord = await harness.api_client("cora", "coordinator")
    uuid = (await jo.post("/api/v1/items", json=OFFER)).json()["id"].rsplit("/", 1)[1]
    assert (await sam.patch(f"/api/v1/items/{uuid}", json={"status": "withdrawn"})).status_code == 403
    moderated = await coord.patch(f"/api/v1/items/{uuid}", json={"status": "withdrawn"})
    assert moderated.status_code == 200
    entries = await harness.node.store.audit_entries()
    assert entries[0]["action"] == "item.moderate" and entries[0]["actor"] == "cora"


async def paged_titles(api, params: dict) -> list[str]:
    """The titles of every page of a listing, following its cursors to the end."""
    seen, cursor = [], None
    while True:
        page = (await api.get("/api/v1/items", params={**params, **({"cursor": cursor} if cursor else {})})).json()
        seen += [item["title"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            return seen


async def test_list_filters_search_and_pages(harness):
    api = await harness.api_client("jo")
    for i in range(7):
        harness.clock.advance(seconds=1)
        await api.post("/api/v1/items", json={**OFFER, "title": f"Offer number {i}"})
    await api.post("/api/v1/items", json=NEED)
    offers = (await api.get("/api/v1/items", params={"kind": "offer"})).json()["items"]
    assert len(offers) == 7
    # Newest first, three to a page, every item exactly once.
    assert await paged_titles(api, {"kind": "offer", "limit": 3}) == [
        f"Offer number {i}" for i in range(6, -1, -1)]
    found = (await api.get("/api/v1/items", params={"q": "clinic"})).json()["items"]
    assert [item["title"] for item in found] == ["Ride to the clinic"]
    prefix = (await api.get("/api/v1/items", params={"q": "alumin"})).json()["items"]
    assert len(prefix) == 7
    # Search pages newest first too, by a cursor (never an offset): each match exactly once.
    assert await paged_titles(api, {"q": "alumin offer", "limit": 2}) == [
        f"Offer number {i}" for i in range(6, -1, -1)]
    # FTS syntax in the query is text, not syntax.
    odd = await api.get("/api/v1/items", params={"q": 'ramp" OR "x* NEAR('})
    assert odd.status_code == 200 and odd.json()["items"] == []
    assert (await api.get("/api/v1/items", params={"origin": "remote"})).json()["items"] == []
    one = (await api.get("/api/v1/items", params={"id": offers[0]["id"]})).json()["items"]
    assert [item["id"] for item in one] == [offers[0]["id"]]


@pytest.mark.parametrize("params", [
    {"kind": "gift"}, {"category": "cake"}, {"status": "expired"}, {"origin": "mars"},
    {"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"cursor": "!!!"}, {"q": "x" * 201},
    # Cursors this node never gives out: a search's row below 0 or not a number, an offset.
    {"cursor": encode_cursor({"r": -1})}, {"cursor": encode_cursor({"r": "9"})},
    {"cursor": encode_cursor({"r": True})}, {"cursor": encode_cursor({"o": 30})},
])  # fmt: skip
async def test_bad_list_parameters_are_400(harness, params):
    api = await harness.api_client("jo")
    response = await api.get("/api/v1/items", params=params)
    assert response.status_code == 400
    assert response.json()["field"] == next(iter(params))


async def test_expiry_is_a_real_change_and_leaves_views(harness):
    api = await harness.api_client("jo")
    item = (await api.post("/api/v1/items", json={**OFFER, "expires": "2026-11-25T18:00:00Z"})).json()
    uuid = item["id"].rsplit("/", 1)[1]
    harness.clock.advance(days=1)
    # Gone from listings the moment it expires, before the worker marks it.
    assert (await api.get("/api/v1/items")).json()["items"] == []
    assert await harness.node.expire_due_items() == 1
    stored = await harness.node.store.item(item["id"])
    assert stored.state["status"] == "expired" and stored.state["version"] == 2
    assert await harness.node.expire_due_items() == 0
    # The poster still sees it in their history; the item page answers for them only.
    assert (await api.get(f"/api/v1/items/{uuid}")).json()["status"] == "expired"
    other = await harness.api_client("sam")
    assert (await other.get(f"/api/v1/items/{uuid}")).status_code == 404


async def test_fifty_concurrent_posts_are_all_stored(harness):
    api = await harness.api_client("jo")
    responses = await asyncio.gather(*[
        api.post("/api/v1/items", json={**OFFER, "title": f"Concurrent {i}"}) for i in range(50)
    ])  # fmt: skip
    assert [r.status_code for r in responses] == [201] * 50
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 50
    listed = (await api.get("/api/v1/items", params={"limit": 200})).json()["items"]
    assert {item["id"] for item in listed} == ids


async def test_unknown_and_remote_uuids(harness):
    api = await harness.api_client("jo")
    missing = "0b9f3c1e-6a43-4f57-9a3e-2f1d7c5b8a10"
    assert (await api.get(f"/api/v1/items/{missing}")).status_code == 404
    assert (await api.patch(f"/api/v1/items/{missing}", json={"title": "x"})).status_code == 404
    # Uppercase or dash-less forms are not item ids.
    assert (await api.get(f"/api/v1/items/{missing.upper()}")).status_code == 404
    # A remote item held here cannot be changed here.
    remote = {"id": f"https://westside.example/items/{missing}", "kind": "offer", "title": "t",
              "body": "b", "category": "food", "status": "open", "reach": "allies",
              "expires": "2026-12-24T00:00:00Z", "created": "2026-11-24T00:00:00Z",
              "updated": "2026-11-24T00:00:00Z", "version": 1, "author": "W"}  # fmt: skip
    async with harness.node.store.write() as db:
        await harness.node.store.write_item(db, remote, origin="https://westside.example",
                                            is_local=False)  # fmt: skip
    assert (await api.patch(f"/api/v1/items/{missing}", json={"title": "x"})).status_code == 403
    listed = (await api.get("/api/v1/items", params={"origin": "remote"})).json()["items"]
    assert [item["id"] for item in listed] == [remote["id"]]


async def test_search_follows_edits_and_only_words_rewrite_the_index(harness):
    api = await harness.api_client("jo")
    item = (await api.post("/api/v1/items", json=OFFER)).json()
    uuid = item["id"].rsplit("/", 1)[1]

    async def found(words: str) -> list[str]:
        listed = (await api.get("/api/v1/items", params={"q": words})).json()["items"]
        return [i["title"] for i in listed]

    await api.patch(f"/api/v1/items/{uuid}", json={"status": "promised", "quantity": "2"})
    assert await found("wheelchair") == ["Wheelchair ramp to lend"]
    await api.patch(f"/api/v1/items/{uuid}", json={"title": "Folding ramp", "tags": ["access"]})
    assert await found("wheelchair") == []
    assert await found("folding access") == ["Folding ramp"]
    async with harness.node.store.write() as db:  # the index agrees with the items it covers
        await db.execute("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")

"""The Atom feed of public offers (RFC 4287), `/offers.atom`: valid XML in the Atom namespace,
only what a visitor may see, member text escaped, and nothing at all while public_offers is off."""

import xml.etree.ElementTree as ET

import pytest

from tests.conftest import BASE_URL
from tests.test_ingest import add_west, item
from tests.test_responses import WestFeed

pytestmark = pytest.mark.anyio

ATOM = "{http://www.w3.org/2005/Atom}"
OFFER = {"kind": "offer", "title": "Spare bed", "body": "For a night or two.", "category": "housing"}


async def post(client, **changes) -> dict:
    created = await client.post("/api/v1/items", json={**OFFER, **changes})
    assert created.status_code == 201, created.text
    return created.json()


def parse(response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/atom+xml"
    assert response.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.fromstring(response.content)


def entry_ids(feed: ET.Element) -> list[str]:
    return [entry.findtext(f"{ATOM}id") for entry in feed.findall(f"{ATOM}entry")]


async def test_the_feed_is_404_for_everyone_while_public_offers_is_off(harness):
    """Off: 404 for visitors, members (by session or token) and admins alike, and the home page links no feed."""
    member = await harness.api_client("ana")
    await post(member)
    browser = await harness.browser("bo")
    admin = await harness.api_client("root", "admin")
    for client in (harness.client(), member, browser, admin):
        assert (await client.get("/offers.atom")).status_code == 404
    assert "application/atom+xml" not in (await harness.client().get("/")).text


async def test_the_feed_lists_only_this_nodes_open_live_federated_offers(harness_factory):
    """Only our own open, live, federated offers, newest first, each entry and the feed with their RFC 4287 elements."""
    async with harness_factory(public_offers=True, description="Tenants helping tenants.") as h:
        ana = await h.api_client("ana")
        # What may be shown, and what may not.
        shown_first = await post(ana, title="Ladder")
        h.clock.advance(minutes=5)
        shown_last = await post(ana, title="Soup pot")
        await post(ana, title="Kept in the group", reach="local")
        await post(ana, kind="need", title="A need", reach="allies")
        withdrawn = await post(ana, title="Withdrawn")
        h.clock.advance(minutes=5)  # withdrawn after the newest shown one was posted
        assert (await ana.patch(f"/api/v1/items/{withdrawn['id'].rsplit('/', 1)[1]}",
                                json={"status": "withdrawn"})).status_code == 200  # fmt: skip
        promised = await post(ana, title="Promised")
        assert (await ana.patch(f"/api/v1/items/{promised['id'].rsplit('/', 1)[1]}",
                                json={"status": "promised"})).status_code == 200  # fmt: skip
        short = await post(ana, title="Gone soon", expires="2026-11-25T18:00:00Z")
        feed = WestFeed()
        peer_id = await add_west(h, feed)
        feed.append(item(1, title="West's soup"))
        assert await h.node.allies.ingest(peer_id, feed.entries) == (1, None)
        # Before the short one expires, it is there; after, it is not.
        assert short["id"] in entry_ids(parse(await h.client().get("/offers.atom")))
        h.clock.advance(days=2)
        response = await h.client().get("/offers.atom")
        root = parse(response)
        assert response.headers["cache-control"] == "public, max-age=300"
    assert root.tag == f"{ATOM}feed"
    assert entry_ids(root) == [shown_last["id"], shown_first["id"]]
    # The feed's own elements.
    assert root.findtext(f"{ATOM}id") == f"{BASE_URL}/offers.atom"
    assert root.findtext(f"{ATOM}title") == "Open offers at Eastside Mutual Aid"
    assert root.findtext(f"{ATOM}subtitle") == "Tenants helping tenants."
    assert root.findtext(f"{ATOM}author/{ATOM}name") == "Eastside Mutual Aid"
    [self_link] = [link for link in root.findall(f"{ATOM}link") if link.get("rel") == "self"]
    assert self_link.get("href") == f"{BASE_URL}/offers.atom"
    assert self_link.get("type") == "application/atom+xml"
    # Updated: the latest change to an offer it may hold, even one that has left it since
    # (withdrawn, promised or past its time at 18:10), later than any entry's own.
    assert shown_last["updated"] == "2026-11-24T18:05:00Z"
    assert root.findtext(f"{ATOM}updated") == "2026-11-24T18:10:00Z"
    # Each entry.
    entry = root.find(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == "Soup pot"
    assert entry.find(f"{ATOM}title").get("type") == "text"
    assert entry.findtext(f"{ATOM}updated") == shown_last["updated"]
    assert entry.findtext(f"{ATOM}published") == shown_last["created"]
    assert entry.findtext(f"{ATOM}summary") == "For a night or two."
    [link] = entry.findall(f"{ATOM}link")
    assert (link.get("rel"), link.get("href")) == ("alternate", shown_last["id"])
    assert entry.find(f"{ATOM}category").get("term") == "housing"


async def test_titles_and_bodies_are_escaped_never_markup(harness_factory):
    """`<script>` and `&` in a title and a body are escaped in the bytes and parse back as the same text."""
    title = "<script>alert(1)</script> Tools & paint"
    body = "Bring a bag & <b>gloves</b>]]> <!-- x --> \"quoted\" 'too'"
    async with harness_factory(public_offers=True) as h:
        await post(await h.api_client("ana"), title=title, body=body)
        response = await h.client().get("/offers.atom")
    root = parse(response)
    assert b"<script>" not in response.content and b"<b>" not in response.content
    assert b"&lt;script&gt;alert(1)&lt;/script&gt; Tools &amp; paint" in response.content
    assert b"Bring a bag &amp; &lt;b&gt;gloves&lt;/b&gt;" in response.content
    entry = root.find(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == title
    assert entry.findtext(f"{ATOM}summary") == body
    assert [child.tag for child in entry.find(f"{ATOM}summary")] == []  # text, no elements


async def test_the_feed_holds_the_newest_fifty(harness_factory):
    """With more than 50 offers, the newest 50, newest first."""
    async with harness_factory(public_offers=True) as h:
        ana = await h.api_client("ana")
        posted = []
        for n in range(52):
            posted.append((await post(ana, title=f"Offer {n}"))["id"])
            h.clock.advance(seconds=1)
        root = parse(await h.client().get("/offers.atom"))
    assert entry_ids(root) == posted[::-1][:50]


async def test_the_home_page_links_the_feed_while_public_offers_is_on(harness_factory):
    """On: the home page's head names the feed as an alternate for visitors and members."""
    async with harness_factory(public_offers=True) as h:
        for client in (h.client(), await h.browser("ana")):
            page = (await client.get("/")).text
            head = page[:page.index("</head>")]
            assert '<link rel="alternate" type="application/atom+xml" href="/offers.atom"' in head

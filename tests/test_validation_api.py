"""The item rules through the JSON API: every refusal is a 4xx `{"error", "field"}` that leaves
the store as it was, bad bodies and credentials are refused before any rule runs, and nothing
ever answers 500.

All tests share one node (see the `harness` fixture below) and a client that reports a 500 as a
status instead of raising the app's exception, so "never 500" is checked by the status itself.
"""

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation import items
from federation.timefmt import FixedClock
from server.app import BODY_LIMIT_API, create_app
from tests.conftest import START, NodeHarness, make_node

pytestmark = pytest.mark.anyio

OFFER = {"kind": "offer", "title": "Wheelchair ramp to lend", "body": "Aluminium, 2 m.",
         "category": "household", "tags": ["ramp", "loan"],
         "location": {"label": "Eastside", "geohash": "u33db"}}  # fmt: skip
NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday morning.",
        "category": "transport", "urgency": "urgent"}  # fmt: skip
NETWORK_NEED = {**NEED, "reach": "network", "hop_limit": 3}
ITEMS = "/api/v1/items"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def anyio_backend():
    # A module-wide node needs a module-wide event loop (aiosqlite runs on asyncio only).
    return "asyncio"


@pytest.fixture(scope="module")
async def harness(tmp_path_factory):
    """One node for the module, built like conftest's `harness` (which it overrides here).

    Each new member costs a scrypt hash (~0.2 s) and these tables send hundreds of requests,
    so one node serves them all; every test compares the store before and after itself.
    """
    config = make_node(tmp_path_factory.mktemp("validation"))
    app = create_app(config, clock=FixedClock(START), workers=False)
    async with LifespanManager(app):
        yield NodeHarness(app, config, app.state.node.clock)


def plain_client(harness: NodeHarness, **headers: str) -> httpx.AsyncClient:
    """A client to the node that gets a 500 as an answer rather than as a raised exception."""
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=harness.config.base_url,
                             headers=headers)  # fmt: skip


@pytest.fixture(scope="module")
async def api(harness):
    """Member jo's bearer token on a client that reports 500s."""
    member = await harness.api_client("jo")
    async with member, plain_client(harness, authorization=member.headers["authorization"]) as client:
        yield client


async def snapshot(harness: NodeHarness) -> list[tuple]:
    """Every stored item row, every column."""
    rows = await harness.node.store.fetch_all("SELECT * FROM items ORDER BY id")
    return [tuple(row) for row in rows]


async def refused(harness, send, status: int, field: str | None = None) -> httpx.Response:
    """Send a request; it must answer `status` with {"error"} (and `field`), storing nothing."""
    before = await snapshot(harness)
    response = await send()
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    if field is not None:
        assert body.get("field") == field, body
    assert await snapshot(harness) == before, "a refused request changed the store"
    return response


async def new_item(api: httpx.AsyncClient, data: dict = OFFER) -> str:
    """Post a valid item; return its uuid."""
    response = await api.post(ITEMS, json=data)
    assert response.status_code == 201, response.text
    return response.json()["id"].rsplit("/", 1)[1]


def without(data: dict, name: str) -> dict:
    return {key: value for key, value in data.items() if key != name}


def case(case_id: str, data: dict, field: str):
    return pytest.param(data, field, id=case_id)


# ---------------------------------------------------------------------------- POST: the rules

BAD_POSTS = [
    # Required fields.
    *[case(f"{name}-missing", without(OFFER, name), name) for name in items.REQUIRED_ON_CREATE],
    # kind.
    case("kind-unknown", {**OFFER, "kind": "gift"}, "kind"),
    case("kind-case", {**OFFER, "kind": "Offer"}, "kind"),
    case("kind-number", {**OFFER, "kind": 1}, "kind"),
    # title: 1–120 code points, no control characters.
    case("title-empty", {**OFFER, "title": ""}, "title"),
    case("title-blank", {**OFFER, "title": " \t "}, "title"),
    case("title-121", {**OFFER, "title": "x" * 121}, "title"),
    case("title-121-emoji", {**OFFER, "title": "😀" * 121}, "title"),
    case("title-nul", {**OFFER, "title": "a\x00b"}, "title"),
    case("title-newline", {**OFFER, "title": "a\nb"}, "title"),
    case("title-line-separator", {**OFFER, "title": "a\u2028b"}, "title"),
    case("title-escape", {**OFFER, "title": "a\x1b[31mb"}, "title"),
    case("title-number", {**OFFER, "title": 5}, "title"),
    case("title-list", {**OFFER, "title": ["x"]}, "title"),
    # body: ≤4000 code points, no control characters, within the entry size.
    case("body-empty", {**OFFER, "body": ""}, "body"),
    case("body-4001", {**OFFER, "body": "x" * 4001}, "body"),
    case("body-bell", {**OFFER, "body": "a\x07b"}, "body"),
    case("body-paragraph-separator", {**OFFER, "body": "a\u2029b"}, "body"),
    case("body-object", {**OFFER, "body": {"text": "b"}}, "body"),
    case("body-over-entry-size", {**OFFER, "body": "😀" * 4000}, "body"),
    # category enum.
    case("category-unknown", {**OFFER, "category": "cake"}, "category"),
    case("category-case", {**OFFER, "category": "Food"}, "category"),
    case("category-list", {**OFFER, "category": ["food"]}, "category"),
    # tags: ≤10 strings of ≤32 code points.
    case("tags-string", {**OFFER, "tags": "ramp"}, "tags"),
    case("tags-11", {**OFFER, "tags": [f"t{i}" for i in range(11)]}, "tags"),
    case("tags-33", {**OFFER, "tags": ["x" * 33]}, "tags"),
    case("tags-empty-tag", {**OFFER, "tags": [""]}, "tags"),
    case("tags-number", {**OFFER, "tags": [1]}, "tags"),
    case("tags-tab", {**OFFER, "tags": ["a\tb"]}, "tags"),
    # quantity ≤40.
    case("quantity-41", {**OFFER, "quantity": "x" * 41}, "quantity"),
    case("quantity-number", {**OFFER, "quantity": 3}, "quantity"),
    case("quantity-control", {**OFFER, "quantity": "3\x01"}, "quantity"),
    # location: label required and ≤80; geohash ≤5 of its alphabet; nothing else.
    case("location-string", {**OFFER, "location": "Eastside"}, "location"),
    case("location-no-label", {**OFFER, "location": {"geohash": "u33db"}}, "location.label"),
    case("location-empty-label", {**OFFER, "location": {"label": ""}}, "location.label"),
    case("location-label-81", {**OFFER, "location": {"label": "x" * 81}}, "location.label"),
    case("location-label-control", {**OFFER, "location": {"label": "E\x00"}}, "location.label"),
    case("geohash-6", {**OFFER, "location": {"label": "E", "geohash": "u33dbc"}}, "location.geohash"),
    case("geohash-12", {**OFFER, "location": {"label": "E", "geohash": "u33dbcdefghj"}},
         "location.geohash"),
    case("geohash-alphabet", {**OFFER, "location": {"label": "E", "geohash": "u33da"}},
         "location.geohash"),
    case("geohash-upper", {**OFFER, "location": {"label": "E", "geohash": "U33DB"}},
         "location.geohash"),
    case("geohash-empty", {**OFFER, "location": {"label": "E", "geohash": ""}}, "location.geohash"),
    case("geohash-number", {**OFFER, "location": {"label": "E", "geohash": 5}}, "location.geohash"),
    case("location-extra", {**OFFER, "location": {"label": "E", "street": "1 Main St"}},
         "location.street"),
    # urgency: needs only, low|normal|urgent.
    case("urgency-on-offer", {**OFFER, "urgency": "urgent"}, "urgency"),
    case("urgency-unknown", {**NEED, "urgency": "high"}, "urgency"),
    # status: a new item is open.
    *[case(f"status-{status}", {**OFFER, "status": status}, "status")
      for status in ("promised", "fulfilled", "withdrawn", "expired", "done")],
    # reach enum.
    case("reach-unknown", {**OFFER, "reach": "world"}, "reach"),
    case("reach-case", {**OFFER, "reach": "Local"}, "reach"),
    # hop_limit: 1–3, only at network reach.
    case("hop_limit-at-allies", {**OFFER, "hop_limit": 2}, "hop_limit"),
    case("hop_limit-at-local", {**NEED, "hop_limit": 2}, "hop_limit"),
    case("hop_limit-0", {**NEED, "reach": "network", "hop_limit": 0}, "hop_limit"),
    case("hop_limit-4", {**NEED, "reach": "network", "hop_limit": 4}, "hop_limit"),
    case("hop_limit-negative", {**NEED, "reach": "network", "hop_limit": -1}, "hop_limit"),
    case("hop_limit-true", {**NEED, "reach": "network", "hop_limit": True}, "hop_limit"),
    case("hop_limit-string", {**NEED, "reach": "network", "hop_limit": "2"}, "hop_limit"),
    # expires: protocol time, in the future, ≤90 days after created.
    case("expires-past", {**OFFER, "expires": "2026-11-24T17:59:59Z"}, "expires"),
    case("expires-now", {**OFFER, "expires": "2026-11-24T18:00:00Z"}, "expires"),
    case("expires-90-days-1s", {**OFFER, "expires": "2027-02-22T18:00:01Z"}, "expires"),
    case("expires-date-only", {**OFFER, "expires": "2026-12-24"}, "expires"),
    case("expires-offset", {**OFFER, "expires": "2026-12-24T00:00:00+00:00"}, "expires"),
    case("expires-fraction", {**OFFER, "expires": "2026-12-24T00:00:00.5Z"}, "expires"),
    case("expires-number", {**OFFER, "expires": 1798070400}, "expires"),
    case("expires-fullwidth-digits", {**OFFER, "expires": "２０２６-12-01T00:00:00Z"}, "expires"),
    # Unknown fields and fields only the node sets.
    case("unknown-colour", {**OFFER, "colour": "red"}, "colour"),
    case("unknown-contact", {**OFFER, "contact": "jo@example.org"}, "contact"),
    *[case(f"node-field-{name}", {**OFFER, name: value}, name) for name, value in [
        ("id", "http://127.0.0.1:8765/items/0b9f3c1e-6a43-4f57-9a3e-2f1d7c5b8a10"),
        ("created", "2026-11-24T18:00:00Z"), ("updated", "2026-11-24T18:00:00Z"),
        ("version", 1), ("author", "Mallory"), ("origin", "https://elsewhere.example"),
    ]],
    # Node-local options.
    case("escalation-on-offer", {**OFFER, "escalation": "never"}, "escalation"),
    case("escalation-unknown", {**NEED, "escalation": "soon"}, "escalation"),
    case("share_author-string", {**NEED, "share_author": "yes"}, "share_author"),
    case("share_author-number", {**NEED, "share_author": 1}, "share_author"),
]  # fmt: skip


@pytest.mark.parametrize("data, field", BAD_POSTS)
async def test_post_breaking_a_rule_is_422_naming_the_field(harness, api, data, field):
    """Each §3 rule broken on create answers 422 {"error", "field"} and stores nothing."""
    # POST the invalid item: 422 naming the field, store unchanged.
    await refused(harness, lambda: api.post(ITEMS, json=data), 422, field)


@pytest.mark.parametrize("name", items.INPUT_FIELDS)
async def test_post_null_is_422_for_every_field(harness, api, name):
    """Optional fields are omitted, never null: null answers 422 naming the field."""
    # null for each field of a need (every field applies to needs).
    data = {**NEED, "reach": "network", name: None}
    await refused(harness, lambda: api.post(ITEMS, json=data), 422, name)


async def test_post_limits_are_inclusive(harness, api):
    """The largest values the rules allow are accepted (the refusals above are off by one)."""
    # Every field at its limit, counted in code points.
    data = {**NEED, "title": "😀" * 120, "body": "€" * 4000, "tags": [f"{i:02}" + "x" * 30 for i in range(10)],
            "quantity": "q" * 40, "location": {"label": "é" * 80, "geohash": "u33db"},
            "reach": "network", "hop_limit": 3, "expires": "2027-02-22T18:00:00Z"}  # fmt: skip
    response = await api.post(ITEMS, json=data)
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["title"] == data["title"] and item["hop_limit"] == 3
    assert item["location"] == data["location"] and item["expires"] == data["expires"]


async def test_post_trims_surrounding_whitespace(harness, api):
    """Surrounding whitespace is trimmed before storing and before counting."""
    # A title of 120 code points with padding, and padded tags and label.
    data = {**OFFER, "title": "  " + "x" * 120 + "\n", "body": "\n Body \n",
            "tags": [" ramp "], "location": {"label": " Eastside "}}  # fmt: skip
    item = (await api.post(ITEMS, json=data)).json()
    assert item["title"] == "x" * 120 and item["body"] == "Body"
    assert item["tags"] == ["ramp"] and item["location"] == {"label": "Eastside"}


# ---------------------------------------------------------------------------- PATCH: the rules

BAD_PATCHES = [
    # Fields that never change.
    case("kind", {"kind": "need"}, "kind"),
    case("kind-same", {"kind": "offer"}, "kind"),
    case("id", {"id": "http://127.0.0.1:8765/items/0b9f3c1e-6a43-4f57-9a3e-2f1d7c5b8a10"}, "id"),
    case("created", {"created": "2026-11-01T00:00:00Z"}, "created"),
    case("updated", {"updated": "2026-11-01T00:00:00Z"}, "updated"),
    case("version", {"version": 99}, "version"),
    case("author", {"author": "Mallory"}, "author"),
    case("origin", {"origin": "https://elsewhere.example"}, "origin"),
    # Text rules.
    case("title-empty", {"title": ""}, "title"),
    case("title-121", {"title": "😀" * 121}, "title"),
    case("title-control", {"title": "a\x00b"}, "title"),
    case("body-4001", {"body": "x" * 4001}, "body"),
    case("body-control", {"body": "a\x0bb"}, "body"),
    case("category", {"category": "cake"}, "category"),
    case("tags-11", {"tags": [f"t{i}" for i in range(11)]}, "tags"),
    case("tags-33", {"tags": ["x" * 33]}, "tags"),
    case("quantity-41", {"quantity": "x" * 41}, "quantity"),
    case("location-no-label", {"location": {"geohash": "u33db"}}, "location.label"),
    case("location-label-81", {"location": {"label": "x" * 81}}, "location.label"),
    case("geohash-6", {"location": {"label": "E", "geohash": "u33dbc"}}, "location.geohash"),
    case("geohash-alphabet", {"location": {"label": "E", "geohash": "u33do"}}, "location.geohash"),
    # Kind-specific fields.
    case("urgency-on-offer", {"urgency": "low"}, "urgency"),
    case("escalation-on-offer", {"escalation": "never"}, "escalation"),
    # Status moves.
    case("status-expired", {"status": "expired"}, "status"),
    case("status-fulfilled-from-open", {"status": "fulfilled"}, "status"),
    case("status-unknown", {"status": "done"}, "status"),
    # Reach only widens; hop_limit only at network.
    case("reach-narrows", {"reach": "local"}, "reach"),
    case("reach-unknown", {"reach": "world"}, "reach"),
    case("hop_limit-at-allies", {"hop_limit": 2}, "hop_limit"),
    case("hop_limit-true-with-network", {"reach": "network", "hop_limit": True}, "hop_limit"),
    case("hop_limit-4-with-network", {"reach": "network", "hop_limit": 4}, "hop_limit"),
    # expires.
    case("expires-past", {"expires": "2026-11-24T17:00:00Z"}, "expires"),
    case("expires-now", {"expires": "2026-11-24T18:00:00Z"}, "expires"),
    case("expires-91-days", {"expires": "2027-02-23T18:00:00Z"}, "expires"),
    case("expires-format", {"expires": "24/12/2026"}, "expires"),
    case("expires-fullwidth-digits", {"expires": "２０２６-12-01T00:00:00Z"}, "expires"),
    # Unknown and null.
    case("unknown", {"colour": "red"}, "colour"),
    case("share_author-string", {"share_author": "true"}, "share_author"),
    # The first bad field is named even when valid ones come with it.
    case("valid-then-bad", {"title": "Fine title", "geohash": "u33db"}, "geohash"),
]  # fmt: skip


@pytest.mark.parametrize("data, field", BAD_PATCHES)
async def test_patch_breaking_a_rule_is_422_naming_the_field(harness, api, data, field):
    """Each §3 rule broken by a change answers 422 naming the field; the item stays as it was."""
    # An offer at allies reach.
    uuid = await new_item(api, OFFER)
    # PATCH it invalidly: 422 naming the field, nothing stored.
    await refused(harness, lambda: api.patch(f"{ITEMS}/{uuid}", json=data), 422, field)
    # It still reads as version 1.
    assert (await api.get(f"{ITEMS}/{uuid}")).json()["version"] == 1


@pytest.mark.parametrize("data, field", [
    case("urgency-unknown", {"urgency": "high"}, "urgency"),
    case("escalation-unknown", {"escalation": "soon"}, "escalation"),
    case("hop_limit-shrinks", {"hop_limit": 1}, "hop_limit"),
    case("hop_limit-0", {"hop_limit": 0}, "hop_limit"),
    case("hop_limit-4", {"hop_limit": 4}, "hop_limit"),
    case("hop_limit-true", {"hop_limit": True}, "hop_limit"),
    case("hop_limit-string", {"hop_limit": "3"}, "hop_limit"),
    case("reach-narrows-to-allies", {"reach": "allies"}, "reach"),
    case("reach-narrows-to-local", {"reach": "local"}, "reach"),
])  # fmt: skip
async def test_patch_of_a_network_need_breaking_a_rule_is_422(harness, api, data, field):
    """Need-only and network-only rules hold on change too."""
    # A network need with hop_limit 3.
    uuid = await new_item(api, NETWORK_NEED)
    # The invalid change is refused naming the field.
    await refused(harness, lambda: api.patch(f"{ITEMS}/{uuid}", json=data), 422, field)


@pytest.mark.parametrize("name", items.INPUT_FIELDS)
async def test_patch_null_is_422_for_every_field(harness, api, name):
    """null is refused on change for every field, naming it."""
    # A need (so every field applies), patched with null.
    uuid = await new_item(api, NEED)
    await refused(harness, lambda: api.patch(f"{ITEMS}/{uuid}", json={name: None}), 422, name)


async def test_no_op_patch_keeps_the_version(harness, api):
    """A PATCH that changes nothing answers 200 and stores nothing new."""
    # Same values again, padded: the stored row is unchanged.
    uuid = await new_item(api, OFFER)
    before = await snapshot(harness)
    same = {"title": " " + OFFER["title"] + " ", "tags": ["ramp", "loan", "ramp"], "status": "open",
            "reach": "allies", "location": OFFER["location"]}  # fmt: skip
    response = await api.patch(f"{ITEMS}/{uuid}", json=same)
    assert response.status_code == 200 and response.json()["version"] == 1
    assert await snapshot(harness) == before


# ---------------------------------------------------------------------------- statuses


async def item_in_status(harness, api, status: str) -> str:
    """A need of jo's moved to `status` by the allowed moves (expired by the node)."""
    if status == "expired":
        # Post one that runs out in a second, let the node expire it, put the clock back.
        uuid = await new_item(api, {**NETWORK_NEED, "expires": "2026-11-24T18:00:01Z"})
        harness.clock.advance(seconds=2)
        try:
            assert await harness.node.expire_due_items() == 1
        finally:
            harness.clock.advance(seconds=-2)
        return uuid
    uuid = await new_item(api, NETWORK_NEED)
    path = {"open": [], "promised": ["promised"], "fulfilled": ["promised", "fulfilled"],
            "withdrawn": ["withdrawn"]}[status]  # fmt: skip
    for step in path:
        response = await api.patch(f"{ITEMS}/{uuid}", json={"status": step})
        assert response.status_code == 200, response.text
    return uuid


ALLOWED_MOVES = {("open", "promised"), ("promised", "fulfilled"), ("open", "withdrawn"),
                 ("promised", "withdrawn"), ("promised", "open")}  # fmt: skip


@pytest.mark.parametrize("old, new", [
    (old, new) for old in items.STATUSES for new in items.STATUSES
    if old != new and (old, new) not in ALLOWED_MOVES
])  # fmt: skip
async def test_forbidden_status_moves_are_422(harness, api, old, new):
    """Only the §3 moves exist: `expired` is never set by a member and final statuses stay."""
    # An item in the old status; the forbidden move is refused naming status.
    uuid = await item_in_status(harness, api, old)
    await refused(harness, lambda: api.patch(f"{ITEMS}/{uuid}", json={"status": new}), 422, "status")


@pytest.mark.parametrize("status", items.FINAL_STATUSES)
@pytest.mark.parametrize("data", [
    {"title": "late edit"}, {"status": "open"}, {"reach": "network"}, {"escalation": "never"},
    {"expires": "2026-12-01T00:00:00Z"}, {"hop_limit": 3},
])  # fmt: skip
async def test_final_items_are_frozen(harness, api, status, data):
    """A fulfilled, withdrawn or expired item refuses every change, naming status."""
    # The final item cannot be edited at all.
    uuid = await item_in_status(harness, api, status)
    await refused(harness, lambda: api.patch(f"{ITEMS}/{uuid}", json=data), 422, "status")


@pytest.mark.parametrize("status", items.FINAL_STATUSES)
async def test_share_author_does_not_rewrite_a_final_item(harness, api, status):
    """Opting in to show one's name after the end neither changes nor re-versions the item."""
    # A network need (author: the group), ended.
    uuid = await item_in_status(harness, api, status)
    before = (await api.get(f"{ITEMS}/{uuid}")).json()
    assert before["author"] == harness.config.name
    # share_author on a final item: refused (422, status) or a no-op; never a new version.
    response = await api.patch(f"{ITEMS}/{uuid}", json={"share_author": True})
    assert response.status_code in (200, 422), response.text
    stored = await harness.node.store.item(before["id"])
    assert stored.state["version"] == before["version"], stored.state
    assert stored.state["author"] == before["author"], stored.state


# ---------------------------------------------------------------------------- bodies

MALFORMED = [
    pytest.param(b'{"kind": "offer",', id="truncated"),
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="open-brace"),
    pytest.param(b"{'kind': 'offer'}", id="single-quotes"),
    pytest.param(b'{kind: "offer"}', id="bare-key"),
    pytest.param(b'{"kind": "offer"} {}', id="two-documents"),
    pytest.param(b'{"kind": "offer"}x', id="trailing-garbage"),
    pytest.param(b'{"kind": "offer",}', id="trailing-comma"),
    pytest.param(b'\xef\xbb\xbf{"kind": "offer"}', id="utf8-bom"),
    pytest.param(b'{"title": "a\x01b"}', id="raw-control-in-string"),
    pytest.param(b'{"kind": "offer", "kind": "need"}', id="duplicate-key"),
    pytest.param(b'{"title": "a", "title": "a"}', id="duplicate-key-same-value"),
    pytest.param(b'{"location": {"label": "a", "label": "b"}}', id="duplicate-nested-key"),
    pytest.param(b'{"hop_limit": NaN}', id="nan"),
    pytest.param(b'{"hop_limit": Infinity}', id="infinity"),
    pytest.param(b'{"hop_limit": -Infinity}', id="minus-infinity"),
    pytest.param(b'{"hop_limit": 2.0}', id="float-2.0"),
    pytest.param(b'{"hop_limit": 2e0}', id="float-exponent"),
    pytest.param(b'{"hop_limit": 1E2}', id="float-upper-exponent"),
    pytest.param(b'{"hop_limit": -0.0}', id="float-negative-zero"),
    pytest.param(b'{"hop_limit": 2.5}', id="float-fraction"),
    pytest.param(b'{"hop_limit": 9007199254740992}', id="int-2^53"),
    pytest.param(b'{"hop_limit": -9007199254740992}', id="int-minus-2^53"),
    pytest.param(b'{"hop_limit": ' + b"1" * 5000 + b"}", id="int-5000-digits"),
    pytest.param(b'{"title": "\\ud800"}', id="lone-surrogate-escape"),
    pytest.param(b'{"tags": ' + b"[" * 40 + b"]" * 40 + b"}", id="nested-40"),
    pytest.param(b"[" * 30000 + b"]" * 30000, id="nested-30000"),
    pytest.param(b'{"title": "\xff"}', id="non-utf8-ff"),
    pytest.param('{"title": "café"}'.encode("latin-1"), id="latin-1"),
    pytest.param('{"title": "x"}'.encode("utf-16"), id="utf-16"),
    pytest.param(b'{"title": "\xc0\xaf"}', id="overlong-utf8"),
    pytest.param(b'{"title": "\xed\xa0\x80"}', id="encoded-surrogate"),
]  # fmt: skip


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("content", MALFORMED)
async def test_unacceptable_json_is_400(harness, api, method, content):
    """Malformed or ambiguous JSON (duplicate keys, NaN, floats, huge numbers, bad UTF-8) is 400."""
    # POST or PATCH (on a real item) with the bytes: 400 {"error"}, never 500.
    url = ITEMS if method == "post" else f"{ITEMS}/{await new_item(api)}"
    await refused(harness, lambda: api.request(method.upper(), url, content=content, headers=JSON), 400)


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("content", [
    b"[]", b'[{"kind": "offer"}]', b'"offer"', b"42", b"null", b"true", b'""',
])  # fmt: skip
async def test_non_object_json_is_refused(harness, api, method, content):
    """A JSON value that is not an object is refused with 400 or 422 and an error."""
    # Valid JSON, wrong shape.
    url = ITEMS if method == "post" else f"{ITEMS}/{await new_item(api)}"
    before = await snapshot(harness)
    response = await api.request(method.upper(), url, content=content, headers=JSON)
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]
    assert await snapshot(harness) == before


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "text/json", "application/jsonx", "application/ld+json", "application/json-patch+json",
    "application/merge-patch+json", "json",
])  # fmt: skip
async def test_wrong_content_type_is_415(harness, api, method, content_type):
    """Only application/json bodies are read: anything else is 415 {"error"}."""
    # A valid JSON body under another media type.
    url = ITEMS if method == "post" else f"{ITEMS}/{await new_item(api)}"
    headers = {"content-type": content_type} if content_type else {}
    content = b'{"kind": "offer", "title": "t", "body": "b", "category": "food"}'
    await refused(harness, lambda: api.request(method.upper(), url, content=content,
                                                headers=headers), 415)  # fmt: skip


async def test_form_post_is_415(harness, api):
    """A browser-style form post to the API is 415, not read as an item."""
    # httpx's data= sends application/x-www-form-urlencoded.
    form = {"kind": "offer", "title": "t", "body": "b", "category": "food"}
    await refused(harness, lambda: api.post(ITEMS, data=form), 415)


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "Application/JSON", "application/json ; charset=UTF-8",
])  # fmt: skip
async def test_json_content_type_parameters_are_accepted(harness, api, content_type):
    """application/json with parameters or in another case is JSON."""
    # The item is created.
    content = b'{"kind": "offer", "title": "t", "body": "b", "category": "food"}'
    response = await api.post(ITEMS, content=content, headers={"content-type": content_type})
    assert response.status_code == 201, response.text


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    head, tail = b'{"title": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def chunks(data: bytes, size: int = 4096):
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_over_64_kib_is_413(harness, api, method, streamed):
    """A body over the API's 64 KiB cap is 413 {"error"}, whether or not it declares its size."""
    # A target (new item or a real item) and a body one byte over the cap.
    url = ITEMS if method == "post" else f"{ITEMS}/{await new_item(api)}"
    body = json_of_size(BODY_LIMIT_API + 1)
    # With Content-Length (httpx sets it for bytes) or chunked, without one (an async stream).
    content = chunks(body) if streamed else body
    response = await refused(harness, lambda: api.request(method.upper(), url, content=content,
                                                          headers=JSON), 413)  # fmt: skip
    assert ("content-length" in response.request.headers) != streamed


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_of_exactly_64_kib_is_read(harness, api, streamed):
    """The cap is inclusive: a 64 KiB body is read, then judged by the rules (title too long)."""
    # 65536 bytes of JSON: past the size check, refused by the title rule.
    body = json_of_size(BODY_LIMIT_API)
    content = chunks(body) if streamed else body
    await refused(harness, lambda: api.post(ITEMS, content=content, headers=JSON), 422, "title")


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_anonymous_huge_body_is_never_read(harness, streamed):
    """Without a token a huge body is refused unread: 413 when its size is declared, else 401."""
    # No Authorization header at all; 200 KB of JSON.
    body = json_of_size(200_000)
    async with plain_client(harness) as anonymous:
        # A declared size over the cap is refused before anything else.
        if not streamed:
            await refused(harness, lambda: anonymous.post(ITEMS, content=body, headers=JSON), 413)
            return
        # An undeclared one is refused by the token check before the body is read.
        await refused(harness, lambda: anonymous.post(ITEMS, content=chunks(body), headers=JSON),
                      401)  # fmt: skip


async def test_a_client_hanging_up_mid_body_is_no_error(harness, api, caplog):
    """A client gone before its body is read (an ally killed mid-push, a closed tab) leaves the
    store as it was and logs no error: it is logged at info, without a traceback."""
    before = await snapshot(harness)
    parts = [{"type": "http.request", "body": b'{"kind": "offer", "ti', "more_body": True},
             {"type": "http.disconnect"}]  # fmt: skip
    sent: list[dict] = []

    async def receive() -> dict:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    token = api.headers["authorization"].encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": ITEMS, "raw_path": ITEMS.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                         (b"content-length", b"200"), (b"authorization", token)]}  # fmt: skip
    with caplog.at_level("INFO"):
        await harness.app(scope, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]
    assert not [r for r in caplog.records if r.levelno >= 30 or r.exc_info], caplog.text
    assert "went away before its request was read" in caplog.text
    assert await snapshot(harness) == before


# ---------------------------------------------------------------------------- credentials

BAD_AUTH = [
    pytest.param(None, id="no-header"),
    pytest.param("", id="empty-header"),
    pytest.param("Bearer not-a-token", id="unknown-token"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Bearer    ", id="bearer-blank-token"),
    pytest.param("Basic am86Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==", id="basic"),
    pytest.param("Token {token}", id="other-scheme-real-token"),
    pytest.param("{token}", id="real-token-without-scheme"),
    pytest.param("Bearer {token}x", id="real-token-plus-one"),
    pytest.param("Bearer {token_cut}", id="real-token-cut"),
]  # fmt: skip


@pytest.mark.parametrize("authorization", BAD_AUTH)
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_bad_credentials_are_401(harness, api, method, authorization):
    """Without a valid bearer token every API call is 401 {"error"} and changes nothing."""
    # An item to aim at, and jo's real token to misuse.
    uuid = await new_item(api)
    token = api.headers["authorization"].split(" ", 1)[1]
    headers = {}
    if authorization is not None:
        headers["authorization"] = authorization.format(token=token, token_cut=token[:-1])
    url = ITEMS if method == "POST" else f"{ITEMS}/{uuid}"
    # The request, with a valid body, from a client holding no token of its own.
    async with plain_client(harness, **headers) as client:
        await refused(harness, lambda: client.request(method, url, json={"title": "taken over"}
                                                      if method == "PATCH" else OFFER), 401)  # fmt: skip


async def test_session_cookie_is_no_api_credential(harness):
    """A browser session cookie does not authenticate the API (so the API needs no CSRF token)."""
    # A live session for jo2, sent as the node's session cookie.
    user = await harness.add_user("jo2")
    session = await harness.node.new_session(user)
    cookie = {f"aidnode_session_{harness.node.cookie_suffix}": session}
    async with plain_client(harness) as client:
        client.cookies = cookie
        await refused(harness, lambda: client.post(ITEMS, json=OFFER), 401)


# ---------------------------------------------------------------------------- node-made fields


async def test_network_post_works_when_the_cut_group_name_ends_in_a_space(tmp_path, clock):
    """A valid network need posts even if the group's name, cut to 80 for `author`, ends in a space."""
    # A node whose name is 81 characters with a space at position 80.
    config = make_node(tmp_path, name="A" * 79 + " B")
    app = create_app(config, clock=clock, workers=False)
    async with LifespanManager(app):
        node = NodeHarness(app, config, clock)
        member = await node.api_client("jo")
        async with member, plain_client(node, authorization=member.headers["authorization"]) as api:
            # The member's input is valid; the author is the node's business.
            response = await api.post(ITEMS, json={**NEED, "reach": "network"})
            assert response.status_code == 201, response.text
            author = response.json()["author"]
            assert author == author.strip() and 0 < len(author) <= items.AUTHOR_MAX

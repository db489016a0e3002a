"""Every kind of page passes axe-core with no serious or critical violation, at a desktop width
and at 320 px, where nothing may stick out sideways (tables scroll in their own box); a
full-page screenshot of each at 320 px goes to test-output/screenshots/pages-320px-<page>.png.

axe-core (https://github.com/dequelabs/axe-core) is injected into the real page in Chromium;
it checks contrast, labels, landmarks, the document's language, names of links and buttons,
ARIA use and more (WCAG 2.x A and AA, and best practices). A failure lists each violation
with its rule, impact, help text and the elements it found.
"""

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.browser.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, SCREENSHOTS, Person
from tests.test_allies_live import eventually
from tests.test_responses_live import join_as_member

pytestmark = [pytest.mark.browser, pytest.mark.live]

BLOCKING_IMPACTS = ("serious", "critical")
NARROW = {"width": 320, "height": 640}
NEED = {"kind": "need", "title": "Groceries for a neighbour", "category": "food",
        "body": "Twice a week, from the market on Hill Street.", "reach": "allies",
        "location": {"label": "Hill Street"}, "tags": ["groceries", "weekly"]}  # fmt: skip
OFFER = {"kind": "offer", "title": "Folding chairs to lend", "category": "household",
         "body": "Twelve chairs, for meetings or parties.", "quantity": "12"}  # fmt: skip

# Every rule axe runs by default, and WCAG 2.2's target size (24 px or spaced), which it doesn't.
RUN_AXE = """async () => (await axe.run(document, {
  resultTypes: ['violations'], rules: {'target-size': {enabled: true}},
})).violations"""
# Elements whose right edge passes the viewport's, unless a box that scrolls or clips holds them.
STICKING_OUT = """() => {
  const width = document.documentElement.clientWidth, out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 1) continue;
    let up = el.parentElement, held = false;
    for (; up && up !== document.body; up = up.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(up).overflowX)) { held = true; break; }
    }
    if (!held) out.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}` +
                        `${[...el.classList].map(c => '.' + c).join('')} ends at ${Math.round(box.right)} px`);
  }
  return {scrollWidth: document.documentElement.scrollWidth, width, out: out.slice(0, 8)};
}"""


@dataclass
class Site:
    """Eastside and Westside with people and items on them, and how to be each person."""

    east: str
    west: str
    sessions: dict  # person -> Playwright storage state (their logged-in cookies)
    need: str  # uuid of Rosa's need at Eastside, with a response from Westside waiting
    offer: str  # uuid of the admin's offer at Eastside, which Westside holds too
    invite: str  # an unused invite link at Eastside


@pytest.fixture(scope="module")
def site(allies, browser) -> Site:
    east, west = allies
    # Rosa, a member at Eastside, needs groceries; East's admin offers chairs to allies.
    rosa = join_as_member(east.node, "rosa")
    need = httpx.post(f"{east.node.url}/api/v1/items", json=NEED, headers=rosa, timeout=20)
    assert need.status_code == 201, need.text
    need = need.json()
    offer = east.post("/api/v1/items", OFFER).json()
    for item in (need, offer):
        eventually(lambda item=item: west.get("/api/v1/items", origin="remote", id=item["id"])
                   .json()["items"], "the item at Westside", nodes=(east.node, west.node))  # fmt: skip
    # Tom, a member at Westside, offers to help with Rosa's need.
    tom = join_as_member(west.node, "tom")
    sent = httpx.post(f"{west.node.url}/api/v1/responses", headers=tom, timeout=30, json={
        "item": need["id"], "message": "I shop there on Mondays and Thursdays.",
        "contact": "tom@westside.example"})  # fmt: skip
    assert sent.status_code == 202, sent.text
    sessions = {}
    for name, node, username, password in (("rosa", east.node, "rosa", MEMBER_PASSWORD),
                                           ("admin", east.node, "admin", ADMIN_PASSWORD),
                                           ("tom", west.node, "tom", MEMBER_PASSWORD)):  # fmt: skip
        person = Person(browser, node, "desktop")
        person.log_in(username, password)
        sessions[name] = person.context.storage_state()
        person.context.close()
    return Site(east=east.node.url, west=west.node.url, sessions=sessions,
                need=uuid_of(need), offer=uuid_of(offer),
                invite=east.node.cli("invite").stdout.strip())  # fmt: skip


def uuid_of(item: dict) -> str:
    return item["id"].rsplit("/", 1)[1]


def post_with_too_many_tags(page) -> None:
    page.goto("/items/new")
    page.get_by_label("Title").fill("Bikes to repair")
    page.get_by_label("Details").fill("Three bikes with flat tyres.")
    page.get_by_label("Tags").fill(", ".join(f"tag{i}" for i in range(11)))
    page.get_by_role("button", name="Post", exact=True).click()
    page.get_by_text("Problem:").wait_for()


def make_invite_link(page) -> None:
    page.goto("/admin/invites")
    page.get_by_role("button", name="Create an invite link").click()
    page.get_by_text("/join/").wait_for()


@dataclass(frozen=True)
class PageCase:
    """One kind of page: who looks at it, at which node, and how they get there."""

    who: str | None  # a person of `Site.sessions`, or None for a visitor
    node: str  # "east" or "west"
    open: Callable[[object, Site], None]


def goto(path: Callable[[Site], str]) -> Callable:
    return lambda page, site: page.goto(path(site))


PAGES = {
    "home-visitor": PageCase(None, "east", goto(lambda s: "/")),
    "login": PageCase(None, "east", goto(lambda s: "/login")),
    "join": PageCase(None, "east", goto(lambda s: s.invite)),
    "home-member": PageCase("rosa", "east", goto(lambda s: "/")),
    "browse": PageCase("rosa", "east", goto(lambda s: "/items")),
    "item-local-with-responses": PageCase("rosa", "east", goto(lambda s: f"/items/{s.need}")),
    "item-remote-respond-form": PageCase("tom", "west", goto(lambda s: f"/items/{s.offer}")),
    "post": PageCase("rosa", "east", goto(lambda s: "/items/new")),
    "post-validation-error": PageCase("rosa", "east", lambda page, site: post_with_too_many_tags(page)),
    "edit": PageCase("rosa", "east", goto(lambda s: f"/items/{s.need}/edit")),
    "my-items": PageCase("rosa", "east", goto(lambda s: "/my/items")),
    "my-responses-received": PageCase("rosa", "east", goto(lambda s: "/my/responses")),
    "my-responses-sent": PageCase("tom", "west", goto(lambda s: "/my/responses")),
    "notifications": PageCase("rosa", "east", goto(lambda s: "/notifications")),
    "account": PageCase("rosa", "east", goto(lambda s: "/account")),
    "coordinator-queue": PageCase("admin", "east", goto(lambda s: "/coordinate")),
    "admin-members": PageCase("admin", "east", goto(lambda s: "/admin/members")),
    "admin-invites": PageCase("admin", "east", lambda page, site: make_invite_link(page)),
    "admin-peers": PageCase("admin", "east", goto(lambda s: "/admin/peers")),
    "admin-audit": PageCase("admin", "east", goto(lambda s: "/admin/audit")),
    "error-404": PageCase("rosa", "east",
                          goto(lambda s: "/items/00000000-0000-4000-8000-000000000000")),
}  # fmt: skip


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        for node in v["nodes"][:6]:
            lines.append(f"    at {' '.join(node['target'])}: {node['html'][:160]}")
            if node.get("failureSummary"):
                lines.append("      " + node["failureSummary"].replace("\n", "\n      ")[:400])
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(PAGES))
def test_page_has_no_serious_accessibility_violations(axe_script, browser, site, name):
    case = PAGES[name]
    context = browser.new_context(
        base_url=site.east if case.node == "east" else site.west, locale="en-GB",
        viewport={"width": 1280, "height": 900}, bypass_csp=True,  # to inject axe's script
        **({"storage_state": site.sessions[case.who]} if case.who else {}),
    )  # fmt: skip
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        case.open(page, site)
        page.add_script_tag(path=str(axe_script))
        problems = []
        for width, viewport in (("1280 px", None), ("320 px", NARROW)):
            if viewport:
                page.set_viewport_size(viewport)
            blocking = [v for v in page.evaluate(RUN_AXE) if v["impact"] in BLOCKING_IMPACTS]
            if blocking:
                problems.append(f"axe at {width}:\n{describe(blocking)}")
        overflow = page.evaluate(STICKING_OUT)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"pages-320px-{name}.png", full_page=True)
        if overflow["scrollWidth"] > overflow["width"] or overflow["out"]:
            problems.append(f"at 320 px the page is {overflow['scrollWidth']} px wide: "
                            + "; ".join(overflow["out"]))  # fmt: skip
        assert not problems, f"{name} ({page.url}):\n" + "\n".join(problems)
    finally:
        context.close()

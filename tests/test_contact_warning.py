"""Before an item that other groups will see goes out with what looks like contact details,
its poster is warned and must confirm (DESIGN §3); items kept in the group are not held up."""

import pytest

from federation.items import looks_like_contact
from tests.conftest import post_form

pytestmark = pytest.mark.anyio

NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday 9am",
        "category": "transport", "urgency": "normal", "escalation": "after_delay"}  # fmt: skip


@pytest.mark.parametrize("text", [
    "call 555 0199 12", "+34 612 345 678", "(020) 7946-0958", "write to jo@example.org",
    "jo.doe+aid@mail.example.co.uk",
])  # fmt: skip
def test_phone_numbers_and_emails_look_like_contact(text):
    assert looks_like_contact({"title": "x", "body": text})
    assert looks_like_contact({"title": text, "body": ""})
    assert looks_like_contact({"title": "x", "body": "", "tags": [text]})


@pytest.mark.parametrize("text", [
    "2 bags of rice", "Tuesday 9am to 11am", "Bus 42, stop 7", "open 2026-12-24", "@ the library",
    "from 24/12/2026 to 1.1.2027",
])  # fmt: skip
def test_ordinary_text_does_not(text):
    assert not looks_like_contact({"title": text, "body": text, "quantity": text})


async def test_a_need_that_may_leave_the_group_waits_for_confirmation(harness):
    browser = await harness.browser("ana")
    form = {**NEED, "body": "Call me on 612 345 678"}
    refused = await post_form(browser, "/items/new", form)
    assert refused.status_code == 422
    assert "looks like it holds a phone number" in refused.text
    assert 'name="contact_ok"' in refused.text and "Call me on 612 345 678" in refused.text
    assert (await harness.node.store.fetch_one("SELECT count(*) FROM items"))[0] == 0
    # Confirmed, it is posted as written.
    posted = await post_form(browser, "/items/new", {**form, "contact_ok": "on"})
    assert posted.status_code == 303
    assert (await harness.node.store.fetch_one("SELECT count(*) FROM items"))[0] == 1


async def test_a_need_kept_in_the_group_is_not_held_up(harness):
    browser = await harness.browser("ana")
    posted = await post_form(browser, "/items/new",
                             {**NEED, "escalation": "never", "body": "Call 612 345 678"})  # fmt: skip
    assert posted.status_code == 303


async def test_widening_reach_of_an_item_with_contact_details_asks_first(harness):
    browser = await harness.browser("ana")
    posted = await post_form(browser, "/items/new",
                             {**NEED, "escalation": "never", "body": "Mail jo@example.org"})  # fmt: skip
    path = posted.headers["location"]
    refused = await post_form(browser, f"{path}/edit", {**NEED, "escalation": "never",
                              "body": "Mail jo@example.org", "reach": "allies"})  # fmt: skip
    assert refused.status_code == 422 and "looks like it holds" in refused.text
    row = await harness.node.store.item(harness.node.local_id(path.rsplit("/", 1)[1]))
    assert row.state["reach"] == "local" and row.state["version"] == 1

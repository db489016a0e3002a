"""A person's journeys through the pages, in Chromium, across two real allied nodes.

A newcomer joins Eastside by an invite link, asks for help and widens the need to the network;
a member at Westside finds it among the allied groups' needs and offers to help; back at
Eastside the poster sees the offer with its contact, accepts it and marks the need fulfilled,
and at Westside it is gone. Once on a desktop screen and once on a 360×740 phone, with a
full-page screenshot at every step (test-output/screenshots/<journey>-<viewport>-<step>.png).

People find things as a person would: by labels, roles and the text on the page.
"""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, VIEWPORTS
from tests.test_responses_live import join_as_member

pytestmark = [pytest.mark.browser, pytest.mark.live]

RELOAD_FOR_SECONDS = 30.0  # how long a person keeps reloading for news from the other node


def go_to(page, name: str) -> None:
    """Follow a link of the site's main navigation."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def reload_until(page, check, what: str, timeout: float = RELOAD_FOR_SECONDS) -> None:
    """Reload the page (bounded) until `check()` holds, as someone waiting for news would."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout:.0f} s of reloading {page.url}")
        time.sleep(0.5)
        page.reload()


def join_and_ask_network_for_help(allies, people, viewport: str, title: str):
    """Journey (a): invited, joined, posted a need, then widened it to the network."""
    east, _west = allies
    shot = "post-need"
    # East's admin makes an invite link on the Invites page.
    admin = people(east.node, viewport)
    admin.log_in("admin", ADMIN_PASSWORD)
    go_to(admin.page, "Invites")
    admin.page.get_by_label("Invite as").select_option(label="Member")
    admin.page.get_by_role("button", name="Create an invite link").click()
    link = admin.page.get_by_text(re.compile(r"/join/\S{43}$")).inner_text().strip()
    admin.shot(shot, "01-invite-made")
    # A newcomer opens it, and joins with a username, a display name and a password.
    newcomer = people(east.node, viewport)
    page = newcomer.page
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Join Eastside")
    username = f"ana-{viewport}"
    page.get_by_label("Username").fill(username)
    page.get_by_label("Name others see").fill(f"Ana ({viewport})")
    page.get_by_label("Password", exact=True).fill(MEMBER_PASSWORD)
    page.get_by_label("Password again").fill(MEMBER_PASSWORD)
    newcomer.shot(shot, "02-join-form")
    page.get_by_role("button", name="Join").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, Ana ({viewport})")
    newcomer.shot(shot, "03-joined")
    # She asks for help through the post form.
    page.get_by_role("link", name="Ask for help").click()
    expect(page.get_by_role("radio", name="Need")).to_be_checked()
    page.get_by_label("Title").fill(title)
    page.get_by_label("Details").fill("Tuesday at 9, with a folding wheelchair.")
    page.get_by_label("Category").select_option(label="Transport")
    page.get_by_label("Urgency").select_option(label="Urgent")
    newcomer.shot(shot, "04-post-form")
    page.get_by_role("button", name="Post", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    facts = page.get_by_role("definition")
    expect(facts.filter(has_text="Only our group")).to_be_visible()  # needs start in the group
    newcomer.shot(shot, "05-posted")
    # No one here can help: she edits it to ask allies and their allies, two hops.
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Who can see it").select_option(label="Allies and their allies")
    page.get_by_label("Hop limit").select_option("2")
    newcomer.shot(shot, "06-escalate-form")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    expect(facts.filter(has_text="Allies and their allies (up to 2 hops)")).to_be_visible()
    newcomer.shot(shot, "07-escalated")
    return newcomer


def find_and_offer_help(allies, people, viewport: str, title: str, message: str, contact: str):
    """Journey (b): at the ally, a member finds the need among allied groups' and responds."""
    _east, west = allies
    shot = "respond"
    username = f"sam-{viewport}"
    join_as_member(west.node, username)
    helper = people(west.node, viewport)
    helper.log_in(username, MEMBER_PASSWORD)
    page = helper.page
    # Sam browses the allied groups' needs.
    go_to(page, "Browse")
    page.get_by_label("Kind", exact=True).select_option(label="Need")
    page.get_by_label("From", exact=True).select_option(label="Allied groups")
    page.get_by_role("button", name="Show").click()
    need = page.get_by_role("link", name=title)
    reload_until(page, lambda: need.count() == 1, "showing the need from Eastside")
    card = page.get_by_role("listitem").filter(has=need)
    expect(card).to_contain_text("From Eastside")
    expect(card).to_contain_text("Urgent")
    helper.shot(shot, "01-browse")
    # He opens it and offers to help, with how to reach him.
    need.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    respond = page.get_by_role("region", name="Offer to help")
    respond.get_by_label("Your message").fill(message)
    respond.get_by_label("How to reach you").fill(contact)
    helper.shot(shot, "02-respond-form")
    respond.get_by_role("button", name="Send response").click()
    mine = page.get_by_role("region", name="Your responses")
    expect(mine).to_contain_text(message)
    expect(mine).to_contain_text("Waiting for an answer")
    expect(page.get_by_text(contact)).to_have_count(0)  # his node keeps no copy of the contact
    helper.shot(shot, "03-sent")
    return helper


def accept_and_close(poster, helper, viewport: str, title: str, message: str, contact: str):
    """Journey (c): the poster accepts the offer and marks the need met; it closes at the ally."""
    shot = "close"
    page = poster.page
    # Ana sees Sam's response, with how to reach him, among the responses to her items.
    go_to(page, "Responses")
    response = page.get_by_role("listitem").filter(has_text=message)
    expect(response).to_contain_text(contact)
    expect(response).to_contain_text("Westside")
    poster.shot(shot, "01-responses")
    # She opens her need from there and accepts the offer: the need is promised.
    response.get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    responses = page.get_by_role("region", name="Responses", exact=True)
    responses.get_by_role("button", name="Accept").click()
    expect(responses).to_contain_text("Accepted")
    expect(page.get_by_role("article").get_by_text("Promised", exact=True)).to_be_visible()
    poster.shot(shot, "02-accepted")
    # Once the ride happened, she marks it fulfilled.
    page.get_by_role("button", name="Mark fulfilled").click()
    expect(page.get_by_role("article").get_by_text("Fulfilled", exact=True)).to_be_visible()
    poster.shot(shot, "03-fulfilled")
    # At Westside the need is no longer among the open ones, and Sam hears he was accepted.
    browse = helper.page
    browse.goto("/items?kind=need&origin=remote")
    gone = browse.get_by_role("link", name=title)
    reload_until(browse, lambda: gone.count() == 0, "gone from Westside's open needs")
    helper.shot(shot, "04-gone-at-ally")
    go_to(browse, "Responses")
    sent = browse.get_by_role("region", name="Responses you sent").get_by_role("listitem")
    sent = sent.filter(has_text=message)
    reload_until(browse, lambda: "Accepted" in sent.inner_text(), "told that it was accepted")
    helper.shot(shot, "05-accepted-at-ally")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_a_need_from_an_invite_to_a_response_from_an_ally_to_fulfilled(allies, people, viewport):
    """Invite → join → post → escalate; respond at the ally; accept → fulfilled, gone there."""
    title = f"Ride to the clinic ({viewport})"
    message = f"I drive a van and I am free on Tuesday ({viewport})."
    contact = f"sam-{viewport}@westside.example, 555-0142"
    poster = join_and_ask_network_for_help(allies, people, viewport, title)
    helper = find_and_offer_help(allies, people, viewport, title, message, contact)
    accept_and_close(poster, helper, viewport, title, message, contact)

"""A member's home: responses waiting for them, offers that might meet their needs, and what
became of the responses they sent; none of it shows another member's business."""

import pytest

from tests.conftest import PASSWORD, login

pytestmark = pytest.mark.anyio

NEED = {"kind": "need", "title": "Winter coat for a child", "body": "Size 8, warm.",
        "category": "clothing"}  # fmt: skip
OFFER = {"kind": "offer", "title": "Children's winter coats", "body": "Sizes 6 to 10.",
         "category": "clothing"}  # fmt: skip


async def test_home_shows_my_waiting_responses_matches_and_sent_responses(harness):
    ana = await harness.add_user("ana")
    bo = await harness.add_user("bo")
    need = await harness.node.post_item(ana, NEED)
    await harness.node.post_item(bo, OFFER)
    other_need = await harness.node.post_item(bo, {**NEED, "title": "Boots for a child"})
    # Bo responds to Ana's need; Ana responds to Bo's.
    await harness.node.responses.send(bo, {"item": need.state["id"], "message": "I have one",
                                            "contact": "bo@example.org"})  # fmt: skip
    await harness.node.responses.send(ana, {"item": other_need.state["id"], "message": "Try me",
                                             "contact": "ana@example.org"})  # fmt: skip
    # Ana logs in.
    browser = harness.client(follow_redirects=False)
    await login(browser, "ana", PASSWORD)
    page = (await browser.get("/")).text
    assert "Responses waiting for you" in page and "Bo of Eastside Mutual Aid can help" in page
    assert "Offers that might meet your needs" in page and "Children&#39;s winter coats" in page
    assert "Your responses" in page and "Boots for a child" in page and "waiting for an answer" in page
    # Bo sees none of Ana's responses waiting: the one to his need is his own business.
    bo_browser = harness.client(follow_redirects=False)
    await login(bo_browser, "bo", PASSWORD)
    bo_page = (await bo_browser.get("/")).text
    assert "Ana of Eastside Mutual Aid can help" in bo_page
    assert "Bo of Eastside Mutual Aid can help" not in bo_page
    assert "bo@example.org" not in page and "ana@example.org" not in bo_page

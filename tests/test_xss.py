"""Markup in any user field is shown as text on every page, never run."""

import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.anyio

PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    '"><svg onload=alert(3)>',
    "javascript:alert(4)",
    "{{ 7*7 }}{% raw %}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_payloads_in_every_field_render_inert(harness, payload):
    # A member whose display name is hostile posts an item hostile in every text field.
    await harness.node.create_user(username="mallory", display_name=payload[:80],
                                   password=PASSWORD, role="member")  # fmt: skip
    token = await harness.node.new_api_token(await harness.node.store.user_by_username("mallory"))
    api = harness.client(headers={"Authorization": f"Bearer {token}"})
    item = {"kind": "need", "title": payload, "body": f"line one\n{payload}", "category": "other",
            "tags": [payload[:32]], "quantity": payload[:40],
            "location": {"label": payload[:80]}}  # fmt: skip
    created = await api.post("/api/v1/items", json=item)
    assert created.status_code == 201, created.text
    uuid = created.json()["id"].rsplit("/", 1)[1]
    # Every page that shows the item or the member, as the poster and as an admin.
    admin = await harness.browser("root", "admin")
    for url in ("/", "/items", f"/items?q={payload[:20]}", f"/items/{uuid}", f"/items/{uuid}/edit",
                "/admin/members", "/admin/audit", "/admin/peers"):
        page = await admin.get(url)
        assert page.status_code == 200, url
        html = page.text
        for dangerous in ("<script>alert", "<img src=x", "<svg onload", "onerror=\"alert"):
            assert dangerous not in html, (url, dangerous)
        if "{{" in payload:
            assert "{{ 7*7 }}" in html or url in ("/admin/members", "/admin/audit", "/admin/peers")
            assert ">49<" not in html
    # The JSON answer carries the text unchanged: escaping is the page's job.
    assert created.json()["title"] == payload

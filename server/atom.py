"""An Atom feed (RFC 4287) of this node's public offers: `GET /offers.atom`.

It holds exactly what a visitor may see of the node (the rule of `Node.item_for` for
visitors, `ItemQuery(public_only=True)`): this node's own open, live, federated offers, never
an ally's (allies shared theirs with our members, not with the public), newest first, at most
`FEED_SIZE`. It exists only while the admin has `public_offers` on, and is 404 otherwise, to
members as well: a feed's address is handed to feed readers that never log in, so a members'
version would publish what the group chose not to. Members have the app.

The document is built with `xml.etree.ElementTree`, which escapes every text and attribute
value: member text never becomes markup. Entries are `type="text"` (the body is plain text).
"""

import xml.etree.ElementTree as ET

from starlette.requests import Request
from starlette.responses import Response

from federation.items import N_

from . import __version__
from .errors import NotFound
from .routing import public
from .store import ItemQuery

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml"
FEED_PATH = "/offers.atom"
FEED_SIZE = 50
CACHE_SECONDS = 300


def _element(parent: ET.Element, name: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, name, attributes)
    if text is not None:
        element.text = text
    return element


def offers_feed(*, base_url: str, title: str, description: str, author: str, updated: str,
                states: list[dict]) -> bytes:  # fmt: skip
    """The feed document (UTF-8, with its XML declaration) for these item states."""
    feed_url = base_url + FEED_PATH
    # Every element is in the Atom namespace, declared once as the default on the root.
    feed = ET.Element("feed", xmlns=ATOM_NS)
    _element(feed, "id", feed_url)
    _element(feed, "title", title, type="text")
    if description:
        _element(feed, "subtitle", description, type="text")
    _element(feed, "updated", updated)
    _element(feed, "link", rel="self", type=MEDIA_TYPE, href=feed_url)
    _element(feed, "link", rel="alternate", type="text/html", href=base_url + "/")
    _element(_element(feed, "author"), "name", author)
    _element(feed, "generator", "aidnode", version=__version__)
    for state in states:
        entry = _element(feed, "entry")
        _element(entry, "id", state["id"])  # the item's id is its page's URL (DESIGN §3)
        _element(entry, "title", state["title"], type="text")
        _element(entry, "updated", state["updated"])
        _element(entry, "published", state["created"])
        _element(entry, "link", rel="alternate", type="text/html", href=state["id"])
        _element(_element(entry, "author"), "name", state["author"])
        _element(entry, "category", term=state["category"])
        _element(entry, "summary", state["body"], type="text")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


async def offers_atom(request: Request) -> Response:
    """`GET /offers.atom`: the node's public offers as Atom; 404 while `public_offers` is off."""
    node = request.app.state.node
    if not node.config.public_offers:
        raise NotFound(N_("not found"))
    now = node.now_text()
    query = ItemQuery(now=now, statuses=("open",), kind="offer", public_only=True, limit=FEED_SIZE)
    states = [row.state for row in await node.store.list_items(query)]
    # The feed changed last when one of the offers it may hold did (one that left it too).
    row = await node.store.fetch_one(
        "SELECT max(updated) FROM items WHERE is_local AND kind = 'offer' AND reach != 'local'"
    )
    updated = max([row[0] or "", *(s["updated"] for s in states)]) or now
    translate = request.app.state.templates.gettext(request)
    body = offers_feed(
        base_url=node.config.base_url, title=translate(N_("Open offers at %(group)s"))
        % {"group": node.config.name}, description=node.config.description,
        author=node.config.name, updated=updated, states=states,
    )  # fmt: skip
    return Response(body, media_type=MEDIA_TYPE,
                    headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"})  # fmt: skip


routes = [
    public(FEED_PATH, offers_atom, "anyone", name="offers_atom"),
]

"""Matching (DESIGN §5): the open offers that might meet a need, and the open needs an offer
might meet.

Candidates are the open, live items of the other kind the viewer may see (a member sees this
node's items and every remote item it holds; a visitor is shown no matches at all), never the
item itself, that share its category or some of its words. They are ranked by one score:

    3 × same category  +  up to 3 for words in common  +  ½ per leading geohash character shared

Words in common are scored by FTS5's bm25 over title, body and tags (title weighted 3, tags 2,
body 1), relative to the best text match among the candidates, so the closest wording scores 3.
The words are the item's own title, tags and body, each quoted as an FTS5 string (so `"`, `*`,
`OR`, `NEAR(` and `col:` in member text are only words) and ORed, so a partial overlap still
matches; words of four letters or more match as prefixes ("clinic" finds "clinics"). Very
common words (English ones, and this domain's own: need, offer, help…) are left out, or nearly
everything would share a word with everything. Locations are at most 5 geohash characters
(DESIGN §3), so the location part ranges from 0 to 2.5: a shared ~5 km cell counts a little
less than the same category. Location alone never makes a match. Ties go to the newer item.

This module holds the policy (which words, which weights); the one query that ranks is
`Store.match_candidates`, so matching costs one FTS5 search and one pass over the open items
of one kind per page shown.
"""

import re
from dataclasses import dataclass

from federation.items import N_

from .node import ItemView, Node
from .store import User

MATCHES_SHOWN = 5
TERMS_MAX = 40  # words of the item used in its text query, title and tags first
PREFIX_MIN = 4  # shorter words match exactly: "car" must not find "care" and "card"
CATEGORY_WEIGHT = 3.0
TEXT_WEIGHT = 3.0
GEOHASH_WEIGHT = 0.5  # per shared leading character
# bm25 column weights, in the order of the items_fts columns (title, body, tags).
BM25_WEIGHTS = (3.0, 1.0, 2.0)

# The unicode61 tokenizer's idea of a word: a run of letters and digits.
_WORD_RE = re.compile(r"[^\W_]+")
STOP_WORDS = frozenset("""
    a an and any anyone are as at be been but by can could do does for from get got has have
    he her him his how i if in into is it its just me my no not of on or our out please she
    so some someone something than that the their them then there these they this those to
    too up us very was we were what when where which who will with would you your
    need needs needed needing offer offers offered offering help helps helping looking want
    wanted give giving available thanks thank hello
""".split())  # fmt: skip


@dataclass(frozen=True)
class Match:
    """A suggested item, and why it was suggested."""

    view: ItemView
    same_category: bool
    words_in_common: bool
    shared_geohash: int  # leading geohash characters in common, 0–5

    @property
    def closeness(self) -> str | None:
        """`nearby` in the same ~40 km geohash cell (4 characters) or closer, `region` in the
        same ~160 km cell (3), else None: wider cells say little about getting there."""
        if self.shared_geohash >= 4:
            return "nearby"
        return "region" if self.shared_geohash == 3 else None

    @property
    def reasons(self) -> list[str]:
        """Why it was suggested, as messages for the page to translate."""
        found = []
        if self.same_category:
            found.append(N_("same category"))
        if self.words_in_common:
            found.append(N_("words in common"))
        if self.closeness:
            found.append(N_("nearby") if self.closeness == "nearby" else N_("same region"))
        return found


def match_terms(state: dict) -> list[str]:
    """The item's distinct words worth matching on, title and tags first, at most TERMS_MAX."""
    seen: dict[str, None] = {}
    for text in (state["title"], " ".join(state.get("tags", [])), state["body"]):
        for word in _WORD_RE.findall(text.casefold()):
            if len(word) >= 2 and word not in STOP_WORDS and word not in seen:
                seen[word] = None
                if len(seen) == TERMS_MAX:
                    return list(seen)
    return list(seen)


def match_query(terms: list[str]) -> str:
    """An FTS5 query ORing the terms, each quoted (never raw MATCH syntax), long ones as prefixes."""
    quoted = []
    for term in terms:
        literal = '"' + term.replace('"', '""') + '"'
        quoted.append(literal + "*" if len(term) >= PREFIX_MIN else literal)
    return " OR ".join(quoted)


def wanted_kind(kind: str) -> str:
    return "offer" if kind == "need" else "need"


async def matches_for(node: Node, view: ItemView, viewer: User | None, *,
                      limit: int = MATCHES_SHOWN) -> list[Match]:  # fmt: skip
    """The best open items of the other kind for this item, as `viewer` may see them.

    Only an open, live item gets suggestions (a promised or ended one needs none), and only a
    member does: a visitor (public_offers) may see this node's own open offers and nothing
    else, so suggesting them needs or allies' offers would show what they may not see.
    """
    state = view.state
    now = node.now_text()
    if viewer is None or state["status"] != "open" or state["expires"] <= now:
        return []
    geohash = state.get("location", {}).get("geohash", "")
    found = await node.store.match_candidates(
        kind=wanted_kind(state["kind"]), exclude_id=state["id"], category=state["category"],
        text_query=match_query(match_terms(state)), geohash=geohash, now=now,
        weights=(CATEGORY_WEIGHT, TEXT_WEIGHT, GEOHASH_WEIGHT), bm25_weights=BM25_WEIGHTS,
        limit=limit,
    )  # fmt: skip
    return [
        Match(view=node.view(row, viewer), same_category=same_category,
              words_in_common=text_score > 0, shared_geohash=shared)
        for row, same_category, text_score, shared in found
    ]  # fmt: skip

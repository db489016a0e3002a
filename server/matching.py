"""Matching (DESIGN §5): the open offers that might meet a need, and the open needs an offer
might meet.

Candidates are the open, live items of the other kind the viewer may see (a member sees this
node's items and every remote item it holds; a visitor is shown no matches at all), never the
item itself, that share its category or some of its words. They are ranked by one score:

    3 × same category  +  up to 3 for words in common  +  ½ per leading geohash character shared

Words in common: each of the item's words (title and tags first, at most TERMS_MAX) that a
candidate has counts 3 in its title, 2 in its tags and 1 in its body (each place it appears),
and the sum is taken relative to the best text match among the candidates, so the closest
wording scores 3. A word is a run of letters and digits, casefolded and without diacritics
("café" is "cafe"), as the search index's unicode61 tokenizer reads it; words of four letters
or more match as prefixes ("clinic" finds "clinics", "car" does not find "care"). Very common
words (English ones, and this domain's own: need, offer, help…) are left out, or nearly
everything would share a word with everything. Locations are at most 5 geohash characters
(DESIGN §3), so the location part ranges from 0 to 2.5: a shared ~5 km cell counts a little
less than the same category. Location alone never makes a match. Ties go to the newer item.

The candidates are a bounded pool (issue 9): the newest MATCH_POOL open, live items of the
wanted kind, and the newest MATCH_POOL_CATEGORY of them in the item's category, read in one
query from two indexes (`Store.match_candidates`, migration 0009), once per kind and category
on a page, and scored here. So matching costs the same whatever the node holds (a few
milliseconds an item); a full-text search ORing an item's words reads posting lists that
cover most of a large node, and took over a second at 100,000 items. The price, plainly: an
older item outside the pool is not suggested, however well it matches.
"""

import heapq
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import NamedTuple

from federation.items import N_

from .node import ItemView, Node
from .store import MatchCandidate, User

MATCHES_SHOWN = 5
MATCH_POOL = 300  # the newest open items of the wanted kind that are scored
MATCH_POOL_CATEGORY = 150  # and the newest of them in the item's category
TERMS_MAX = 40  # words of the item that are looked for, title and tags first
PREFIX_MIN = 4  # shorter words match exactly: "car" must not find "care" and "card"
PREFIX_LONGEST = 24  # longer terms find only whole words: a 4,000-letter word is not 4,000 keys
FINDABLE_CACHE_CHARS = 300_000  # of candidate text kept ready to score (FindableCache)
CATEGORY_WEIGHT = 3.0
TEXT_WEIGHT = 3.0
GEOHASH_WEIGHT = 0.5  # per shared leading character
TITLE_WEIGHT, TAGS_WEIGHT, BODY_WEIGHT = 3, 2, 1  # a word in common, by where the candidate has it

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


def fold(text: str) -> str:
    """Casefolded, diacritics removed (NFKD, combining marks dropped): as FTS5's unicode61
    tokenizer with `remove_diacritics 2` compares words, so "Café" and "cafe" are one word."""
    text = text.casefold()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def match_terms(state: dict) -> list[str]:
    """The item's distinct words worth matching on, title and tags first, at most TERMS_MAX."""
    seen: dict[str, None] = {}
    for text in (state["title"], " ".join(state.get("tags", [])), state["body"]):
        for word in _WORD_RE.findall(fold(text)):
            if len(word) >= 2 and word not in STOP_WORDS and word not in seen:
                seen[word] = None
                if len(seen) == TERMS_MAX:
                    return list(seen)
    return list(seen)


@lru_cache(maxsize=8192)
def _word_and_prefixes(word: str) -> tuple[str, ...]:
    # A node's words are far fewer than its texts: cached by word, they are made once and
    # shared by every text that has them.
    return (word, *(word[:end] for end in range(PREFIX_MIN, min(len(word), PREFIX_LONGEST + 1))))


def findable(text: str) -> frozenset[str]:
    """Each word of `text` and each prefix of it of PREFIX_MIN to PREFIX_LONGEST letters: a
    term is found in the text exactly when it is in this set (a short term only as a whole
    word). At most one entry per character of the text."""
    words = _WORD_RE.findall(fold(text))
    return frozenset().union(*(_word_and_prefixes(word) if len(word) <= PREFIX_LONGEST
                               else (word, *_word_and_prefixes(word[:PREFIX_LONGEST]))
                               for word in words))  # fmt: skip


class FindableCache:
    """`findable` by text, as the same candidates come up page after page; the least recently
    used dropped first once the texts held pass `chars` characters. A text's set has at most
    one entry per character, so this bounds the memory held whatever members write (about
    100 bytes a character at worst, far less for everyday words)."""

    def __init__(self, chars: int) -> None:
        self.chars = chars
        self.held = 0
        self.sets: OrderedDict[str, frozenset[str]] = OrderedDict()

    def __call__(self, text: str) -> frozenset[str]:
        found = self.sets.get(text)
        if found is not None:
            self.sets.move_to_end(text)
            return found
        found = self.sets[text] = findable(text)
        self.held += len(text)
        while self.held > self.chars:
            dropped, _ = self.sets.popitem(last=False)
            self.held -= len(dropped)
        return found


# One for the process, as `findable` depends on nothing else: some 2,000 candidates of everyday
# length (a title, a few tags, a short paragraph).
findable_cached = FindableCache(FINDABLE_CACHE_CHARS)


class Findable(NamedTuple):
    """A candidate, and the terms its title, tags and body would each be found by."""

    candidate: MatchCandidate
    title: frozenset[str]
    tags: frozenset[str]
    body: frozenset[str]


def findable_pool(candidates: list[MatchCandidate]) -> list[Findable]:
    return [Findable(candidate, findable_cached(candidate.title), findable_cached(candidate.tags),
                     findable_cached(candidate.body)) for candidate in candidates]  # fmt: skip


def shared_prefix(one: str, other: str) -> int:
    """How many leading characters two geohashes have in common."""
    shared = 0
    for a, b in zip(one, other, strict=False):
        if a != b:
            break
        shared += 1
    return shared


def wanted_kind(kind: str) -> str:
    return "offer" if kind == "need" else "need"


async def matches_for(node: Node, view: ItemView, viewer: User | None, *,
                      limit: int = MATCHES_SHOWN) -> list[Match]:  # fmt: skip
    """The best open items of the other kind for this item, as `viewer` may see them.

    Only an open, live item gets suggestions (a promised or ended one needs none), and only a
    member does: a visitor (public_offers) may see this node's own open offers and nothing
    else, so suggesting them needs or allies' offers would show what they may not see.
    """
    return (await matches_for_each(node, [view], viewer, limit=limit))[0]


async def matches_for_each(node: Node, views: list[ItemView], viewer: User | None, *,
                           limit: int = MATCHES_SHOWN) -> list[list[Match]]:  # fmt: skip
    """`matches_for` each of these items, reading the pool of each kind and category once:
    the coordinator queue shows up to 200 needs, in a handful of categories."""
    now = node.now_text()
    pools: dict[tuple[str, str], list[Findable]] = {}
    found = []
    for view in views:
        state = view.state
        if viewer is None or state["status"] != "open" or state["expires"] <= now:
            found.append([])
            continue
        # The item itself is never a candidate: it is of the other kind.
        key = (wanted_kind(state["kind"]), state["category"])
        if key not in pools:
            pools[key] = findable_pool(await node.store.match_candidates(
                kind=key[0], category=key[1], now=now, pool=MATCH_POOL,
                category_pool=MATCH_POOL_CATEGORY,
            ))  # fmt: skip
        found.append([
            Match(view=node.view(candidate.item(), viewer), same_category=same_category,
                  words_in_common=text_score > 0, shared_geohash=shared)
            for candidate, same_category, text_score, shared in rank(state, pools[key], limit)
        ])  # fmt: skip
    return found


# A candidate as ranked: it, same category, text score relative to the best (0–1), geohash
# characters shared.
Ranked = tuple[MatchCandidate, bool, float, int]


def rank(state: dict, pool: list[Findable], limit: int) -> list[Ranked]:
    """The `limit` candidates that match the item best, ties to the newer."""
    terms = frozenset(match_terms(state))
    hits = []
    for candidate, title, tags, body in pool:
        same_category = candidate.category == state["category"]
        points = (TITLE_WEIGHT * len(terms & title) + TAGS_WEIGHT * len(terms & tags)
                  + BODY_WEIGHT * len(terms & body))  # fmt: skip
        if same_category or points:
            hits.append((candidate, same_category, points))
    best = max((points for _, _, points in hits), default=0)
    geohash = state.get("location", {}).get("geohash", "")
    shared_by_cell: dict[str, int] = {}  # many candidates are in the same few cells
    ranked = []
    for candidate, same_category, points in hits:
        text_score = points / best if best else 0.0
        shared = shared_by_cell.get(candidate.geohash)
        if shared is None:
            shared = shared_by_cell[candidate.geohash] = shared_prefix(candidate.geohash, geohash)
        score = CATEGORY_WEIGHT * same_category + TEXT_WEIGHT * text_score + GEOHASH_WEIGHT * shared
        ranked.append(((score, candidate.created, candidate.row),
                       (candidate, same_category, text_score, shared)))  # fmt: skip
    return [entry for _, entry in heapq.nlargest(limit, ranked, key=itemgetter(0))]

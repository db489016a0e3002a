"""Search words as whole terms (`store.whole_terms`): a search finds exactly what it found
when every word was an FTS5 prefix, in the same order, whatever the words and the text."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.store import WHOLE_TERMS, ItemQuery, Store, fts_query, search_words, whole_terms

pytestmark = pytest.mark.anyio

# Words that share prefixes, differ in case or accents, hold punctuation or digits.
VOCABULARY = [
    "van", "vans", "Vanilla", "vane", "v", "v8", "ramp", "ramps", "rampe", "RAMP", "wheel",
    "wheelchair", "wheel-chair", "niño", "nino", "Ñu", "café", "cafe", "12", "123", "1234",
    "x_y", "o'clock", "über", "ber", "ΣΑΣ", "σας", "a", "ab", "abc",
]  # fmt: skip
QUERY_WORDS = VOCABULARY + ["VAN", "Wheel", "ni", "caf", "1", "zz", "w-c", '"', "v*", "σα", "ü"]


async def fill(store: Store, texts: list[str]) -> None:
    async with store.write() as db:
        for n, text in enumerate(texts):
            await db.execute(
                "INSERT INTO items (id, uuid, origin, is_local, kind, category, status, reach,"
                " title, body, tags, created, updated, expires, version, state)"
                " VALUES (?, ?, 'https://a.example', 1, 'offer', 'food', 'open', 'local',"
                " ?, '', '', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',"
                " '2027-01-01T00:00:00Z', 1, ?)",
                (f"https://a.example/items/{n}", str(n), text, json.dumps({"n": n})),
            )


async def found(store: Store, q: str) -> list[int]:
    rows = await store.list_items(ItemQuery(now=None, statuses=("open",), q=q, limit=500))
    return [row.state["n"] for row in rows]


async def found_as_prefixes(store: Store, q: str) -> list[int]:
    """The same search with every word a prefix, as FTS5 reads `"word"*`."""
    sql, params = ItemQuery(now=None, statuses=("open",), q=q, limit=500).sql()
    return [json.loads(row["state"])["n"] for row in await store.fetch_all(sql, params)]


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "node.db")
    yield store
    await store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=5).map(" ".join),
                      min_size=1, max_size=25),
       queries=st.lists(st.lists(st.sampled_from(QUERY_WORDS), min_size=1, max_size=3).map(" ".join),
                        min_size=1, max_size=6))  # fmt: skip
async def test_whole_terms_find_exactly_what_prefixes_find(tmp_path_factory, texts, queries):
    store = await Store.open(tmp_path_factory.mktemp("search") / "node.db")
    try:
        await fill(store, texts)
        for q in queries:
            assert await found(store, q) == await found_as_prefixes(store, q), q
    finally:
        await store.close()


async def test_plain_words_become_the_whole_terms_they_begin(store):
    await fill(store, ["Van and vans", "vanilla ramp", "wheel-chair niño", "VANE"])
    async with store.read() as db:
        whole = await whole_terms(db, "VAN ramp wheel-chair niño")
    # ASCII letters and digits are FTS5's own terms in lower case; a word FTS5 splits or
    # folds otherwise stays a prefix.
    assert whole == {0: ["van", "vane", "vanilla", "vans"], 1: ["ramp"]}
    assert fts_query("VAN ramp wheel-chair", whole) == (
        '("van" OR "vane" OR "vanilla" OR "vans") AND ("ramp") AND "wheel-chair"*')
    assert await found(store, "VAN ramp") == [1]
    async with store.read() as db:
        # A word that begins no term at all: nothing can match, and nothing is asked of FTS5.
        assert await whole_terms(db, "van zebra") is None
        assert await whole_terms(db, "wheel-chair") == {}
    assert await found(store, "van zebra") == []


async def test_a_word_beginning_many_terms_stays_a_prefix(store):
    await fill(store, [f"w{n} item" for n in range(WHOLE_TERMS + 1)] + ["w0 again"])
    async with store.read() as db:
        whole = await whole_terms(db, "w item w1")
    assert 0 not in whole  # w0 .. w20: one more than WHOLE_TERMS
    assert whole[1] == ["item"] and whole[2] == ["w1", "w10", "w11", "w12", "w13", "w14",
                                                  "w15", "w16", "w17", "w18", "w19"]  # fmt: skip
    assert len(await found(store, "w item")) == WHOLE_TERMS + 1
    assert await found(store, "w0") == [WHOLE_TERMS + 1, 0]


async def test_deleted_and_edited_text_leaves_no_stale_match(store):
    await fill(store, ["vans for moving", "vanilla beans"])
    async with store.write() as db:
        await db.execute("UPDATE items SET title = 'a truck' WHERE uuid = '0'")
        await db.execute("DELETE FROM items WHERE uuid = '1'")
    assert await found(store, "van") == []
    assert await found(store, "truck") == [0]


def test_search_words_split_on_nul_and_whitespace():
    assert search_words(" van\x00ramp\t x ") == ["van", "ramp", "x"]
    assert fts_query('say "hi"') == '"say"* AND """hi"""*'

"""Languages (issue 7): every string a page shows is translatable, the Spanish catalog is
complete and compiled, and the language is the member's setting or else the browser's.

The catalog tests compare the committed files with what Babel extracts and compiles now, so a
string added without being marked, extracted or translated fails here; `scripts/i18n`
refreshes the template and the catalogs (docs/architecture.md, "Languages"). The walk renders
every kind of page in Spanish and looks for any English message of the catalog in its text.
"""

import ast
import fnmatch
import gettext
import io
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from server.templating import available_languages
from tests.conftest import PASSWORD, csrf_of, login, post_form
from tests.test_matching import hold_remote, remote_state

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "server" / "locale"
POT = LOCALE / "aidnode.pot"
PO = LOCALE / "es" / "LC_MESSAGES" / "aidnode.po"
MO = LOCALE / "es" / "LC_MESSAGES" / "aidnode.mo"
# As scripts/i18n extracts: Babel's default keywords, N_ among them.
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
REFRESH = "run scripts/i18n, translate what is empty or fuzzy in the .po, run it again"

NORTH = "https://norte.example"
SOUTH = "https://sur.example"
NODE_NAME = "Ayuda Mutua del Este"


def read_catalog(path: Path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f)


def keys(catalog: Catalog) -> set:
    return {(message.context, message.id) for message in catalog if message.id}


def extracted_now() -> Catalog:
    """What `pybabel extract -F babel.cfg` finds in the sources as they are."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
        ROOT, method_map, options_map, keywords=KEYWORDS, comment_tags=("Translators:",)
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


# ---------------------------------------------------------------------------- the catalogs


def test_the_template_holds_every_marked_string_and_no_other():
    """The POT is what extraction finds now: a string marked since is missing, one gone stale."""
    committed, now = keys(read_catalog(POT)), keys(extracted_now())
    missing = sorted(str(key[1]) for key in now - committed)
    stale = sorted(str(key[1]) for key in committed - now)
    assert not missing and not stale, f"{REFRESH}. Not in aidnode.pot: {missing}; no longer in the sources: {stale}"


def test_the_spanish_catalog_translates_every_string():
    """Every msgid of the template has a Spanish translation, none empty, none fuzzy, each
    with the placeholders of its msgid, and plural forms for Spanish's two plurals."""
    template, spanish = read_catalog(POT), read_catalog(PO)
    assert spanish.plural_forms == "nplurals=2; plural=(n != 1);"
    assert not spanish.fuzzy, "the catalog's header is marked fuzzy: pybabel compile would skip it"
    by_key = {(m.context, m.id): m for m in spanish if m.id}
    problems = []
    for key in keys(template):
        message = by_key.get(key)
        strings = [] if message is None else (
            list(message.string) if isinstance(message.string, tuple) else [message.string]
        )
        if message is None or not strings or not all(s and s.strip() for s in strings):
            problems.append(f"untranslated: {key[1]!r}")
        elif message.fuzzy:
            problems.append(f"fuzzy: {key[1]!r}")
        elif isinstance(message.id, tuple) and len(strings) != 2:
            problems.append(f"not two plural forms: {key[1]!r}")
    for message, errors in spanish.check():
        problems.extend(f"{message.id!r}: {error}" for error in errors)
    assert not problems, f"{REFRESH}:\n" + "\n".join(sorted(problems))


def test_the_compiled_catalog_is_the_po_compiled():
    """The committed .mo holds exactly what compiling the .po gives (Babel's compile)."""
    compiled = io.BytesIO()
    write_mo(compiled, read_catalog(PO))
    compiled.seek(0)
    fresh = gettext.GNUTranslations(compiled)._catalog
    with MO.open("rb") as f:
        committed = gettext.GNUTranslations(f)._catalog
    fresh.pop("", None)
    committed.pop("", None)  # the header names the Babel that compiled it
    assert committed == fresh, f"aidnode.mo is older than aidnode.po: {REFRESH}"


def test_the_catalogs_ship_with_the_package_and_are_found():
    """pyproject's package data takes the .mo, and the server finds Spanish."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    relative = MO.relative_to(ROOT / "server").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in package_data.get("server", []))
    assert available_languages() == ("en", "es")


# ---------------------------------------------------------------------------- no text unmarked

SHOWN_ATTRIBUTES = ("title", "alt", "placeholder", "aria-label", "aria-description")
UNTRANSLATED_WORDS = {"UTC"}


class VisibleText(HTMLParser):
    """The text a person meets on a page: text outside scripts and styles, and the attributes
    that are read out or shown (title, alt, placeholder, aria-label, button values)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.lang: str | None = None

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        if tag in ("script", "style"):
            self.hidden += 1
        shown = [values.get(name) for name in SHOWN_ATTRIBUTES]
        if tag == "input" and values.get("type") in ("submit", "button", "reset"):
            shown.append(values.get("value"))
        self.parts.extend(value for value in shown if value)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)

    @classmethod
    def of(cls, html: str) -> "VisibleText":
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def test_templates_hold_no_text_outside_gettext():
    """Every word a template writes itself goes through `_()`, `ngettext` or `{% trans %}`."""
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        # Everything jinja2 evaluates becomes a marker, so only the literal HTML is left.
        literal = "".join(value if kind == "data" else "\x00"
                          for _, kind, value in env.lex(path.read_text()))  # fmt: skip
        for part in VisibleText.of(literal).parts:
            for piece in part.split("\x00"):
                if re.search(r'[\w-]+="|^\s*-\w', piece):  # attributes a macro writes
                    continue
                words = set(re.findall(r"[^\W\d_]{2,}", piece)) - UNTRANSLATED_WORDS
                if words:
                    found.append(f"{path.relative_to(ROOT)}: {piece.strip()!r}")
    assert not found, "text not marked for translation:\n" + "\n".join(found)


def test_page_errors_in_web_py_are_marked():
    """server/web.py serves only pages: every error it raises says N_(...)."""
    tree = ast.parse((ROOT / "server" / "web.py").read_text())
    unmarked = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            first = node.exc.args[0]
            if not (isinstance(first, ast.Call) and getattr(first.func, "id", "") == "N_"):
                unmarked.append(f"line {node.lineno}: {ast.unparse(node.exc)}")
    assert not unmarked, unmarked


# ---------------------------------------------------------------------------- the walk


def english_patterns() -> list[tuple[str, re.Pattern]]:
    """A pattern for each English message whose Spanish differs: its literal parts in order,
    any text where its placeholders were, whole words at its ends."""
    patterns = []
    for message in read_catalog(PO):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for english in ids:
            if english in strings:
                continue
            parts = [" ".join(part.split()) for part in re.split(r"%\(\w+\)[sd]", english)]
            parts = [part for part in parts if part.strip()]
            if not parts:
                continue
            pattern = ".{1,300}?".join(re.escape(part) for part in parts)
            if re.match(r"\w", parts[0]):
                pattern = r"(?<!\w)" + pattern
            if re.search(r"\w$", parts[-1]):
                pattern += r"(?!\w)"
            patterns.append((english, re.compile(pattern)))
    return patterns


class Misses(gettext.NullTranslations):
    """A fallback that notes every message the Spanish catalog did not have."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: set[str] = set()

    def gettext(self, message):
        self.messages.add(message)
        return message

    def ngettext(self, singular, plural, n):
        self.messages.add(singular)
        return singular if n == 1 else plural

    def pgettext(self, context, message):
        self.messages.add(f"{context}|{message}")
        return message

    def npgettext(self, context, singular, plural, n):
        self.messages.add(f"{context}|{singular}")
        return singular if n == 1 else plural


class SpanishCheck:
    """Checks pages: `lang="es"`, no English message in the text, every message translated."""

    def __init__(self, harness) -> None:
        self.patterns = english_patterns()
        self.misses = Misses()
        harness.app.state.templates.translations("es").add_fallback(self.misses)
        self.seen: list[str] = []

    def __call__(self, response, where: str) -> str:
        assert response.headers["content-type"].startswith("text/html"), where
        page = VisibleText.of(response.text)
        assert page.lang == "es", f"{where}: <html lang={page.lang!r}>"
        english = sorted({m for m, pattern in self.patterns if pattern.search(page.text)})
        assert not english, f"{where} shows English: {english}\n{page.text}"
        self.seen.append(where)
        return page.text

    def done(self) -> None:
        assert not self.misses.messages, f"not in the Spanish catalog: {sorted(self.misses.messages)}"


async def browser(harness, username: str | None = None, role: str = "member",
                  language: str = "es"):  # fmt: skip
    """A cookie-keeping client whose browser asks for `language`, logged in when named."""
    client = harness.client(follow_redirects=False, headers={"Accept-Language": language})
    if username is not None:
        await harness.add_user(username, role)
        await login(client, username, PASSWORD)
    return client


async def add_peer(harness, url: str, name: str, **fields) -> int:
    # A peer as the allies code keeps it, in one of the states the peers page shows.
    row = {"url": url, "name": name, "description": "Un grupo vecino", "trust": "trusted",
           "we_follow": "accepted", "they_follow": "accepted", "relay": 1,
           "created": harness.node.now_text(), **fields}  # fmt: skip
    async with harness.node.store.write() as db:
        cursor = await db.execute(
            f"INSERT INTO peers ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    harness.node.peer_names[url] = name
    return cursor.lastrowid


NEED = {"kind": "need", "title": "Leña para la estufa", "body": "Se nos acabó la leña.",
        "category": "household", "urgency": "urgent", "location_label": "Barrio Alto",
        "location_geohash": "u33db", "tags": "leña, invierno"}  # fmt: skip
OFFER = {"kind": "offer", "title": "Leña seca de sobra", "body": "Tengo dos sacos de leña.",
         "category": "household", "reach": "allies", "quantity": "2 sacos"}  # fmt: skip


async def scene(harness):
    """A node with something on every page: members of each role, a need with a response and
    a matching offer, an offer and a need from an allied group, peers in several states."""
    ana = await browser(harness, "ana")
    need_url = (await post_form(ana, "/items/new", NEED)).headers["location"]
    offer_url = (await post_form(ana, "/items/new", OFFER)).headers["location"]
    # Beto responds to Ana's need; Ana will see it on its page and on her responses page.
    beto = await browser(harness, "beto")
    page = await beto.get(need_url)
    sent = await beto.post(f"{need_url}/respond", data={
        "message": "Te llevo un saco mañana.", "contact": "beto@ejemplo.org",
        "csrf_token": csrf_of(page.text)})  # fmt: skip
    assert sent.status_code == 303, sent.text[:300]
    # An allied group's offer and need, and peers: followed, failing, forked, asking to follow.
    await add_peer(harness, NORTH, "Norte Solidario", received_seq=4, head_seq=6, delivered_seq=1,
                   last_success=harness.node.now_text(), next_attempt=harness.node.now_text(),
                   push_next_attempt=harness.node.now_text())  # fmt: skip
    await add_peer(harness, SOUTH, "Red del Sur", last_error="tiempo agotado", failures=3,
                   push_stopped=1, relay=0)  # fmt: skip
    await add_peer(harness, "https://bifurca.example", "Bifurcado",
                   last_error="fork: la entrada 3 no sigue a la 2", failures=1)  # fmt: skip
    await add_peer(harness, "https://nuevo.example", "Grupo Nuevo", trust="unknown",
                   we_follow="none", they_follow="pending")  # fmt: skip
    remote_offer = remote_state(harness, kind="offer", title="Estufa de leña", body="Casi nueva.",
                                category="household", origin=NORTH)  # fmt: skip
    remote_need = remote_state(harness, kind="need", title="Mantas", body="Para tres personas.",
                               category="household", origin=NORTH)  # fmt: skip
    await hold_remote(harness, remote_offer, remote_need, origin=NORTH)
    harness.clock.advance(hours=5)
    return {"ana": ana, "beto": beto, "need": need_url, "offer": offer_url,
            "remote": "/items/" + remote_offer["id"].rsplit("/", 1)[1]}  # fmt: skip


async def walk(harness, check: SpanishCheck, people: dict, *, member_pages_only=False):
    """Every kind of page, each checked as someone who may see it."""
    ana = people["ana"]
    # A member's pages.
    for path in ("/", "/items", "/items?kind=need&category=household", "/items/new",
                 people["need"], people["offer"], f"{people['need']}/edit", people["remote"],
                 "/my/items", "/my/responses", "/account", "/items/00000000-0000-4000-8000-000000000000"):
        response = await ana.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        check(response, f"GET {path}")
    if any(getattr(route, "path", None) == "/notifications" for route in harness.app.routes):
        check(await ana.get("/notifications"), "GET /notifications")
    # A search too long for browse: the error page says why.
    too_long = await ana.get("/items", params={"q": "leña " * 50})
    assert too_long.status_code == 400
    check(too_long, "GET /items with a search too long")
    # The post form, refused: a broken rule beside its field, then a phone number to confirm.
    bad = await post_form(ana, "/items/new", {**NEED, "location_geohash": "u33dbc"})
    assert bad.status_code == 422
    check(bad, "POST /items/new with a long geohash")
    empty = await post_form(ana, "/items/new", {**NEED, "title": " "})
    assert empty.status_code == 422 and "«título»" in check(empty, "POST /items/new without a title")
    contact = await post_form(ana, "/items/new", {**OFFER, "body": "Llama al 612 345 678."})
    assert contact.status_code == 422
    check(contact, "POST /items/new with a phone number")
    # A member who responded sees what they sent.
    for path in (people["need"], "/my/responses"):
        check(await people["beto"].get(path), f"GET {path} as the responder")
    # A member may not see admin pages: the error page.
    forbidden = await ana.get("/admin/members")
    assert forbidden.status_code == 403
    check(forbidden, "GET /admin/members as a member")
    if member_pages_only:
        return
    # A coordinator's queue, and an admin's pages.
    cora = await browser(harness, "cora", "coordinator", language=ana.headers["accept-language"])
    check(await cora.get("/coordinate"), "GET /coordinate")
    ada = await browser(harness, "ada", "admin", language=ana.headers["accept-language"])
    invited = await post_form(ada, "/admin/invites", {"role": "coordinator"})
    check(invited, "POST /admin/invites")
    for path in ("/admin/members", "/admin/invites", "/admin/peers", "/admin/audit"):
        check(await ada.get(path), f"GET {path}")
    refused = await post_form(ada, "/admin/peers", {"url": "https://Norte.example"})
    assert refused.status_code == 422
    check(refused, "POST /admin/peers with a bad address")


async def test_every_page_is_spanish_for_a_browser_that_asks_for_it(harness_factory):
    """With `Accept-Language: es`, no page shows an English message, and each says lang="es"."""
    async with harness_factory(name=NODE_NAME, public_offers=True) as harness:
        check = SpanishCheck(harness)
        people = await scene(harness)
        await walk(harness, check, people)
        # A visitor: home, browse and a public offer, login (and its error), join (and its error).
        visitor = await browser(harness, language="es-ES,es;q=0.9,en;q=0.5")
        for path in ("/", "/items", people["offer"], "/login"):
            response = await visitor.get(path)
            assert response.status_code == 200, path
            assert "Accept-Language" in response.headers["vary"]
            check(response, f"GET {path} as a visitor")
        page = await visitor.get("/login")
        wrong = await visitor.post("/login", data={"username": "ana", "password": "no es esta",
                                                   "csrf_token": csrf_of(page.text)})  # fmt: skip
        assert wrong.status_code == 401
        check(wrong, "POST /login with a wrong password")
        code = await harness.node.new_invite("member", None)
        check(await visitor.get(f"/join/{code}"), "GET /join")
        mismatch = await post_form(visitor, f"/join/{code}", {
            "username": "dani", "display_name": "Dani", "password": PASSWORD,
            "password_again": "otra contraseña"})  # fmt: skip
        assert mismatch.status_code == 422
        check(mismatch, "POST /join with passwords that differ")
        check.done()


async def test_a_members_language_setting_beats_accept_language(harness_factory):
    """A member who chose Spanish gets it whatever the browser asks, with no Vary on the
    header; choosing the browser's language again gives the browser's."""
    async with harness_factory(name=NODE_NAME) as harness:
        check = SpanishCheck(harness)
        people = await scene(harness)
        ana = people["ana"]
        ana.headers["Accept-Language"] = "en-US,en;q=0.9"
        people["beto"].headers["Accept-Language"] = "en"
        assert 'lang="en"' in (await ana.get("/account")).text
        # Ana and Beto choose Spanish on their account pages.
        for person in (ana, people["beto"]):
            chosen = await post_form(person, "/account", {"action": "language", "language": "es"})
            assert chosen.status_code == 303 and chosen.headers["location"] == "/account#language"
        account = await ana.get("/account")
        assert "Accept-Language" not in account.headers.get("vary", "")
        assert re.search(r'<option value="es" lang="es" selected>Español</option>', account.text)
        await walk(harness, check, people, member_pages_only=True)
        check.done()
        # Back to the browser's language.
        await post_form(ana, "/account", {"action": "language", "language": ""})
        home = await ana.get("/")
        assert 'lang="en"' in home.text and "Accept-Language" in home.headers["vary"]
        # And a language with no catalog is refused.
        unknown = await post_form(ana, "/account", {"action": "language", "language": "xx"})
        assert unknown.status_code == 422
        assert (await harness.node.store.user_by_username("ana")).language is None


async def test_english_stays_the_default(harness):
    """No Accept-Language, or only languages without a catalog, or Spanish ranked lower:
    English, `lang="en"`, and `Vary: Accept-Language` since the header decided."""
    for header in (None, "fr-CA,fr;q=0.9", "es;q=0.5, en"):
        client = harness.client(headers={"Accept-Language": header} if header else {})
        page = await client.get("/login")
        assert page.status_code == 200
        assert VisibleText.of(page.text).lang == "en", header
        assert "Log in" in page.text and "Entrar" not in page.text
        assert "Accept-Language" in page.headers["vary"]


async def test_the_item_page_varies_on_accept_and_accept_language(harness):
    """An item's page answers HTML or JSON by Accept and its language by Accept-Language."""
    client = await browser(harness, "ana", language="es")
    url = (await post_form(client, "/items/new", NEED)).headers["location"]
    page = await client.get(url)
    assert {v.strip() for v in page.headers["vary"].split(",")} == {"Accept-Language", "Accept"}
    assert 'lang="es"' in page.text and "Necesidad" in page.text

"""Rendering pages: jinja2 with autoescaping and the i18n extension, one environment per language.

Every user-facing string in the templates goes through `_()` / `{% trans %}`, and Python code
marks its messages with `N_` and translates them when a page shows them, so a language is added
by adding a catalog (`server/locale/<lang>/LC_MESSAGES/aidnode.mo`), without touching templates.
The language is the member's own choice (`users.language`, on the account page) or else the
browser's `Accept-Language`, in which case the page says `Vary: Accept-Language`; English is the
source. `scripts/i18n` extracts the strings and updates and compiles the catalogs.
"""

import gettext
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from federation import items as item_rules

from .labels import Labels

DOMAIN = "aidnode"
DEFAULT_LANGUAGE = "en"
CARD_CACHE_SIZE = 5000  # rendered cards kept per language, about 3 MB
FILTER_FORM_CACHE_SIZE = 500  # filter forms kept per language, about 3 MB
# Each language by its own name, as the account page offers it (never translated).
LANGUAGE_NAMES = {"en": "English", "es": "Español"}


def _locale_dir() -> Path:
    return Path(str(resources.files("server"))) / "locale"


def available_languages() -> tuple[str, ...]:
    found = {DEFAULT_LANGUAGE}
    base = _locale_dir()
    if base.is_dir():
        found.update(p.name for p in base.iterdir() if (p / "LC_MESSAGES" / f"{DOMAIN}.mo").exists())
    return tuple(sorted(found))


def negotiate_language(accept_language: str, available: tuple[str, ...]) -> str:
    """Pick the best available language from an Accept-Language header (RFC 9110 §12.5.4)."""
    choices = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in available and quality > 0:
            choices.append((-quality, position, primary))
    return min(choices)[2] if choices else DEFAULT_LANGUAGE


class Kept:
    """Rendered HTML by key, the newest `size` of them: `get(key, render)` renders on a miss."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[tuple, Markup] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self):
        return iter(self._kept)  # the keys, oldest first

    def get(self, key: tuple, render: Callable[[], Markup]) -> Markup:
        html = self._kept.get(key)
        if html is not None:
            self._kept.move_to_end(key)
            return html
        html = self._kept[key] = render()
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return html


class Cards:
    """Item cards for lists, each rendered once per look and kept (the newest CARD_CACHE_SIZE).

    A page of thirty cards is most of what rendering a listing costs, and the same items are
    listed again and again. The key holds everything `_item_card.html` shows: the item's state
    as stored (its JSON text), who it is from, the relaying groups' names and the age as it
    reads now."""

    def __init__(self, env: jinja2.Environment, labels: Labels) -> None:
        self._env, self._labels = env, labels
        self._kept = Kept(CARD_CACHE_SIZE)
        self._macro = None

    def __call__(self, view) -> Markup:
        age = self._labels.age(view.age_seconds)
        # The stored text, not the parsed state: a kept card's item is never decoded.
        key = (view.row.text, view.row.is_local, view.origin_name, view.via_names, age)
        return self._kept.get(key, lambda: self._render(view, age))

    def _render(self, view, age: str) -> Markup:
        if self._macro is None:
            self._macro = self._env.get_template("_item_card.html").module.card
        return self._macro(view, age)

    def each(self, views) -> Markup:
        """The cards of a list, in one call from the template rather than one per card."""
        return Markup("").join([self(view) for view in views])


class FilterForms:
    """The filter form of the browse page, rendered once per look and kept (the newest
    FILTER_FORM_CACHE_SIZE): it is a third of what a page costs to render, and shows only the
    filters chosen, whether a member is logged in (who sees more filters), and the groups."""

    def __init__(self, env: jinja2.Environment) -> None:
        self._env = env
        self._kept = Kept(FILTER_FORM_CACHE_SIZE)

    def __call__(self, user, filters: dict, groups: list) -> Markup:
        key = (user is not None, tuple(sorted(filters.items())), tuple(groups))
        return self._kept.get(key, lambda: self._render(user, filters, groups))

    def _render(self, user, filters: dict, groups: list) -> Markup:
        # What an autoescaping template rendered: every value in it is escaped already.
        rendered = self._env.get_template("items/_filters.html").render(
            user=user, filters=filters, groups=groups)  # fmt: skip
        return Markup(rendered)  # noqa: S704


class Templates:
    """Loads templates once; renders a page in the request's language."""

    def __init__(self) -> None:
        self._loader = jinja2.PackageLoader("templates", "")
        self._languages = available_languages()
        self._envs: dict[str, jinja2.Environment] = {}
        self._translations: dict[str, gettext.NullTranslations] = {}

    def translations(self, language: str) -> gettext.NullTranslations:
        found = self._translations.get(language)
        if found is None:
            found = gettext.translation(
                DOMAIN, localedir=_locale_dir(), languages=[language], fallback=True
            )
            self._translations[language] = found
        return found

    def environment(self, language: str) -> jinja2.Environment:
        env = self._envs.get(language)
        if env is None:
            env = jinja2.Environment(
                loader=self._loader,
                autoescape=True,
                auto_reload=False,  # packaged templates: no stat of every file on every render
                extensions=["jinja2.ext.i18n"],
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.install_gettext_translations(self.translations(language), newstyle=True)
            env.globals["rules"] = item_rules
            env.globals["labels"] = labels = Labels(self.translations(language))
            env.globals["card"] = Cards(env, labels)
            env.globals["filter_form"] = FilterForms(env)
            env.globals["language_choices"] = [(code, LANGUAGE_NAMES.get(code, code))
                                               for code in self._languages]  # fmt: skip
            self._envs[language] = env
        return env

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages this node has catalogs for (English always)."""
        return self._languages

    def choose_language(self, request: Request) -> tuple[str, bool]:
        """(language, whether it came from Accept-Language): the member's setting wins."""
        chosen = getattr(getattr(request.state, "user", None), "language", None)
        if chosen in self._languages:
            return chosen, False
        return negotiate_language(request.headers.get("accept-language", ""), self._languages), True

    def language(self, request: Request) -> str:
        return self.choose_language(request)[0]

    def gettext(self, request: Request):
        """The plain `gettext` for Python-side messages in the request's language."""
        return self.translations(self.language(request)).gettext

    def render(
        self, request: Request, name: str, context: dict | None = None, status_code: int = 200
    ) -> HTMLResponse:
        language, from_header = self.choose_language(request)
        node = request.app.state.node
        values = {
            "request": request,
            "language": language,
            "node_name": node.config.name,
            "user": getattr(request.state, "user", None),
            "csrf_token": getattr(request.state, "csrf_token", None),
            "public_offers": node.config.public_offers,
            "unread_notifications": getattr(request.state, "unread_notifications", 0),
        }
        values.update(context or {})
        html = self.environment(language).get_template(name).render(values)
        response = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
        if from_header:
            response.headers.add_vary_header("Accept-Language")
        return response

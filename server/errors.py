"""Errors that carry their HTTP status.

    ClientError (400)            the request is wrong; its message is shown to the client
    ├── Unauthorized (401)       no or bad credentials (API, federation)
    ├── Forbidden (403)          credentials fine, not allowed
    ├── NotFound (404)
    ├── MethodNotAllowed (405)
    ├── Conflict (409)
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── Invalid (422)            a value breaks a rule; carries the field's name
    ├── TooManyRequests (429)    carries Retry-After
    ├── BadGateway (502)         another node could not be reached or answered unusably
    └── GatewayTimeout (504)     another node did not answer in time

One handler (in `server.app`) renders them as `{"error": message}` for the API and federation
routes and as the error page for everything else. Anything else that escapes a handler is
logged and answered with a plain 500 that reveals nothing.

A message is an English template, marked with `N_` when a page may show it, and `params` fill
it: programs get it in English (`message`), pages in the reader's language
(`translated(gettext)`), with the protocol's own words among the values (field names,
statuses) translated too.
"""

from collections.abc import Callable

from federation.items import N_

# Values that messages fill in and a page shows in its language: "%(field)s must not be empty".
PAGE_WORDS = frozenset((
    N_("title"), N_("body"), N_("kind"), N_("category"), N_("tags"), N_("quantity"),
    N_("location"), N_("location.label"), N_("location.geohash"), N_("urgency"),
    N_("escalation"), N_("reach"), N_("hop_limit"), N_("expires"), N_("share_author"),
    N_("status"), N_("display_name"), N_("username"), N_("password"), N_("message"),
    N_("contact"), N_("open"), N_("promised"), N_("fulfilled"), N_("withdrawn"), N_("expired"),
    N_("pending"), N_("accepted"), N_("declined"), N_("gone"),
))  # fmt: skip


class ClientError(Exception):
    status = 400

    def __init__(self, message: str, *, field: str | None = None,
                 params: dict[str, object] | None = None) -> None:  # fmt: skip
        self.template = message
        self.params = dict(params or {})
        self.message = message % self.params if self.params else message
        super().__init__(self.message)
        self.field = field

    def translated(self, gettext: Callable[[str], str]) -> str:
        """The message as a page shows it, in the language `gettext` translates to."""
        if not self.params:
            return gettext(self.template)
        values = {name: gettext(value) if isinstance(value, str) and value in PAGE_WORDS else value
                  for name, value in self.params.items()}  # fmt: skip
        try:
            return gettext(self.template) % values
        except (KeyError, ValueError, TypeError):  # a translation that names other values
            return self.message

    def body(self) -> dict:
        body = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(ClientError):
    status = 401


class Forbidden(ClientError):
    status = 403


class NotFound(ClientError):
    status = 404


class MethodNotAllowed(ClientError):
    status = 405


class Conflict(ClientError):
    status = 409


class PayloadTooLarge(ClientError):
    status = 413


class UnsupportedMediaType(ClientError):
    status = 415


class Invalid(ClientError):
    status = 422


class TooManyRequests(ClientError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class BadGateway(ClientError):
    status = 502


class Unavailable(ClientError):
    """The node cannot do this now (its feed is on hold after a restore, say)."""

    status = 503


class GatewayTimeout(ClientError):
    status = 504

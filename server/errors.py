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
"""


class ClientError(Exception):
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

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

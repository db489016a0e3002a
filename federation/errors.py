"""Protocol errors.

    ProtocolError                 anything the protocol refuses
    ├── ValidationError           a value breaks a rule; names the field (DESIGN §3)
    ├── MalformedError            bytes that are not what they claim (bad base64url, bad key)
    └── BaseUrlError              a base_url that is not scheme://host[:port]

The server maps them to HTTP statuses; the library never knows about HTTP.
"""


class ProtocolError(Exception):
    """Base of every error the protocol library raises."""


class ValidationError(ProtocolError):
    """A value breaks an item rule. `field` names the offending field (dotted for nested ones).

    `message` is an English template marked for translation; `params` fill it, so a page can
    show `gettext(message) % params` in the member's language.
    """

    def __init__(self, field: str, message: str, /, **params: object) -> None:
        self.field = field
        self.message = message
        self.params = params
        super().__init__(message % params if params else message)


class MalformedError(ProtocolError):
    """Bytes or strings that do not decode as the protocol requires."""


class BaseUrlError(ProtocolError):
    """A node base_url that breaks the rules of DESIGN §4.1; `message` and `params` as for
    ValidationError (an admin sees it on a page when adding a node)."""

    def __init__(self, message: str, /, **params: object) -> None:
        self.message = message
        self.params = params
        super().__init__(message % params if params else message)

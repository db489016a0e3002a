"""Routes that declare who may use them.

Every route of the app is an `AccessRoute` with a `surface` and an `access` level:

- surface `page`: HTML for people. Identified by the session cookie; a visitor who must log in
  is sent to `/login`; every POST must carry the session's CSRF token (`csrf_token` field).
- surface `api`: JSON for programs. Identified only by `Authorization: Bearer <token>` (never
  by cookie, so no CSRF token is needed); no token → 401.
- surface `public`: machine-readable documents anyone may read (node document, health).
- surface `federation`: requests from other nodes, identified only by their RFC 9421
  signature (see `federation.httpsig`); any failed check is 401.

`access` is `anyone`, `member`, `coordinator`, `admin`, `loopback_or_admin`, or
`visitor_if_public` (anyone while the admin has `public_offers` on, members otherwise), and for
federation routes `trusted_node` (a signed request from a node this one trusts),
`feed_reader` (a trusted node, or anyone while `feed_public` is on), `any_node` (a signed
request from any node: one not met before has its node document fetched, through the address
guard, to learn its key; the handler decides what a blocked or unknown node may do) or
`inbox_sender` (for `/federation/inbox`, whose messages come from different senders: the
body's `type` is read first, strictly, and chooses how the signer is identified, so the
signature still decides who it is and the type only which keys may sign it:

    type              keys the signature is checked against           node not pinned
    response          any known node's (blocked ones too, for a 403)  document fetched, as any_node
    response-status   any known node's (its origin learned its key)   401, nothing fetched
    anything else     trusted nodes' only (pushes, subscription news) 401, nothing fetched

so a push from a node that is not pinned and trusted is refused before any fetch (DESIGN
§4.4), while anyone who is not blocked may respond (§7); the handler checks the signer again
against the message). The wrapper checks it before the handler runs, and the route × role
test matrix is generated from these declarations, so a route cannot be added without saying
who may use it.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from federation import items as item_rules
from federation.errors import MalformedError, ProtocolError
from federation.httpsig import NONCE_MEMORY_SECONDS, SignatureError, claimed_key_id, verify_request
from federation.items import N_
from federation.keys import parse_public_key
from federation.strictjson import loads_strict

from .accounts import new_secret, same_secret
from .errors import ClientError, Forbidden, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized
from .node import ROLES, has_role

ACCESS_LEVELS = (
    "anyone", "visitor_if_public", "member", "coordinator", "admin", "loopback_or_admin",
    "trusted_node", "feed_reader", "any_node", "inbox_sender",
)  # fmt: skip
# `inbox_sender`: which keys may sign an inbox message, by its type (see the docstring).
INBOX_SIGNERS = {"response": "any", "response-status": "pinned"}
NODE_OVER_LIMIT = N_("too many requests from your node: slow down")
INBOX_MAX_BYTES = 512 * 1024
REPLAYED = "signature refused: this nonce was already used (a replay)"
FORWARDED_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
SURFACES = ("page", "api", "public", "federation")
FORM_MAX_FIELDS = 100
FORM_MAX_PART = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def session_cookie_name(request: Request) -> str:
    return f"aidnode_session_{request.app.state.node.cookie_suffix}"


def csrf_cookie_name(request: Request) -> str:
    return f"aidnode_csrf_{request.app.state.node.cookie_suffix}"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def identify_node(request: Request, *, any_node: bool = False, pinned: bool = False,
                        defer_nonce: bool = False) -> "SignedBy":  # fmt: skip
    """Verify a request from another node (DESIGN §4.4); raise Unauthorized on any failure.

    `@target-uri` is rebuilt from this node's own base_url and the raw path and query, never
    from Host or X-Forwarded-*. Keys come only from pinned peers: trusted ones; with `pinned`
    any known node (nothing is fetched); with `any_node` any known node, and then a node not
    met before has its document fetched to learn its key. The nonce is remembered in the
    database so a replay is refused even after a restart.

    With `defer_nonce` (a push of entries), a nonce already committed is refused here, but
    it is recorded by the handler, in the transaction that does what the request asks
    (`SignedBy.nonce`, `PendingNonce`): one COMMIT a push rather than two, and a request's
    nonce is on disk exactly when its effect is. Two requests with one nonce that arrive
    together both pass this look; the write transaction refuses the second.
    """
    node = request.app.state.node
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    target = node.config.base_url + raw_path.decode("latin-1")
    if query:
        target += "?" + query.decode("latin-1")
    body = await request.body()
    now = node.now()
    asked: list[str] = []
    first_keys: dict | None = None  # the first attempt's: a key pinned since is tried again

    async def attempt(learned: dict | None = None) -> tuple[dict, object]:
        nonlocal first_keys
        keys = await node.store.request_keys()
        if first_keys is None:
            first_keys = keys
        if not (any_node or pinned):
            keys = {k: v for k, v in keys.items() if v[2] == "trusted"}
        keys.update(learned or {})

        def lookup(key_id: str):
            asked.append(key_id)
            found = keys.get(key_id)
            return None if found is None else parse_public_key(found[1])

        verified = verify_request(
            method=request.method, target_uri=target, headers=request.headers.items(), body=body,
            lookup=lookup, now=now, nonces=None,
        )  # fmt: skip
        return keys, verified

    try:
        try:
            keys, verified = await attempt()
        except SignatureError:
            if not (any_node and asked and asked[-1] not in first_keys):
                raise
            if asked[-1] in await node.store.request_keys():
                # Pinned meanwhile (an ingest learned the node as a relayed need's origin):
                # checked again with the key now pinned, rather than refused or fetched.
                keys, verified = await attempt()
            else:
                doc = await node.allies.learn_node(asked[-1])  # raises ClientError if it cannot
                learned_id, learned_public = doc.current_key
                keys, verified = await attempt({learned_id: (None, learned_public, "unknown",
                                                             False)})  # fmt: skip
                if keys[verified.key_id][0] is None:  # verified with the learned key: keep it
                    keys[verified.key_id] = (await node.allies.pin_node(doc), learned_public,
                                             "unknown", False)  # fmt: skip
    except (SignatureError, ProtocolError) as error:
        raise Unauthorized(str(error)) from None
    peer_id, _, trust, push_paused = keys[verified.key_id]
    pending = PendingNonce(verified.key_id, verified.nonce, int(now.timestamp()))
    # A node we had stopped pushing to is heard from (a write) only once its nonce is
    # recorded, so such a request records it here, as every other request does.
    if defer_nonce and not (push_paused and trust == "trusted"):
        if await node.store.nonce_seen(*pending, NONCE_MEMORY_SECONDS):
            raise Unauthorized(REPLAYED)
    else:
        await pending.remember(node.store)
        pending = None
    if push_paused and trust == "trusted":
        await node.allies.heard_from(peer_id)
    return SignedBy(peer_id=peer_id, node=verified.key_id.rsplit("#", 1)[0],
                    key_id=verified.key_id, trust=trust, nonce=pending)  # fmt: skip


async def inbox_message_type(request: Request) -> str | None:
    """The `type` of an inbox message, read strictly before its signature is checked (it only
    chooses which keys may sign it). The parsed body is kept for the handler
    (`request.state.inbox_message`), so a large push is parsed once."""
    request.state.inbox_message = None
    body = await request.body()
    if len(body) > INBOX_MAX_BYTES:
        return None
    try:
        message = loads_strict(body)
    except MalformedError:
        return None
    request.state.inbox_message = message
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else None


@dataclass(frozen=True)
class PendingNonce:
    """A verified request's nonce that is not recorded yet (`identify_node(defer_nonce=…)`):
    whoever acts on the request records it first, in the same write transaction."""

    key_id: str
    nonce: str
    seen_at: int

    def __iter__(self):
        return iter((self.key_id, self.nonce, self.seen_at))

    async def remember_in(self, store, db) -> None:
        """Record it inside `db`'s write transaction; Unauthorized if it was used already
        (then the caller's block, and so the whole request, changes nothing)."""
        if not await store.remember_nonce_in(db, *self, NONCE_MEMORY_SECONDS):
            raise Unauthorized(REPLAYED)

    async def remember(self, store) -> None:
        """Record it in a transaction of its own, for a request refused or acted on
        without writing."""
        if not await store.remember_nonce(*self, NONCE_MEMORY_SECONDS):
            raise Unauthorized(REPLAYED)


@dataclass(frozen=True)
class SignedBy:
    """The node that signed a federation request; `nonce`: its nonce, when not recorded yet
    (see `identify_node`), which the handler must record before acting."""

    peer_id: int
    node: str
    key_id: str
    trust: str = "trusted"
    nonce: PendingNonce | None = None


async def identify(request: Request, surface: str, access: str = "anyone") -> None:
    """Set `request.state.user` (or None) and, for pages, `request.state.csrf_token`; for
    federation routes, `request.state.peer` (or None)."""
    node = request.app.state.node
    request.state.user = None
    request.state.peer = None
    request.state.csrf_token = None
    request.state.new_csrf_cookie = None
    if surface == "federation":
        # Floods: a client address is limited before any work (parsing, signature checks),
        # and a node, once identified, on its own: either answers 429 with Retry-After, which
        # a node's delivery takes as "back off" (DESIGN §4.6).
        _limit(node.federation_by_address, client_address(request),
               N_("too many requests from your address: slow down"))  # fmt: skip
        signed = "signature" in request.headers or "signature-input" in request.headers
        if access == "feed_reader" and node.config.feed_public and not signed:
            return
        # A node already over its limit is told so before its body is read or its signature
        # checked, by the key id it claims: only verified requests count (below), so naming
        # another node's key cannot spend that node's budget, only be refused with it.
        claimed = claimed_key_id(request.headers.get("signature-input", ""))
        if claimed is not None:
            _limit(node.federation_by_node, claimed.rsplit("#", 1)[0], NODE_OVER_LIMIT, count=False)
        signers, kind = ("any" if access == "any_node" else "trusted"), None
        if access == "inbox_sender":
            kind = await inbox_message_type(request)
            signers = INBOX_SIGNERS.get(kind, "trusted")
        # A push's nonce is recorded with its entries, by the inbox (one COMMIT a push).
        request.state.peer = await identify_node(request, any_node=signers == "any",
                                                 pinned=signers == "pinned",
                                                 defer_nonce=kind == "entries")  # fmt: skip
        try:
            _limit(node.federation_by_node, request.state.peer.node, NODE_OVER_LIMIT)
        except TooManyRequests:
            if request.state.peer.nonce is not None:  # refused: still, never again
                await request.state.peer.nonce.remember(node.store)
            raise
        return
    if surface == "api" or (surface == "public" and "authorization" in request.headers):
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header:
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized(N_("the Authorization header must be 'Bearer <token>'"))
            user = await node.user_for_api_token(token.strip())
            if user is None:
                raise Unauthorized(N_("the API token is not valid"))
            request.state.user = user
        return
    if surface != "page":
        return
    cookie = request.cookies.get(session_cookie_name(request))
    if cookie:
        found = await node.session(cookie)
        if found is not None:
            # With the page header's "Notifications (n)" (server/notifications.py).
            request.state.user, request.state.csrf_token = found.user, found.csrf_token
            request.state.unread_notifications = found.unread_notifications
            return
    # A visitor: a double-submit CSRF token in its own cookie protects the login and join forms.
    token = request.cookies.get(csrf_cookie_name(request))
    if not token or len(token) != 43:
        token = new_secret()
        request.state.new_csrf_cookie = token
    request.state.csrf_token = token


def path_uuid(request: Request, name: str, message: str) -> str:
    """A lowercase uuid4 from the URL path, matched exactly (Starlette's `uuid` converter
    would take other spellings), or NotFound with `message`."""
    raw = request.path_params[name]
    if not item_rules.UUID_RE.fullmatch(raw):
        raise NotFound(message)
    return raw


def path_number(request: Request, name: str, message: str) -> int:
    """A row id from the URL path, plain digits only, or NotFound with `message`."""
    raw = request.path_params[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        raise NotFound(message)
    return int(raw)


def _limit(limiter, key: str, message: str, *, count: bool = True) -> None:
    """TooManyRequests once `key` is over its limit in `limiter`; else the request counts
    against it (unless `count` is false: a look before the request is known to be `key`'s)."""
    wait = limiter.retry_after(key)
    if wait > 0:
        raise TooManyRequests(message, retry_after=int(wait) + 1)
    if count:
        limiter.hit(key)


def allowed(request: Request, access: str) -> bool:
    user = request.state.user
    if access == "anyone":
        return True
    if access == "visitor_if_public":
        return request.app.state.node.config.public_offers or has_role(user, "member")
    if access in ("trusted_node", "any_node", "inbox_sender"):
        return request.state.peer is not None
    if access == "feed_reader":
        return request.state.peer is not None or request.app.state.node.config.feed_public
    if access == "loopback_or_admin":
        host = request.client.host if request.client else ""
        # A reverse proxy on this machine connects from loopback too: a request it says it
        # forwarded is someone else's, not the operator's own.
        forwarded = any(name in request.headers for name in FORWARDED_HEADERS)
        return (host in ("127.0.0.1", "::1") and not forwarded) or has_role(user, "admin")
    return has_role(user, access)


async def check_csrf(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise ClientError(N_("forms must be sent as application/x-www-form-urlencoded"))
    try:
        form = await request.form(
            max_files=0, max_fields=FORM_MAX_FIELDS, max_part_size=FORM_MAX_PART
        )
    except PayloadTooLarge:
        raise
    except Exception:
        raise ClientError(N_("the form could not be read")) from None
    sent = form.get("csrf_token")
    if not isinstance(sent, str) or not same_secret(sent, request.state.csrf_token or ""):
        raise Forbidden(N_("the form's security token is missing or stale: reload the page and try again"))


class AccessRoute(Route):
    """A starlette Route that knows its surface and who may use it."""

    def __init__(
        self, path: str, handler: Handler, *, surface: str, access: str,
        methods: tuple[str, ...] = ("GET",), name: str | None = None,
    ) -> None:
        assert surface in SURFACES and access in ACCESS_LEVELS
        self.surface = surface
        self.access = access

        async def endpoint(request: Request) -> Response:
            await identify(request, surface, access)
            if not allowed(request, access):
                if request.state.user is None and surface == "page":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
                if request.state.user is None:
                    raise Unauthorized(N_("an API token is required (Authorization: Bearer <token>)"))
                raise Forbidden(N_("your role does not allow this"))
            if surface == "page" and request.method == "POST":
                await check_csrf(request)
            response = await handler(request)
            if request.state.new_csrf_cookie:
                response.set_cookie(
                    csrf_cookie_name(request), request.state.new_csrf_cookie, httponly=True,
                    samesite="lax", secure=request.app.state.node.config.secure_cookies, path="/",
                )  # fmt: skip
            return response

        endpoint.__name__ = handler.__name__
        super().__init__(path, endpoint, methods=list(methods), name=name or handler.__name__)


def page(path: str, handler: Handler, access: str, methods=("GET",), name=None) -> AccessRoute:
    return AccessRoute(path, handler, surface="page", access=access, methods=methods, name=name)


def api(path: str, handler: Handler, access: str, methods=("GET",), name=None) -> AccessRoute:
    return AccessRoute(path, handler, surface="api", access=access, methods=methods, name=name)


def public(path: str, handler: Handler, access: str = "anyone", methods=("GET",), name=None):
    return AccessRoute(path, handler, surface="public", access=access, methods=methods, name=name)


def federation(path: str, handler: Handler, access: str, methods=("GET",), name=None):
    return AccessRoute(path, handler, surface="federation", access=access, methods=methods,
                       name=name)  # fmt: skip


__all__ = ["ROLES", "AccessRoute", "api", "page", "public"]

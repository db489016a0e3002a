"""The web pages: server-rendered, no JavaScript needed, every POST behind a CSRF token.

Handlers turn forms into the same dicts the JSON API takes and call the same `Node` methods,
so a rule enforced for one surface is enforced for both. A rule broken in a form re-renders
the form with the message beside its field and the member's input kept.
"""

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from federation import items as item_rules
from federation.items import N_
from federation.timefmt import format_time, parse_time

from .api import item_query, page_of_items
from .coordinate import unmet_needs
from .errors import (
    BadGateway,
    ClientError,
    Forbidden,
    Invalid,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from .matching import matches_for, matches_for_each
from .node import ROLES, has_role
from .notifications import account_context
from .responses import item_responses
from .routing import client_address, page, path_number, path_uuid, session_cookie_name
from .store import ItemQuery, Peer

BROWSE_PAGE_SIZE = 30


def render(request: Request, name: str, context: dict | None = None, status_code: int = 200):
    return request.app.state.templates.render(request, name, context, status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only same-site paths, so a login link cannot send anyone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def translate(request: Request, message: str | ClientError) -> str:
    """A message in the page's language; an error's with its values filled in."""
    gettext = request.app.state.templates.gettext(request)
    return message.translated(gettext) if isinstance(message, ClientError) else gettext(message)


# ---------------------------------------------------------------------------- home, login


async def home(request: Request) -> Response:
    node = request.app.state.node
    user = request.state.user
    context: dict = {}
    if user is None:
        if node.config.public_offers:
            query = ItemQuery(now=node.now_text(), statuses=("open",), kind="offer",
                              public_only=True, limit=10)  # fmt: skip
            context["offers"] = await node.list_items(query, None)
        return render(request, "home.html", context)
    now = node.now_text()
    context["my_items"] = await node.list_items(ItemQuery(now=now, owner_id=user.id, limit=10), user)
    # For each of my open needs, what might meet it; responses waiting for my decision; what
    # became of the responses I sent.
    my_needs = [view for view in context["my_items"]
                if view.state["kind"] == "need" and view.state["status"] == "open"]  # fmt: skip
    shown = my_needs[:5]
    matches = await matches_for_each(node, shown, user, limit=3)
    context["need_matches"] = list(zip(shown, matches, strict=True))
    received = await node.responses.received_for(user)
    context["responses_waiting"] = [r for r in received
                                    if r.state == "pending" and _owned(context["my_items"], r.item)][:10]  # fmt: skip
    context["my_responses"] = (await node.responses.sent_by(user))[:5]
    context["recent_needs"] = await node.list_items(ItemQuery(now=now, kind="need", limit=8), user)
    context["recent_offers"] = await node.list_items(ItemQuery(now=now, kind="offer", limit=8), user)
    return render(request, "home.html", context)


def _owned(views: list, item_id: str) -> bool:
    return any(view.state["id"] == item_id for view in views)


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    node = request.app.state.node
    response.set_cookie(
        session_cookie_name(request), token, max_age=node.config.session_days * 86400,
        httponly=True, samesite="lax", secure=node.config.secure_cookies, path="/",
    )  # fmt: skip


async def login(request: Request) -> Response:
    node = request.app.state.node
    next_url = safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if request.state.user is not None:
            return redirect(next_url)
        return render(request, "auth/login.html", {"next": next_url, "error": None, "username": ""})
    form = await request.form()
    username = str(form.get("username", ""))[:64]
    next_url = safe_next(str(form.get("next", "/")))
    try:
        token, _user = await node.login(username, str(form.get("password", ""))[:1024],
                                        client_address(request))  # fmt: skip
    except (Unauthorized, TooManyRequests) as error:
        response = render(
            request, "auth/login.html",
            {"next": next_url, "error": translate(request, error), "username": username},
            status_code=error.status,
        )  # fmt: skip
        response.headers.update(error.headers())
        return response
    # A fresh session at every login (no fixation); drop the one the browser had, if any.
    old = request.cookies.get(session_cookie_name(request))
    if old:
        await node.logout(old)
    response = redirect(next_url)
    _set_session_cookie(request, response, token)
    return response


async def logout(request: Request) -> Response:
    token = request.cookies.get(session_cookie_name(request))
    if token:
        await request.app.state.node.logout(token)
    response = redirect("/")
    response.delete_cookie(session_cookie_name(request), path="/")
    return response


async def join(request: Request) -> Response:
    node = request.app.state.node
    code = request.path_params["code"]
    role = await node.invite_role(code) if len(code) == 43 else None
    if role is None:
        raise NotFound(N_("this invitation is not valid (used, revoked or expired)"))
    values = {"username": "", "display_name": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = await request.form()
        values = {"username": str(form.get("username", ""))[:64],
                  "display_name": str(form.get("display_name", ""))[:200]}  # fmt: skip
        password = str(form.get("password", ""))
        if password != str(form.get("password_again", "")):
            errors["password_again"] = translate(request, N_("the two passwords differ"))
        else:
            try:
                user = await node.create_user(
                    username=values["username"], display_name=values["display_name"],
                    password=password, role="member", invite_code=code,
                )  # fmt: skip
            except ClientError as error:
                errors[error.field or "username"] = translate(request, error)
            else:
                old = request.cookies.get(session_cookie_name(request))
                if old:  # a new account gets a new session, never the one the browser had
                    await node.logout(old)
                response = redirect("/")
                _set_session_cookie(request, response, await node.new_session(user))
                return response
    return render(request, "auth/join.html",
                  {"code": code, "role": role, "values": values, "errors": errors},
                  status_code=422 if errors else 200)  # fmt: skip


# ---------------------------------------------------------------------------- items


async def browse(request: Request) -> Response:
    query = item_query(request, limit_default=BROWSE_PAGE_SIZE, limit_max=BROWSE_PAGE_SIZE)
    views, next_cursor = await page_of_items(request, query)
    params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    next_url = None
    if next_cursor:
        next_url = "/items?" + urlencode({**params, "cursor": next_cursor})
    node = request.app.state.node
    groups = sorted(node.peer_names.items(), key=lambda pair: pair[1].casefold())
    return render(request, "items/list.html", {
        "items": views, "filters": params, "next_url": next_url, "groups": groups,
    })  # fmt: skip


def _date_to_expires(value: str, created: str | None, now) -> str:
    """A date from the form (YYYY-MM-DD) → the end of that day, but never past 90 days."""
    try:
        end = parse_time(f"{value}T23:59:59Z")
    except ValueError:
        raise Invalid(N_("expires must be a date like 2026-12-24"), field="expires") from None
    start = parse_time(created) if created else now
    return format_time(min(end, start + item_rules.EXPIRY_MAX))


def form_to_item(form: FormData, *, creating: bool, current: dict | None, now) -> dict:
    """Turn the item form into the dict the API takes. Empty optional fields are left out on
    create and clear the field on edit."""
    data: dict = {}
    text_fields = ["title", "body", "category"] + (["kind"] if creating else [])
    for name in text_fields:
        data[name] = str(form.get(name, ""))
    kind = data.get("kind") or (current or {}).get("kind")
    tags = [t.strip() for t in str(form.get("tags", "")).split(",") if t.strip()]
    if tags or not creating:
        data["tags"] = tags
    quantity = str(form.get("quantity", "")).strip()
    if quantity or not creating:
        data["quantity"] = quantity
    label = str(form.get("location_label", "")).strip()
    geohash = str(form.get("location_geohash", "")).strip()
    if label or geohash:
        data["location"] = {"label": label, **({"geohash": geohash} if geohash else {})}
    elif not creating:
        data["location"] = {}
    if kind == "need":
        for name in ("urgency", "escalation"):
            if form.get(name):
                data[name] = str(form.get(name))
    if form.get("reach"):
        data["reach"] = str(form.get("reach"))
    if form.get("hop_limit") and data.get("reach", (current or {}).get("reach")) == "network":
        raw = str(form.get("hop_limit"))
        # Not int()'s digits ("²") or too many of them: the item rules refuse it as text.
        data["hop_limit"] = int(raw) if raw.isdecimal() and len(raw) <= 20 else raw
    if form.get("expires"):
        data["expires"] = _date_to_expires(str(form.get("expires")),
                                           (current or {}).get("created"), now)  # fmt: skip
    data["share_author"] = form.get("share_author") == "on"
    return data


def _form_values(form: FormData | None, state: dict | None, view=None) -> dict:
    """What the item form shows: the member's input, or the item's current state."""
    if form is not None:
        return {key: str(value) for key, value in form.items()}
    if state is None:
        return {"kind": "need", "urgency": "normal", "escalation": "after_delay"}
    location = state.get("location", {})
    return {
        "kind": state["kind"], "title": state["title"], "body": state["body"],
        "category": state["category"], "tags": ", ".join(state.get("tags", [])),
        "quantity": state.get("quantity", ""), "location_label": location.get("label", ""),
        "location_geohash": location.get("geohash", ""), "urgency": state.get("urgency", ""),
        "reach": state["reach"], "hop_limit": str(state.get("hop_limit", "")),
        "expires": state["expires"][:10],
        "escalation": (view.row.escalation if view else None) or "after_delay",
        "share_author": "on" if view and view.row.share_author else "",
    }  # fmt: skip


def _field_name(field: str | None) -> str:
    return {"location.label": "location_label", "location.geohash": "location_geohash"}.get(
        field or "", field or "form"
    )


async def new_item(request: Request) -> Response:
    node = request.app.state.node
    if request.method == "GET":
        kind = request.query_params.get("kind")
        values = _form_values(None, None)
        if kind in item_rules.KINDS:
            values["kind"] = kind
        return render(request, "items/form.html", {"values": values, "errors": {}, "view": None})
    form = await request.form()
    try:
        data = form_to_item(form, creating=True, current=None, now=node.now())
        view = await node.post_item(request.state.user, data,
                                    contact_ok=form.get("contact_ok") == "on")  # fmt: skip
    except Invalid as error:
        return render(request, "items/form.html", {
            "values": _form_values(form, None), "view": None,
            "errors": {_field_name(error.field): translate(request, error)},
        }, status_code=422)  # fmt: skip
    return redirect(f"/items/{view.uuid}")


def _uuid(request: Request) -> str:
    return path_uuid(request, "uuid", N_("no such item"))


async def show_item(request: Request) -> Response:
    node = request.app.state.node
    view = await node.item_for(_uuid(request), request.state.user)
    if "application/json" in request.headers.get("accept", "") and "text/html" not in request.headers.get("accept", ""):
        return JSONResponse(view.to_json(), headers={"Vary": "Accept"})
    matches = await matches_for(node, view, request.state.user)
    response = render(request, "items/show.html", {"view": view, "matches": matches,
                      **await item_responses(node, view, request.state.user)})  # fmt: skip
    response.headers.add_vary_header("Accept")
    return response


async def edit_item(request: Request) -> Response:
    node = request.app.state.node
    user = request.state.user
    view = await node.item_for(_uuid(request), user)
    if not view.can_edit:
        raise Forbidden(N_("only the poster or a coordinator may change this item"))
    if request.method == "GET":
        return render(request, "items/form.html",
                      {"values": _form_values(None, view.state, view), "errors": {}, "view": view})  # fmt: skip
    form = await request.form()
    try:
        data = form_to_item(form, creating=False, current=view.state, now=node.now())
        view = await node.change_item(user, view.uuid, data,
                                      contact_ok=form.get("contact_ok") == "on")  # fmt: skip
    except Invalid as error:
        return render(request, "items/form.html", {
            "values": _form_values(form, view.state, view), "view": view,
            "errors": {_field_name(error.field): translate(request, error)},
        }, status_code=422)  # fmt: skip
    return redirect(f"/items/{view.uuid}")


async def change_status(request: Request) -> Response:
    node = request.app.state.node
    form = await request.form()
    status = str(form.get("status", ""))
    await node.change_item(request.state.user, _uuid(request), {"status": status})
    return redirect(f"/items/{_uuid(request)}")


async def my_items(request: Request) -> Response:
    node = request.app.state.node
    user = request.state.user
    now = node.now_text()
    # Ended items (expired ones included) stay in their poster's history.
    mine = await node.list_items(
        ItemQuery(now=None, owner_id=user.id, statuses=item_rules.STATUSES, limit=500), user
    )
    live = [v for v in mine if v.state["status"] in item_rules.LIVE_STATUSES and v.state["expires"] > now]
    ended = [v for v in mine if v not in live]
    return render(request, "items/mine.html", {"live": live, "ended": ended})


# ---------------------------------------------------------------------------- coordinators


async def coordinate_queue(request: Request) -> Response:
    entries = await unmet_needs(request.app.state.node, request.state.user)
    return render(request, "coordinate/queue.html", {"entries": entries})


# ---------------------------------------------------------------------------- account


async def account(request: Request) -> Response:
    node = request.app.state.node
    token = None
    if request.method == "POST":
        form = await request.form()
        if form.get("action") == "language":  # the language form; the other makes a token
            language = str(form.get("language", ""))
            if language and language not in request.app.state.templates.languages:
                raise Invalid(N_("this node has no such language"), field="language")
            await node.set_language(request.state.user, language or None)
            return redirect("/account#language")
        label = str(form.get("label", "")).strip()[:80]
        token = await node.new_api_token(request.state.user, label)
    return render(request, "account.html",
                  {"token": token, **await account_context(node, request.state.user)})  # fmt: skip


# ---------------------------------------------------------------------------- admin


async def members(request: Request) -> Response:
    node = request.app.state.node
    return render(request, "admin/members.html", {"members": await node.store.list_users(), "roles": ROLES})


async def change_member(request: Request) -> Response:
    node = request.app.state.node
    member_id = path_number(request, "user_id", N_("no such member"))
    form = await request.form()
    role = str(form["role"]) if form.get("role") else None
    disabled = {"disable": True, "enable": False}.get(str(form.get("action", "")))
    await node.change_member(request.state.user, member_id, role=role, disabled=disabled)
    return redirect("/admin/members")


async def invites(request: Request) -> Response:
    node = request.app.state.node
    user = request.state.user
    link = None
    if request.method == "POST":
        form = await request.form()
        role = str(form.get("role", "member"))
        link = node.invite_url(await node.new_invite(role, user))
    return render(request, "admin/invites.html", {
        "invites": await node.store.list_invites(), "link": link,
        "roles": [r for r in ROLES if has_role(user, r)],
    })  # fmt: skip


async def revoke_invite(request: Request) -> Response:
    node = request.app.state.node
    invite_id = path_number(request, "invite_id", N_("no such invitation"))
    async with node.store.write() as db:
        if not await node.store.revoke_invite(db, invite_id):
            raise NotFound(N_("no such open invitation"))
        await node.store.audit(db, now=node.now_text(), actor=request.state.user,
                               action="invite.revoke", target=str(invite_id))  # fmt: skip
    return redirect("/admin/invites")


async def audit_log(request: Request) -> Response:
    return render(request, "admin/audit.html",
                  {"entries": await request.app.state.node.store.audit_entries()})  # fmt: skip


# ---------------------------------------------------------------------------- admin: peers

# What each button on a peer does, as arguments to `Allies.set_peer` ("resync" is separate).
PEER_ACTIONS: dict[str, dict] = {
    "trust": {"trust": "trusted"}, "untrust": {"trust": "unknown"}, "block": {"trust": "blocked"},
    "relay_on": {"relay": True}, "relay_off": {"relay": False},
    "follow": {"follow": True}, "unfollow": {"follow": False},
}  # fmt: skip
PEER_REFUSALS_SHOWN = 5


@dataclass(frozen=True)
class PeerView:
    """A peer as the admin page shows it: its row, its pinned key, what it sent that we refused."""

    peer: Peer
    fingerprint: str | None
    refusals: list

    @property
    def lag(self) -> int:
        """Entries of its feed we know of but have not taken in."""
        return max(self.peer.head_seq, self.peer.received_seq) - self.peer.received_seq


async def _peers_page(request: Request, *, values: dict | None = None,
                      errors: dict | None = None, status_code: int = 200) -> Response:  # fmt: skip
    node = request.app.state.node
    prints = await node.allies.fingerprints()
    views = [PeerView(peer, prints.get(peer.id), await node.store.refusals(peer.id, PEER_REFUSALS_SHOWN))
             for peer in await node.store.peers()]  # fmt: skip
    # After adding, the notice names the peer and its fingerprint, read from the store (the
    # query only says which peer), so it shows what was pinned, whatever the link says.
    raw = request.query_params.get("added", "")
    added = next((v for v in views if raw.isascii() and raw.isdigit() and v.peer.id == int(raw)), None)
    return render(request, "admin/peers.html", {
        "peers": views, "added": added, "added_known": request.query_params.get("known") == "1",
        "waiting": [v for v in views if v.peer.they_follow == "pending" and v.peer.trust != "blocked"],
        "values": values or {}, "errors": errors or {},
        "our_head": await node.store.feed_head_seq(),
    }, status_code=status_code)  # fmt: skip


async def peers(request: Request) -> Response:
    node = request.app.state.node
    if request.method == "GET":
        return await _peers_page(request)
    form = await request.form()
    url = str(form.get("url", ""))[:2048]
    try:
        peer, created = await node.allies.add_peer(url, request.state.user)
    except (Invalid, BadGateway) as error:  # a bad address, or a node that cannot be read
        return await _peers_page(request, values={"url": url},
                                 errors={"url": translate(request, error)},
                                 status_code=error.status)  # fmt: skip
    query = {"added": peer.id, **({} if created else {"known": 1})}
    return redirect(f"/admin/peers?{urlencode(query)}#peer-{peer.id}")


async def change_peer(request: Request) -> Response:
    node = request.app.state.node
    peer_id = path_number(request, "peer_id", N_("no such peer"))
    form = await request.form()
    action = str(form.get("action", ""))
    if action == "resync":
        peer = await node.allies.resync(peer_id, request.state.user)
    elif action in PEER_ACTIONS:
        peer = await node.allies.set_peer(peer_id, request.state.user, **PEER_ACTIONS[action])
    else:
        raise ClientError(N_("unknown action on a peer"))
    return redirect(f"/admin/peers#peer-{peer.id}")


routes = [
    page("/", home, "anyone"),
    page("/login", login, "anyone", methods=("GET", "POST")),
    page("/logout", logout, "member", methods=("POST",)),
    page("/join/{code}", join, "anyone", methods=("GET", "POST")),
    page("/items", browse, "visitor_if_public"),
    page("/items/new", new_item, "member", methods=("GET", "POST")),
    page("/items/{uuid}", show_item, "visitor_if_public"),
    page("/items/{uuid}/edit", edit_item, "member", methods=("GET", "POST")),
    page("/items/{uuid}/status", change_status, "member", methods=("POST",)),
    page("/my/items", my_items, "member"),
    page("/account", account, "member", methods=("GET", "POST")),
    page("/coordinate", coordinate_queue, "coordinator"),
    page("/admin/members", members, "admin"),
    page("/admin/members/{user_id}", change_member, "admin", methods=("POST",)),
    page("/admin/invites", invites, "admin", methods=("GET", "POST")),
    page("/admin/invites/{invite_id}/revoke", revoke_invite, "admin", methods=("POST",)),
    page("/admin/audit", audit_log, "admin"),
    page("/admin/peers", peers, "admin", methods=("GET", "POST")),
    page("/admin/peers/{peer_id}", change_peer, "admin", methods=("POST",)),
]

"""Pages that keep an account safe: changing the password, and API tokens listed and revoked.

- `POST /account/password`: the current password and the new one twice. A change ends every
  session of the member and re-issues the one in use (a new cookie), so whoever else held a
  session is out; wrong current passwords count against the login rate limit
  (`Node.change_password`), so a borrowed session cannot guess the password.
- `POST /account/tokens/revoke`: a member revokes one of their API tokens (listed on
  `/account` with label, created and last used; the secret itself was shown once and is
  not kept). A revoked token gets 401 on its next request.
- `GET /admin/members/{user_id}/tokens` and `POST …/revoke`: an admin sees and revokes a
  member's tokens (audited), for a lost phone or a leaked script.

Errors re-render the account page with the message beside its field; password fields are
never filled back in.
"""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from federation.items import N_

from .errors import Invalid, NotFound, TooManyRequests
from .notifications import account_context
from .routing import client_address, page, path_number, session_cookie_name

PASSWORD_FIELD_MAX = 1024


def _render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    return request.app.state.templates.render(request, name, context, status_code)


def _translate(request: Request, error: Invalid | TooManyRequests) -> str:
    return error.translated(request.app.state.templates.gettext(request))


def _token_id(form) -> int:
    raw = str(form.get("token_id", ""))
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(N_("no such API token"))
    return int(raw)


async def change_password_page(request: Request) -> Response:
    node = request.app.state.node
    user = request.state.user
    form = await request.form()
    current = str(form.get("current_password", ""))[:PASSWORD_FIELD_MAX]
    new = str(form.get("new_password", ""))[:PASSWORD_FIELD_MAX]
    errors: dict[str, str] = {}
    headers: dict[str, str] = {}
    status = 422
    if new != str(form.get("new_password_again", ""))[:PASSWORD_FIELD_MAX]:
        errors["new_password_again"] = _translate(request, Invalid(N_("the two passwords differ")))
    else:
        try:
            token = await node.change_password(user, current, new, client_address(request))
        except TooManyRequests as error:
            errors["current_password"] = _translate(request, error)
            headers, status = error.headers(), error.status
        except Invalid as error:
            errors[error.field or "new_password"] = _translate(request, error)
        else:
            response = RedirectResponse(
                "/account?password=changed#password-section", status_code=303
            )
            response.set_cookie(
                session_cookie_name(request), token, max_age=node.config.session_days * 86400,
                httponly=True, samesite="lax", secure=node.config.secure_cookies, path="/",
            )  # fmt: skip
            return response
    response = _render(request, "account.html", {
        **await account_context(node, user), "token": None, "password_errors": errors,
    }, status_code=status)  # fmt: skip
    response.headers.update(headers)
    return response


async def revoke_own_token(request: Request) -> Response:
    node = request.app.state.node
    user = request.state.user
    await node.revoke_api_token(user, user.id, _token_id(await request.form()))
    return RedirectResponse("/account#tokens", status_code=303)


def _member_id(request: Request) -> int:
    return path_number(request, "user_id", N_("no such member"))


async def member_tokens(request: Request) -> Response:
    node = request.app.state.node
    member = await node.store.user_by_id(_member_id(request))
    if member is None:
        raise NotFound(N_("no such member"))
    return _render(request, "admin/tokens.html",
                   {"member": member, "tokens": await node.api_tokens(member.id)})  # fmt: skip


async def revoke_member_token(request: Request) -> Response:
    node = request.app.state.node
    member_id = _member_id(request)
    await node.revoke_api_token(request.state.user, member_id, _token_id(await request.form()))
    return RedirectResponse(f"/admin/members/{member_id}/tokens", status_code=303)


routes = [
    page("/account/password", change_password_page, "member", methods=("POST",),
         name="account_password"),
    page("/account/tokens/revoke", revoke_own_token, "member", methods=("POST",)),
    page("/admin/members/{user_id}/tokens", member_tokens, "admin"),
    page("/admin/members/{user_id}/tokens/revoke", revoke_member_token, "admin",
         methods=("POST",)),
]  # fmt: skip

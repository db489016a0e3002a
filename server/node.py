"""One node's state and the work it does: accounts, sessions, invites, items.

The web pages, the JSON API and the CLI all call into a `Node`, so the rules (who may do what,
what a change does) live in one place and every surface behaves the same. A `Node` owns its
store, its signing key, its clock and its rate limiters; nothing here is global.
"""

import asyncio
import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from federation import items as item_rules
from federation.errors import BaseUrlError, ValidationError
from federation.identity import node_document, parse_base_url
from federation.items import N_
from federation.keys import generate_key, parse_public_key, save_key
from federation.timefmt import Clock, format_time, parse_time, system_clock

from . import __version__
from .accounts import (
    PASSWORD_PARAMS,
    Passwords,
    RateLimiter,
    check_new_password,
    new_secret,
    per_worker,
    secret_hash,
)
from .allies import Allies
from .config import (
    CONFIG_FILE,
    DATABASE_FILE,
    KEYS_DIR,
    Config,
    ConfigError,
    load_config,
    write_config_file,
)  # fmt: skip
from .errors import Conflict, Forbidden, Invalid, NotFound, TooManyRequests, Unauthorized
from .feed import HOLD_KEY, ChainProblem, Feed, check_feed, node_keys
from .metrics import Metrics
from .store import ItemQuery, ItemRow, Session, Store, User
from .workers import SharedWake

log = logging.getLogger("aidnode")
# Requests a minute to /federation/…: enough for a busy ally pushing each entry as it is
# made and pulling pages, far below what would crowd out members' requests.
FEDERATION_PER_ADDRESS_PER_MINUTE = 1200
FEDERATION_PER_NODE_PER_MINUTE = 600

ROLES = ("member", "coordinator", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{1,31}")
INVITE_DAYS = 7
FIRST_ADMIN_INVITE_DAYS = 1
LOGIN_FAILURES_PER_ACCOUNT = 5
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW_SECONDS = 15 * 60
TOKEN_USE_NOTED_EVERY = 60  # seconds: an API token's `last_used` is this fine


class NodeExists(Exception):
    """`init` was asked to overwrite a node."""


def has_role(user: User | None, role: str) -> bool:
    return user is not None and ROLE_RANK[user.role] >= ROLE_RANK[role]


def cookie_suffix(base_url: str) -> str:
    """First 8 hex of sha256(base_url): cookies ignore ports, so nodes on one host differ."""
    return hashlib.sha256(base_url.encode()).hexdigest()[:8]


def init_node(
    data_dir: Path, *, name: str, base_url: str, host: str | None = None,
    port: int | None = None, environ: dict | None = None, settings: dict | None = None,
) -> Config:
    """Create a node's data directory: settings, signing key (0600) and database.
    `settings`: more values for its `aidnode.toml` (checked as any setting is, when loaded).

    Refuses to touch a directory that already holds a node. The database is created and
    migrated by `Node.start`, which also records the base_url the node's item ids embed.
    """
    data_dir = Path(data_dir)
    if any((data_dir / name).exists() for name in (CONFIG_FILE, DATABASE_FILE, KEYS_DIR)):
        raise NodeExists(f"{data_dir} already holds a node; refusing to overwrite it")
    if not name or not name.strip():
        raise ConfigError("--name must not be empty")
    values: dict = {**(settings or {}), "name": name.strip(), "base_url": base_url}
    if host is not None:
        values["host"] = host
    env = os.environ if environ is None else environ
    allow_private = (env.get("AIDNODE_ALLOW_PRIVATE_ADDRESSES", "").lower() in ("1", "true")
                     or values.get("allow_private_addresses") is True)  # fmt: skip
    try:
        parse_base_url(base_url, allow_private_addresses=allow_private)
    except BaseUrlError as error:
        raise ConfigError(f"--url: {error}") from None
    if port is None and urlsplit(base_url).port is not None:
        port = urlsplit(base_url).port  # listen where the URL points, unless told otherwise
    if port is not None:
        values["port"] = port
    created_dir = not data_dir.exists()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (data_dir / KEYS_DIR).mkdir(mode=0o700)
        save_key(generate_key("main"), data_dir / KEYS_DIR / "main.pem")
        write_config_file(data_dir, values)
        return load_config(data_dir, environ=env)
    except BaseException:
        # Leave nothing half-made behind.
        shutil.rmtree(data_dir / KEYS_DIR, ignore_errors=True)
        (data_dir / CONFIG_FILE).unlink(missing_ok=True)
        if created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise


def _escalates(row: ItemRow, now: datetime, delay: int) -> bool:
    """Whether a local need is due to ask allies now (read again inside the write)."""
    state = row.state
    return (row.is_local and state["kind"] == "need" and state["status"] == "open"
            and state["reach"] == "local" and (row.escalation or "after_delay") == "after_delay"
            and parse_time(state["created"]) + timedelta(seconds=delay) <= now
            and state["expires"] > format_time(now))  # fmt: skip


@dataclass
class ItemView:
    """An item as one viewer may see it, with what they may do to it."""

    row: ItemRow
    origin_name: str
    can_edit: bool
    via_names: tuple[str, ...] = ()  # the relaying groups' names, for a relayed copy
    age_seconds: int = 0  # since it was posted, when the view was made

    @property
    def state(self) -> dict:
        return self.row.state

    @property
    def uuid(self) -> str:
        return item_rules.uuid_of(self.row.state["id"])

    def next_statuses(self) -> tuple[str, ...]:
        return item_rules.TRANSITIONS.get(self.row.state["status"], ()) if self.can_edit else ()

    def to_json(self) -> dict:
        out = item_rules.ordered(self.row.state)
        out["origin"] = self.row.origin
        out["origin_name"] = self.origin_name
        if self.row.via:
            out["via"] = list(self.row.via)
        if self.can_edit:
            if self.row.state["kind"] == "need":
                out["escalation"] = self.row.escalation or "after_delay"
            out["share_author"] = self.row.share_author
        return out


class Node:
    """A running node. `await node.start()` before use, `await node.close()` after."""

    def __init__(self, config: Config, *, clock: Clock = system_clock) -> None:
        self.config = config
        self.clock = clock
        self.store: Store | None = None
        self.feed: Feed | None = None
        self.passwords = Passwords()
        # Limits count in memory, per process: with several workers each takes its share.
        workers = config.workers
        self.login_by_account = RateLimiter(per_worker(LOGIN_FAILURES_PER_ACCOUNT, workers),
                                            LOGIN_WINDOW_SECONDS)  # fmt: skip
        self.login_by_address = RateLimiter(per_worker(LOGIN_FAILURES_PER_ADDRESS, workers),
                                            LOGIN_WINDOW_SECONDS)  # fmt: skip
        # Federation endpoints, per client address and per signing node (server/routing.py).
        self.federation_by_address = RateLimiter(per_worker(FEDERATION_PER_ADDRESS_PER_MINUTE, workers), 60)
        self.federation_by_node = RateLimiter(per_worker(FEDERATION_PER_NODE_PER_MINUTE, workers), 60)
        # The background workers' wake-up events by name (server/workers.py SharedWake).
        self.wakes: dict[str, SharedWake] = {}
        self.cookie_suffix = cookie_suffix(config.base_url)
        self.allies: Allies | None = None
        self.peer_names: dict[str, str] = {}  # base URL → the group's name, for views
        self.stopping = asyncio.Event()  # set at shutdown: workers finish their round and stop
        self.stopping_hooks: list[asyncio.Event] = []  # more events set at shutdown
        self.metrics = Metrics()  # its own registry: /metrics (server/metrics.py)

    # ------------------------------------------------------------------------ life

    def wake_event(self, name: str) -> SharedWake:
        """The event that wakes the background worker `name`, made once."""
        if name not in self.wakes:
            self.wakes[name] = SharedWake(name)
        return self.wakes[name]

    async def start(self) -> None:
        self.store = await Store.open(self.config.database_path)
        stored = await self.store.get_meta("base_url")
        if stored is None:
            await self.store.set_meta("base_url", self.config.base_url)
        elif stored != self.config.base_url:
            await self.close()
            raise ConfigError(
                f"base_url is {self.config.base_url} but this node was created as {stored}; "
                "item ids embed it, so it cannot change (unset AIDNODE_BASE_URL)"
            )
        self.feed = Feed(self.config.base_url, self.config.keys_dir)
        self.feed.hold = await self.store.get_meta(HOLD_KEY)
        self.store.feed = self.feed
        async with self.store.write() as db:
            await self.feed.ensure_first_key(db)
        await self.read_peer_names()
        self.allies = Allies(self)

    async def read_peer_names(self) -> None:
        """The groups' names by base URL, as stored (another worker process may add a peer)."""
        self.peer_names = {peer.url: peer.name for peer in await self.store.peers()}

    async def close(self) -> None:
        if self.allies is not None:
            await self.allies.close()
            self.allies = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    def now(self) -> datetime:
        return self.clock()

    def now_text(self) -> str:
        return format_time(self.clock())

    async def node_document(self) -> dict:
        async with self.store.read() as db:
            keys = await node_keys(db)
        return node_document(
            base_url=self.config.base_url, name=self.config.name,
            description=self.config.description, version=__version__,
            keys=[(name, parse_public_key(public), retired) for name, public, _, retired in keys],
        )  # fmt: skip

    async def rotate_key(self) -> dict:
        """Hand the feed over to a new signing key (a `key` entry signed by the old one)."""
        async with self.store.write() as db:
            _, entry = await self.feed.rotate_key(db, at=self.now_text())
        self.allies.wake_delivery()
        return entry

    async def check(self) -> dict:
        """Verify the database, the whole chain and every federated item against its entry.

        All in one read transaction: the node may be serving, and a change committed between
        reading the feed and reading the items would look like an item without its entry."""
        async with self.store.read() as db:
            await db.execute("BEGIN")
            try:
                async with db.execute("PRAGMA integrity_check") as cursor:
                    (result,) = await cursor.fetchone()
                if result != "ok":
                    raise ChainProblem(f"the database is damaged: {result}")
                return await check_feed(db, self.config.base_url)
            finally:
                await db.execute("COMMIT")

    # ------------------------------------------------------------------------ accounts

    async def create_user(
        self, *, username: str, display_name: str, password: str, role: str,
        invite_code: str | None = None,
    ) -> User:
        """Create a member, spending an invite when one is given (both or neither happen)."""
        username = (username or "").strip().lower()
        if not USERNAME_RE.fullmatch(username):
            raise Invalid(
                N_("a username is 2–32 lowercase letters, digits, dots, dashes or underscores"),
                field="username",
            )
        try:
            display_name = item_rules.clean_text(
                "display_name", display_name or username, max_len=item_rules.AUTHOR_MAX
            )
        except ValidationError as error:
            raise Invalid(error.message, field="display_name", params=error.params) from None
        problem = check_new_password(password)
        if problem:
            raise Invalid(problem, field="password", params=PASSWORD_PARAMS)
        if role not in ROLES:
            raise Invalid(N_("unknown role"), field="role")
        password_hash = await self.passwords.hash(password)
        now = self.now_text()
        async with self.store.write() as db:
            if await self.store.username_taken(db, username):
                raise Conflict(N_("that username is taken"), field="username")
            user_id = await self.store.add_user(
                db, username=username, display_name=display_name,
                password_hash=password_hash, role=role, now=now,
            )  # fmt: skip
            if invite_code is not None:
                invite_role = await self.store.use_invite(db, secret_hash(invite_code), user_id, now)
                if invite_role is None:
                    raise NotFound(N_("this invitation is not valid (used, revoked or expired)"))
                await self.store.set_user_role(db, user_id, invite_role)
                role = invite_role
            await self.store.audit(db, now=now, actor=None, action="user.create",
                                   target=username, detail=role)  # fmt: skip
        return await self.store.user_by_id(user_id)

    async def login(self, username: str, password: str, client: str) -> tuple[str, User]:
        """Check a password; return a new session cookie value and the user.

        Failures are counted per account and per client address; past the limit the answer
        is 429 whether or not the password is right, so guessing cannot continue. The same
        message answers an unknown user and a wrong password.
        """
        account_key = (username or "").strip().lower()
        wait = max(self.login_by_account.retry_after(account_key),
                   self.login_by_address.retry_after(client))  # fmt: skip
        if wait > 0:
            raise TooManyRequests(N_("too many failed logins: try again later"), retry_after=wait)
        user = await self.store.user_by_username(account_key)
        stored = await self.store.password_hash(user.id) if user else None
        ok = await self.passwords.verify(password or "", stored)
        if not ok or user is None or user.disabled:
            self.login_by_account.hit(account_key)
            self.login_by_address.hit(client)
            raise Unauthorized(N_("wrong username or password"))
        self.login_by_account.reset(account_key)
        return await self.new_session(user), user

    async def new_session(self, user: User) -> str:
        token = new_secret()
        now = self.now()
        await self.store.add_session(
            token_hash=secret_hash(token), user_id=user.id, csrf_token=new_secret(),
            now=format_time(now), expires=format_time(now + timedelta(days=self.config.session_days)),
        )  # fmt: skip
        return token

    async def session(self, token: str) -> Session | None:
        return await self.store.session(secret_hash(token), self.now_text())

    async def logout(self, token: str) -> None:
        await self.store.delete_session(secret_hash(token))

    async def delete_expired_sessions(self) -> int:
        """Forget sessions past their time (the expiry worker, server/app.py)."""
        return await self.store.delete_expired_sessions(self.now_text())

    async def change_password(self, user: User, current: str, new: str, client: str) -> str:
        """Set a member's new password, given their current one; return a new session cookie
        value. Every session of the member ends, on every device, and the one in use is
        re-issued: a session someone else holds dies with the old password.

        A wrong current password counts as a failed login does (per account and per client
        address, the same budget as `login`): past the limit the answer is 429 whether or not
        it is right, so a borrowed session cannot be used to guess the password.
        """
        wait = max(self.login_by_account.retry_after(user.username),
                   self.login_by_address.retry_after(client))  # fmt: skip
        if wait > 0:
            raise TooManyRequests(N_("too many wrong passwords: try again later"), retry_after=wait)
        if not await self.passwords.verify(current or "", await self.store.password_hash(user.id)):
            self.login_by_account.hit(user.username)
            self.login_by_address.hit(client)
            raise Invalid(N_("this is not your current password"), field="current_password")
        problem = check_new_password(new)
        if problem:
            raise Invalid(problem, field="new_password", params=PASSWORD_PARAMS)
        password_hash = await self.passwords.hash(new)
        token = new_secret()
        now = self.now()
        async with self.store.write() as db:
            await self.store.set_password_hash(db, user.id, password_hash)
            await self.store.insert_session(
                db, token_hash=secret_hash(token), user_id=user.id, csrf_token=new_secret(),
                now=format_time(now),
                expires=format_time(now + timedelta(days=self.config.session_days)),
            )  # fmt: skip
            await self.store.audit(db, now=format_time(now), actor=user, action="user.password",
                                   target=user.username)  # fmt: skip
        return token

    async def new_api_token(self, user: User, label: str = "") -> str:
        token = new_secret()
        await self.store.add_api_token(
            token_hash=secret_hash(token), user_id=user.id, label=label, now=self.now_text()
        )
        return token

    async def user_for_api_token(self, token: str) -> User | None:
        """The member a live token acts for, or None; notes when it was used (to the minute,
        so a busy program does not write on every request)."""
        found = await self.store.api_token_in_use(secret_hash(token))
        if found is None:
            return None
        user, token_id, last_used = found
        now = self.now()
        if last_used is None or last_used < format_time(now - timedelta(seconds=TOKEN_USE_NOTED_EVERY)):
            await self.store.touch_api_token(token_id, format_time(now))
        return user

    async def api_tokens(self, owner_id: int) -> list:
        """A member's live API tokens: id, label, created, last_used."""
        return await self.store.api_tokens_of(owner_id)

    async def revoke_api_token(self, actor: User, owner_id: int, token_id: int) -> None:
        """A member revokes one of their own tokens, or an admin one of anyone's (audited).
        A token that is not the owner's, or no longer live, is NotFound either way."""
        if actor.id != owner_id and not has_role(actor, "admin"):
            raise Forbidden(N_("only its owner or an admin may revoke an API token"))
        owner = await self.store.user_by_id(owner_id)
        if owner is None:
            raise NotFound(N_("no such member"))
        async with self.store.write() as db:
            if not await self.store.revoke_api_token(db, token_id, owner_id):
                raise NotFound(N_("no such API token"))
            await self.store.audit(db, now=self.now_text(), actor=actor, action="token.revoke",
                                   target=owner.username, detail=str(token_id))  # fmt: skip

    async def new_invite(
        self, role: str, by: User | None, *, days: int = INVITE_DAYS
    ) -> str:
        """Make a one-time invite code. `by` None means the node itself (CLI, first admin)."""
        if role not in ROLES:
            raise Invalid(N_("unknown role"), field="role")
        if by is not None and ROLE_RANK[role] > ROLE_RANK[by.role]:
            raise Forbidden(N_("you cannot invite someone to a higher role than your own"))
        code = new_secret()
        now = self.now()
        await self.store.add_invite(
            code_hash=secret_hash(code), role=role, created_by=by.id if by else None,
            now=format_time(now), expires=format_time(now + timedelta(days=days)),
        )  # fmt: skip
        if by is not None:
            async with self.store.write() as db:
                await self.store.audit(db, now=format_time(now), actor=by,
                                       action="invite.create", target=role)  # fmt: skip
        return code

    async def first_admin_invite(self) -> str | None:
        """With no admin yet, a fresh one-time admin invite (earlier unused ones are revoked)."""
        if await self.store.count_admins() > 0:
            return None
        async with self.store.write() as db:
            await self.store.revoke_unused_invites(db, "admin")
        return await self.new_invite("admin", None, days=FIRST_ADMIN_INVITE_DAYS)

    async def invite_role(self, code: str) -> str | None:
        row = await self.store.open_invite(secret_hash(code), self.now_text())
        return None if row is None else row["role"]

    def invite_url(self, code: str) -> str:
        return f"{self.config.base_url}/join/{code}"

    async def change_member(
        self, actor: User, user_id: int, *, role: str | None = None, disabled: bool | None = None
    ) -> User:
        """An admin changes a member's role or disables them; the last admin cannot be removed."""
        target = await self.store.user_by_id(user_id)
        if target is None:
            raise NotFound(N_("no such member"))
        if role is not None and role not in ROLES:
            raise Invalid(N_("unknown role"), field="role")
        now = self.now_text()
        async with self.store.write() as db:
            losing_admin = target.role == "admin" and not target.disabled and (
                (role is not None and role != "admin") or disabled
            )
            if losing_admin and await self.store.count_admins() <= 1:
                raise Conflict(N_("the node must keep at least one admin"))
            if role is not None and role != target.role:
                await self.store.set_user_role(db, user_id, role)
                await self.store.audit(db, now=now, actor=actor, action="user.role",
                                       target=target.username, detail=role)  # fmt: skip
            if disabled is not None and disabled != target.disabled:
                await self.store.set_user_disabled(db, user_id, disabled)
                await self.store.audit(db, now=now, actor=actor,
                                       action="user.disable" if disabled else "user.enable",
                                       target=target.username)  # fmt: skip
        return await self.store.user_by_id(user_id)

    async def set_language(self, user: User, language: str | None) -> None:
        """A member's language for pages (one with a catalog, checked by the page); None: the
        browser's Accept-Language decides."""
        async with self.store.write() as db:
            await self.store.set_user_language(db, user.id, language or None)

    # ------------------------------------------------------------------------ items

    def _author_for(self, display_name: str, share_author: bool):
        def author(reach: str) -> str:
            if reach == "network" and not share_author:
                return self.config.name[: item_rules.AUTHOR_MAX].strip()
            return display_name

        return author

    def view(self, row: ItemRow, viewer: User | None, now: datetime | None = None) -> ItemView:
        """What `viewer` sees of `row`; `now`, when a caller makes many views at once."""
        can_edit = row.is_local and viewer is not None and (
            row.owner_id == viewer.id or has_role(viewer, "coordinator")
        )
        origin_name = self.config.name if row.is_local else self.peer_names.get(row.origin, row.origin)
        via_names = tuple(self.peer_names.get(url, url) for url in row.via or ())
        # `created` as stored, which this node wrote from a state it checked: the standard
        # library reads it (a fifteenth of parse_time's cost, thirty times a page).
        posted = datetime.fromisoformat(row.created)
        age = max(0, int(((now or self.now()) - posted).total_seconds()))
        return ItemView(row=row, origin_name=origin_name, can_edit=can_edit, via_names=via_names,
                        age_seconds=age)  # fmt: skip

    def local_id(self, item_uuid: str) -> str:
        return f"{self.config.base_url}/items/{item_uuid}"

    def _warn_of_contact(self, state: dict, escalation: str | None, contact_ok: bool) -> None:
        """Invalid (field `contact_ok`) if an item about to be seen by other groups looks like
        it holds contact details and the poster has not said that is meant (DESIGN §3)."""
        if (not contact_ok and item_rules.may_leave_the_group(state, escalation)
                and item_rules.looks_like_contact(state)):  # fmt: skip
            raise Invalid(N_("This looks like it holds a phone number or an email address, and "
                             "other groups will see it. Contact details are safer in a response, "
                             "which goes to one group only. Remove them, or confirm to post it "
                             "as it is."), field="contact_ok")  # fmt: skip

    async def post_item(self, user: User, data: object, *, contact_ok: bool = True) -> ItemView:
        """Post a member's new item. `contact_ok` False: refuse (Invalid, field `contact_ok`)
        one that looks like it holds contact details and may leave the group."""
        try:
            inp = item_rules.parse_item_input(data, partial=False)
            share_author = bool(inp.share_author)
            state = item_rules.create_state(
                inp, origin=self.config.base_url, now=self.now(),
                author=self._author_for(user.display_name, share_author),
            )  # fmt: skip
        except ValidationError as error:
            raise Invalid(error.message, field=error.field, params=error.params) from None
        escalation = (inp.escalation or "after_delay") if state["kind"] == "need" else None
        self._warn_of_contact(state, escalation, contact_ok)
        async with self.store.write() as db:
            row_number = await self.store.write_item(
                db, state, origin=self.config.base_url, is_local=True, owner_id=user.id,
                escalation=escalation, share_author=share_author, now=self.now_text(),
                held_version=None,
            )  # fmt: skip
        row = ItemRow(state=state, origin=self.config.base_url, is_local=True, owner_id=user.id,
                      escalation=escalation, share_author=share_author, row=row_number)  # fmt: skip
        self.allies.wake_delivery()
        return self.view(row, user)

    async def change_item(self, user: User, item_uuid: str, data: object, *,
                          contact_ok: bool = True) -> ItemView:  # fmt: skip
        """Apply a member's change to a local item, reading and writing in one transaction
        (`contact_ok` as for `post_item`).

        Who may change it is checked before what they sent, so a refusal reveals nothing.
        """
        async with self.store.write() as db:
            row = await self.store.item_in(db, self.local_id(item_uuid))
            if row is None:
                remote = await self.store.item_by_uuid(item_uuid)
                if remote is not None:
                    raise Forbidden(N_("items from other groups can only be changed at their origin"))
                raise NotFound(N_("no such item"))
            if not self.view(row, user).can_edit:
                raise Forbidden(N_("only the poster or a coordinator may change this item"))
            try:
                inp = item_rules.parse_item_input(data, partial=True)
            except ValidationError as error:
                raise Invalid(error.message, field=error.field, params=error.params) from None
            owner = await self.store.user_by_id(row.owner_id) if row.owner_id else None
            share_author = row.share_author if inp.share_author is None else inp.share_author
            try:
                state = item_rules.change_state(
                    row.state, inp, now=self.now(),
                    author=self._author_for(owner.display_name if owner else
                                            row.state["author"], share_author),
                )  # fmt: skip
            except ValidationError as error:
                raise Invalid(error.message, field=error.field, params=error.params) from None
            escalation = row.escalation
            if inp.escalation is not None:
                escalation = inp.escalation
            if state is None and escalation == row.escalation and share_author == row.share_author:
                return self.view(row, user)
            self._warn_of_contact(state or row.state, escalation, contact_ok)
            await self.store.write_item(
                db, state or row.state, origin=self.config.base_url, is_local=True,
                owner_id=row.owner_id, escalation=escalation, share_author=share_author,
                now=self.now_text(), held_version=row.state["version"],
            )  # fmt: skip
            if row.owner_id != user.id:
                await self.store.audit(
                    db, now=self.now_text(), actor=user, action="item.moderate",
                    target=row.state["id"],
                    detail=", ".join(sorted(set(inp.fields) | ({"escalation"} if inp.escalation else set()))),
                )  # fmt: skip
            row = await self.store.item_in(db, row.state["id"])
        self.allies.wake_delivery()
        return self.view(row, user)

    async def expire_due_items(self) -> int:
        """Mark local items whose time ran out as expired: a real change, version +1; drop
        remote items whose time ran out. (Local items wait while the feed is on hold.)"""
        now = self.now()
        if self.feed.hold is not None:
            await self.store.drop_expired_remote_items(format_time(now))
            return 0
        expired = 0
        for item_id in await self.store.due_for_expiry(format_time(now)):
            async with self.store.write() as db:
                row = await self.store.item_in(db, item_id)
                if row is None or row.state["status"] not in item_rules.LIVE_STATUSES:
                    continue
                if row.state["expires"] > format_time(now):
                    continue
                state = item_rules.expire_state(row.state, now)
                await self.store.write_item(
                    db, state, origin=row.origin, is_local=True, owner_id=row.owner_id,
                    escalation=row.escalation, share_author=row.share_author,
                    now=format_time(now), held_version=row.state["version"],
                )  # fmt: skip
                expired += 1
        # Remote items are kept only while live: one past its time leaves the store (its
        # origin's expiry entry, when it comes, finds nothing to change).
        await self.store.drop_expired_remote_items(format_time(now))
        if expired:
            self.allies.wake_delivery()
        return expired

    def escalation_delay(self, state: dict) -> int:
        """Seconds after `created` that an unmet need asks allies (DESIGN §6)."""
        if state.get("urgency") == "urgent":
            return self.config.escalate_after_urgent
        return self.config.escalate_after

    # ------------------------------------------------------------------------ after a restore

    async def verify_restored_feed(self) -> str | None:
        """A restored node's feed is on hold (server/backup.py) until every node that follows
        it holds no more of its feed than it does. Ask them now: lift the hold and return None
        if none is ahead, else keep it and return (and record) why."""
        async with self.store.read() as db:
            if await self.feed.held(db) is None:
                return None
            head = await Feed.head(db)
            hashes = dict(await db.execute_fetchall("SELECT seq, hash FROM feed"))
        problems = []
        for peer in await self.store.peers():
            if peer.trust != "trusted" or (peer.they_follow != "accepted" and not peer.delivered_seq):
                continue
            held = await self.allies.cursor_at(peer)
            if held is None:
                problems.append(f"{peer.url} could not be asked what it holds of our feed")
            elif held[0] > head.seq:
                problems.append(f"{peer.url} holds entry {held[0]} of our feed, and this node's "
                                f"feed ends at entry {head.seq}")  # fmt: skip
            elif held[0] and hashes.get(held[0]) != held[1]:
                problems.append(f"{peer.url} holds an entry {held[0]} that differs from ours")
        if problems:
            reason = "; ".join(problems)[:1000]
            async with self.store.write() as db:  # still held, unless an admin released it
                await db.execute("UPDATE node_meta SET value = ? WHERE key = ?", (reason, HOLD_KEY))
                return await self.feed.held(db)
        await self.release_feed_hold(None, reason="every node that follows this one is at or behind its feed")
        return None

    async def release_feed_hold(self, actor: User | None, *, reason: str) -> None:
        """Lift the hold: the feed may be appended to again (audited)."""
        async with self.store.write() as db:
            await db.execute("DELETE FROM node_meta WHERE key = ?", (HOLD_KEY,))
            await self.store.audit(db, now=self.now_text(), actor=actor, action="feed.resume",
                                   target=self.config.base_url, detail=reason[:500])  # fmt: skip
        self.feed.hold = None
        self.allies.wake_delivery()

    async def escalate_due_needs(self) -> int:
        """Ask allies about local needs still open once their delay has passed: reach becomes
        `allies`, a real change (version +1) whose entry carries the need to every ally. A
        need kept in the group (`escalation: never`), or promised, fulfilled or withdrawn
        before then, never leaves it. Nothing escalates while the feed is on hold."""
        if self.feed.hold is not None:
            return 0
        now = self.now()
        due = await self.store.due_for_escalation(
            urgent_before=format_time(now - timedelta(seconds=self.config.escalate_after_urgent)),
            other_before=format_time(now - timedelta(seconds=self.config.escalate_after)),
        )  # fmt: skip
        escalated = 0
        for item_id in due:
            async with self.store.write() as db:
                row = await self.store.item_in(db, item_id)
                if row is None or not _escalates(row, now, self.escalation_delay(row.state)):
                    continue
                owner = await self.store.user_by_id(row.owner_id) if row.owner_id else None
                state = item_rules.change_state(
                    row.state, item_rules.parse_item_input({"reach": "allies"}, partial=True),
                    now=now, author=self._author_for(owner.display_name if owner else
                                                     row.state["author"], row.share_author),
                )  # fmt: skip
                await self.store.write_item(
                    db, state, origin=row.origin, is_local=True, owner_id=row.owner_id,
                    escalation=row.escalation, share_author=row.share_author,
                    now=format_time(now), held_version=row.state["version"],
                )  # fmt: skip
                await self.store.audit(db, now=format_time(now), actor=None,
                                       action="item.escalate", target=item_id,
                                       detail="unmet after its delay: asked allies")  # fmt: skip
                escalated += 1
        if escalated:
            self.allies.wake_delivery()
        return escalated

    async def item_for(self, item_uuid: str, viewer: User | None) -> ItemView:
        """The item with that uuid as `viewer` may see it, or NotFound.

        Visitors see only this node's own open, federated offers (and only with public_offers
        on: allies shared theirs with members, not with the public); members
        see every item that has not ended, and the poster and coordinators also see their
        ended local items.
        """
        row = await self.store.item_by_uuid(item_uuid)
        if row is None:
            raise NotFound(N_("no such item"))
        view = self.view(row, viewer)
        state = row.state
        live = state["status"] in item_rules.LIVE_STATUSES and state["expires"] > self.now_text()
        if viewer is None:
            public = (self.config.public_offers and row.is_local and state["kind"] == "offer"
                      and state["status"] == "open" and live and state["reach"] != "local")  # fmt: skip
            if not public:
                raise NotFound(N_("no such item"))
        elif not live and not view.can_edit:
            raise NotFound(N_("no such item"))
        return view

    async def list_items(self, query: ItemQuery, viewer: User | None) -> list[ItemView]:
        now = self.now()
        return [self.view(row, viewer, now) for row in await self.store.list_items(query)]

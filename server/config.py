"""Node settings, declared once.

`SETTINGS` lists every setting with its type, default and one line of help. The TOML file in
the data directory (`aidnode.toml`) gives values; `AIDNODE_<NAME>` environment variables
override it; `load_config` checks them all. The CLI and docs/operating.md's table come from
the same list, so they cannot drift apart.
"""

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from federation.errors import BaseUrlError
from federation.identity import parse_base_url

CONFIG_FILE = "aidnode.toml"
DATABASE_FILE = "aidnode.db"
KEYS_DIR = "keys"
DEFAULT_DATA_DIR = "./aidnode-data"


class ConfigError(Exception):
    """A setting is missing or has a value the node cannot use."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    minimum: int | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("base_url", str, None, "The node's public URL, scheme://host[:port]; fixed at init."),
    Setting("name", str, None, "The group's name, shown to members and other nodes."),
    Setting("description", str, "", "One or two sentences about the group."),
    Setting("host", str, "127.0.0.1", "Address `serve` listens on."),
    Setting("port", int, 8000, "Port `serve` listens on.", minimum=1),
    Setting("workers", int, 1, "Processes `serve` answers requests with: on a busy node, one per "
            "core. Background work runs in one of them.", minimum=1),
    Setting("verify_processes", int, 2, "Processes that check the signatures of allies' entries "
            "beside the node, shared among its worker processes (0: none, checked in the node).",
            minimum=0),
    Setting("poll_interval", int, 60, "Seconds between pulls of each followed feed.", minimum=5),
    Setting("escalate_after", int, 86400, "Seconds before an unmet need asks allies.", minimum=1),
    Setting(
        "escalate_after_urgent", int, 7200, "Seconds before an unmet urgent need asks allies.",
        minimum=1,
    ),
    Setting("feed_public", bool, False, "Let anyone read the feed (publishes every federated item)."),
    Setting("public_offers", bool, False, "Show our own open offers (never allies') to visitors who are not logged in."),
    Setting(
        "allow_private_addresses", bool, False,
        "Allow peers on private and loopback addresses (tests and the demo only).",
    ),
    Setting("log_format", str, "text", "Log lines as `text` or `json`."),
    Setting("session_days", int, 30, "Days a login stays valid.", minimum=1),
    # Notification emails (server/notifications.py): none while smtp_host is empty.
    Setting("smtp_host", str, "", "SMTP server that sends notification emails; empty: no email is sent."),
    Setting("smtp_port", int, 587, "Port of the SMTP server (465: TLS from the first byte).", minimum=1),
    Setting("smtp_username", str, "", "User name for logging in to the SMTP server; empty: no login."),
    Setting(
        "smtp_password", str, "",
        "Password for the SMTP server. Set it in the environment (`AIDNODE_SMTP_PASSWORD`), not in the file.",
    ),
    Setting("smtp_from", str, "", "The From address of notification emails (needed with `smtp_host`)."),
    Setting(
        "smtp_starttls", bool, True,
        "Require STARTTLS on the SMTP connection (turn off only for a server on this machine).",
    ),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}

_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


@dataclass(frozen=True)
class Config:
    """Every setting's value, plus where the node keeps its files."""

    data_dir: Path
    base_url: str
    name: str
    description: str
    host: str
    port: int
    workers: int
    verify_processes: int
    poll_interval: int
    escalate_after: int
    escalate_after_urgent: int
    feed_public: bool
    public_offers: bool
    allow_private_addresses: bool
    log_format: str
    session_days: int
    smtp_host: str
    smtp_port: int
    smtp_username: str
    smtp_password: str = field(repr=False)  # never in a log line
    smtp_from: str
    smtp_starttls: bool

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / KEYS_DIR

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    """Turn a TOML value or an environment string into the setting's type, or say why not."""
    if setting.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{setting.name} ({source}) must be one of 1, 0, true, false")
    if setting.type is int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(f"{setting.name} ({source}) must be a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{setting.name} ({source}) must be a whole number")
        if setting.minimum is not None and value < setting.minimum:
            raise ConfigError(f"{setting.name} ({source}) must be at least {setting.minimum}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{setting.name} ({source}) must be text")
    return value


def read_file_values(data_dir: Path) -> dict[str, Any]:
    path = data_dir / CONFIG_FILE
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"no node in {data_dir}: run `aidnode init --data {data_dir}` first"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(values) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    return values


def load_config(
    data_dir: Path, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    """Read the data directory's settings, then the environment, then `overrides` (for tests)."""
    environ = os.environ if environ is None else environ
    data_dir = Path(data_dir)
    values: dict[str, Any] = {}
    for name, value in read_file_values(data_dir).items():
        values[name] = _coerce(SETTINGS_BY_NAME[name], value, CONFIG_FILE)
    for setting in SETTINGS:
        env_name = "AIDNODE_" + setting.name.upper()
        if env_name in environ:
            values[setting.name] = _coerce(setting, environ[env_name], env_name)
    for name, value in overrides.items():
        values[name] = _coerce(SETTINGS_BY_NAME[name], value, "override")
    for setting in SETTINGS:
        if values.get(setting.name) is None:
            if setting.default is None:
                raise ConfigError(f"setting {setting.name} is missing from {CONFIG_FILE}")
            values[setting.name] = setting.default
    if values["workers"] > 64:
        raise ConfigError("workers must be at most 64 (one per core is enough)")
    if values["workers"] > 1 and not sys.platform.startswith("linux"):
        raise ConfigError("workers above 1 need Linux (the workers wake each other over "
                          "Linux's abstract Unix sockets)")  # fmt: skip
    if values["log_format"] not in ("text", "json"):
        raise ConfigError("log_format must be text or json")
    if not values["name"].strip():
        raise ConfigError("name must not be empty")
    if values["smtp_host"] and "@" not in values["smtp_from"]:
        raise ConfigError("smtp_from must be an email address when smtp_host is set")
    try:
        parse_base_url(values["base_url"], allow_private_addresses=values["allow_private_addresses"])
    except BaseUrlError as error:
        raise ConfigError(f"base_url: {error}") from None
    return Config(data_dir=data_dir, **values)


def write_config_file(data_dir: Path, values: Mapping[str, Any]) -> None:
    """Write `aidnode.toml` (only the given values; everything else keeps its default)."""
    text = "# aidnode settings: see docs/operating.md. AIDNODE_<NAME> overrides any of them.\n"
    text += tomli_w.dumps(dict(values))
    (data_dir / CONFIG_FILE).write_text(text, encoding="utf-8")


def settings_table() -> str:
    """The Markdown table of settings in docs/operating.md (a test keeps the two equal)."""
    lines = ["| setting | environment | type | default | what it does |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "(required)" if s.default is None else (
            str(s.default).lower() if s.type is bool else f"`{s.default}`" if s.default != "" else '""'
        )  # fmt: skip
        lines.append(f"| `{s.name}` | `AIDNODE_{s.name.upper()}` | {s.type.__name__} | {default} | {s.help} |")
    return "\n".join(lines)

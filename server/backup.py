"""Backing a node up and restoring it, without ever forking its feed.

A backup is one `.tar.gz` holding everything a node is: its settings (`aidnode.toml`), its
signing keys (`keys/*.pem`: the backup is as secret as the keys, so it is written mode 0600),
and a consistent copy of its database made with SQLite's online backup API, which copies a
live database page by page under a read transaction, so the node may go on serving while it
runs. `BACKUP.json` says what it holds.

Restoring is where a feed can fork. Allies may hold entries the backup does not (a node backed
up at entry 100 that went on to entry 120 before its disk died): a restored node that simply
appended would write a new entry 101, contradicting the 101 its allies hold, and they would
stop reading it (DESIGN §4.2). So a restored node starts with its feed **on hold**: nothing is
appended (posts and changes answer 503 with the reason, relays wait) until it has asked every
node that follows it what it holds of its feed (`GET /federation/cursor`) and none holds more
than it does, or its admin releases the hold knowingly (`aidnode resume-feed --force`, which
accepts that allies ahead of it will see a fork and must re-sync). The hold is a row in
`node_meta`, so it survives restarts until it is lifted.
"""

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from .config import CONFIG_FILE, DATABASE_FILE, KEYS_DIR
from .feed import HOLD_KEY

FORMAT = "aidnode-backup/1"
ROOT = "aidnode-backup"
MAX_MEMBER_BYTES = 4 * 1024**3  # a sanity bound on one file of a backup


class BackupError(Exception):
    """A backup that cannot be made or restored; the message says why."""


def make_backup(data_dir: Path, output: Path, *, base_url: str) -> dict:
    """Write a backup of the node in `data_dir` to `output` (refusing to overwrite); return
    what `BACKUP.json` says."""
    output = Path(output)
    if output.exists():
        raise BackupError(f"{output} exists already: choose a new file name")
    database = data_dir / DATABASE_FILE
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / DATABASE_FILE
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            head = target.execute("SELECT max(seq) FROM feed").fetchone()[0] or 0
            items = target.execute("SELECT count(*) FROM items WHERE is_local").fetchone()[0]
        finally:
            target.close()
            source.close()
        about = {"format": FORMAT, "base_url": base_url, "feed_head_seq": head,
                 "local_items": items,
                 "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, f"{ROOT}/BACKUP.json", json.dumps(about, indent=2).encode())
                tar.add(data_dir / CONFIG_FILE, f"{ROOT}/{CONFIG_FILE}")
                for key in sorted((data_dir / KEYS_DIR).glob("*.pem")):
                    tar.add(key, f"{ROOT}/{KEYS_DIR}/{key.name}")
                tar.add(copy, f"{ROOT}/{DATABASE_FILE}")
        except BaseException:
            output.unlink(missing_ok=True)
            raise
    return about


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def restore_backup(backup: Path, data_dir: Path) -> dict:
    """Unpack a backup into `data_dir` (which must not hold a node) and put its feed on hold;
    return what `BACKUP.json` says. Nothing is left behind if it fails."""
    data_dir = Path(data_dir)
    if (data_dir / CONFIG_FILE).exists() or (data_dir / DATABASE_FILE).exists():
        raise BackupError(f"{data_dir} holds a node already: restore into a new directory")
    try:
        tar = tarfile.open(backup, mode="r:gz")
    except (OSError, tarfile.TarError) as error:
        raise BackupError(f"{backup} is not an aidnode backup: {error}") from None
    created_dir = not data_dir.exists()
    try:
        with tar:
            about = _read_about(tar)
            members = _checked_members(tar)
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
            for member, relative in members:
                target = data_dir / relative
                source = tar.extractfile(member)
                descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
        _check_database(data_dir / DATABASE_FILE)
        with sqlite3.connect(data_dir / DATABASE_FILE) as db:
            db.execute(
                "INSERT INTO node_meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (HOLD_KEY, f"restored from a backup made {about['created']} (feed entry "
                           f"{about['feed_head_seq']}): waiting to ask the nodes that follow "
                           "this one what they hold of its feed"),
            )  # fmt: skip
    except BaseException:
        for relative in (CONFIG_FILE, DATABASE_FILE):
            (data_dir / relative).unlink(missing_ok=True)
        for key in (data_dir / KEYS_DIR).glob("*.pem") if (data_dir / KEYS_DIR).exists() else ():
            key.unlink()
        if created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return about


def _read_about(tar: tarfile.TarFile) -> dict:
    try:
        member = tar.getmember(f"{ROOT}/BACKUP.json")
        about = json.loads(tar.extractfile(member).read(64 * 1024))
    except (KeyError, AttributeError, ValueError):
        raise BackupError("this is not an aidnode backup (no readable BACKUP.json)") from None
    if not isinstance(about, dict) or about.get("format") != FORMAT:
        raise BackupError(f"this backup's format is not {FORMAT}")
    if not isinstance(about.get("feed_head_seq"), int) or not isinstance(about.get("created"), str):
        raise BackupError("this backup's BACKUP.json is incomplete")
    return about


def _checked_members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, str]]:
    """The files to unpack, as (member, path in the data directory): only the names a backup
    holds, only regular files, so nothing can land outside the data directory."""
    wanted = []
    for member in tar.getmembers():
        name = member.name
        if (member.isdir() and name in (ROOT, f"{ROOT}/{KEYS_DIR}")) or name == f"{ROOT}/BACKUP.json":
            continue
        relative = name.removeprefix(f"{ROOT}/")
        is_key = (relative.startswith(f"{KEYS_DIR}/") and relative.endswith(".pem")
                  and "/" not in relative[len(KEYS_DIR) + 1 :]
                  and relative[len(KEYS_DIR) + 1 : -4].replace("_", "").replace("-", "").isalnum())  # fmt: skip
        if not name.startswith(f"{ROOT}/") or not (relative in (CONFIG_FILE, DATABASE_FILE) or is_key):
            raise BackupError(f"unexpected file in the backup: {name[:200]}")
        if not member.isfile() or member.size > MAX_MEMBER_BYTES:
            raise BackupError(f"{name[:200]} in the backup is not a plain file")
        wanted.append((member, relative))
    names = {relative for _, relative in wanted}
    if not {CONFIG_FILE, DATABASE_FILE} <= names or not any(n.startswith(KEYS_DIR) for n in names):
        raise BackupError("the backup lacks the settings, the database or the keys")
    return wanted


def _check_database(path: Path) -> None:
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            (result,) = db.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.Error as error:
        raise BackupError(f"the backup's database cannot be read: {error}") from None
    if result != "ok":
        raise BackupError(f"the backup's database is damaged: {result}")

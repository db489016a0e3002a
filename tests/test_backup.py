"""`aidnode backup` and `aidnode restore`: a backup holds the whole node and restores to one
that checks out; a bad backup restores nothing; a restored feed waits before it appends."""

import asyncio
import io
import os
import stat
import tarfile

import pytest
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.backup import BackupError, make_backup, restore_backup
from server.config import load_config
from server.feed import HOLD_KEY
from server.node import Node
from tests.conftest import make_node
from tests.live import run_cli

NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday 9am", "category": "transport",
        "reach": "allies"}  # fmt: skip


def post_items(config, count: int) -> None:
    async def work() -> None:
        node = Node(config)
        await node.start()
        try:
            user = await node.create_user(username="ana", display_name="Ana",
                                          password="a long test password", role="member")  # fmt: skip
            for n in range(count):
                await node.post_item(user, {**NEED, "title": f"Ride {n}"})
        finally:
            await node.close()

    asyncio.run(work())


@pytest.fixture
def backed_up(tmp_path):
    config = make_node(tmp_path)
    post_items(config, 3)
    backup = tmp_path / "backup.tar.gz"
    result = run_cli("backup", str(backup), "--data", str(config.data_dir))
    assert "feed entry 3" in result.stdout and "3 items" in result.stdout
    return config, backup


def test_a_backup_restores_to_a_node_that_checks_out(backed_up, tmp_path):
    config, backup = backed_up
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # it holds the signing key
    restored = tmp_path / "restored"
    result = run_cli("restore", str(backup), "--data", str(restored))
    assert "feed is on hold" in result.stdout
    checked = run_cli("check", "--data", str(restored))
    assert "ok: 3 entries verify" in checked.stdout and "3 federated items" in checked.stdout
    # The same node: settings, keys (byte for byte, still private), database content.
    assert (restored / "aidnode.toml").read_text() == (config.data_dir / "aidnode.toml").read_text()
    for key in (config.data_dir / "keys").glob("*.pem"):
        copy = restored / "keys" / key.name
        assert copy.read_bytes() == key.read_bytes() and stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert load_config(restored).base_url == config.base_url


def test_backup_refuses_to_overwrite(backed_up):
    config, backup = backed_up
    before = backup.read_bytes()
    with pytest.raises(BackupError, match="exists already"):
        make_backup(config.data_dir, backup, base_url=config.base_url)
    assert backup.read_bytes() == before


def test_restore_refuses_a_directory_that_holds_a_node(backed_up):
    config, backup = backed_up
    result = run_cli("restore", str(backup), "--data", str(config.data_dir), check=False)
    assert result.returncode == 1 and "holds a node already" in result.stderr
    assert "Traceback" not in result.stderr


def tampered(backup, tmp_path, name: str, *, data: bytes = b"x", link: bool = False):
    """The backup with one more member added."""
    out = tmp_path / f"tampered-{abs(hash(name))}.tar.gz"
    with tarfile.open(backup) as source, tarfile.open(out, "w:gz") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            target.addfile(info)
        else:
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize("name, link", [
    ("aidnode-backup/../escaped.txt", False), ("/tmp/absolute.txt", False),
    ("aidnode-backup/keys/../../x.pem", False), ("aidnode-backup/notes.txt", False),
    ("aidnode-backup/keys/evil.pem", True),
])  # fmt: skip
def test_a_backup_with_unexpected_files_restores_nothing(backed_up, tmp_path, name, link):
    _, backup = backed_up
    bad = tampered(backup, tmp_path, name, link=link)
    target = tmp_path / "target"
    with pytest.raises(BackupError):
        restore_backup(bad, target)
    assert not target.exists()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "x.pem").exists()


def test_a_file_that_is_not_a_backup_is_refused_clearly(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(200))
    result = run_cli("restore", str(junk), "--data", str(tmp_path / "target"), check=False)
    assert result.returncode == 1 and "is not an aidnode backup" in result.stderr
    assert not (tmp_path / "target").exists()


def test_a_damaged_database_restores_nothing(backed_up, tmp_path):
    _, backup = backed_up
    out = tmp_path / "damaged.tar.gz"
    with tarfile.open(backup) as source, tarfile.open(out, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith("aidnode.db"):
                data = data[:4096] + b"\xff" * (len(data) - 4096)
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    with pytest.raises(BackupError, match="database"):
        restore_backup(out, tmp_path / "target")
    assert not (tmp_path / "target").exists()


@pytest.mark.anyio
async def test_a_restored_node_appends_nothing_until_its_followers_are_asked(backed_up, tmp_path):
    _, backup = backed_up
    restored = tmp_path / "restored"
    restore_backup(backup, restored)
    config = load_config(restored, environ={})
    app = create_app(config, workers=False)
    async with LifespanManager(app):
        node = app.state.node
        assert node.feed.hold is not None
        user = await node.store.user_by_username("ana")
        token = await node.new_api_token(user)
        import httpx

        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=config.base_url,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        async with client:
            refused = await client.post("/api/v1/items", json=NEED)
            assert refused.status_code == 503 and "on hold" in refused.json()["error"]
            assert await node.store.feed_head_seq() == 3
            # No node follows this one, so no one can be ahead: asking lifts the hold.
            assert await node.verify_restored_feed() is None
            assert node.feed.hold is None and await node.store.get_meta(HOLD_KEY) is None
            assert (await client.post("/api/v1/items", json=NEED)).status_code == 201
        assert await node.store.feed_head_seq() == 4

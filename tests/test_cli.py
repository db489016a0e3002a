"""The `aidnode` command: init, accounts, tokens, invites, serve, and its errors."""

import asyncio
import os
import re
import signal
import stat
import tomllib

import httpx
import pytest

from tests.live import LiveNode, run_cli

pytestmark = pytest.mark.live


@pytest.fixture
def node(tmp_path):
    node = LiveNode(tmp_path, "Eastside Mutual Aid").init()
    yield node
    node.stop()


def test_init_creates_settings_key_and_database(node):
    """init writes aidnode.toml, a 0600 key in a 0700 folder, and a migrated database."""
    settings = tomllib.loads((node.data / "aidnode.toml").read_text())
    assert settings == {"name": "Eastside Mutual Aid", "base_url": node.url, "port": node.port}
    key = node.data / "keys" / "main.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((node.data / "keys").stat().st_mode) == 0o700
    assert (node.data / "aidnode.db").exists()


def test_init_refuses_to_overwrite(node):
    key_before = (node.data / "keys" / "main.pem").read_bytes()
    result = node.cli("init", "--name", "Other", "--url", "http://127.0.0.1:9", check=False)
    assert result.returncode != 0
    assert "already holds a node" in result.stderr and "Traceback" not in result.stderr
    assert (node.data / "keys" / "main.pem").read_bytes() == key_before


@pytest.mark.parametrize("url", [
    "ftp://x.example", "https://x.example/", "https://x.example/path", "https://X.example",
    "http://x.example", "https://x.example:443", "https://user@x.example", "not a url",
])  # fmt: skip
def test_init_refuses_bad_base_urls(tmp_path, url):
    result = run_cli("init", "--data", str(tmp_path / "n"), "--name", "N", "--url", url,
                     env={"AIDNODE_ALLOW_PRIVATE_ADDRESSES": "0"}, check=False)  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "n").exists()


def test_commands_without_a_node_fail_cleanly(tmp_path):
    for args in (["serve"], ["token", "--username", "x"], ["invite"]):
        result = run_cli(*args, "--data", str(tmp_path / "none"), check=False)
        assert result.returncode == 1, args
        assert "no node in" in result.stderr and "Traceback" not in result.stderr


def test_accounts_tokens_and_invites(node):
    """create-admin, token and invite work; their mistakes are one clear line each."""
    node.cli("create-admin", "--username", "Admin", "--password-stdin", stdin="a long test password\n")
    again = node.cli("create-admin", "--username", "admin", "--password-stdin",
                     stdin="a long test password\n", check=False)  # fmt: skip
    assert again.returncode == 1 and "taken" in again.stderr
    short = node.cli("create-admin", "--username", "root", "--password-stdin", stdin="short\n",
                     check=False)  # fmt: skip
    assert short.returncode == 1 and "at least" in short.stderr
    no_stdin = node.cli("create-admin", "--username", "root2", check=False)
    assert no_stdin.returncode == 1 and "--password-stdin" in no_stdin.stderr
    token = node.cli("token", "--username", "admin").stdout.strip().splitlines()[-1]
    assert len(token) == 43
    missing = node.cli("token", "--username", "nobody", check=False)
    assert missing.returncode == 1 and "nobody" in missing.stderr
    link = node.cli("invite", "--role", "coordinator").stdout.strip()
    assert link.startswith(f"{node.url}/join/")
    bad_role = node.cli("invite", "--role", "king", check=False)
    assert bad_role.returncode == 2 and "Traceback" not in bad_role.stderr


def test_serve_items_survive_a_restart_and_base_url_is_fixed(node):
    """An item posted through the API is there after a restart; a changed base_url is refused."""
    node.cli("create-admin", "--username", "admin", "--password-stdin", stdin="a long test password\n")
    token = node.cli("token", "--username", "admin").stdout.strip()
    node.start()
    headers = {"Authorization": f"Bearer {token}"}
    item = {"kind": "offer", "title": "Soup on Sundays", "body": "Lentil.", "category": "food"}
    created = httpx.post(f"{node.url}/api/v1/items", json=item, headers=headers)
    assert created.status_code == 201

    # 50 posts at once over real HTTP: every one answered 201 and stored.
    async def post_many() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client:
            return await asyncio.gather(*[
                client.post("/api/v1/items", json={**item, "title": f"Soup {i}"}) for i in range(50)
            ])  # fmt: skip

    statuses = [r.status_code for r in asyncio.run(post_many())]
    assert statuses == [201] * 50, node.log()
    # SIGTERM, then serve again from the same data directory.
    # uvicorn finishes in-flight work, then re-raises the signal it caught.
    assert node.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in node.log()
    node.start()
    listed = httpx.get(f"{node.url}/api/v1/items", params={"limit": 200}, headers=headers).json()["items"]
    assert len(listed) == 51 and created.json()["id"] in {i["id"] for i in listed}
    node.stop()
    moved = run_cli("serve", "--data", str(node.data), check=False,
                    env={"AIDNODE_BASE_URL": "http://127.0.0.1:1"})  # fmt: skip
    assert moved.returncode == 1 and "cannot change" in moved.stderr


def test_serve_prints_first_admin_link_and_it_works(node):
    """With no admin, serve prints a one-time /join link that makes its user an admin."""
    node.start()
    link = next(line.strip() for line in node.log().splitlines() if "/join/" in line)
    with httpx.Client(base_url=node.url) as client:
        page = client.get(link)
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        joined = client.post(link, data={"username": "ada", "display_name": "Ada",
                                         "password": "a long test password",
                                         "password_again": "a long test password",
                                         "csrf_token": csrf})  # fmt: skip
        assert joined.status_code == 303
        assert client.get("/admin/members").status_code == 200
        # The link is spent, and with an admin now, a restart prints no new one.
        assert client.get(link).status_code == 404
    node.stop()
    node.start()
    assert [line.strip() for line in node.log().splitlines() if "/join/" in line
            and "access" not in line] == [link]  # fmt: skip
    # The access log never holds the secret code.
    assert link.rsplit("/", 1)[1] not in node.log().replace(f"  {link}\n", "")
    assert "/join/[redacted]" in node.log()


def test_bad_setting_in_environment_is_one_line(node):
    result = run_cli("serve", "--data", str(node.data), check=False,
                     env={"AIDNODE_POLL_INTERVAL": "soon"})  # fmt: skip
    assert result.returncode == 1 and "AIDNODE_POLL_INTERVAL" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.environ.get("AIDNODE_POLL_INTERVAL") is None


@pytest.mark.parametrize(("args", "env", "said"), [
    (("--workers", "0"), {}, "workers (override) must be at least 1"),
    (("--workers", "65"), {}, "workers must be at most 64"),
    ((), {"AIDNODE_WORKERS": "two"}, "AIDNODE_WORKERS"),
    ((), {"AIDNODE_WORKERS": "0"}, "AIDNODE_WORKERS"),
])  # fmt: skip
def test_bad_worker_counts_are_one_line_and_start_nothing(node, args, env, said):
    result = run_cli("serve", "--data", str(node.data), *args, check=False, env=env)
    assert result.returncode == 1 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "started worker process" not in result.stderr


@pytest.mark.parametrize(("value", "said"), [
    ("-1", "verify_processes (AIDNODE_VERIFY_PROCESSES) must be at least 0"),
    ("two", "verify_processes (AIDNODE_VERIFY_PROCESSES) must be a whole number"),
])  # fmt: skip
def test_a_bad_checker_count_is_one_line_and_starts_nothing(node, value, said):
    result = run_cli("serve", "--data", str(node.data), check=False,
                     env={"AIDNODE_VERIFY_PROCESSES": value})  # fmt: skip
    assert result.returncode == 1 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr

"""A real node's feed, checked by a verifier that shares no code with the project."""

import base64
import hashlib
import signal

import httpx
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.live import LiveNode

pytestmark = pytest.mark.live


def independent_verify(feed: dict, doc: dict) -> int:
    """Verify a whole feed from the node document alone: rfc8785 + cryptography, a few lines."""

    def b64d(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    keys = {k["id"]: (Ed25519PublicKey.from_public_bytes(b64d(k["public"])), k.get("retired_at_seq"))
            for k in doc["keys"]}  # fmt: skip
    prev = None
    for number, entry in enumerate(feed["entries"], start=1):
        public, retired_at = keys[entry["key"]]
        assert retired_at is None or entry["seq"] <= retired_at, "a retired key signed later"
        public.verify(b64d(entry["sig"]), rfc8785.dumps({k: v for k, v in entry.items() if k != "sig"}))
        assert entry["seq"] == number and entry["prev"] == prev
        prev = "sha256:" + base64.urlsafe_b64encode(
            hashlib.sha256(rfc8785.dumps(entry)).digest()).rstrip(b"=").decode()
    assert feed["head"] == {"seq": len(feed["entries"]), "hash": prev}
    return len(feed["entries"])


def test_feed_verifies_independently_across_restart_and_rotation(tmp_path):
    node = LiveNode(tmp_path, "Eastside", env={"AIDNODE_FEED_PUBLIC": "1"}).init()
    try:
        node.cli("create-admin", "--username", "admin", "--password-stdin", stdin="a long test password\n")
        headers = {"Authorization": "Bearer " + node.cli("token", "--username", "admin").stdout.strip()}
        offer = {"kind": "offer", "title": "Soup", "body": "Lentil.", "category": "food"}
        node.start()
        # Eastside posts two offers and changes one.
        first = httpx.post(f"{node.url}/api/v1/items", json=offer, headers=headers).json()
        httpx.post(f"{node.url}/api/v1/items", json={**offer, "title": "Bread"}, headers=headers)
        uuid = first["id"].rsplit("/", 1)[1]
        httpx.patch(f"{node.url}/api/v1/items/{uuid}", json={"status": "promised"}, headers=headers)

        def fetch() -> tuple[dict, dict]:
            feed = httpx.get(f"{node.url}/federation/feed", params={"limit": 1000}).json()
            return feed, httpx.get(f"{node.url}/.well-known/aidnode").json()

        assert independent_verify(*fetch()) == 3
        # Restart, then rotate the key from the CLI while the node is down, and post again.
        node.stop(signal.SIGTERM)
        rotated = node.cli("key", "rotate")
        assert "rotated: entry 4" in rotated.stdout
        node.start()
        httpx.patch(f"{node.url}/api/v1/items/{uuid}", json={"status": "fulfilled"}, headers=headers)
        feed, doc = fetch()
        assert independent_verify(feed, doc) == 5
        assert [e["type"] for e in feed["entries"]] == ["item", "item", "item", "key", "item"]
        assert feed["entries"][4]["key"] == f"{node.url}#key2"
        # And a key rotated while the node is serving takes effect at the next entry.
        node.cli("key", "rotate")
        httpx.post(f"{node.url}/api/v1/items", json={**offer, "title": "Jam"}, headers=headers)
        feed, doc = fetch()
        assert independent_verify(feed, doc) == 7 and feed["entries"][6]["key"] == f"{node.url}#key3"
        assert node.cli("check").stdout.startswith("ok: 7 entries")
    except AssertionError:
        print(node.log())
        raise
    finally:
        node.stop()


def test_check_exits_non_zero_on_a_damaged_chain(tmp_path):
    import sqlite3

    node = LiveNode(tmp_path, "Eastside").init()
    node.cli("create-admin", "--username", "admin", "--password-stdin", stdin="a long test password\n")
    node.cli("key", "rotate")
    with sqlite3.connect(node.data / "aidnode.db") as db:
        db.execute("UPDATE feed SET entry = replace(entry, '\"seq\":1', '\"seq\":2')")
    result = node.cli("check", check=False)
    assert result.returncode == 1 and result.stderr.startswith("aidnode check: problem: entry 1")
    assert "Traceback" not in result.stderr

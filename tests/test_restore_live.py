"""Restoring for real: a node restored from a backup older than what its ally holds never
forks its feed silently; one restored from a current backup carries on by itself."""

import signal

import pytest

from tests.live import LiveNode, run_cli
from tests.test_allies_live import FAST, OFFER, Admin, ally, eventually

pytestmark = pytest.mark.live


def restored_in_place(tmp_path, original: LiveNode, backup) -> LiveNode:
    """The original node's backup restored into a new directory, serving at its address."""
    node = LiveNode(tmp_path, f"{original.name} restored", env=FAST)
    node.port, node.url = original.port, original.url
    run_cli("restore", str(backup), "--data", str(node.data), env=node.env)
    return node


@pytest.fixture
def allied(tmp_path):
    east = LiveNode(tmp_path, "Eastside", env=FAST).init()
    west = LiveNode(tmp_path, "Westside", env=FAST).init()
    admins = [Admin(east), Admin(west)]
    east.start()
    west.start()
    ally(*admins)
    yield east, west, *admins
    for node in (east, west):
        node.stop()


def test_an_old_backup_waits_instead_of_forking_the_feed(allied, tmp_path):
    east, west, a, b = allied
    for n in range(3):
        assert a.post("/api/v1/items", {**OFFER, "title": f"Offer {n}"}).status_code == 201
    backup = tmp_path / "east.tar.gz"
    east.cli("backup", str(backup))  # while it serves
    # Two more posts after the backup reach the ally: it holds entries 4 and 5.
    for n in range(3, 5):
        assert a.post("/api/v1/items", {**OFFER, "title": f"Offer {n}"}).status_code == 201
    eventually(lambda: b.peer(east.url)["received_seq"] == 5, "Westside holding 5 entries",
               nodes=(east, west))  # fmt: skip
    # The disk dies; the admin restores last night's backup.
    east.stop(signal.SIGKILL)
    again = restored_in_place(tmp_path, east, backup)
    again.start()
    try:
        admin = Admin.__new__(Admin)
        admin.node, admin.headers = again, a.headers
        # It asked Westside, which holds more of its feed: it appends nothing.
        refused = eventually(lambda: (r := admin.post("/api/v1/items", OFFER)).status_code == 503 and r,
                             "posting refused while on hold", nodes=(again, west))  # fmt: skip
        assert "on hold" in refused.json()["error"]
        assert "holds entry 5 of our feed" in refused.json()["error"]
        resumed = again.cli("resume-feed", check=False)
        assert resumed.returncode == 1 and "still on hold" in resumed.stderr
        assert again.cli("check").stdout.startswith("ok: 3 entries")
        assert b.peer(east.url)["last_error"] is None  # no fork anywhere
        # The admin decides the newer entries are lost for good: a fork, knowingly.
        forced = again.cli("resume-feed", "--force")
        assert "no longer on hold" in forced.stdout
        # Its next entries take seqs 4 and 5 again: at 5, Westside's cursor, the fork shows.
        for _ in range(2):
            assert admin.post("/api/v1/items", OFFER).status_code == 201
        eventually(lambda: (b.peer(east.url)["last_error"] or "").startswith("fork:"),
                   "Westside seeing the fork it was told of", nodes=(again, west))  # fmt: skip
    finally:
        again.stop()


def test_a_current_backup_resumes_by_itself(allied, tmp_path):
    east, west, a, b = allied
    for n in range(2):
        assert a.post("/api/v1/items", {**OFFER, "title": f"Offer {n}"}).status_code == 201
    eventually(lambda: b.peer(east.url)["received_seq"] == 2, "Westside holding 2 entries",
               nodes=(east, west))  # fmt: skip
    backup = tmp_path / "east.tar.gz"
    east.cli("backup", str(backup))
    east.stop()
    again = restored_in_place(tmp_path, east, backup)
    again.start()
    try:
        admin = Admin.__new__(Admin)
        admin.node, admin.headers = again, a.headers
        eventually(lambda: admin.post("/api/v1/items", {**OFFER, "title": "After"}).status_code == 201,
                   "posting once the hold lifts", nodes=(again, west))  # fmt: skip
        eventually(lambda: "After" in b.remote_titles(), "the new offer at Westside",
                   nodes=(again, west))  # fmt: skip
        assert b.peer(east.url)["last_error"] is None
    finally:
        again.stop()

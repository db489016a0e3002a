"""`aidnode demo` for real: three nodes on free ports that list each other's items, with the
relayed need and its response in place, stopped cleanly by Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.live import AIDNODE, free_port

pytestmark = pytest.mark.live


AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def three_free_ports() -> int:
    """A base port whose next two ports are free too (bounded tries)."""
    for _ in range(50):
        base = free_port()
        if base > 65533:
            continue
        try:
            for port in (base + 1, base + 2):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no three free ports in a row")


def test_the_demo_federates_three_nodes_and_stops_cleanly(tmp_path):
    base = three_free_ports()
    data = tmp_path / "demo"
    # Started as a terminal starts it, with Ctrl-C's signal at its default: a test run in the
    # background of a shell (`./.ci/run &`) inherits SIGINT ignored, and so would the demo.
    demo = subprocess.Popen([sys.executable, "-c", AS_FROM_A_TERMINAL, AIDNODE, "demo",
                             "--base-port", str(base), "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    output = []
    try:
        deadline = time.monotonic() + 120
        while not any("demo ready" in line for line in output):
            line = demo.stdout.readline()
            if not line and demo.poll() is not None or time.monotonic() > deadline:
                logs = "".join(p.read_text() for p in data.glob("*.log"))
                raise AssertionError("the demo did not get ready:\n" + "".join(output) + logs)
            output.append(line)
        printed = "".join(output)
        urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
        assert all(url in printed for url in urls) and "admin / aidnode-demo" in printed
        # Each node's admin, through the API.
        clients = {}
        for slug in ("union", "pantry", "collective"):
            token = json.loads((data / slug / "demo-seeded.json").read_text())["tokens"]["admin"]
            url = urls[("union", "pantry", "collective").index(slug)]
            clients[slug] = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        remote = {slug: client.get("/api/v1/items", params={"origin": "remote", "limit": 200}).json()["items"]
                  for slug, client in clients.items()}  # fmt: skip
        # Each lists items from the other two (the union and the collective through the pantry).
        for slug, url in zip(("union", "pantry", "collective"), urls, strict=True):
            assert {item["origin"] for item in remote[slug]} == set(urls) - {url}, slug
        relayed = [i for i in remote["collective"] if i["title"].startswith("Space heater")]
        assert len(relayed) == 1 and relayed[0]["via"] == [urls[1]] and relayed[0]["origin"] == urls[0]
        responses = clients["union"].get("/api/v1/responses").json()["responses"]
        assert [(r["item"], r["from"]["node"]) for r in responses] == [(relayed[0]["id"], urls[2])]
        for client in clients.values():
            client.close()
        # The login it prints works.
        with httpx.Client(base_url=urls[2]) as browser:
            page = browser.get("/login")
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            logged_in = browser.post("/login", data={"username": "admin", "password": "aidnode-demo",
                                                     "csrf_token": token, "next": "/"})  # fmt: skip
            assert logged_in.status_code == 303
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            rest = demo.communicate(timeout=40)[0]
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)  # its nodes too, and its pipe closed
            demo.communicate()
            raise
    assert demo.returncode == 0, rest
    assert "demo stopped" in rest
    for i in range(3):  # every node is down
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{base + i}/healthz", timeout=2)

"""`aidnode demo`: three federated nodes on this machine, for a first look (DESIGN §8).

A tenants' union, a food pantry and a disability collective, each a real node (`aidnode
serve` in a process of its own, its own data directory under `--data`, demo node i at
`http://127.0.0.1:<base-port + i>`), seeded with offers and needs. The pantry allies with both
others; the union and the collective know each other only through the pantry, so the union's
escalated need reaches the collective by relay ("from Eastside Tenants' Union, via Riverside
Food Pantry"), and a member of the collective responds to it. Everything between the nodes
goes over real HTTP with signed requests, as between any nodes. Each node's admin logs in as
`admin` / `aidnode-demo`. Ctrl-C stops all three (SIGTERM, so each finishes what it is doing).

A second run with the same `--data` serves the same nodes again, seeding nothing.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .config import load_config
from .node import Node, init_node

DEMO_PASSWORD = "aidnode-demo"  # noqa: S105 - the demo's published login (DESIGN §8)
SEEDED = "demo-seeded.json"  # in each node's directory: the demo's own notes (tokens) for it
# Demo nodes reach each other on loopback, which the address guard refuses otherwise.
DEMO_SETTINGS = {"allow_private_addresses": True, "poll_interval": 10}
START_TIMEOUT = 30.0
FEDERATE_TIMEOUT = 60.0


@dataclass(frozen=True)
class DemoNode:
    slug: str
    name: str
    description: str
    members: tuple[tuple[str, str], ...]  # (username, display name)
    items: tuple[tuple[str, dict], ...]  # (poster's username, item)


NODES = (
    DemoNode(
        "union", "Eastside Tenants' Union",
        "Tenants of the east side, organising for repairs, fair rents and each other.",
        (("maria", "María"), ("tom", "Tom")),
        (
            ("maria", {"kind": "offer", "title": "Help moving boxes on weekends",
                       "body": "Two of us with a van can help with small moves on Saturdays.",
                       "category": "transport", "tags": ["moving", "van"],
                       "location": {"label": "Eastside", "geohash": "gcpvj"}}),
            ("tom", {"kind": "offer", "title": "Know your rights: eviction clinic",
                     "body": "Every Tuesday 6pm at the community hall. Bring your letters.",
                     "category": "skills", "tags": ["housing", "legal"]}),
            ("tom", {"kind": "need", "title": "Space heater for a flat with no heating",
                     "body": "The landlord has not fixed the boiler for three weeks. A family "
                             "with a baby needs a heater until it is repaired.",
                     "category": "household", "urgency": "urgent", "escalation": "never",
                     "location": {"label": "Eastside", "geohash": "gcpvj"}}),
        ),
    ),
    DemoNode(
        "pantry", "Riverside Food Pantry",
        "A volunteer pantry by the river: food boxes, hot meals and deliveries.",
        (("ade", "Ade"), ("sam", "Sam")),
        (
            ("ade", {"kind": "offer", "title": "Weekly food boxes",
                     "body": "Vegetables, rice, beans and tins, every Friday from 2pm.",
                     "category": "food", "tags": ["groceries"], "quantity": "40 boxes",
                     "location": {"label": "Riverside", "geohash": "gcpvh"}}),
            ("sam", {"kind": "offer", "title": "Grocery delivery for people who cannot travel",
                     "body": "Volunteers with bikes deliver within the river district.",
                     "category": "food", "tags": ["delivery"]}),
            ("sam", {"kind": "need", "title": "Volunteer drivers for Friday deliveries",
                     "body": "We need two more drivers with a car for Friday afternoons.",
                     "category": "transport", "reach": "allies"}),
        ),
    ),
    DemoNode(
        "collective", "Access Disability Collective",
        "Disabled people and allies sharing equipment, care and know-how.",
        (("lin", "Lin"), ("jo", "Jo")),
        (
            ("lin", {"kind": "offer", "title": "Wheelchair ramp to lend",
                     "body": "A folding aluminium ramp, 2 m, for steps up to 40 cm.",
                     "category": "household", "tags": ["ramp", "loan"],
                     "location": {"label": "North end", "geohash": "gcpvn"}}),
            ("jo", {"kind": "need", "title": "Personal assistant cover for two mornings",
                    "body": "Someone experienced to cover Monday and Wednesday mornings "
                            "while my usual assistant is away.",
                    "category": "care", "reach": "network", "hop_limit": 2}),
        ),
    ),
)
ALLIANCES = (("union", "pantry"), ("pantry", "collective"))
ESCALATED = ("union", "Space heater for a flat with no heating")  # relayed to the collective
RESPONSE = ("collective", "jo", "We have a spare oil heater; we can bring it over tonight.",
            "Jo, 555-0142 (text first)")  # fmt: skip


class DemoError(Exception):
    """The demo could not start; the message says why."""


def _seed(config) -> dict:
    """Accounts and items of one new demo node, written before it serves; its notes."""

    async def work() -> dict:
        node = Node(config)
        await node.start()
        try:
            spec = next(n for n in NODES if n.name == config.name)
            admin = await node.create_user(username="admin", display_name="Admin",
                                           password=DEMO_PASSWORD, role="admin")  # fmt: skip
            users = {"admin": admin}
            for username, display in spec.members:
                users[username] = await node.create_user(
                    username=username, display_name=display, password=DEMO_PASSWORD,
                    role="coordinator" if username == spec.members[0][0] else "member",
                )  # fmt: skip
            for username, item in spec.items:
                view = await node.post_item(users[username], item)
                if (spec.slug, item["title"]) == ESCALATED:  # then its poster asks the network
                    await node.change_item(users[username], view.uuid,
                                           {"reach": "network", "hop_limit": 2})  # fmt: skip
            return {"tokens": {name: await node.new_api_token(user, "demo")
                               for name, user in users.items()}}  # fmt: skip
        finally:
            await node.close()

    return asyncio.run(work())


def prepare(data: Path, base_port: int) -> tuple[list, bool]:
    """Each demo node's directory, made and seeded if new; (configs, whether all are new)."""
    configs, fresh = [], []
    for number, spec in enumerate(NODES):
        directory = data / spec.slug
        url = f"http://127.0.0.1:{base_port + number}"
        if not (directory / "aidnode.toml").exists():
            init_node(directory, name=spec.name, base_url=url, port=base_port + number, environ={},
                      settings={"description": spec.description, **DEMO_SETTINGS})  # fmt: skip
            config = load_config(directory, environ={})
            notes = _seed(config)
            (directory / SEEDED).write_text(json.dumps(notes))
            os.chmod(directory / SEEDED, 0o600)
            fresh.append(True)
        else:
            config = load_config(directory, environ={})
            if config.base_url != url:
                raise DemoError(f"{directory} serves {config.base_url}, not {url}: use the "
                                "--base-port it was made with, or a new --data")  # fmt: skip
            fresh.append(False)
        configs.append(config)
    if any(fresh) and not all(fresh):
        raise DemoError(f"{data} holds only some of the demo nodes: use a new --data")
    return configs, all(fresh)


class Demo:
    def __init__(self, data: Path, base_port: int) -> None:
        self.data, self.base_port = data, base_port
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        configs, fresh = prepare(self.data, self.base_port)
        self.configs = {spec.slug: config for spec, config in zip(NODES, configs, strict=True)}
        for spec, config in zip(NODES, configs, strict=True):
            log = (self.data / f"{spec.slug}.log").open("ab")
            self.processes.append(subprocess.Popen(  # noqa: S603 - our own CLI, our own paths
                [sys.executable, "-m", "server.cli", "serve", "--data", str(config.data_dir)],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        for config in configs:
            self._wait_healthy(config.base_url)
        if fresh:
            self._federate()

    def _wait_healthy(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise DemoError(f"a demo node stopped at start: see the logs in {self.data}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise DemoError(f"{url} did not start in {START_TIMEOUT:g} s: see the logs in {self.data}")

    def _client(self, slug: str, user: str = "admin") -> httpx.Client:
        token = json.loads((self.configs[slug].data_dir / SEEDED).read_text())["tokens"][user]
        return httpx.Client(base_url=self.configs[slug].base_url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def _federate(self) -> None:
        """Ally the nodes through their admins' API, as two groups' admins would, then let a
        member of the collective respond to the union's need once it has arrived by relay."""
        for first, second in ALLIANCES:
            with self._client(first) as a, self._client(second) as b:
                for client, other in ((a, second), (b, first)):
                    added = client.post("/api/v1/peers", json={"url": self.configs[other].base_url})
                    if added.status_code not in (200, 201):
                        raise DemoError(f"allying {first} and {second} failed: {added.text[:300]}")
        slug, user, message, contact = RESPONSE
        with self._client(slug, user) as client:
            item = self._wait_for(client, ESCALATED[1])
            sent = client.post("/api/v1/responses", json={"item": item["id"], "message": message,
                                                          "contact": contact})  # fmt: skip
            if sent.status_code != 202:
                raise DemoError(f"the demo response was not delivered: {sent.text[:300]}")

    def _wait_for(self, client: httpx.Client, title: str) -> dict:
        deadline = time.monotonic() + FEDERATE_TIMEOUT
        while time.monotonic() < deadline:
            items = client.get("/api/v1/items", params={"origin": "remote", "limit": 200}).json()
            found = [item for item in items["items"] if item["title"] == title]
            if found:
                return found[0]
            time.sleep(0.2)
        raise DemoError(f"{title!r} did not reach {client.base_url} in {FEDERATE_TIMEOUT:g} s")

    def stop(self) -> None:
        """SIGTERM to every node (each finishes what it is doing), SIGKILL if one lingers."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def describe(self) -> str:
        lines = ["aidnode demo: three federated groups on this machine", ""]
        for spec in NODES:
            lines.append(f"  {spec.name:<32} {self.configs[spec.slug].base_url}")
        lines += [
            "",
            f"Log in to any of them as admin / {DEMO_PASSWORD} (members too: "
            + ", ".join(f"{u}" for spec in NODES for u, _ in spec.members)
            + ", same password).",
            "The pantry is allied with the union and the collective; the union's urgent need",
            "reached the collective through the pantry, and someone there responded: see it",
            "on the union's item page. Logs and data are in " + str(self.data) + ".",
            "",
            "demo ready; press Ctrl-C to stop all three",
        ]
        return "\n".join(lines)


def run(data: Path, base_port: int) -> None:
    """Start the demo, print how to look at it, and serve until interrupted."""
    demo = Demo(data, base_port)
    stopping = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        demo.start()
        print(demo.describe(), flush=True)
        while not stopping:
            if any(p.poll() is not None for p in demo.processes):
                raise DemoError(f"a demo node stopped: see the logs in {data}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.stop()
    print("demo stopped", flush=True)

"""Escalation benchmark: how fast a need reaches 1, 2 and 3 hops, and how fast it closes there.

Prints, from one run on one machine: four real nodes (`aidnode serve` processes on
127.0.0.1, as `tests/live.py` starts them) allied in a chain A–B–C–D, pulls put off
(poll_interval 3600 s) so that only pushes carry changes. For each of N needs, posted at A
and kept in the group, then escalated by its poster to `network` reach with hop_limit 3
(one PATCH):

- escalation at A → visible at B (1 hop), C (2 hops, through B's relay) and D (3 hops);
- fulfilled at A (the PATCH that marks it fulfilled, after a PATCH to promised) → gone from
  D's listing (3 hops).

B, C and D are polled in turn in a tight loop, so each figure errs high by up to one round of
three polls (printed beside it). Medians, p90 (nearest rank) and max over N needs, after one
warm-up need that is not counted. Target: < 300 ms per hop on loopback with push.

Run, from the repository root:
    .venv/bin/python -m bench.escalation [--needs N]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.federation import PULLS_OFF, Admin, ally, cpu_since, nearest_rank, stop_all
from tests.live import LiveNode

NEED = {"kind": "need", "title": "Ride to the clinic", "body": "Tuesday 9am, wheelchair.",
        "category": "transport", "escalation": "never"}  # fmt: skip
TIMEOUT = 20.0


def listed(admin: Admin, item_id: str) -> bool:
    query = {"origin": "remote", "id": item_id, "limit": 1}
    return bool(admin.client.get("/api/v1/items", params=query).json()["items"])


def watch(readers: list[Admin], item_id: str, start: float, *, until_shown: bool) -> list[float]:
    """Seconds from `start` until each reader lists the item (or, with until_shown False, no
    longer lists it); fails if one does not within TIMEOUT."""
    when: list[float | None] = [None] * len(readers)
    deadline = start + TIMEOUT
    while None in when:
        for i, reader in enumerate(readers):
            if when[i] is None and listed(reader, item_id) == until_shown:
                when[i] = time.perf_counter() - start
        if time.perf_counter() > deadline:
            logs = "\n".join(f"--- {r.node.name}\n{r.node.log()}" for r in readers)
            raise AssertionError(f"{item_id} did not reach every node in {TIMEOUT} s\n{logs}")
    return when


def summary(values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return (f"median {statistics.median(ms):6.1f} ms   p90 {nearest_rank(ms, 0.9):6.1f} ms"
            f"   max {max(ms):6.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # At most 19: with the warm-up, the 21st new need of one origin in a day waits for the
    # relay quota (DESIGN §6: 20 a day), which is the quota working, not a slow relay.
    parser.add_argument("--needs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nodes = [LiveNode(root, name, env=PULLS_OFF)
                 for name in ("Eastside", "Bridge", "Central", "Downtown")]  # fmt: skip
        admins: list[Admin] = []
        try:
            for node in nodes:
                node.init()
                admins.append(Admin(node))
                node.start()
            a, b, c, d = admins
            for first, second in ((a, b), (b, c), (c, d)):
                ally(first, second)
            reached: list[list[float]] = [[], [], []]
            closed: list[float] = []
            polls: list[float] = []
            cpu = cpu_since({}, nodes)
            for n in range(args.needs + 1):  # the first is a warm-up, not counted
                posted = a.client.post("/api/v1/items", json={**NEED, "title": f"Ride {n}"})
                assert posted.status_code == 201, posted.text
                item_id = posted.json()["id"]
                path = f"/api/v1/items/{item_id.rsplit('/', 1)[1]}"
                start = time.perf_counter()
                escalated = a.client.patch(path, json={"reach": "network", "hop_limit": 3})
                assert escalated.status_code == 200, escalated.text
                times = watch([b, c, d], item_id, start, until_shown=True)
                assert a.client.patch(path, json={"status": "promised"}).status_code == 200
                start = time.perf_counter()
                assert a.client.patch(path, json={"status": "fulfilled"}).status_code == 200
                (gone,) = watch([d], item_id, start, until_shown=False)
                if n:
                    for hop, seconds in enumerate(times):
                        reached[hop].append(seconds)
                    closed.append(gone)
                poll_start = time.perf_counter()
                for reader in (b, c, d):
                    listed(reader, item_id)
                polls.append(time.perf_counter() - poll_start)
            cpu = cpu_since(cpu, nodes)
        finally:
            stop_all(nodes, admins)
    print(f"escalation along a chain A–B–C–D, pushes only ({args.needs} needs, hop_limit 3):")
    for hop, values in enumerate(reached, 1):
        print(f"  escalated at A → visible {hop} hop{'s' if hop > 1 else ' '}: {summary(values)}"
              f"   ({statistics.median(values) * 1000 / hop:5.1f} ms a hop)")  # fmt: skip
    print(f"  fulfilled at A → closed 3 hops: {summary(closed)}"
          f"   ({statistics.median(closed) * 1000 / 3:5.1f} ms a hop)   (target: < 300 ms a hop)")
    print(f"  one round of polls (B, C, D): median {statistics.median(polls) * 1000:5.1f} ms")
    print("  CPU: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in cpu.items()))


if __name__ == "__main__":
    main()

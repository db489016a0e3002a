"""Flood benchmark: a member's page times while a trusted ally floods the inbox (issue 8).

Runs the scenario of `tests/test_flood_live.py` (`flood_scenario`, shared rather than written
twice) and prints its figures, from one run on one machine: a real node (`aidnode serve`, as
`tests/live.py` starts it) trusting a scripted ally in a process of its own; a member logged
in through the login form browses home, browse, an item page and a search, one page after
another with a 20 ms pause, quiet (before the flood and again after it) and while the ally
sends 800 signed pushes, 8 at a time, as fast as the node answers, ignoring Retry-After:

- the member's page times, quiet and under the flood: p50, p95 (nearest rank), max, and the
  ratio of the p95s, against the issue's bound (flood p95 <= 3 x the quiet p95, the quiet
  p95 taken as at least 20 ms: see the test's docstring);
- the pushes: how long the 800 took, per second, and by status (the node lets one node make
  600 federation requests a minute: the rest get 429 with Retry-After, printed);
- the entries: what the node held when the last push was answered, and how long after that
  it held the ally's whole chain (what the refused pushes carried, read from the ally's feed).

Every wait is bounded and fails with the node's log. Other work on the machine moves every
figure: the load average is printed at the start and the end.
Run, from the repository root (so `tests` is importable):
    .venv/bin/python -m bench.flood [--pushes N] [--senders N] [--pages N] [--runs N]
"""

import argparse
import os
import tempfile
from pathlib import Path

from tests.test_flood_live import PUSHES, QUIET_PAGES, SENDERS, THINK, flood_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=PUSHES, help="pushes the ally sends")
    parser.add_argument("--senders", type=int, default=SENDERS, help="pushes in flight at once")
    parser.add_argument("--pages", type=int, default=QUIET_PAGES,
                        help="quiet pages timed before the flood, and again after it")  # fmt: skip
    parser.add_argument("--think", type=float, default=THINK,
                        help="seconds the member waits between pages")  # fmt: skip
    parser.add_argument("--runs", type=int, default=1, help="runs, each with a fresh node")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    ratios = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="aidnode-bench-") as tmp:
            with flood_scenario(Path(tmp), pushes=args.pushes, senders=args.senders,
                                quiet_pages=args.pages, think=args.think) as flood:  # fmt: skip
                figures = flood.measure()
        if args.runs > 1:
            print(f"run {run}:")
        for line in figures.report():
            print(("  " if args.runs > 1 else "") + line)
        verdict = "within" if figures.p("flood", 0.95) <= figures.bound else "OVER"
        print(f"{'  ' if args.runs > 1 else ''}{verdict} the bound")
        ratios.append(figures.ratio)
    if args.runs > 1:
        print(f"flood p95 / quiet p95 over {args.runs} runs: "
              + ", ".join(f"{ratio:.2f}" for ratio in ratios))  # fmt: skip
    print(f"machine: load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

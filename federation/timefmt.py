"""Protocol time: `YYYY-MM-DDTHH:MM:SSZ`, always UTC, whole seconds.

Time comes from a `Clock` (a callable returning an aware UTC datetime) passed in by the caller,
so tests can move it; nothing here reads the wall clock except `system_clock`.
"""

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")  # ASCII digits only


def system_clock() -> datetime:
    """The real time, truncated to whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment: datetime) -> str:
    """Format an aware datetime as protocol time (microseconds dropped)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse protocol time strictly; raise ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError("not a time of the form YYYY-MM-DDTHH:MM:SSZ")
    return _parse_time_text(text)


@functools.lru_cache(maxsize=4096)
def _parse_time_text(text: str) -> datetime:
    # Kept: an ally's batch names the same few times over and over (each entry's `at`, each
    # item's created, updated and expires), four a received entry. What raises is not kept.
    if not _TIME_RE.fullmatch(text):
        raise ValueError("not a time of the form YYYY-MM-DDTHH:MM:SSZ")
    # The pattern fixed the form; fromisoformat (C, fast) checks the calendar, as strptime would.
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


class FixedClock:
    """A clock that stands still until moved: for tests and benchmarks."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

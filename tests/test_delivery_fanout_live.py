"""One node delivering to 50 followers for real (issue 9), one of them slow: batches, kept-alive
connections, and no follower held up by the slow one. The setup is `bench/delivery.py`'s, run
small: a real node (`aidnode serve`), followers that verify and chain what they are pushed."""

import pytest

from bench.delivery import run_fan_out

pytestmark = pytest.mark.live

FOLLOWERS = 50
ENTRIES = 200
# The slow follower's first push waits until the others hold the head, this long at most:
# less than the node's time limit on a request (10 s), so that the push is answered, late.
HOLD = 8.0


def test_fifty_followers_get_batches_on_kept_alive_connections_and_one_slow_delays_no_one(tmp_path):
    """Every follower gets every entry in order, in batches over one connection, and the fast
    ones have them all while the slow one is still on its first push."""
    # The node's admin adds 50 followers, each asks to follow and is accepted; the first
    # answers each push a second late, and holds its first push of the posts until the others
    # hold the head (8 s at most). Four members post 200 offers at the node.
    run = run_fan_out(tmp_path, followers=FOLLOWERS, entries=ENTRIES, delay=1.0, hold=HOLD,
                      posters=4, timeout=45)  # fmt: skip
    # Every follower, the slow one too, holds every entry, each chained to the one before.
    assert run.head == ENTRIES
    assert run.in_order, run.problems[:5]
    # Batches: far fewer requests than entries, and no entry sent twice.
    assert max(run.requests) < ENTRIES / 10, run.requests
    assert run.entries_pushed == ENTRIES * (FOLLOWERS - 1)
    # Kept alive: one connection per fast follower for all its pushes, two at most.
    assert max(run.connections) <= 2, run.connections
    # Not held up: the fast followers held the head before the slow one answered its first
    # push, and well before its hold would have run out.
    assert run.fast_done < run.slow_first, (run.fast_done, run.slow_first)
    assert run.fast_done < HOLD, run.fast_done

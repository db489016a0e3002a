"""Rate limits answer 429 with an honest Retry-After (issue 8), where the other tests stop at
the status: login per client address, responses from an ally, and a node's federation budget,
which serves again once the Retry-After it was given has passed.

(Login per account, responses from non-allies and federation per address and per node are
in tests/test_web.py, tests/test_responses.py and tests/test_federation_limits.py.)"""

import pytest

from server.accounts import RateLimiter, per_worker
from server.node import (
    FEDERATION_PER_NODE_PER_MINUTE,
    LOGIN_FAILURES_PER_ACCOUNT,
    LOGIN_WINDOW_SECONDS,
)
from server.responses import RATE_WINDOW, RESPONSES_PER_HOUR_ALLY
from tests.conftest import PASSWORD, csrf_of
from tests.test_inbox import send, signed
from tests.test_ingest import WestFeed, add_west
from tests.test_responses import post, respond, response, stored_responses

pytestmark = pytest.mark.anyio


class ManualClock:
    """A monotonic clock the test moves by hand, for a limiter's window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_login_over_the_address_limit_gets_429_with_retry_after(harness):
    """Failed logins across accounts from one address: then 429 with Retry-After within
    the window, even for a right password, on the login page itself. (The budget is 2 here,
    not 20, to spare 18 password checks; tests/test_web.py spends the real one.)"""
    harness.node.login_by_address = RateLimiter(2, LOGIN_WINDOW_SECONDS)
    browser = await harness.browser()
    await harness.add_user("jo")
    csrf = csrf_of((await browser.get("/login")).text)
    for i in range(2):
        failed = await browser.post("/login", data={"username": f"user{i}", "password": "x" * 12,
                                                    "csrf_token": csrf})  # fmt: skip
        assert failed.status_code == 401
    # Jo's right password, from that address: refused until the window has passed.
    locked = await browser.post("/login", data={"username": "jo", "password": PASSWORD,
                                                "csrf_token": csrf})  # fmt: skip
    assert locked.status_code == 429, locked.text[:300]
    assert 1 <= int(locked.headers["retry-after"]) <= LOGIN_WINDOW_SECONDS
    assert locked.headers["content-type"].startswith("text/html")
    assert "too many failed logins" in locked.text
    assert not any(c.startswith("aidnode_session_") for c in locked.headers.get_list("set-cookie"))


async def test_an_ally_over_its_response_budget_gets_429_with_retry_after(harness):
    """An ally's responses: its hourly budget is taken, then 429 with Retry-After within the
    hour, and the refused response is not stored."""
    west = WestFeed()
    await add_west(harness, west)
    need = await post(harness, await harness.api_client("poster"))
    for _ in range(RESPONSES_PER_HOUR_ALLY):
        answer = await respond(harness, west.key, response(need["id"]))
        assert answer.status_code == 202, answer.text
    refused = await respond(harness, west.key, response(need["id"]))
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= RATE_WINDOW + 1
    assert "too many responses" in refused.json()["error"]
    assert len(await stored_responses(harness)) == RESPONSES_PER_HOUR_ALLY


async def test_a_node_is_served_again_once_its_retry_after_has_passed(harness):
    """A node over its federation budget is told how long to wait, and that is true: one
    second short it is still refused, at the time it was given it is served."""
    west = WestFeed()
    await add_west(harness, west)
    clock = ManualClock()
    harness.node.federation_by_node = RateLimiter(2, 60, clock=clock)

    async def read_cursor():
        return await send(harness, signed(harness, west.key, "GET", "/federation/cursor"))

    for _ in range(2):
        assert (await read_cursor()).status_code == 200
    clock.now += 20
    refused = await read_cursor()
    assert refused.status_code == 429
    wait = int(refused.headers["retry-after"])
    assert wait == 41  # the first request leaves the 60 s window 40 s from now, rounded up
    clock.now += wait - 2
    still = await read_cursor()
    assert still.status_code == 429 and int(still.headers["retry-after"]) <= 2
    clock.now += 2
    served = await read_cursor()
    assert served.status_code == 200, served.text


@pytest.mark.parametrize(("limit", "workers", "share"),
                         [(5, 1, 5), (5, 2, 3), (20, 2, 10), (600, 2, 300), (1, 4, 1)])  # fmt: skip
def test_each_worker_process_enforces_its_share_of_a_limit_rounded_up(limit, workers, share):
    assert per_worker(limit, workers) == share
    assert share * workers >= limit  # no client is held to less than the limit in all


async def test_a_node_of_two_worker_processes_takes_its_share_of_each_limit(tmp_path):
    """Each process of a node serving with `workers` = 2 counts its half of each limit."""
    from server.app import create_app
    from server.config import load_config
    from server.node import init_node

    init_node(tmp_path / "node", name="Pantry", base_url="http://127.0.0.1:9", environ={})
    config = load_config(tmp_path / "node", environ={"AIDNODE_WORKERS": "2"})
    node = create_app(config, workers=False).state.node
    assert node.login_by_account.limit == per_worker(LOGIN_FAILURES_PER_ACCOUNT, 2) == 3
    assert node.federation_by_node.limit == FEDERATION_PER_NODE_PER_MINUTE // 2
    assert node.responses.from_allies.limit == RESPONSES_PER_HOUR_ALLY // 2

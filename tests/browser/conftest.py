"""Browser tests: Playwright's sync API driving Debian's Chromium against real nodes.

Nothing here downloads a browser. Chromium is Debian's package at /usr/bin/chromium (`.ci/run`
installs it; `AIDNODE_CHROMIUM` names another binary); axe-core comes from the npm registry
into `.cache/axe` (git-ignored) the first time it is needed. When a piece is missing the tests
fail and say what to install: they never pass or skip without a browser.

The nodes are real `aidnode serve` processes (tests/live.py), allied through the API as the
live tests ally them, started once per session and shared: every test makes its own people
and items, so tests do not depend on each other's order. A failing test shows each node's log.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live import LiveNode
from tests.test_allies_live import FAST, Admin, ally

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AIDNODE_CHROMIUM", "/usr/bin/chromium")
# The flags that work on this project's machines: no sandbox (CI runs as root), and none of
# Chromium's own calls home, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
AXE_DIR = ROOT / ".cache" / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
AXE_PACKAGE = "axe-core@4"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
ADMIN_PASSWORD = "a long test password"  # what tests.test_allies_live.Admin set
MEMBER_PASSWORD = "a fine passphrase 42"  # what tests.test_responses_live.join_as_member sets
ACTION_TIMEOUT_MS = 10_000
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 360, "height": 740}}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Put every node's log into the report of a browser test that failed."""
    report = yield
    nodes = item.funcargs.get("allies") if hasattr(item, "funcargs") else None
    if report.failed and nodes is not None:
        for admin in nodes:
            report.sections.append((f"log of {admin.node.name}", admin.node.log()))
    return report


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"browser tests need Chromium at {CHROMIUM}: install Debian's package "
            "(`apt-get install chromium`), or set AIDNODE_CHROMIUM to a Chromium binary. "
            "Never `playwright install`: these tests do not download browsers.",
            pytrace=False,
        )  # fmt: skip
    return CHROMIUM


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe.min.js, installed from the npm registry into .cache/axe the first time."""
    if AXE_JS.exists():
        return AXE_JS
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the accessibility tests install axe-core with npm: install Node.js and npm "
                    "(`apt-get install nodejs npm`)", pytrace=False)  # fmt: skip
    result = subprocess.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error",
         "--prefix", str(AXE_DIR), AXE_PACKAGE],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if result.returncode != 0 or not AXE_JS.exists():
        pytest.fail(f"`npm install {AXE_PACKAGE}` into {AXE_DIR} failed "
                    f"(exit {result.returncode}):\n{result.stderr}", pytrace=False)  # fmt: skip
    return AXE_JS


# Package scope, not session: Playwright's sync API keeps an event loop running in this
# thread while it is open, and the in-process tests after this package need the thread's loop.
@pytest.fixture(scope="package")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("browser tests need the playwright package: pip install -e '.[test]'",
                    pytrace=False)  # fmt: skip
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                              args=CHROMIUM_ARGS)  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="package")
def allies(tmp_path_factory, browser):
    """Eastside and Westside, two real nodes, allied through the API; their admins. (Asks for
    the browser first, so that a missing one fails the tests before any node starts.)"""
    root = tmp_path_factory.mktemp("browser-nodes")
    nodes = [LiveNode(root, name, env=FAST).init() for name in ("Eastside", "Westside")]
    admins = tuple(Admin(node) for node in nodes)
    try:
        for node in nodes:
            node.start()
        ally(*admins)
        yield admins
    finally:
        for node in nodes:
            node.stop()


class Person:
    """Someone at one node, in their own browser context (their own cookies)."""

    def __init__(self, browser, node: LiveNode, viewport: str) -> None:
        self.node = node
        self.viewport = viewport
        self.context = browser.new_context(
            base_url=node.url, viewport=VIEWPORTS[viewport], locale="en-GB",
            **({"is_mobile": True, "has_touch": True} if viewport == "phone" else {}),
        )  # fmt: skip
        self.context.set_default_timeout(ACTION_TIMEOUT_MS)
        self.page = self.context.new_page()

    def log_in(self, username: str, password: str) -> None:
        page = self.page
        page.goto("/login")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{self.node.url}/")

    def shot(self, journey: str, step: str) -> None:
        """A full-page screenshot: test-output/screenshots/<journey>-<viewport>-<step>.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{journey}-{self.viewport}-{step}.png",
                             full_page=True)  # fmt: skip


@pytest.fixture
def people(browser):
    """Makes `Person`s; closes their browser contexts after the test."""
    made: list[Person] = []

    def person(node: LiveNode, viewport: str = "desktop") -> Person:
        made.append(Person(browser, node, viewport))
        return made[-1]

    yield person
    for someone in made:
        someone.context.close()

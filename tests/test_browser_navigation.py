"""The sidebar always shows the app's own navigation: on a fresh server, for a deep link, and
in a tab left open while the server restarts (no list of file names from ``pages/``)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest
from shared import BROWSER_MARKS, CHROMIUM, serve_app, stop_app

TITLES = ["Train", "Runs", "Pareto frontier", "Compare runs", "Learn"]
FILE_NAMES = {"app", "train", "runs", "pareto", "compare", "learn"}

pytestmark = BROWSER_MARKS
playwright = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (requirements-dev)"
)
# Every navigation label in the sidebar, Streamlit's own or the router's page links (the
# last line of each link: the first is the icon's name).
_NAV_JS = """() => [...document.querySelectorAll('[data-testid="stSidebarNav"] a, '
    + '[data-testid="stSidebar"] a[data-testid="stPageLink-NavLink"]')]
  .map(a => a.innerText.trim().split('\\n').pop().trim())"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _watch_nav(page, timeout: float = 120.0) -> list[list[str]]:
    """Every distinct sidebar seen, sampled every 50 ms, until the real one has shown."""
    seen: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        labels = page.evaluate(_NAV_JS)
        if labels and (not seen or seen[-1] != labels):
            seen.append(labels)
        if labels == TITLES:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the app's navigation never showed; sidebars seen: {seen}")


def test_navigation_on_a_fresh_server_and_after_a_restart(tmp_path):
    port, home = _free_port(), tmp_path / "home"
    log = (tmp_path / "streamlit.log").open("w")
    server = serve_app(home, port, log)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/compare")  # a deep link is the first request
            seen = _watch_nav(page)
            assert not any(FILE_NAMES & set(labels) for labels in seen), seen
            page.get_by_role("heading", name="Compare runs").wait_for()

            stop_app(server)  # the tab stays open while the server restarts
            server = serve_app(home, port, log)
            page.wait_for_timeout(300)
            seen = _watch_nav(page)
            assert not any(FILE_NAMES & set(labels) for labels in seen), seen
            page.get_by_role("heading", name="Compare runs").wait_for()
            assert urlsplit(page.url).path.endswith("/compare")  # ?user= is the identity
            icon = page.evaluate("() => document.querySelector('link[rel*=icon]').href")
            assert icon.startswith(f"http://127.0.0.1:{port}/"), icon  # never a font host
            browser.close()
    finally:
        stop_app(server)
        log.close()

"""A class in real browsers: students own their runs, an admin owns all, a planted link in
the URL stays text, and a queue of runs shows each one's place.

One ``streamlit run serve.py`` (child-process worker, the default) with an admin password and
one worker; Playwright drives Debian's Chromium with one browser context per person.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
import urllib.request
from types import SimpleNamespace

import pytest
from shared import BROWSER_MARKS, CHROMIUM, PROGRESS, serve_app, stop_app, wait_for

from bsq_engine.runs.store import RunStore

PASSWORD = "teach-me"
QUEUED = 20
INJECTED = "x` ![t](http://host/x.png) [login](http://host/login)"

pytestmark = BROWSER_MARKS
playwright = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (requirements-dev)"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home = tmp_path_factory.mktemp("class_home")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"BSQ_ADMIN_PASSWORD": PASSWORD, "BSQ_MAX_CONCURRENT": "1",
           "BSQ_MAX_QUEUED_PER_USER": str(QUEUED + 2), "BSQ_WORKER": "process"}  # fmt: skip
    log = (home / "streamlit.log").open("w")
    proc = serve_app(home, port, log, env)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", home=home)
    finally:
        stop_app(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])  # fmt: skip
        yield chromium
        chromium.close()


def _person(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    return page


def _url(page) -> str:
    """The address bar now: Streamlit edits it with history.replaceState."""
    return page.evaluate("() => window.location.href")


def _run_id(page) -> str:
    found = wait_for(lambda: re.search(r"[?&]run=([\w.-]+)", _url(page)), 120, every=0.5,
                     what="a run id in the URL")  # fmt: skip
    return found.group(1)


def _start(page, epochs: int) -> str:
    page.get_by_role("button", name="Start training").wait_for()
    before = _url(page)
    page.get_by_label("BSQ epochs").fill(str(epochs))
    page.get_by_label("BSQ epochs").press("Enter")
    page.wait_for_timeout(1500)  # the rerun the new value started, before the click
    page.get_by_role("button", name="Start training").click()
    wait_for(lambda: (now := _url(page)) != before and "run=" in now, 120, every=0.3,
             what="the new run in the URL")  # fmt: skip
    return _run_id(page)


def test_a_class_in_browsers(app, browser):
    store = RunStore(app.home)
    ana = _person(browser, f"{app.url}/?user=ana")
    ana.get_by_text("Advanced settings").click()
    first = _start(ana, 2000)
    ana.locator(PROGRESS).first.wait_for()

    # Another student sees the run but cannot stop it.
    ben = _person(browser, f"{app.url}/?run={first}&user=ben")
    ben.locator(PROGRESS).first.wait_for()
    # The panel's own Stop, by its key: Streamlit's toolbar has a "Stop" button of its own.
    assert ben.locator(".st-key-train-stop button").first.first.is_disabled()
    # Ben's bar moves with the run: pushed by the live route (its fragment has no timer).
    bar = ben.locator(PROGRESS).first
    seen = bar.inner_text()
    wait_for(lambda: bar.inner_text() != seen, 60, every=0.3,
             what=lambda: f"the pushed bar to move from {seen!r}")  # fmt: skip
    # Where the route does not answer (a proxy that does not pass it), the bar still moves:
    # it reruns its fragment each tick instead, as the ticking fragment did.
    ben.route("**/_bsq/live/**", lambda route: route.fulfill(body="<html></html>"))
    seen = bar.inner_text()
    wait_for(lambda: bar.inner_text() != seen, 60, every=0.3,
             what=lambda: f"the bar to move without its route from {seen!r}")  # fmt: skip
    ben.unroute("**/_bsq/live/**")

    # A planted link in the URL is shown as text: no image, no link to the host.
    ben.goto(f"{app.url}/?user=ben&run=" + urllib.parse.quote(INJECTED))
    ben.get_by_text("[login](http://host/login)", exact=False).first.wait_for()
    assert ben.locator('img[src*="host"]').count() == 0
    assert ben.locator('a[href*="host"]').count() == 0

    # Twenty queued runs, each with its place.
    ids = [_start(ana, 2) for _ in range(QUEUED)]
    ana.goto(f"{app.url}/?user=ana&run={ids[-1]}")
    text = ana.locator(PROGRESS).first
    wait_for(lambda: f"place {QUEUED} of {QUEUED}" in text.inner_text(), 60, every=0.5,
             what=lambda: f"the last run's place, saw {text.inner_text()!r}")  # fmt: skip

    # The admin stops the first run from Ben's browser.
    ben.goto(f"{app.url}/?run={first}&user=ben")
    ben.get_by_role("button", name="Admin").click()
    ben.get_by_label("Admin password").fill(PASSWORD)
    ben.get_by_label("Admin password").press("Enter")
    stop = ben.locator(".st-key-train-stop button").first.first
    wait_for(lambda: not stop.is_disabled(), 60, every=0.5, what="Stop enabled for the admin")
    clicked = time.monotonic()
    stop.click()
    wait_for(lambda: store.get_run(first)["status"] == "stopped", 60, every=0.2,
             what="the first run to stop")  # fmt: skip
    print(f"admin Stop took {time.monotonic() - clicked:.2f} s")  # the server's exit stops the rest
    # the panel says so (drawn in place first, then the finished view), and the page stops
    # polling: the live Stop goes away
    ben.get_by_text("This run did not finish", exact=False).first.wait_for(timeout=30_000)
    wait_for(lambda: ben.locator(".st-key-train-stop button").count() == 0, 30, every=0.5,
             what="the finished view without the live Stop")  # fmt: skip


_STEP_TOPS = """async () => {
    await document.fonts.ready;
    return [...document.querySelectorAll('[data-testid="stButtonGroup"] button')]
        .map(b => Math.round(b.getBoundingClientRect().top));
}"""


def test_presentation_mode_fits_a_projector(app, browser):
    """1280x720: sidebar collapsed, the five step buttons on one line, chart text at the
    body text's size."""
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{app.url}/learn?present=1&step=1")
    page.get_by_text("Presentation mode").wait_for()
    # Streamlit 1.67 marks the sidebar's state in data-collapsed (aria-expanded is on its
    # collapse/expand buttons only).
    sidebar = page.locator('[data-testid="stSidebar"]')
    wait_for(
        lambda: sidebar.get_attribute("data-collapsed") == "true",
        30,
        every=0.5,
        what=lambda: f"a collapsed sidebar, saw {sidebar.get_attribute('data-collapsed')}",
    )
    steps = page.locator('[data-testid="stButtonGroup"] button')
    wait_for(lambda: steps.count() == 5, 60, every=0.5, what="five step buttons")

    # All five boxes read in one frame, once the web fonts are in and the layout held still
    # for a second: five separate reads straddled a reflow on CI's machine (tops 213 and
    # 227, 14 px apart; a wrapped row would be a whole button lower).
    def settled_tops():
        first = page.evaluate(_STEP_TOPS)
        time.sleep(1)
        return first if page.evaluate(_STEP_TOPS) == first else None

    tops = wait_for(settled_tops, 60, every=0.5, what="step buttons that stay in place")
    assert len(set(tops)) == 1, f"step buttons wrap onto {len(set(tops))} lines: tops {tops}"
    body = page.evaluate("""() => parseFloat(getComputedStyle(
        document.querySelector('[data-testid="stMain"] p')).fontSize)""")
    fonts = wait_for(
        lambda: page.evaluate("""() => [...document.querySelectorAll(
        '.js-plotly-plot .xtick text')].map(t => parseFloat(t.style.fontSize
        || getComputedStyle(t).fontSize))"""),
        60,
        every=0.5,
        what="a chart with tick labels",
    )
    assert min(fonts) >= 0.9 * body, f"chart text {min(fonts)} px vs body {body} px"
    page.screenshot(path=str(app.home / "presentation.png"))
    # Toggling the mode in the page moves the sidebar too (a new initial_sidebar_state).
    toggle = page.get_by_text("Presentation mode")
    for expect in ("false", "true"):
        toggle.click()
        wait_for(lambda e=expect: sidebar.get_attribute("data-collapsed") == e, 30, every=0.5,
                 what=lambda e=expect: f"data-collapsed={e} after a toggle, saw "
                 f"{sidebar.get_attribute('data-collapsed')}")  # fmt: skip

"""Real-browser tests of the daily use: the live view is never lost (Start scrolls to it;
``run`` and ``sweep`` stay in the URL across page switches and reloads), and the lesson
defaults to a run that shows BSQ (a BSQ run with dropped planes, never a uniform baseline;
step 5 shows only the student's own run). Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re

from shared import BROWSER_MARKS, PROGRESS, wait_for
from test_browser import app, browser, page, shot, url_of  # noqa: F401 - shared fixtures

pytestmark = BROWSER_MARKS

# In view: its top below Streamlit's top bar (which overlays the page) and in the upper part.
_IN_VIEW_JS = """(cls) => { const el = document.querySelector('.' + cls);
  if (!el) return null; const r = el.getBoundingClientRect();
  const bar = document.querySelector('[data-testid="stHeader"]');
  const below = bar ? bar.getBoundingClientRect().bottom : 0;
  return r.top >= below - 1 && r.top < window.innerHeight * 0.6; }"""


# What the first select box shows: its text, or its input's value (a combobox).
_PICKED_JS = """() => { const box = document.querySelector('[data-testid="stSelectbox"]');
  if (!box) return ''; const input = box.querySelector('input');
  return box.innerText + ' ' + (input ? input.value : ''); }"""


def _param(tab, name: str) -> str | None:
    match = re.search(rf"[?&]{name}=([\w.-]+)", url_of(tab))
    return match.group(1) if match else None


def _go(tab, link: str, heading: str) -> None:
    tab.get_by_role("link", name=link).first.click()
    tab.get_by_role("heading", name=heading, exact=True).first.wait_for()


def test_live_view_is_kept_across_pages_and_reloads(app, page):  # noqa: F811
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(app.url)
    page.get_by_text("Pick a model and dataset").wait_for()
    page.get_by_role("button", name="Start training").click()
    run_id = wait_for(lambda: _param(page, "run"), 60, what="?run= after Start")
    in_view = wait_for(lambda: page.evaluate(_IN_VIEW_JS, "st-key-jump-train-panel"), 30,
                       what="the run panel scrolled into view")  # fmt: skip
    shot(page, "daily_start_in_view")
    assert in_view
    page.locator(PROGRESS).first.wait_for()

    _go(page, "Runs", "Runs")
    wait_for(lambda: _param(page, "run") == run_id, 30, what="?run= kept on the Runs page")
    _go(page, "Train", "Train")
    wait_for(lambda: _param(page, "run") == run_id, 30, what="?run= kept back on Train")
    page.locator(PROGRESS).first.wait_for()  # the live panel is back
    page.reload()
    page.get_by_role("heading", name="Train", exact=True).first.wait_for()
    assert _param(page, "run") == run_id
    page.locator(PROGRESS).first.wait_for()

    # The run ends first. Its panel redraws the whole page when it ends, and a Start sweep
    # click near that moment was lost in two clean-clone suite runs on the busy 2-core
    # machine (once as a plain button, once as a callback: no sweep in the store, nothing
    # in the log; README, "Known limitations"). This test is about the sweep's URL.
    page.get_by_text("Finished in", exact=False).first.wait_for(timeout=240_000)
    # "Finished in" is drawn in place first, and the page's own rerun to the finished view
    # follows at the next tick (a click during it was lost once more in a clean-clone run).
    # The downloads are drawn by that rerun only; after it nothing reruns by itself.
    page.get_by_text("Download results").first.wait_for(timeout=60_000)
    page.get_by_text("Sweep alpha: several runs").click()
    page.get_by_role("button", name="Start sweep").click()
    sweep_id = wait_for(
        lambda: _param(page, "sweep"), 60,
        what=lambda: "?sweep= after Start sweep; the page shows:\n" + page.inner_text("body"),
    )  # fmt: skip
    _go(page, "Pareto frontier", "Pareto frontier")
    _go(page, "Train", "Train")
    assert wait_for(lambda: _param(page, "sweep"), 30, what="?sweep= kept") == sweep_id
    page.get_by_text("Sweep alpha: several runs").click()
    page.get_by_text("See the accuracy / bits trade-off").first.wait_for()  # its progress
    shot(page, "daily_sweep_kept")


def test_learn_defaults_to_a_bsq_run_that_dropped_planes(app, page):  # noqa: F811
    from apptest_helpers import make_run

    from bsq_engine.runs.store import RunStore
    from dashboard.views.lesson_runs import dropped_planes

    with RunStore(app.home) as store:  # written as the trainer would, oldest first
        bsq = make_run(store, name="lesson-bsq", bits=(4, 3, 5))
        make_run(store, name="newest-uniform", method="uniform", uniform_bits=4, bits=(4, 4, 4))
        assert dropped_planes(store.get_run(bsq)) == 12

    page.goto(f"{app.url}/learn?step=4")
    page.get_by_role("heading", name="4. Replay").wait_for()
    picked = wait_for(
        lambda: "lesson-bsq" in (text := page.evaluate(_PICKED_JS)) and text,
        120,
        what=lambda: f"the BSQ run picked ({shot(page, 'daily_learn_failed')})",
    )
    assert "newest-uniform" not in picked and "plane(s) dropped" in picked
    page.wait_for_timeout(1500)
    assert "qat" not in page.locator('[data-testid="stMain"]').inner_text()
    shot(page, "daily_learn_replay_default")

    page.get_by_text("5. Try it", exact=True).first.click()
    page.get_by_role("heading", name="5. Try it").wait_for()
    page.get_by_text("Your run appears here once you press the button.").wait_for()
    assert page.locator(PROGRESS).count() == 0  # nobody else's run
    shot(page, "daily_learn_try_it")

"""Real-browser tests: `streamlit run serve.py` (the app and its live route) driven by
Playwright in Debian's Chromium.

They use the app as a newcomer does: press Start training, watch the Bits per layer chart
change, reload mid-run, see the finished summary; run a sweep and read the Pareto frontier;
compare two runs; step through the lesson. Screenshots go to ``test-artifacts/``
(``BSQ_TEST_ARTIFACTS`` overrides), for people to look at.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from shared import BROWSER_MARKS, CHROMIUM, serve_app, stop_app
from shared import wait_for as _wait_for

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("BSQ_TEST_ARTIFACTS", ROOT / "test-artifacts"))

pytestmark = BROWSER_MARKS
playwright = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (requirements-dev)"
)

# The traces of the Plotly figure whose title contains `title` (Streamlit wraps it in <b>).
_TRACES_JS = """(title) => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const fig = plots.find(p => (((p.layout || {}).title || {}).text || '').includes(title));
  if (!fig) return null;
  // _fullData holds the decoded arrays (data may keep Plotly's base64 "bdata" encoding).
  return (fig._fullData || fig.data).map(t => ({name: t.name, x: Array.from(t.x || []),
                             y: Array.from(t.y || []), customdata: t.customdata || null}));
}"""


def traces(page, title: str) -> list[dict] | None:
    return page.evaluate(_TRACES_JS, title)


def bits_shown(page) -> list[int] | None:
    """Bar heights of the Bits per layer chart; None while pretraining (no bars yet)."""
    found = traces(page, "Bits per layer")
    return list(found[0]["y"]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One server per module, on a free port, with its own run store."""
    home = tmp_path_factory.mktemp("bsq_home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "streamlit.log").open("w")
    proc = serve_app(home, port, log)
    try:
        yield SimpleNamespace(url=url, home=home)
    finally:
        stop_app(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run"],
        )  # fmt: skip
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


wait_for = functools.partial(_wait_for, every=0.5)  # a browser round trip per poll


def url_of(page) -> str:
    """The address bar now: Streamlit edits it with history.replaceState."""
    return page.evaluate("() => window.location.href")


def run_id_of(page) -> str:
    match = re.search(r"[?&]run=([\w-]+)", url_of(page))
    assert match, f"no ?run= in {url_of(page)}"
    return match.group(1)


def test_train_live_reload_and_finish(app, page):
    """Start the default run, see bits drop live, reload mid-run, then see the summary."""
    from bsq_engine.runs.store import RunStore

    page.goto(app.url)
    page.get_by_text("Pick a model and dataset").wait_for()  # the first script run is done
    # Long enough to be watched: the default 60 BSQ epochs take ~2 s with the fast path,
    # and the live charts redraw every 8 s (dashboard/ui/live.py, CHART_TICK_S).
    page.get_by_text("Advanced settings").click()
    _set_number(page, "BSQ epochs", 400)
    page.get_by_role("button", name="Start training").click()
    try:
        wait_for(lambda: "run=" in url_of(page), 60, what="the run id in the URL")
    finally:
        shot(page, "train_started")
    run_id = run_id_of(page)
    first = wait_for(lambda: bits_shown(page), 120, what="a Bits per layer chart")
    # A run starts at 8 bits everywhere, but the fast path can finish the first BSQ epoch
    # (and its re-quantization) before the first chart arrives: only the range is certain.
    assert all(0 <= b <= 8 for b in first), f"bits per layer must be 0..8, saw {first}"
    dropped = wait_for(
        lambda: (b := bits_shown(page)) and min(b) < 8 and b, 120, what="a layer to drop"
    )
    status = RunStore(app.home).get_run(run_id)["status"]
    shot(page, "train_live")
    assert status == "running", f"bits changed live ({first} -> {dropped}) while {status}"

    page.reload()
    assert run_id_of(page) == run_id
    page.get_by_text(RunStore(app.home).get_run(run_id)["name"]).first.wait_for()
    wait_for(lambda: bits_shown(page), 60, what="the chart after the reload")

    wait_for(lambda: RunStore(app.home).get_run(run_id)["status"] == "finished", 300,
             what="the run to finish")  # fmt: skip
    run = RunStore(app.home).get_run(run_id)
    page.get_by_text("finished").first.wait_for()
    accuracy = f"{run['accuracy'] * 100:.2f}"
    wait_for(lambda: accuracy in page.inner_text("body"), 30, what=f"accuracy {accuracy} %")
    final_bits = [layer["n_bits"] for layer in run["summary"]["layers"]]
    # the ended run's outcome is drawn in place first; the whole finished page (its final
    # charts) follows at the progress fragment's next tick
    wait_for(lambda: bits_shown(page) == final_bits, 30,
             what=lambda: f"the final bits {final_bits}, shown {bits_shown(page)}")  # fmt: skip
    shot(page, "train_finished")


def _set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(600)  # let the rerun that commits the value finish


def test_sweep_pareto_and_compare(app, page):
    """A 3-point alpha sweep from the Train page, its frontier, then two runs compared."""
    import pandas as pd

    from bsq_engine.runs.store import RunStore
    from dashboard.views.pareto import pareto_front

    page.goto(app.url)
    page.get_by_text("Pick a model and dataset").wait_for()
    page.get_by_text("Advanced settings").click()
    _set_number(page, "BSQ epochs", 20)
    _set_number(page, "Finetune epochs", 5)
    _set_number(page, "Re-quantize every (epochs)", 5)
    page.get_by_text("Sweep alpha: several runs").click()
    _set_number(page, "Points", 3)
    page.get_by_role("button", name="Start sweep").click()

    store = RunStore(app.home)
    sweep = wait_for(lambda: store.list_sweeps(), 30, what="the sweep to be stored")[0]
    wait_for(
        lambda: (runs := store.list_runs(sweep_id=sweep["sweep_id"]))
        and len(runs) == 3 and all(r["status"] == "finished" for r in runs),
        600, every=2, what="3 sweep runs to finish",
    )  # fmt: skip
    runs = store.list_runs(sweep_id=sweep["sweep_id"])
    shot(page, "sweep_finished")

    page.get_by_role("link", name="Pareto frontier").first.click()
    chart = wait_for(lambda: traces(page, "Pareto frontier"), 60, what="the Pareto chart")
    by_name = {t["name"]: t for t in chart}
    pair_runs = store.list_runs(model="mlp", dataset="digits", status="finished")
    assert {r["run_id"] for r in runs} <= set(by_name["BSQ"]["customdata"])
    assert len(by_name["BSQ"]["customdata"]) == len(pair_runs)  # earlier tests' runs too
    frame = pd.DataFrame(pair_runs)
    on_front = frame[pareto_front(frame, "compression", "accuracy", maximize_x=True)]
    front = by_name["Pareto frontier"]
    assert len(front["x"]) == len(on_front)
    assert sorted(front["x"]) == pytest.approx(sorted(on_front["compression"]))
    shot(page, "pareto")

    pair = [runs[0]["run_id"], runs[-1]["run_id"]]
    page.goto(f"{app.url}/compare?runs={','.join(pair)}")
    grouped = wait_for(lambda: traces(page, "Bits per layer by run"), 60, what="grouped bits")
    assert len(grouped) == 2, [t["name"] for t in grouped]
    page.get_by_text("Summary").first.wait_for()
    shot(page, "compare")


def test_learn_steps(app, page):
    """Every lesson step renders for a real converted layer, with its own content."""
    page.goto(app.url)
    page.get_by_text("Pick a model and dataset").wait_for()
    page.get_by_role("link", name="Learn").first.click()
    expected = {
        1: "A weight in bits", 2: "A layer's bit planes", 3: "Why whole planes die",
        4: "Replay", 5: "Try it",
    }  # fmt: skip
    for step, title in expected.items():
        page.get_by_text(f"{step}. {title}", exact=True).first.click()  # segmented control
        page.get_by_role("heading", name=f"{step}. {title}").wait_for()
        page.wait_for_timeout(1500)
        assert page.locator('[data-testid="stException"]').count() == 0
        shot(page, f"learn_step{step}")

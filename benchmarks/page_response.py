"""How the app feels: Start -> first chart, first visit of each page, live progress cadence.

Starts `streamlit run serve.py` on a free port with a fresh store, opens it in Debian's
Chromium (Playwright) and measures, in this order:

- **first visit of each page**: on the fresh server, the time from a sidebar click until the
  page's title is visible, once per page (the first script run of a page pays its imports);
- **Start training** on the default config: the time from the click to the run panel
  (progress bar), to the first live curve (any loss point drawn), to the first **Bits per
  layer** bars with data, and ``start_to_first_chart_s``, the earlier of the two charts;
- the parts of Start -> first curve, from the store's timestamps of that run
  (``part_*``): click -> job submitted -> training process running -> first step -> curve
  drawn;
- page switches (Runs and back to Train) while that run trains and with nothing training;
- **within-epoch progress cadence** (``--lenet``, default on when Fashion-MNIST is on
  disk): LeNet-5 on Fashion-MNIST is started from the form and the progress bar's text is
  sampled every 0.1 s for ``--watch`` seconds once it trains; reported are the largest and
  the median gap between two changes. A bar that never moves reports the whole window as
  its gap (a lower bound).

Prints a table; with ``--json`` the last line is one JSON object. Needs ``chromium`` and
the ``playwright`` package. The load average before and after is printed with the figures:
on a shared machine, read them as upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from classroom_server import PROGRESS, serve  # the one server start of the benchmarks

CHROMIUM = "/usr/bin/chromium"
FASHION = Path("/usr/share/datasets/fashion-mnist")
_BARS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].some(p =>
  (((p.layout || {}).title || {}).text || '').includes('Bits per layer') &&
  (p.data || []).some(t => (t.y || []).length))"""
_CURVE_JS = """() => document.querySelectorAll('[data-testid="stVegaLiteChart"]').length > 0"""
_BAR = f"document.querySelector({json.dumps(PROGRESS)})"  # the live panel's progress bar
_PROGRESS_JS = "() => { const p = " + _BAR + "; return p ? p.innerText : null; }"
# (sidebar link, page title) of every page but Train, in the order a newcomer might go.
PAGES = (("Runs", "Runs"), ("Pareto frontier", "Pareto frontier"),
         ("Compare runs", "Compare runs"), ("Learn", "1. A weight in bits"))  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _until(page, js: str, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if page.evaluate(js):
            return time.perf_counter() - start
        time.sleep(0.05)
    raise TimeoutError(js)


def _visit(page, link: str, heading: str) -> float:
    """Seconds from a sidebar click until the target page's title is visible."""
    start = time.perf_counter()
    page.get_by_role("link", name=link).first.click()
    page.get_by_role("heading", name=heading, exact=True).first.wait_for()
    return time.perf_counter() - start


def _switch_times(page, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        times += [_visit(page, "Runs", "Runs"), _visit(page, "Train", "Train")]
    return times


def _start_default(page) -> dict:
    clicked_at, start = time.time(), time.perf_counter()
    page.get_by_role("button", name="Start training").click()
    page.locator(PROGRESS).first.wait_for()
    panel = time.perf_counter() - start
    curve = panel + _until(page, _CURVE_JS)
    bars = time.perf_counter() - start if page.evaluate(_BARS_JS) else None
    if bars is None:
        bars = time.perf_counter() - start + _until(page, _BARS_JS)
    first = time.perf_counter() - start  # upper bound; refined below
    return {"start_to_panel_s": panel, "start_to_first_curve_s": curve,
            "start_to_first_bits_chart_s": bars, "clicked_at": clicked_at,
            "start_to_first_chart_s": min(curve, bars, first)}  # fmt: skip


def _start_parts(db: Path, start: dict) -> dict:
    """Start -> first chart in parts, from the store's timestamps of the run just started:
    the click's script run up to the job's submission (``created_at``), the training
    process taking it (``started_at``: set once its imports are done), its first step
    (the first stored step point: data load, model, one step), then the live buffer, the
    panel's next tick and the browser drawing the chart."""
    conn = sqlite3.connect(db)
    run_id, created, started = conn.execute(
        "SELECT run_id, created_at, started_at FROM runs ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    first = conn.execute("SELECT MIN(time) FROM step_points WHERE run_id = ?", (run_id,))
    first_step = first.fetchone()[0]
    conn.close()
    clicked = start.pop("clicked_at")
    curve_at = clicked + start["start_to_first_curve_s"]
    parts = {
        "part_click_to_submit_s": created - clicked,
        "part_submit_to_training_process_s": (started or created) - created,
        "part_training_to_first_step_s": None,
        "part_first_step_to_curve_s": None,
    }
    if first_step is not None and started is not None:
        parts["part_training_to_first_step_s"] = first_step - started
        parts["part_first_step_to_curve_s"] = curve_at - first_step
    return parts


_ENDED_JS = """() => /did not finish|Finished in/.test(document.body.innerText)"""


def _stop_watched_run(page) -> None:
    """Press the panel's Stop until the run has ended (a click can race a live tick)."""
    for _ in range(20):
        if page.evaluate(_ENDED_JS):
            return
        stop = page.locator(".st-key-train-stop button")  # not the toolbar's "Stop"
        if stop.count():
            stop.first.click()
        page.wait_for_timeout(3000)
    raise TimeoutError("the default run did not stop")


def _pick(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=False).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    page.wait_for_timeout(800)


def _progress_cadence(page, watch: float) -> dict:
    """Start LeNet-5 on Fashion-MNIST and time the changes of the progress bar's text."""
    _pick(page, "Model", "lenet5")
    _pick(page, "Dataset", "fashion_mnist")
    page.get_by_role("button", name="Start training").click()
    page.locator(PROGRESS).first.wait_for(timeout=60_000)
    _until(page, "() => { const p = " + _BAR + "; return p && !p.innerText.startsWith('Queued'); }",
           120)  # fmt: skip
    changes, last, start = [], page.evaluate(_PROGRESS_JS), time.perf_counter()
    while (now := time.perf_counter()) - start < watch:
        text = page.evaluate(_PROGRESS_JS)
        if text != last:
            changes.append(now - start)
            last = text
        time.sleep(0.1)
    gaps = [b - a for a, b in zip([0.0, *changes], [*changes, watch])]
    return {"lenet_progress_updates": len(changes), "lenet_watch_s": watch,
            "lenet_progress_max_gap_s": max(gaps),
            "lenet_progress_median_gap_s": statistics.median(gaps)}  # fmt: skip


def measure(rounds: int, lenet: bool, watch: float) -> dict:
    from playwright.sync_api import sync_playwright

    home, port = Path(tempfile.mkdtemp(prefix="bsq_bench_")), _free_port()
    result = {"load_avg_before": os.getloadavg()[0]}
    server = serve(home, port)
    try:
        with sync_playwright() as p:
            flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("button", name="Start training").wait_for()
            firsts = {link: _visit(page, link, heading) for link, heading in PAGES}
            result.update({f"first_visit_{k.split()[0].lower()}_s": v for k, v in firsts.items()})
            result["first_visit_max_s"] = max(firsts.values())
            idle = _switch_times(page, rounds)
            _visit(page, "Train", "Train")
            started = _start_default(page)
            page.wait_for_timeout(2500)  # the first step points reach the store (2 s flush)
            result.update(started, **_start_parts(home / "runs.db", started))
            busy = _switch_times(page, rounds)
            if lenet:  # one worker: stop the default run so LeNet-5 starts at once
                running = (
                    sqlite3.connect(home / "runs.db")
                    .execute("SELECT run_id FROM runs WHERE status IN ('running', 'queued')")
                    .fetchall()
                )
                for (run_id,) in running:  # through its panel: the server owns the run
                    page.goto(f"http://127.0.0.1:{port}/?run={run_id}")
                    _stop_watched_run(page)
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_role("button", name="Start training").wait_for()
                result.update(_progress_cadence(page, watch))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    result.update({
        "switch_idle_median_s": statistics.median(idle), "switch_idle_max_s": max(idle),
        "switch_training_median_s": statistics.median(busy),
        "switch_training_max_s": max(busy), "rounds": rounds,
        "load_avg_after": os.getloadavg()[0],
    })  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-lenet", action="store_true", help="skip the LeNet-5 cadence")
    parser.add_argument("--watch", type=float, default=40.0, help="seconds of LeNet-5 to watch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lenet = not args.no_lenet and FASHION.is_dir()
    result = measure(args.rounds, lenet, args.watch)
    for key, value in result.items():
        print(f"{key:32s} {value:.2f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

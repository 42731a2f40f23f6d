"""What a tab's first load of a page costs: the browser's CPU and the server's, by page.

    python benchmarks/first_load.py                       # 3 loads of each page
    python benchmarks/first_load.py --loads 5 --profile   # and JS self time by script

With 30 students' tabs on the server's own two cores, the classroom benchmark found the
first load of the Train page on a live run, not the ticks, to be what the tabs wait for
(``benchmarks/results/classroom_load_same_priority.txt``, run 12). This measures one load at
a time. Starts ``streamlit run serve.py`` with a fresh store, starts one long run
(``classroom_load.start_run``), visits every page once untimed (the server's first script
run of a page pays for imports and caches), then, for each page of ``PAGES`` in turn
(interleaved, ``--loads`` rounds), opens a new tab of one browser context (as the classroom
benchmark's students: the HTTP cache is shared after the first) and reads over a
``--window`` from the navigation:

- every Chromium process's CPU seconds, from ``/proc`` (what the load takes from the cores),
- the server process's CPU seconds, from ``/proc`` (its script runs, websockets, files),
- the seconds until the page's marker showed (the live panel's progress bar, else the
  title) and until its charts were all drawn (as many as ``--window`` ends with, counted
  every 0.25 s);

and, each round, the rates of one tab that has already watched the live panel for a
``--window`` (what a tab costs once loaded: the live panel's ticks and chart refreshes).
No other tab is open while a page loads, so a window's browser CPU is that tab's (an idle
Chromium adds next to nothing); the server's includes the run's own work for its viewers.
Printed per page: medians over the rounds of the window's CPU (browser, server), time to
marker, time to charts, and the charts' count; and the watching tab's rates, whose
window's worth is what a live panel's first window would cost without its first load.
With ``--profile``: JavaScript self time by script during the Train page's loads on the
run (Streamlit's chunks: ``index``, ``PlotlyChart``, ``vega-*``...).

``--variants`` attributes a load's cost: each variant serves the app with some of the
panel's parts switched off (``plotly``: its two Plotly charts, ``vega``: its Vega-Lite charts,
``downloads``: the CSV/PNG buttons under them; ``none``: the app as it is), one server each,
in turn. A variant's entry script is written next to ``serve.py`` for the run (Streamlit
finds the app's pages from its entry's folder; uvicorn imports it by module name, so its
name has no leading dot) and removed once its server answers.

The machine is shared and noisy: compare code versions interleaved, in one run of this
script each, or read the ratios; the "train, no run" row, the same in every variant, shows
how far two variants' figures move with the machine alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classroom_load import browser_on_a_run, warm_up
from classroom_server import (
    PROGRESS,
    ROOT,
    add_app_option,
    cpu,
    serve,
    tree_cpu,
)
from tab_cost import _by_script

# (label, path and query after the run id is known, marker selector)
_TITLE = '[data-testid="stMain"] h1'
PAGES = (
    ("train, live run", "/?run={run}&user=s{i}", PROGRESS),
    ("train, no run", "/?user=s{i}", _TITLE),
    ("runs", "/runs?user=s{i}", _TITLE),
    ("learn", "/learn?user=s{i}", _TITLE),
)
_PAGE_NAMES = list(dict.fromkeys(label.split(",")[0] for label, _, _ in PAGES))
_CHARTS = '[data-testid="stVegaLiteChart"], [data-testid="stPlotlyChart"]'


async def _one_load(context, url: str, marker: str, window: float, roots, server_pid,
                    profile: bool) -> dict:  # fmt: skip
    page = await context.new_page()
    cdp = None
    if profile:
        cdp = await context.new_cdp_session(page)
        await cdp.send("Profiler.enable")
        await cdp.send("Profiler.setSamplingInterval", {"interval": 500})
        await cdp.send("Profiler.start")
    b0, s0, t0 = tree_cpu(roots), cpu(server_pid)[0], time.monotonic()
    await page.goto(url, wait_until="commit")
    marker_s = charts_s = None
    charts = 0
    while (now := time.monotonic() - t0) < window:
        if marker_s is None and await page.locator(marker).count():
            marker_s = now
        count = await page.locator(_CHARTS).count()
        if count != charts:
            charts, charts_s = count, now
        await asyncio.sleep(0.25)
    b1, s1 = tree_cpu(roots), cpu(server_pid)[0]
    scripts = None
    if cdp is not None:
        scripts = _by_script((await cdp.send("Profiler.stop"))["profile"])
    await page.close()
    return {"browser": b1 - b0, "server": s1 - s0, "marker_s": marker_s,
            "charts_s": charts_s, "charts": charts, "scripts": scripts}  # fmt: skip


# what each part of a variant switches off, in the variant's entry script
_PARTS = {
    "plotly": "st.plotly_chart = _off",
    "vega": "st.vega_lite_chart = _off",
    "downloads": "run_charts.chart_downloads = _off",
}
_ENTRY = """# written by benchmarks/first_load.py for one measurement, removed once it is served
import streamlit as st

import dashboard.ui.run_charts as run_charts
from dashboard.ui.live_route import routes


def _off(*args, **kwargs):
    return None


{parts}
app = st.App("app.py", routes=routes())
"""


def variant_parts(variant: str, app: str) -> list[str]:
    """The parts ``variant`` switches off ("plotly+vega" -> both; "none" -> none); exits
    with what is allowed when it names others."""
    parts = [] if variant == "none" else variant.split("+")
    if any(part not in _PARTS for part in parts) or (parts and app != "serve.py"):
        raise SystemExit(f"--variants: parts of {sorted(_PARTS)} joined by '+', or 'none', "
                         f"with --app serve.py (got {variant!r}, --app {app})")  # fmt: skip
    return parts


def variant_entry(variant: str, app: str) -> Path | None:
    """The entry script serving the app without ``variant``'s parts, written next to
    ``serve.py``; None for "none" (``app`` itself)."""
    parts = variant_parts(variant, app)
    if not parts:
        return None
    path = ROOT / f"_first_load_{'_'.join(parts)}.py"
    path.write_text(_ENTRY.format(parts="\n".join(_PARTS[part] for part in parts)))
    return path


async def measure(args, variant: str = "none") -> dict:
    from playwright.async_api import async_playwright

    home = Path(tempfile.mkdtemp(prefix="bsq_first_load_"))
    entry = variant_entry(variant, args.app)
    try:
        server = serve(home, args.port, entry or ROOT / args.app)
    finally:
        if entry is not None:  # Streamlit has read it
            entry.unlink()
    base = f"http://127.0.0.1:{args.port}"
    pages = [page for page in PAGES if page[0].split(",")[0] in args.pages]
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in pages}
    steady: list[dict] = []
    try:
        async with async_playwright() as p:
            browser, roots, run_id = await browser_on_a_run(p, base, home)
            await warm_up(browser, base, run_id)
            context = await browser.new_context(viewport={"width": 1280, "height": 720})
            i = 0
            for _ in range(args.loads):
                for label, path, marker in pages:
                    i += 1
                    url = base + path.format(run=run_id, i=i)
                    profile = args.profile and label == PAGES[0][0]
                    rows[label].append(await _one_load(
                        context, url, marker, args.window, roots, server.pid, profile))  # fmt: skip
                # a tab that has watched the run for a window already: the steady cost
                watcher = await context.new_page()
                await watcher.goto(base + PAGES[0][1].format(run=run_id, i="w"))
                await watcher.locator(PROGRESS).first.wait_for(timeout=120_000)
                await asyncio.sleep(args.window)
                b0, s0, t0 = tree_cpu(roots), cpu(server.pid)[0], time.monotonic()
                await asyncio.sleep(args.window)
                wall = time.monotonic() - t0
                steady.append({"browser": (tree_cpu(roots) - b0) / wall,
                               "server": (cpu(server.pid)[0] - s0) / wall})  # fmt: skip
                await watcher.close()
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"rows": rows, "steady": steady, "window": args.window}


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def summary(result: dict) -> dict:
    """Medians over the rounds, per page: the window's CPU (browser, server), seconds to
    marker and to charts, charts; and the watching tab's rates (cores)."""
    steady = result["steady"]
    steady_b = _median(s["browser"] for s in steady)
    steady_s = _median(s["server"] for s in steady)
    pages = {
        label: {
            "loads": len(loads),
            "browser_cpu_s": _median(r["browser"] for r in loads),
            "server_cpu_s": _median(r["server"] for r in loads),
            "marker_s": _median(r["marker_s"] for r in loads),
            "charts_s": _median(r["charts_s"] for r in loads),
            "charts": _median(r["charts"] for r in loads) or 0,
        }
        for label, loads in result["rows"].items()
    }
    return {"window_s": result["window"], "steady_browser_core": steady_b,
            "steady_server_core": steady_s, "pages": pages}  # fmt: skip


def report(result: dict) -> dict:
    """Print ``result``'s summary (and its JS self time by script); return the summary."""
    figures = summary(result)
    window = figures["window_s"]
    print(f"CPU seconds in a tab's first {window:.0f} s on a page (no other tab open); a tab "
          f"already watching the live panel: browser {figures['steady_browser_core']:.3f} "
          f"core, server {figures['steady_server_core']:.3f} core (x {window:.0f} s: "
          f"{figures['steady_browser_core'] * window:.2f} s, "
          f"{figures['steady_server_core'] * window:.2f} s)")  # fmt: skip
    print(f"  {'page':<18} {'loads':>5} {'browser CPU s':>14} {'server CPU s':>13} "
          f"{'marker':>8} {'charts drawn':>13} {'charts':>7}")  # fmt: skip
    for label, row in figures["pages"].items():
        print(f"  {label:<18} {row['loads']:>5} {_fmt(row['browser_cpu_s']):>14} "
              f"{_fmt(row['server_cpu_s']):>13} {_fmt(row['marker_s'], ' s'):>8} "
              f"{_fmt(row['charts_s'], ' s'):>13} {row['charts']:>7.0f}")  # fmt: skip
    scripts = [r["scripts"] for r in result["rows"].get(PAGES[0][0], ()) if r["scripts"]]
    if scripts:
        total = sum(scripts, start=type(scripts[0])())
        print(f"  JS self time during the {PAGES[0][0]} loads, s per load:")
        for name, us in total.most_common(12):
            print(f"    {name:<40} {us / 1e6 / len(scripts):.3f}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=3, help="rounds over the pages")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per load")
    parser.add_argument("--profile", action="store_true", help="JS self time by script")
    parser.add_argument("--pages", nargs="+", default=_PAGE_NAMES, choices=_PAGE_NAMES,
                        help="which pages to load (default: all)")  # fmt: skip
    add_app_option(parser)
    parser.add_argument("--port", type=int, default=8773)
    parser.add_argument("--variants", nargs="+", default=["none"], metavar="PARTS",
                        help="'none' (the app) and/or parts to switch off, joined by '+': "
                             f"{', '.join(_PARTS)} (e.g. none plotly+vega)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = parser.parse_args()
    for variant in args.variants:
        variant_parts(variant, args.app)  # every variant checked before the first measure
    figures = {}
    for variant in args.variants:
        print(f"=== variant: {variant}" + ("" if variant == "none" else " switched off"),
              flush=True)  # fmt: skip
        figures[variant] = report(asyncio.run(measure(args, variant)))
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()

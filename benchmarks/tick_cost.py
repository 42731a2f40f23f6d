"""What one fragment tick costs a browser tab, on a bare page and on a full one.

    python benchmarks/tick_cost.py                     # 2 rounds, 25 s per variant
    python benchmarks/tick_cost.py --rounds 3 --secs 40

The live panel's ticks are ``st.fragment(run_every=...)`` script runs; each one's deltas
are rendered by the tab. ``tab_cost.py`` measures the whole panel; this one asks what a tick
costs by itself, on a page made for the purpose (no store, no training): a fragment that
draws a progress bar and a button (what the panel's progress tick sends) every
``--every`` seconds, or never (``idle``: the same page, not ticking), above

- nothing (``bare``);
- ``--charts`` rows of static content: a Plotly bar chart, a Vega-Lite line chart and four
  download buttons each (``charts``);
- ``--widgets`` select boxes and sliders (``widgets``; the Train page's form is of that kind).

The static content is drawn once by the page; it is never re-sent by a tick. For each
variant, interleaved round by round (one new tab per variant per round, one Chromium), it
reads the tab's renderer main thread from Chrome DevTools' ``Performance.getMetrics``
(``TaskDuration``) over ``--secs`` seconds after ``--settle`` seconds, and prints cores and,
per page, the main-thread milliseconds of one tick: (ticking - idle) x the tick length.
The machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classroom_load import _FLAGS, CHROMIUM
from classroom_server import serve
from tab_cost import devtools_metrics

PAGES = ("bare", "charts", "widgets")

APP = textwrap.dedent("""
    import time

    import plotly.graph_objects as go
    import streamlit as st

    q = st.query_params
    every = float(q.get("every", "0")) or None  # 0: the fragment never ticks
    charts, widgets = int(q.get("charts", "0")), int(q.get("widgets", "0"))
    st.title("tick cost")

    @st.fragment(run_every=every)
    def tick():
        bar, button = st.columns([6, 1])
        bar.progress((time.time() % 60) / 60, text=f"tick at {time.time():.1f}")
        button.button("Stop", key="stop")

    tick()
    for i in range(charts):
        left, right = st.columns(2)
        left.plotly_chart(go.Figure(go.Bar(y=[(i * 7 + j) % 11 for j in range(20)])),
                          key=f"bar{i}")
        right.vega_lite_chart({
            "data": {"values": [{"x": j, "y": (i + j) % 7} for j in range(30)]},
            "mark": "line",
            "encoding": {"x": {"field": "x", "type": "quantitative"},
                         "y": {"field": "y", "type": "quantitative"}},
        }, key=f"line{i}")
        row = st.container(horizontal=True)
        for k in range(4):
            row.download_button("CSV", data=b"x", key=f"dl{i}.{k}", on_click="ignore")
    for i in range(widgets):
        st.selectbox(f"select {i}", ["a", "b", "c"], key=f"select{i}")
        st.slider(f"slider {i}", 0, 10, 3, key=f"slider{i}")
""")


def query(page: str, every: float, args) -> str:
    """The URL query of ``page`` ticking every ``every`` s (0: idle)."""
    content = {
        "bare": "",
        "charts": f"&charts={args.charts}",
        "widgets": f"&widgets={args.widgets}",
    }
    return f"?every={every:g}{content[page]}"


async def main_thread_cores(browser, url: str, settle: float, secs: float) -> float:
    """The renderer main thread of one new tab on ``url``, in cores over ``secs``."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        tab = await context.new_page()
        await tab.goto(url)
        await tab.get_by_text("tick cost").first.wait_for(timeout=60_000)
        await asyncio.sleep(settle)
        cdp = await context.new_cdp_session(tab)
        await cdp.send("Performance.enable")
        before = await devtools_metrics(cdp)
        start = time.monotonic()
        await asyncio.sleep(secs)
        after = await devtools_metrics(cdp)
        wall = time.monotonic() - start
    finally:
        await context.close()
    return (after["TaskDuration"] - before["TaskDuration"]) / wall


async def measure(args) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    folder = Path(tempfile.mkdtemp(prefix="bsq_tick_"))
    (folder / "tick_app.py").write_text(APP)
    server = serve(folder, args.port, folder / "tick_app.py")
    cores: dict[str, list[float]] = {}
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
            for _ in range(args.rounds):
                for page in PAGES:
                    for every in (args.every, 0.0):
                        url = f"http://127.0.0.1:{args.port}/{query(page, every, args)}"
                        name = f"{page} {'ticking' if every else 'idle'}"
                        got = await main_thread_cores(browser, url, args.settle, args.secs)
                        cores.setdefault(name, []).append(got)
                        print(f"  {name:18s} {got:.4f} core", flush=True)
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return cores


def tick_ms(cores: dict[str, list[float]], every: float) -> dict[str, float]:
    """Main-thread ms of one tick per page: the ticking tab's median cores minus the idle
    tab's, times the tick length."""
    med = {name: statistics.median(values) for name, values in cores.items()}
    return {page: (med[f"{page} ticking"] - med[f"{page} idle"]) * every * 1000 for page in PAGES}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--every", type=float, default=1.5, help="tick length, s (default 1.5: the panel's)")
    add("--charts", type=int, default=3, help="static chart rows on the 'charts' page")
    add("--widgets", type=int, default=20, help="select box + slider pairs on 'widgets'")
    add("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    add("--secs", type=float, default=25.0, help="measured window per tab, s")
    add("--settle", type=float, default=10.0, help="seconds before it, s")
    add("--port", type=int, default=8772)
    args = parser.parse_args(argv)
    if args.every <= 0:
        parser.error(f"--every must be positive (got {args.every})")
    cores = asyncio.run(measure(args))
    print(
        f"one tab, renderer main thread (median of {args.rounds} rounds, cores), "
        f"tick every {args.every:g} s:"
    )
    for name, values in cores.items():
        print(f"  {name:18s} {statistics.median(values):.4f}")
    for page, ms in tick_ms(cores, args.every).items():
        print(f"  one tick on the {page} page: {ms:.0f} ms of main thread")


if __name__ == "__main__":
    main()

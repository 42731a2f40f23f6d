"""What one viewer's tab costs its browser: the live panel of a training run, in Chromium.

    python benchmarks/tab_cost.py                  # one 60 s window
    python benchmarks/tab_cost.py --secs 60 --profile

Starts ``streamlit run serve.py`` (``--app app.py``: without the live route, the progress
ticking as fragment runs, as before) with a fresh store (``classroom_server.serve``), starts one
long run from the Train page (``classroom_load.start_run``), opens ONE tab of a second
browser context on ``/?run=<id>``, lets it settle, and over ``--secs`` seconds reads:

- the tab's renderer main thread from Chrome DevTools' ``Performance.getMetrics``
  (``TaskDuration``: all its tasks; ``ScriptDuration``: JavaScript; layout and style);
- every Chromium process from ``/proc`` (browser, GPU, network, renderers: what the tab
  takes from the machine's cores);
- the server process from ``/proc`` (its no-viewer rate included: this is not
  ``classroom_load.py``'s viewer cost);
- with ``--profile``: the JavaScript sampling profiler's self time by script (Streamlit's
  bundles: ``react-dom``, ``emotion``, ``PlotlyChart``, ``vega-*``...). The profiler itself
  loads the renderer, so compare runs with the same flags only.

CPU figures are cores (CPU seconds per wall second). The machine is shared: compare code
versions interleaved (A B A B ...), as in ``benchmarks/results/tab_cost_ab.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classroom_load import browser_on_a_run
from classroom_server import (
    PROGRESS,
    ROOT,
    add_app_option,
    cpu,
    serve,
    tree_cpu,
)

_MAIN = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


async def devtools_metrics(cdp) -> dict[str, float]:
    """Chrome DevTools' ``Performance.getMetrics`` of a tab (``Performance.enable`` first),
    by name: ``TaskDuration`` and the others are the renderer main thread's seconds."""
    return {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}


def _by_script(profile: dict) -> collections.Counter:
    """Self time (us) of a CPU profile's samples, by the script they ran in."""
    nodes = {n["id"]: n["callFrame"] for n in profile["nodes"]}
    spent = collections.Counter()
    for sample, dt in zip(profile["samples"], profile["timeDeltas"]):
        frame = nodes[sample]
        spent[frame["url"].rsplit("/", 1)[-1] or frame["functionName"] or "(native)"] += dt
    return spent


async def measure(args) -> dict:
    from playwright.async_api import async_playwright

    home = Path(tempfile.mkdtemp(prefix="bsq_tab_"))
    server = serve(home, args.port, ROOT / args.app)
    base = f"http://127.0.0.1:{args.port}"
    try:
        async with async_playwright() as p:
            browser, roots, run_id = await browser_on_a_run(p, base, home)
            context = await browser.new_context(viewport={"width": 1280, "height": 720})
            page = await context.new_page()
            await page.goto(f"{base}/?run={run_id}&user=viewer")
            await page.locator(PROGRESS).first.wait_for(timeout=120_000)
            await asyncio.sleep(args.settle)
            cdp = await context.new_cdp_session(page)
            await cdp.send("Performance.enable")
            if args.profile:
                await cdp.send("Profiler.enable")
                await cdp.send("Profiler.setSamplingInterval", {"interval": 500})
                await cdp.send("Profiler.start")
            m0 = await devtools_metrics(cdp)
            browser0, server0, t0 = tree_cpu(roots), cpu(server.pid)[0], time.monotonic()
            await asyncio.sleep(args.secs)
            m1 = await devtools_metrics(cdp)
            browser1, server1 = tree_cpu(roots), cpu(server.pid)[0]
            wall = time.monotonic() - t0
            profile = (await cdp.send("Profiler.stop"))["profile"] if args.profile else None
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {f"main_{k}": (m1[k] - m0[k]) / wall for k in _MAIN}
    result |= {"browser_cores": (browser1 - browser0) / wall,
               "server_cores": (server1 - server0) / wall, "wall_s": wall}  # fmt: skip
    if profile is not None:
        result["scripts"] = {k: v / 1e6 / wall for k, v in _by_script(profile).most_common(12)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secs", type=float, default=60.0, help="measured window (s)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds before it (s)")
    parser.add_argument("--profile", action="store_true", help="JS self time by script")
    add_app_option(parser)
    parser.add_argument("--port", type=int, default=8771)
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    print(
        f"one tab on the live panel (streamlit run {args.app}), {result['wall_s']:.0f} s (cores):"
    )
    for key in _MAIN:
        print(f"  renderer main thread, {key}: {result[f'main_{key}']:.4f}")
    print(f"  every Chromium process: {result['browser_cores']:.4f}")
    print(f"  server process (no-viewer rate included): {result['server_cores']:.4f}")
    for script, cores in (result.get("scripts") or {}).items():
        print(f"  JS self time, {script}: {cores:.4f}")


if __name__ == "__main__":
    main()

"""How the app feels while a run trains: start-to-first-update latency and page response.

Starts `streamlit run app.py` on a free port with a fresh store, opens it in Debian's
Chromium (Playwright), presses **Start training** on the default config and measures:

- time from the click to the run panel (progress bar) appearing,
- time from the click to the first live curve (any loss point drawn) and to the first
  **Bits per layer** bars (the BSQ stage has started),
- while the run trains: the time to switch to another page (Runs) and back (Train) until
  each page's content is visible, repeated ``--rounds`` times; and the same switches with
  no run training, for reference.

Prints a table; with ``--json`` the last line is one JSON object. Needs ``chromium`` and
the ``playwright`` package; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
_BARS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].some(p =>
  (((p.layout || {}).title || {}).text || '').includes('Bits per layer') && p.data.length)"""
_CURVE_JS = """() => document.querySelectorAll('[data-testid="stVegaLiteChart"]').length > 0"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "BSQ_HOME": str(home)}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(180):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("streamlit did not start")


def _until(page, js: str, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if page.evaluate(js):
            return time.perf_counter() - start
        time.sleep(0.05)
    raise TimeoutError(js)


def _switch_times(page, rounds: int) -> list[float]:
    """Seconds from a sidebar click until the target page's title is visible."""
    times = []
    for _ in range(rounds):
        for link, heading in (("Runs", "Runs"), ("Train", "Train")):
            start = time.perf_counter()
            page.get_by_role("link", name=link).first.click()
            page.get_by_role("heading", name=heading, exact=True).first.wait_for()
            times.append(time.perf_counter() - start)
    return times


def measure(rounds: int) -> dict:
    from playwright.sync_api import sync_playwright

    home, port = Path(tempfile.mkdtemp(prefix="bsq_bench_")), _free_port()
    server = _serve(home, port)
    try:
        with sync_playwright() as p:
            flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("Pick a model and dataset").wait_for()
            idle = _switch_times(page, rounds)
            page.get_by_role("link", name="Train").first.click()
            page.get_by_text("Pick a model and dataset").wait_for()
            start = time.perf_counter()
            page.get_by_role("button", name="Start training").click()
            page.locator('[data-testid="stProgress"]').first.wait_for()
            panel = time.perf_counter() - start
            curve = panel + _until(page, _CURVE_JS)
            bars = time.perf_counter() - start if page.evaluate(_BARS_JS) else None
            if bars is None:
                bars = time.perf_counter() - start + _until(page, _BARS_JS)
            busy = _switch_times(page, rounds)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "start_to_panel_s": panel, "start_to_first_curve_s": curve,
        "start_to_first_bits_chart_s": bars,
        "switch_idle_median_s": statistics.median(idle), "switch_idle_max_s": max(idle),
        "switch_training_median_s": statistics.median(busy),
        "switch_training_max_s": max(busy), "rounds": rounds,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.rounds)
    for key, value in result.items():
        print(f"{key:32s} {value:.2f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

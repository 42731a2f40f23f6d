"""A classroom on one server: N browser viewers watching one run that the server trains.

Starts ``streamlit run app.py`` bound to 127.0.0.1 with a fresh store, starts one long run
from the Train page (the default model and dataset, ``--bsq-epochs`` BSQ epochs), waits for
its BSQ stage, measures a window with no viewer, then for each N of ``--viewers``: opens N
browser contexts of Debian's Chromium (Playwright) on ``/?run=<id>``, watches for
``--watch`` seconds and switches every viewer to the Runs page and back. It prints, per N:

- viewers that saw the live panel, and that saw it update (its progress text changed),
- panel load and page-switch p50 / p95 (seconds, measured in the browsers),
- the server's CPU: seconds per viewer-minute above the no-viewer rate, read from
  ``/proc/<pid>/stat`` (so the browsers' own CPU never counts): of the server process
  alone when the run trains in a child process, else of the server with its children;
  plus the cores of the whole server (children included) and of its process alone,
- the server's memory (RSS, children included),
- the run's mean BSQ epoch time in the window against the no-viewer window.

The run's owner opens its live panel before the last N arrive and presses **Stop** at the
end while every viewer still watches; the time until the store says ``stopped`` is printed. Students
arrive ``--arrival`` seconds apart. The browsers share the server's cores (on students'
laptops they would not), so absolute load times are pessimistic; by default the students
are tabs of one browser context (shared caches), ``--contexts`` gives each its own.
``BSQ_WORKER=thread`` in the environment measures the run trained in a server thread
instead of a child process.

    nice -n 10 python benchmarks/classroom_load.py --viewers 1,10,30 --watch 75
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
_TICK = os.sysconf("SC_CLK_TCK")
_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-background-networking", "--disable-component-update", "--no-first-run",
          "--disable-renderer-backgrounding", "--disable-background-timer-throttling"]  # fmt: skip
_PROGRESS = '[data-testid="stProgress"]'


# -- the server and its cost, from /proc --------------------------------------------------


def serve(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "BSQ_HOME": str(home), "BSQ_TORCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false"]  # fmt: skip
    log = (home / "streamlit.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited ({proc.returncode}); see {home}/streamlit.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit did not become healthy; see {home}/streamlit.log")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo += parents.get(current, [])
    return found


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU of the server, its live children and its reaped children (only
    the server process itself with ``children=False``)."""
    total = 0.0
    for index, member in enumerate(_tree(pid) if children else [pid]):
        fields = _stat(member)
        if fields:  # utime, stime, cutime, cstime are fields 14-17 (11-14 here)
            own = int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14]) if index == 0 else 0
            total += (own + reaped) / _TICK
    return total


def rss_mib(pid: int) -> float:
    total = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"VmRSS:\s+(\d+) kB", status):
            total += int(match.group(1))
    return total / 1024


def bsq_epochs(home: Path, run_id: str) -> list[tuple[int, float]]:
    """(global_epoch, seconds) of the run's BSQ epochs so far, read-only."""
    with sqlite3.connect(f"file:{home / 'runs.db'}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT global_epoch, seconds FROM epochs WHERE run_id = ? AND stage = 'bsq'",
            (run_id,),
        ).fetchall()
    return [(int(g), float(s)) for g, s in rows if s is not None]


def run_status(home: Path, run_id: str) -> str:
    with sqlite3.connect(f"file:{home / 'runs.db'}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]


async def window(server: subprocess.Popen, home: Path, run_id: str, seconds: float) -> dict:
    """Server CPU and the run's new BSQ epochs over ``seconds`` of wall time."""
    seen = {g for g, _ in bsq_epochs(home, run_id)}
    cpu0, main0, t0 = cpu_seconds(server.pid), cpu_seconds(server.pid, False), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - t0
    main = cpu_seconds(server.pid, False) - main0
    new = [s for g, s in bsq_epochs(home, run_id) if g not in seen]
    return {"cpu_s": cpu, "wall_s": wall, "cores": cpu / wall, "main_cores": main / wall,
            "rss_mib": rss_mib(server.pid), "epoch_s": statistics.mean(new) if new else None,
            "epochs": len(new)}  # fmt: skip


# -- the browsers ----------------------------------------------------------------------------


async def start_run(browser, url: str, epochs: int) -> str:
    """Press Start training on the default config with ``epochs`` BSQ epochs; the run id."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1800})
    page = await context.new_page()
    page.set_default_timeout(180_000)
    await page.goto(url)
    await page.get_by_text("Pick a model and dataset").wait_for()
    await page.get_by_text("Advanced settings").click()
    field = page.get_by_label("BSQ epochs")
    await field.fill(str(epochs))
    await field.press("Enter")
    await page.wait_for_timeout(1500)
    await page.get_by_role("button", name="Start training").click()
    for _ in range(600):
        if match := re.search(r"[?&]run=([\w.-]+)", page.url):
            await context.close()
            return match.group(1)
        await page.wait_for_timeout(200)
    raise RuntimeError("the run id never appeared in the URL after Start training")


async def _progress_text(page) -> str | None:
    try:
        return await page.locator(_PROGRESS).first.inner_text(timeout=1000)
    except Exception:
        return None


async def viewer(where, url: str, watch_s: float, timeout_s: float, delay_s: float) -> dict:
    """One student: arrive after ``delay_s``, open the run, watch it, switch to Runs and back.
    ``where``: a browser (a context of its own) or a shared context (a tab in it)."""
    out = {"panel_s": None, "updated": False, "switch_s": [], "page": None, "context": None}
    await asyncio.sleep(delay_s)
    if hasattr(where, "new_context"):
        where = out["context"] = await where.new_context(viewport={"width": 1280, "height": 720})
    page = out["page"] = await where.new_page()
    page.set_default_timeout(timeout_s * 1000)
    start = time.monotonic()
    try:
        await page.goto(url)
        await page.locator(_PROGRESS).first.wait_for()
        out["panel_s"] = time.monotonic() - start
    except Exception:
        return out
    first, end = await _progress_text(page), time.monotonic() + watch_s
    while time.monotonic() < end:
        await asyncio.sleep(1.0)
        text = await _progress_text(page)
        out["updated"] |= text is not None and text != first
    for link in ("Runs", "Train"):  # a page link drops ?run=, so wait for the title
        ready, start = page.get_by_role("heading", name=link, exact=True), time.monotonic()
        try:
            await page.get_by_role("link", name=link).first.click()
            await ready.first.wait_for()
            out["switch_s"].append(time.monotonic() - start)
        except Exception:
            out["switch_s"].append(float("inf"))
    return out


async def press_stop(page, home: Path, run_id: str) -> float | None:
    """Seconds from clicking the live panel's Stop until the store says stopped."""
    start = time.monotonic()
    try:
        await page.get_by_role("button", name="Stop").first.click(timeout=60_000)
    except Exception:
        return None
    while time.monotonic() - start < 60:
        if run_status(home, run_id) == "stopped":
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


def _pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def one_n(browser, server, home, base, run_id, n, args, idle) -> tuple[dict, list]:
    url = f"{base}/?run={run_id}"
    shared = None
    if not args.contexts:  # tabs of one context share its HTTP and V8 code caches
        shared = await browser.new_context(viewport={"width": 1280, "height": 720})
    tasks = [
        asyncio.create_task(viewer(shared or browser, f"{url}&user=student{i}", args.watch,
                                   args.timeout,
                                   i * args.arrival))  # students arrive one by one
        for i in range(n)
    ]  # fmt: skip
    # Measure once the last student has arrived and (mostly) loaded.
    await asyncio.sleep(n * args.arrival + 20)
    stats = await window(server, home, run_id, args.watch - 25)
    results = await asyncio.gather(*tasks)
    panels = [r["panel_s"] for r in results]
    switches = [s for r in results for s in r["switch_s"]]
    # CPU seconds per minute above no viewer: the server process alone when the run trains
    # in a child process (its CPU is the training's, and drops when browsers compete for
    # the cores), the whole tree when it trains in a server thread (cannot be told apart).
    own = "main_cores" if stats["cores"] - stats["main_cores"] > 0.05 else "cores"
    extra = (stats[own] - idle[own]) * 60
    row = {
        "viewers": n, "saw_panel": sum(p is not None for p in panels),
        "saw_update": sum(r["updated"] for r in results),
        "panel_p50_s": _pct(panels, 0.5), "panel_p95_s": _pct(panels, 0.95),
        "switch_p50_s": _pct(switches, 0.5), "switch_p95_s": _pct(switches, 0.95),
        "server_cores": stats["cores"], "main_cores": stats["main_cores"],
        "cpu_s_per_viewer_min": extra / n,
        "rss_mib": stats["rss_mib"], "epoch_s": stats["epoch_s"],
        "epoch_vs_idle": (stats["epoch_s"] / idle["epoch_s"]
                          if stats["epoch_s"] and idle["epoch_s"] else None),
    }  # fmt: skip
    if shared is not None:  # closed with the tabs, after the owner's Stop
        results.append({"context": shared, "page": None})
    return row, results


async def measure(args) -> dict:
    from playwright.async_api import async_playwright

    home = Path(tempfile.mkdtemp(prefix="bsq_class_"))
    server = serve(home, args.port)
    base = f"http://127.0.0.1:{args.port}"
    os.nice(args.browser_nice)  # the browsers started below (0: same priority as the server)
    rows, stop_s = [], None
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
            run_id = await start_run(browser, f"{base}/?user=teacher", args.bsq_epochs)
            for _ in range(int(args.timeout * 2)):  # pretraining first: wait for BSQ epochs
                if len(bsq_epochs(home, run_id)) >= 2:
                    break
                await asyncio.sleep(1)
            idle = await window(server, home, run_id, args.watch - 25)
            idle.update(viewers=0)
            print(f"no viewer: {json.dumps(idle)}", flush=True)
            for n in args.viewers:
                last = n == args.viewers[-1]
                owner = await _owner_page(browser, base, run_id, args.timeout) if last else None
                row, results = await one_n(browser, server, home, base, run_id, n, args, idle)
                print(json.dumps(row), flush=True)
                rows.append(row)
                if owner is not None:  # everyone still watching: the owner presses Stop
                    stop_s = await press_stop(owner, home, run_id)
                    await owner.context.close()
                for r in results:
                    await (r["context"] or r["page"]).close()
            await browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {"rows": rows, "idle": idle, "stop_s": stop_s, "home": str(home)}


async def _owner_page(browser, base, run_id, timeout):
    """The run's owner, on its live panel before the last group of students arrives."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(timeout * 1000)
    await page.goto(f"{base}/?run={run_id}&user=teacher")
    await page.locator(_PROGRESS).first.wait_for()
    return page


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_table(result: dict) -> None:
    cols = ("viewers", "saw_panel", "saw_update", "panel_p50_s", "panel_p95_s", "switch_p50_s",
            "switch_p95_s", "server_cores", "main_cores", "cpu_s_per_viewer_min", "rss_mib",
            "epoch_s", "epoch_vs_idle")  # fmt: skip
    idle = result["idle"]
    print(f"\nno viewer: server {idle['cores']:.3f} cores ({idle['main_cores']:.3f} in the "
          f"server process itself), RSS {idle['rss_mib']:.0f} MiB, "
          f"BSQ epoch {_fmt(idle['epoch_s'])} s ({idle['epochs']} epochs)")  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for row in result["rows"]:
        print("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    per_core = [r["cpu_s_per_viewer_min"] / 60 for r in result["rows"]]
    print("core per watching viewer: " + ", ".join(f"{c:.4f}" for c in per_core))
    print(f"Stop from a live panel (all viewers watching): {_fmt(result['stop_s'])} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="1,10,30",
                        type=lambda s: [int(x) for x in s.split(",") if x.strip()])  # fmt: skip
    parser.add_argument("--watch", type=float, default=75.0, help="seconds each N watches")
    parser.add_argument("--timeout", type=float, default=240.0, help="panel load limit (s)")
    parser.add_argument("--bsq-epochs", type=int, default=3000, help="long enough to last")
    parser.add_argument("--arrival", type=float, default=2.0, help="seconds between students")
    parser.add_argument("--contexts", action="store_true",
                        help="a browser context per student (default: a tab each in one "
                             "context: on one machine, N cold contexts cost the browsers "
                             "minutes of CPU before any page shows)")  # fmt: skip
    parser.add_argument("--browser-nice", type=int, default=0, help="niceness of the browsers")
    parser.add_argument("--port", type=int, default=8720)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.watch < 35:
        parser.error("--watch must be at least 35 s (20 s to load, 5 s to spare)")
    result = asyncio.run(measure(args))
    print_table(result)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

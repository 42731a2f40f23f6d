"""A classroom on one server: N browser viewers watching one run that the server trains.

Starts ``streamlit run serve.py`` (``--app app.py``: without the live route, the progress
ticking as fragment runs, as before) bound to 127.0.0.1 with a fresh store, starts one long run
from the Train page (``--bsq-epochs`` BSQ epochs of the default model and dataset) and waits
for its BSQ stage. Then, untimed, one visit of every page (Streamlit's first script run
of a page pays for imports, Plotly's templates and the caches), and a no-viewer window.
For each N of ``--viewers``, N students arrive ``--arrival`` seconds apart (tabs of one
Chromium context, Playwright; ``--contexts``: a context each) on ``/?run=<id>``; once all
have loaded (or given up), three phases, each measured on its own:

- **watch**: ``--watch`` seconds in which every viewer only watches its live panel; a
  viewer saw it update when its progress text changed within them (recorded in the page by
  a ``MutationObserver``, read once afterwards: no polling from here);
- **Stop** (last N only): viewer 0 is the run's owner, in a Chromium of its own (the
  teacher's laptop), and clicks the panel's Stop while everyone watches; the seconds until
  the app asked the run to stop (the store's ``stop_requested`` time), until the training
  stopped (``stopped``) and until the owner's page drew the ended run (its observer's time);
- **switch**: every viewer goes to the Runs page and back to Train.

Server CPU is read from ``/proc`` (``classroom_server.cpu``): the server process alone
(viewers' script runs, websockets) apart from its children (the training), minus the
no-viewer window's rate; so neither the browsers nor the training count as viewer cost.
It prints, per N: viewers that saw the panel and saw it update, panel load and
page-switch p50 / p95 (seconds, in the browsers: they share the server's 2 cores), the
server's cores while watching (minus no viewer) in all and per viewer, its CPU seconds per
page switch, the training child's cores, the students' browser's cores while watching (all
its processes, from ``/proc``: what the tabs take from the shared cores) in all and per tab,
the server's memory, and the run's BSQ epoch time against no viewer; then the marginal core
per added viewer and the Stop times.

The browsers share the server's cores, which no classroom does: ``--students-idle`` runs
the students' browser under ``SCHED_IDLE``, so their rendering takes only the CPU that the
server, the training and the owner's browser leave (a model of the students' own laptops).

    flock /tmp/w4/bench.lock python benchmarks/classroom_load.py --viewers 1,10,30
    flock /tmp/w4/bench.lock python benchmarks/classroom_load.py --viewers 1,10,30 --students-idle
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classroom_server import (
    ENTRIES,
    PROGRESS,
    ROOT,
    add_app_option,
    bsq_epochs,
    chromium_roots,
    cpu,
    pids_now,
    rss_mib,
    run_state,
    serve,
    tree_cpu,
)

CHROMIUM = "/usr/bin/chromium"
_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-background-networking", "--disable-component-update", "--no-first-run",
          "--disable-renderer-backgrounding", "--disable-background-timer-throttling"]  # fmt: skip
_STOP = ".st-key-train-stop button"  # the panel's own Stop (the toolbar has one too)
_PAGES = ("runs", "pareto", "compare", "learn")


class Meter:
    """CPU over a phase: cores of the server process and of its children, of the students'
    browser (all its processes), and the run's new BSQ epochs."""

    def __init__(self, server: subprocess.Popen, home: Path, run_id: str, browser=()):
        self.server, self.home, self.run_id, self.browser = server, home, run_id, list(browser)
        self.seen = {g for g, _ in bsq_epochs(home, run_id)}
        self.cpu0, self.t0 = cpu(server.pid), time.monotonic()
        self.browser0 = tree_cpu(self.browser)

    def read(self) -> dict:
        (own, kids), wall = cpu(self.server.pid), time.monotonic() - self.t0
        new = [s for g, s in bsq_epochs(self.home, self.run_id) if g not in self.seen]
        return {"wall_s": wall, "own_cpu_s": own - self.cpu0[0],
                "main_cores": (own - self.cpu0[0]) / wall,
                "child_cores": (kids - self.cpu0[1]) / wall,
                "browser_cores": (tree_cpu(self.browser) - self.browser0) / wall,
                "rss_mib": rss_mib(self.server.pid)[0],
                "epoch_s": statistics.mean(new) if new else None, "epochs": len(new)}  # fmt: skip


async def start_run(browser, url: str, epochs: int, batch: int) -> str:
    """Start training the default config, ``epochs`` BSQ epochs, batch size ``batch`` (small:
    the default run's epochs last hundredths of a second); the run id."""
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
    field = page.get_by_label("Batch size")
    await field.fill(str(batch))
    await field.press("Enter")
    await page.wait_for_timeout(1500)
    await page.get_by_role("button", name="Start training").click()
    for _ in range(600):
        if match := re.search(r"[?&]run=([\w.-]+)", page.url):
            await context.close()
            return match.group(1)
        await page.wait_for_timeout(200)
    raise RuntimeError("the run id never appeared in the URL after Start training")


async def past_pretraining(home: Path, run_id: str, timeout: float) -> None:
    """Wait until the run has two BSQ epochs in the store (pretraining first), at most
    ``timeout`` seconds."""
    for _ in range(int(timeout)):
        if len(bsq_epochs(home, run_id)) >= 2:
            return
        await asyncio.sleep(1)


async def browser_on_a_run(playwright, base: str, home: Path):
    """A Chromium whose processes are read from ``/proc`` (its roots, ``chromium_roots``)
    and a long run of the default config (batch 16) past its pretraining, started from it:
    ``(browser, roots, run id)``, what the one-tab benchmarks start from."""
    before = pids_now()
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
    roots = chromium_roots(before)
    run_id = await start_run(browser, f"{base}/?user=teacher", 10_000, 16)
    await past_pretraining(home, run_id, 300)
    return browser, roots, run_id


async def warm_up(browser, base: str, run_id: str) -> None:
    """One untimed visit of the live panel and of every other page."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    page.set_default_timeout(180_000)
    await page.goto(f"{base}/?run={run_id}&user=warm")
    await page.locator(PROGRESS).first.wait_for()
    await page.wait_for_timeout(6000)  # a chart tick too
    for name in _PAGES:
        await page.goto(f"{base}/{name}?user=warm")
        await page.locator('[data-testid="stMain"] h1').first.wait_for()
        await page.wait_for_timeout(2000)
    await context.close()


# Installed in every viewer's page once its panel shows: records, in the page itself, when
# the progress text changes and when the ended run's outcome appears (``Date.now()``, ms).
# Polling each tab from here (a CDP round trip per tab per second) added load of its own,
# and a read that a starved tab could not answer within its timeout counted as no update.
_OBSERVE = """() => {
  if (window.__bsq) return;
  const rec = window.__bsq = {changes: [], ended: null};
  let last = null, pending = false;
  const look = () => {
    pending = false;
    const bar = document.querySelector('%s');
    const text = bar ? bar.textContent : null;
    if (text && text !== last) { if (last !== null) rec.changes.push(Date.now()); last = text; }
    if (rec.ended === null && document.body.textContent.includes('%s')) rec.ended = Date.now();
  };
  new MutationObserver(() => { if (!pending) { pending = true; setTimeout(look, 50); } })
    .observe(document.body, {subtree: true, childList: true, characterData: true});
  look();
}"""
_ENDED = "This run did not finish"


async def _record(page) -> dict | None:
    """What the page's observer recorded (``None`` if the page could not answer)."""
    try:
        return await page.evaluate("window.__bsq || null")
    except Exception:
        return None


def _new_viewer() -> dict:
    return {"panel_s": None, "failed": False, "updated": False, "switch_s": [], "page": None,
            "context": None}  # fmt: skip


async def viewer(where, url: str, delay_s: float, timeout_s: float, phase: dict, out: dict):
    """One student: arrive after ``delay_s``, open the run, watch it until ``phase["switch"]``
    is set, then switch to Runs and back; fills ``out`` as it goes. ``where``: a browser (a
    context of its own) or a shared context (a tab in it)."""
    await asyncio.sleep(delay_s)
    if hasattr(where, "new_context"):
        where = out["context"] = await where.new_context(viewport={"width": 1280, "height": 720})
    page = out["page"] = await where.new_page()
    page.set_default_timeout(timeout_s * 1000)
    start = time.monotonic()
    try:
        await page.goto(url)
        await page.locator(PROGRESS).first.wait_for()
        out["panel_s"] = time.monotonic() - start
    except Exception:
        out["failed"] = True
        return
    try:
        await page.evaluate(_OBSERVE % (PROGRESS, _ENDED))
    except Exception:
        out["failed"] = True
        return
    await phase["watched"].wait()  # the watch window is over
    record = await _record(page)
    window = phase["window"]
    out["updated"] = record is not None and any(
        window[0] <= t / 1000 <= window[1] for t in record["changes"]
    )
    await phase["switch"].wait()
    for link in ("Runs", "Train"):  # a page link drops ?run=, so wait for the title
        ready, start = page.get_by_role("heading", name=link, exact=True), time.monotonic()
        try:
            await page.get_by_role("link", name=link).first.click()
            await ready.first.wait_for()
            out["switch_s"].append(time.monotonic() - start)
        except Exception:
            out["switch_s"].append(float("inf"))


async def press_stop(page, home: Path, run_id: str) -> dict:
    """Viewer 0 (the run's owner) clicks its panel's Stop, as a person does: one mouse click
    where the button is drawn (Playwright's ``click()`` first waits for the element to hold
    still, which a panel redrawing every 1.5 s in a starved tab can delay for tens of
    seconds). Seconds from the click until the app asked the run to stop (the store's
    ``stop_requested`` time, written by the Stop callback on the server), until the
    training process stopped it (status ``stopped``), and until the owner's panel shows it."""
    out = {"stop_asked_s": None, "stop_store_s": None, "stop_panel_s": None}
    button = page.locator(_STOP).first
    try:
        await button.wait_for(timeout=60_000)
        await button.scroll_into_view_if_needed(timeout=60_000)  # 720 px tall: below the fold
        box = await button.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        start, wall = time.monotonic(), time.time()
        await page.mouse.click(x, y)
    except Exception as exc:
        print(f"Stop could not be clicked: {exc}", flush=True)
        return out
    while time.monotonic() - start < 60 and None in out.values():
        status, asked = run_state(home, run_id)
        if out["stop_asked_s"] is None and asked is not None:
            out["stop_asked_s"] = max(asked - wall, 0.0)
        if out["stop_store_s"] is None and status == "stopped":
            out["stop_store_s"] = time.monotonic() - start
        if out["stop_panel_s"] is None:  # when the page drew it, by the page's own clock
            ended = ((await _record(page)) or {}).get("ended")
            out["stop_panel_s"] = None if ended is None else max(ended / 1000 - wall, 0.0)
        await asyncio.sleep(0.2)
    return out


def _pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def one_n(browsers, server, home, base, run_id, n, args, idle, stop) -> dict:
    """N students: arrive, load, watch (measured), Stop (``stop``), switch (measured).
    ``browsers``: (the owner's, the students', the students' browser's pids); with ``stop``
    viewer 0 is the owner, in a browser of its own (the teacher's laptop)."""
    owner_browser, browser, roots = browsers
    # "window": the watch phase's (start, end) in time.time(); "watched" once it is over
    phase = {"watched": asyncio.Event(), "switch": asyncio.Event(), "window": None}
    shared = None  # default: tabs of one context share its HTTP and V8 code caches
    if not args.contexts:
        shared = await browser.new_context(viewport={"width": 1280, "height": 720})
    users = ["teacher" if stop and i == 0 else f"student{i}" for i in range(n)]
    results = [_new_viewer() for _ in users]
    places = [owner_browser if stop and i == 0 else shared or browser for i in range(n)]
    tasks = [asyncio.create_task(viewer(places[i], f"{base}/?run={run_id}&user={u}",
                                        i * args.arrival, args.timeout, phase, results[i]))
             for i, u in enumerate(users)]  # fmt: skip
    deadline = time.monotonic() + n * args.arrival + args.timeout
    while time.monotonic() < deadline:  # everyone loaded, or given up
        if all(r["panel_s"] is not None or r["failed"] for r in results):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(5)  # the last arrival's first ticks
    meter, opened = Meter(server, home, run_id, roots), time.time()
    await asyncio.sleep(args.watch)
    watch = meter.read()
    phase["window"] = (opened, time.time())
    phase["watched"].set()
    row = {"viewers": n}
    if stop:
        row.update(await press_stop(results[0]["page"], home, run_id))
    meter = Meter(server, home, run_id)
    phase["switch"].set()
    await asyncio.gather(*tasks)
    switch = meter.read()
    panels = [r["panel_s"] for r in results]
    switches = [s for r in results for s in r["switch_s"]]
    watched = sum(p is not None for p in panels)
    extra = watch["main_cores"] - idle["main_cores"]
    tabs = n - 1 if stop else n  # the students' browser's tabs (the owner has its own)
    done = [s for s in switches if s != float("inf")]
    row.update({
        "saw_panel": watched, "saw_update": sum(r["updated"] for r in results),
        "panel_p50_s": _pct(panels, 0.5), "panel_p95_s": _pct(panels, 0.95),
        "switch_p50_s": _pct(switches, 0.5), "switch_p95_s": _pct(switches, 0.95),
        "watch_cores": extra, "core_per_viewer": extra / watched if watched else None,
        "cpu_s_per_switch": ((switch["own_cpu_s"] - idle["main_cores"] * switch["wall_s"])
                             / len(done) if done else None),
        "child_cores": watch["child_cores"], "rss_mib": watch["rss_mib"],
        "browser_cores": watch["browser_cores"],
        "browser_per_tab": watch["browser_cores"] / tabs if tabs else None,
        "epoch_vs_idle": (watch["epoch_s"] / idle["epoch_s"]
                          if watch["epoch_s"] and idle["epoch_s"] else None),
    })  # fmt: skip
    for r in results:
        if r["context"] is not None:
            await r["context"].close()
        elif r["page"] is not None:
            await r["page"].close()
    if shared is not None:
        await shared.close()
    return row


async def measure(args) -> dict:
    from playwright.async_api import async_playwright

    home = Path(tempfile.mkdtemp(prefix="bsq_class_"))
    server = serve(home, args.port, ROOT / args.app)
    base = f"http://127.0.0.1:{args.port}"
    rows, idle = [], None
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
            before = pids_now()
            students = await p.chromium.launch(
                executable_path=_sched_idle(CHROMIUM, args.students_idle, home), args=_FLAGS
            )
            roots = chromium_roots(before)  # the students' browser, read from /proc
            run_id = await start_run(
                browser, f"{base}/?user=teacher", args.bsq_epochs, args.batch_size
            )
            await past_pretraining(home, run_id, args.timeout * 2)
            await warm_up(browser, base, run_id)
            await asyncio.sleep(5)  # the warm-up session's last ticks
            meter = Meter(server, home, run_id)
            await asyncio.sleep(args.watch)
            idle = meter.read()
            print(f"no viewer: {json.dumps(idle)}", flush=True)
            for n in args.viewers:
                last = n == args.viewers[-1]
                row = await one_n((browser, students, roots), server, home, base, run_id, n,
                                  args, idle, last)  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
            await students.close()
            await browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {"rows": rows, "idle": idle, "home": str(home), "app": args.app}


def _sched_idle(executable: str, idle: bool, folder: Path) -> str:
    """``executable``, or a wrapper that starts it under ``SCHED_IDLE`` (``chrt --idle``):
    the students' browser then runs only on CPU that the server, the training and the
    owner's browser leave, as if it ran on the students' own laptops (on one machine they
    cannot be kept apart). Not ``nice``: Chromium sets its processes' niceness itself
    (browser -8, foreground tab 0, background tabs 5), so 29 tabs outweighed the training."""
    if not idle:
        return executable
    wrapper = folder / "chromium-idle"
    wrapper.write_text(f'#!/bin/sh\nexec chrt --idle 0 {executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


_COLS = ("viewers", "saw_panel", "saw_update", "panel_p50_s", "panel_p95_s", "switch_p50_s",
         "switch_p95_s", "watch_cores", "core_per_viewer", "cpu_s_per_switch", "child_cores",
         "browser_cores", "browser_per_tab", "rss_mib", "epoch_vs_idle")  # fmt: skip


def print_table(result: dict) -> None:
    idle, rows = result["idle"], result["rows"]
    if idle is None:
        print("no measurement: the run never reached its BSQ stage")
        return
    print(f"\nserved by streamlit run {result.get('app', ENTRIES[0])}")
    print(f"no viewer: server process {idle['main_cores']:.3f} cores, training child "
          f"{idle['child_cores']:.3f} cores, server RSS {idle['rss_mib']:.0f} MiB, "
          f"BSQ epoch {_fmt(idle['epoch_s'])} s ({idle['epochs']} epochs)")  # fmt: skip
    print("| " + " | ".join(_COLS) + " |")
    print("|" + " --- |" * len(_COLS))
    for row in rows:
        print("| " + " | ".join(_fmt(row.get(c)) for c in _COLS) + " |")
    for a, b in itertools.pairwise(rows):  # what one more viewer costs, shared work aside
        if a["saw_panel"] != b["saw_panel"]:
            extra = (b["watch_cores"] - a["watch_cores"]) / (b["saw_panel"] - a["saw_panel"])
            print(f"marginal core per viewer, {a['saw_panel']} -> {b['saw_panel']} watching: "
                  f"{extra:.4f}")  # fmt: skip
    stop = rows[-1] if rows else {}
    print(
        f"Stop from the owner's live panel, {stop.get('viewers')} viewers watching, seconds "
        f"after the click: asked {_fmt(stop.get('stop_asked_s'))}, training stopped "
        f"{_fmt(stop.get('stop_store_s'))}, panel shows it {_fmt(stop.get('stop_panel_s'))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="1,10,30",
                        type=lambda s: [int(x) for x in s.split(",") if x.strip()])  # fmt: skip
    parser.add_argument(
        "--watch",
        type=float,
        default=40.0,
        help="seconds of each measured window (no viewer, and watching)",
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="panel load limit (s)")
    parser.add_argument("--bsq-epochs", type=int, default=10_000, help="long enough to last")
    parser.add_argument("--batch-size", type=int, default=16, help="of the run (slows epochs)")
    parser.add_argument("--arrival", type=float, default=1.0, help="seconds between students")
    parser.add_argument("--contexts", action="store_true",
                        help="a browser context per student (default: a tab each in one "
                             "context: on one machine, N cold contexts cost the browsers "
                             "minutes of CPU before any page shows)")  # fmt: skip
    parser.add_argument("--students-idle", action="store_true",
                        help="run the students' browser under SCHED_IDLE (chrt --idle): "
                             "a model of students on their own laptops")  # fmt: skip
    add_app_option(parser)
    parser.add_argument("--port", type=int, default=8720)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.watch < 10:
        parser.error("--watch must be at least 10 s")
    result = asyncio.run(measure(args))
    print_table(result)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The server under test in ``classroom_load.py`` and what it costs, read from /proc.

A Streamlit server that trains a run in a child process is two kinds of CPU: the server
process itself (every viewer's script runs, the websockets, the live buffer) and its
children (the training). Only the first is a viewer's cost, so they are read apart:
``cpu(pid)`` returns (server process, live and reaped children) in CPU seconds.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")

__all__ = [
    "ENTRIES",
    "PROGRESS",
    "ROOT",
    "add_app_option",
    "bsq_epochs",
    "chromium_roots",
    "cpu",
    "pids_now",
    "rss_mib",
    "run_state",
    "serve",
    "tree_cpu",
]


# ``serve.py``: the app with its live route, as the README starts it (pushed progress bars);
# ``app.py``: the router alone, whose progress fragments tick as script runs (the way before).
ENTRIES = ("serve.py", "app.py")
# The live panel's progress bar: the pushed one (serve.py), or Streamlit's (app.py).
PROGRESS = '[data-testid="bsqProgress"], [data-testid="stProgress"]'


def add_app_option(parser) -> None:
    """``--app``: which of ``ENTRIES`` the benchmark serves (``ROOT / args.app``)."""
    parser.add_argument(
        "--app",
        choices=ENTRIES,
        default=ENTRIES[0],
        help="serve.py: pushed progress bars (default); app.py: ticking ones",
    )


def serve(home: Path, port: int, app: Path = ROOT / "serve.py") -> subprocess.Popen:
    """``streamlit run`` of ``app`` (default: the BSQ Explorer) on 127.0.0.1:``port`` with
    its store in ``home`` and its log in ``home/streamlit.log``, once it answers its health
    check (killed, and an error naming the log, if it exits or does not answer in time)."""
    env = {**os.environ, "BSQ_HOME": str(home), "BSQ_TORCH_THREADS": "1"}
    # no file watcher: an edit to the code must not reload modules in the middle of a measure
    cmd = [sys.executable, "-m", "streamlit", "run", app.name, "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]  # fmt: skip
    log = home / "streamlit.log"
    proc = subprocess.Popen(cmd, cwd=app.parent, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit did not become healthy; see {log}")


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


def cpu(pid: int) -> tuple[float, float]:
    """(the server process's own CPU seconds, its children's: live ones and reaped ones).

    utime, stime, cutime, cstime are /proc fields 14-17 (11-14 after the state field);
    a process's own figures include its threads, dead ones too."""
    own = children = 0.0
    for member in _tree(pid):
        fields = _stat(member)
        if not fields:
            continue
        mine = (int(fields[11]) + int(fields[12])) / _TICK
        if member == pid:
            own = mine
            children += (int(fields[13]) + int(fields[14])) / _TICK  # reaped children
        else:
            children += mine
    return own, children


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of the processes in the trees of ``pids`` (a browser: its zygote,
    renderers, GPU and utility processes): the live ones' own and those of the ones that
    ended and were reaped by a member (cutime, cstime), so that a closed tab's renderer
    does not take its seconds out of the sum when it exits."""
    total = 0.0
    for member in {m for pid in pids for m in _tree(pid)}:
        if fields := _stat(member):
            total += sum(int(field) for field in fields[11:15]) / _TICK
    return total


def chromium_roots(before: set[int]) -> list[int]:
    """Chromium browser processes started since ``before`` (a set of pids): the new ones
    whose parent is not itself Chromium."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in before:
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if "chrom" in comm and (fields := _stat(int(entry.name))):
                found[int(entry.name)] = int(fields[1])
    return [pid for pid, parent in found.items() if parent not in found]


def pids_now() -> set[int]:
    """Every running process now (to tell a browser launched next from those before)."""
    return {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()}


def rss_mib(pid: int) -> tuple[float, float]:
    """(the server process's resident memory, with its children) in MiB."""
    own = total = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"VmRSS:\s+(\d+) kB", status):
            total += int(match.group(1))
            own = int(match.group(1)) if member == pid else own
    return own / 1024, total / 1024


def _read(home: Path, sql: str, args: tuple) -> list[tuple]:
    with sqlite3.connect(f"file:{home / 'runs.db'}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def bsq_epochs(home: Path, run_id: str) -> list[tuple[int, float]]:
    """(global_epoch, seconds) of the run's BSQ epochs so far, read-only."""
    rows = _read(home, "SELECT global_epoch, seconds FROM epochs WHERE run_id = ? AND "
                 "stage = 'bsq'", (run_id,))  # fmt: skip
    return [(int(g), float(s)) for g, s in rows if s is not None]


def run_state(home: Path, run_id: str) -> tuple[str, float | None]:
    """(status, when a stop was asked: the ``stop_requested`` wall-clock time, or None)."""
    (status, requested), *_ = _read(
        home, "SELECT status, stop_requested FROM runs WHERE run_id = ?", (run_id,)
    )
    return status, requested

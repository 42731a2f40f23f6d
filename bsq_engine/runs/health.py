"""Checks the store runs on itself as it opens and reads: damaged rows, a lost index, and
temp files a killed checkpoint write left behind. ``runs/repair.py`` fixes what these find.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bsq_engine.runs.connection import StoreError
from bsq_engine.runs.paths import run_folder
from bsq_engine.runs.queries import run_dict
from bsq_engine.runs.status import ACTIVE, RunStatus

__all__ = [
    "checked_run_dict",
    "decode_run",
    "decode_runs",
    "refuse_lost_index",
    "remove_stale_tmp",
    "run_folders",
]

# A checkpoint write goes to ".<name>.<random>.tmp" next to it, then is renamed into place.
TMP_GLOB = ".*.tmp"
_CONFIG_KEYS = ("model", "dataset", "method")


def run_folders(home: Path) -> list[Path]:
    """The run folders under ``<home>/runs`` (whatever the index says)."""
    runs = run_folder(home, "x").parent
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def checked_run_dict(conn: sqlite3.Connection, row: sqlite3.Row) -> dict:
    """``run_dict`` that raises ValueError (never a TypeError or KeyError deep inside a page)
    for a row whose JSON is garbled or of the wrong shape."""
    try:
        run = run_dict(conn, row)
    except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"unreadable stored JSON: {exc}") from None
    config = run.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"its config is a {type(config).__name__}, not an object")
    missing = [k for k in _CONFIG_KEYS if not isinstance(config.get(k), str)]
    if missing:
        raise ValueError(f"its config lacks {', '.join(missing)}")
    if run.get("summary") is not None and not isinstance(run["summary"], dict):
        raise ValueError("its summary is not an object")
    if run.get("status") not in {s.value for s in RunStatus}:
        raise ValueError(f"unknown status {run.get('status')!r}")
    return run


def decode_run(conn: sqlite3.Connection, row: sqlite3.Row, db_path: Path) -> dict:
    """One run's row as a dict; a damaged one raises StoreError saying how to repair it."""
    try:
        return checked_run_dict(conn, row)
    except ValueError as exc:
        raise StoreError(
            f"Run {row['run_id']!r} is damaged in {db_path} ({exc}). Nothing was changed; "
            "`python -m bsq_engine store repair` rebuilds it from its run folder."
        ) from None


def decode_runs(conn: sqlite3.Connection, rows: list) -> tuple[list[dict], list[tuple]]:
    """``(runs, skipped)``: the readable rows as dicts, and ``(run_id, why)`` of the rest."""
    runs, skipped = [], []
    for row in rows:
        try:
            runs.append(checked_run_dict(conn, row))
        except ValueError as exc:
            skipped.append((row["run_id"], str(exc)))
    return runs, skipped


def refuse_lost_index(home: Path, db_path: Path) -> None:
    """A 0-byte ``runs.db`` next to run folders is a lost index, not a new store: SQLite
    would silently start an empty one and orphan every run, so refuse and point at repair."""
    try:
        empty = db_path.is_file() and db_path.stat().st_size == 0
    except OSError:
        return
    folders = run_folders(home) if empty else []
    if folders:
        raise StoreError(
            f"{db_path} is empty (0 bytes) but {home / 'runs'} holds {len(folders)} run "
            "folder(s): the run index was lost. `python -m bsq_engine store repair` rebuilds "
            "it from the run folders (it keeps a copy first); nothing was changed."
        )


def remove_stale_tmp(store) -> list[Path]:
    """Delete temp files of checkpoint writes that can no longer finish: those in the folder
    of a run that is not running (a write in progress belongs to a running run)."""
    sql = f"SELECT run_id FROM runs WHERE status IN ({','.join('?' * len(ACTIVE))})"
    active = {run_id for (run_id,) in store._conn().execute(sql, tuple(ACTIVE))}
    removed = []
    for folder in run_folders(store.home):
        if folder.name in active:
            continue
        for tmp in folder.glob(TMP_GLOB):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:  # read-only, or gone already: harmless, try next open
                pass
    return removed

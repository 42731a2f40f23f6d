"""Reading runs back: a runs row as a plain dict, and thinning long series for charts."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bsq_engine.training.config import Stage

__all__ = ["SUMMARY_KEYS", "downsample", "run_dict"]

#: Convenience keys of a run dict, from its summary (finished) or its epoch rows (live).
SUMMARY_KEYS = ("accuracy", "float_accuracy", "avg_bits", "compression", "seconds")


def downsample(rows: Any, max_points: int) -> Any:
    """Evenly spaced picks that always keep the first and the last row.

    Generic: ``rows`` is a list (store rows) or anything with ``len`` and ``.iloc`` (a
    pandas DataFrame, for the dashboard); the result has the same type. Live charts are
    redrawn every tick, and thousands of points make the browser stutter.

    >>> downsample(list(range(10)), 4)
    [0, 3, 6, 9]
    >>> downsample([1, 2, 3], 1)
    [3]
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}.")
    n = len(rows)
    if n <= max_points:
        return rows
    if max_points == 1:
        picks = [n - 1]
    else:
        picks = [round(i * (n - 1) / (max_points - 1)) for i in range(max_points)]
    if hasattr(rows, "iloc"):
        return rows.iloc[picks]
    return [rows[i] for i in picks]


def run_dict(conn: sqlite3.Connection, row: sqlite3.Row) -> dict:
    """A runs row as a plain dict, plus the convenience keys of the summary (or live)."""
    run = dict(row)
    run["config"] = json.loads(run.pop("config_json"))
    run["tags"] = json.loads(run.pop("tags_json", None) or "[]")
    summary = run.pop("summary_json")
    run["summary"] = None if summary is None else json.loads(summary)
    source = run["summary"] if run["summary"] is not None else _live(conn, run["run_id"])
    run.update({k: source.get(k) for k in SUMMARY_KEYS})
    return run


def _live(conn: sqlite3.Connection, run_id: str) -> dict:
    """Convenience keys of a run without summary, from its epoch rows so far."""
    last = conn.execute(
        "SELECT test_acc, avg_bits, compression FROM epochs WHERE run_id = ?"
        " ORDER BY global_epoch DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if last is None:
        return {}
    pre = conn.execute(
        "SELECT test_acc FROM epochs WHERE run_id = ? AND stage = ? ORDER BY epoch DESC LIMIT 1",
        (run_id, Stage.PRETRAIN.value),
    ).fetchone()
    total = conn.execute("SELECT SUM(seconds) FROM epochs WHERE run_id = ?", (run_id,)).fetchone()
    return {"accuracy": last["test_acc"], "float_accuracy": pre and pre["test_acc"],
            "avg_bits": last["avg_bits"], "compression": last["compression"],
            "seconds": total[0]}  # fmt: skip

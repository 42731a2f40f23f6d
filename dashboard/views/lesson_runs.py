"""Which finished run a lesson shows by default: one where BSQ visibly dropped planes.

The lesson's steps 2-4 explain dropped bit planes. The newest finished run may be a uniform
baseline (no plane is ever dropped, and the replay would say "qat") or a BSQ run whose alpha
was too small to drop anything; neither shows the lesson. So the runs are ordered: BSQ runs
that ended with fewer bits than they started with first (newest first), then other BSQ
runs, then uniform baselines; every run stays pickable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["dropped_planes", "lesson_label", "lesson_order"]


def dropped_planes(run: Mapping[str, Any]) -> int:
    """Bit planes BSQ removed in a run: sum over layers of (start bits - final bits), counting
    only layers that shrank; 0 for uniform baselines and runs without a summary.

    >>> run = {"method": "bsq", "config": {"n_bits": 8},
    ...        "summary": {"layers": [{"n_bits": 3}, {"n_bits": 8}, {"n_bits": 9}]}}
    >>> dropped_planes(run)
    5
    """
    if run.get("method") != "bsq":
        return 0
    start = int((run.get("config") or {}).get("n_bits") or 8)
    layers = (run.get("summary") or {}).get("layers") or []
    return sum(max(start - int(layer.get("n_bits", start)), 0) for layer in layers)


def lesson_order(runs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Run ids, the best lesson first; ``runs`` newest first (as the store lists them).

    >>> runs = [{"run_id": "u", "method": "uniform"},
    ...         {"run_id": "flat", "method": "bsq", "summary": {"layers": [{"n_bits": 8}]}},
    ...         {"run_id": "good", "method": "bsq", "summary": {"layers": [{"n_bits": 2}]}}]
    >>> lesson_order(runs)
    ['good', 'flat', 'u']
    """
    runs = list(runs)

    def rank(item: tuple[int, Mapping[str, Any]]) -> tuple[int, int]:
        index, run = item
        if dropped_planes(run):
            return (0, index)
        return (1 if run.get("method") == "bsq" else 2, index)

    return [run["run_id"] for _, run in sorted(enumerate(runs), key=rank)]


def lesson_label(run: Mapping[str, Any]) -> str:
    """Picker label: name, model/dataset and what the run shows (plain text)."""
    head = f"{run.get('name') or run['run_id']} · {run.get('model')}/{run.get('dataset')}"
    if run.get("method") != "bsq":
        return f"{head} · uniform baseline: no plane is dropped"
    dropped = dropped_planes(run)
    return f"{head} · {dropped} plane(s) dropped" if dropped else f"{head} · no plane dropped"

"""One colour per run, the same on every page.

A run's colour is fixed by its place in the store's creation order (``runs_frame`` rows),
cycled through a ten-colour categorical palette, so the same run is drawn in the same colour
on Compare, Pareto and in the run panel, and runs started one after another (a sweep, a
before/after pair) never share one. Method colours (BSQ vs uniform) stay separate: they
answer another question.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

__all__ = ["PALETTE", "run_color", "run_colors"]

#: Tableau 10 (Vega's and Altair's default categorical scheme): distinct, colour-blind aware.
PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
)  # fmt: skip


def run_colors(runs: pd.DataFrame, run_ids: Iterable[str] | None = None) -> dict[str, str]:
    """``{run_id: colour}`` for ``run_ids`` (default: every run of ``runs``).

    ``runs`` holds every run of the store with ``run_id`` and ``created``/``created_at``;
    a run missing from it (deleted meanwhile) gets the palette's last colour.

    >>> frame = pd.DataFrame({"run_id": ["b", "a"], "created_at": [2.0, 1.0]})
    >>> run_colors(frame)
    {'a': '#4C78A8', 'b': '#F58518'}
    """
    column = "created_at" if "created_at" in runs else "created"
    ordered = runs.sort_values([column, "run_id"])["run_id"].tolist() if len(runs) else []
    rank = {run_id: i for i, run_id in enumerate(ordered)}
    wanted = ordered if run_ids is None else list(run_ids)
    return {r: PALETTE[rank[r] % len(PALETTE)] if r in rank else PALETTE[-1] for r in wanted}


def run_color(runs: pd.DataFrame, run_id: str) -> str:
    """The colour of one run (see :func:`run_colors`)."""
    return run_colors(runs, [run_id])[run_id]

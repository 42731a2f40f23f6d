"""Pure helpers of the Pareto page: which pair to show, live points, published references.

Runs in (``dashboard.views.frames.runs_frame`` rows), frames and figures out; no Streamlit, so the
page stays a thin script and every rule here is unit-testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.views import plain
from dashboard.views.frontier import REFERENCE_STYLE, XMode

__all__ = [
    "REFERENCE_PATH",
    "add_published_marks",
    "chart_runs",
    "frontier_table",
    "label_points",
    "load_references",
    "pair_options",
    "selected_run_id",
    "split_references",
]

REFERENCE_PATH = Path(__file__).resolve().parents[2] / "assets" / "paper_reference.csv"
REFERENCE_COLUMNS = [
    "label", "model", "dataset", "method", "compression", "avg_bits", "accuracy", "source",
]  # fmt: skip
SHOWN = ("finished", "running")
TABLE_COLUMNS = {
    "name": "run", "owner": "started by", "method": "method", "alpha": "alpha",
    "bits": "bits per layer", "accuracy_pct": "accuracy (%)", "avg_bits": "average bits",
    "compression": "compression (x)", "run_id": "run id",
}  # fmt: skip


def pair_options(runs_df: pd.DataFrame) -> pd.DataFrame:
    """(model, dataset, finished, total) per pair, the pair with most finished runs first."""
    if runs_df.empty:
        return pd.DataFrame(columns=["model", "dataset", "finished", "total"])
    df = runs_df.assign(done=runs_df["status"] == "finished")
    grouped = df.groupby(["model", "dataset"], as_index=False).agg(
        finished=("done", "sum"), total=("run_id", "count")
    )
    order = grouped.sort_values(["finished", "total", "model", "dataset"],
                                ascending=[False, False, True, True])  # fmt: skip
    return order.reset_index(drop=True)


def _latest(epochs: list[Mapping[str, Any]], key: str) -> Any:
    """The last non-missing value of ``key`` among epoch records."""
    for record in reversed(epochs):
        if record.get(key) is not None:
            return record[key]
    return None


def chart_runs(
    runs_df: pd.DataFrame, snapshots: Mapping[str, Mapping[str, Any] | None] | None = None
) -> pd.DataFrame:
    """Finished and running runs, ready for ``pareto_chart``.

    A running run is placed by the latest epoch record of its live snapshot (accuracy,
    average bits, compression); without a snapshot the store's latest epoch already is in
    the row. Uniform baselines carry no alpha (their stored alpha is the unused default).
    """
    df = runs_df[runs_df["status"].isin(SHOWN)].copy()
    df.loc[df["method"] == "uniform", "alpha"] = np.nan
    for run_id, snap in (snapshots or {}).items():
        epochs = (snap or {}).get("epochs") or []
        mask = (df["run_id"] == run_id) & (df["status"] == "running")
        if not epochs or not mask.any():
            continue
        acc = _latest(epochs, "test_acc")
        values = {
            "accuracy_pct": np.nan if acc is None else 100.0 * float(acc),
            "avg_bits": _latest(epochs, "avg_bits"),
            "compression": _latest(epochs, "compression"),
        }
        for col, value in values.items():
            df.loc[mask, col] = np.nan if value is None else float(value)
    return df.reset_index(drop=True)


def frontier_table(front: pd.DataFrame) -> pd.DataFrame:
    """The frontier runs with readable column names (the table and its CSV download)."""
    return front.reindex(columns=list(TABLE_COLUMNS)).rename(columns=TABLE_COLUMNS)


def load_references(path: Path | str = REFERENCE_PATH) -> pd.DataFrame:
    """Published figures; a missing accuracy stays NaN (the spec does not give it)."""
    df = pd.read_csv(path).reindex(columns=REFERENCE_COLUMNS)
    for col in ("compression", "avg_bits", "accuracy"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def split_references(
    refs: pd.DataFrame, model: str, dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """References of one pair as (points with accuracy and size, marks drawn as lines).

    Figures with no published accuracy, and the float start point (at 32 bits it would
    squash every quantized run into a corner), become reference lines instead of points.
    """
    mine = refs[(refs["model"] == model) & (refs["dataset"] == dataset)]
    as_line = mine["accuracy"].isna() | (mine["method"] == "float")
    return mine[~as_line].reset_index(drop=True), mine[as_line].reset_index(drop=True)


def _mark_text(row: Any, x_mode: XMode) -> str:
    if x_mode == "compression":
        return f"published: {row.label} {row.compression:.2f}x"
    return f"published: {row.label} ≈ {row.avg_bits:.2f} bits"


def add_published_marks(fig: go.Figure, lines: pd.DataFrame, x_mode: XMode) -> go.Figure:
    """Published figures as labelled lines: a vertical line at the compression (or average
    bits) of a result whose accuracy is not given, a horizontal line at the float accuracy."""
    color = REFERENCE_STYLE["color"]
    for i, row in enumerate(lines.itertuples()):
        hover = f"{row.label} (published figure)<br>source: {row.source}"
        if row.method == "float" and not pd.isna(row.accuracy):
            fig.add_hline(
                y=row.accuracy, line={"color": color, "dash": "dash", "width": 1.5},
                annotation={"text": f"published: {row.label} ≈ {row.accuracy:g}%",
                            "hovertext": hover, "font": {"color": color}},
                annotation_position="bottom right",
            )  # fmt: skip
        elif not pd.isna(getattr(row, x_mode)):
            fig.add_vline(
                x=getattr(row, x_mode), line={"color": color, "dash": "dot", "width": 1.5},
                annotation={"text": _mark_text(row, x_mode), "hovertext": hover,
                            "font": {"color": color}, "textangle": -90,
                            "yanchor": "top" if i % 2 else "bottom"},
                annotation_position="top left" if i % 2 else "bottom left",
            )  # fmt: skip
    return fig


def label_points(fig: go.Figure, runs: pd.DataFrame, traces=("BSQ", "uniform", "other"),
                 by: str = "name"):  # fmt: skip
    """Write each run's name (``by="owner"``: who started it, the class frontier) next to
    its point, so a projected chart reads without hovering."""
    column = runs[by] if by in runs else runs["name"]
    names = {rid: plain.html(label if isinstance(label, str) else "?")
             for rid, label in zip(runs["run_id"], column)}  # fmt: skip
    for trace in fig.data:
        if trace.name == "running" and trace.customdata is not None:
            trace.update(text=[f"{names.get(rid, '')} (running)" for rid in trace.customdata])
        elif trace.name in traces and trace.customdata is not None:
            trace.update(
                mode="markers+text", text=[names.get(rid, "") for rid in trace.customdata],
                textposition="top center", textfont={"size": 11, "color": "#555"},
            )  # fmt: skip
    return fig


def selected_run_id(event: Any) -> str | None:
    """The run id (customdata) of the first clicked run point of a plotly selection."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or []:
        custom = point.get("customdata")
        if isinstance(custom, list | tuple):
            custom = custom[0] if custom else None
        if isinstance(custom, str) and custom:
            return custom
    return None

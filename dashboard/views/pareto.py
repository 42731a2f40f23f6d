"""The Pareto page's pure logic: the frontier (numpy), its chart, live points, references.

A run is worth keeping when no other run is both smaller and more accurate; the frontier is
how alpha sweeps and uniform baselines are compared at a glance. Runs in
(``dashboard.views.frames.runs_frame`` rows), frames and figures out; no Streamlit, no files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from bsq_engine.runs.status import RunStatus
from dashboard.views import bench, plain
from dashboard.views.charts import style_figure

__all__ = [
    "add_published_marks", "chart_runs", "frontier_points", "frontier_table", "label_points",
    "mark_selected", "pair_options", "pareto_chart", "pareto_front", "references_frame",
    "selected_run_id", "split_references",
]  # fmt: skip

XMode = Literal["compression", "avg_bits", "bops"]

X_TITLES = {
    "compression": "Compression (x, 32 / average bits)",
    "avg_bits": "Average bits per weight",
    "bops": "Bit operations per image (MACs x weight bits x activation bits)",
}
MAXIMIZE_X = {"compression": True, "avg_bits": False, "bops": False}
METHOD_STYLE = {
    "bsq": {"name": "BSQ", "symbol": "circle", "color": "#4C78A8"},
    "uniform": {"name": "uniform", "symbol": "square", "color": "#F58518"},
}
OTHER_STYLE = {"name": "other", "symbol": "diamond", "color": "#54A24B"}
RUNNING_STYLE = {"symbol": "circle-open", "color": "#E45756"}
REFERENCE_STYLE = {"symbol": "star", "color": "#B279A2"}
FRONTIER_COLOR = "#7F7F7F"
RUNNING = RunStatus.RUNNING.value  # the trace of running runs is named after their status


def pareto_front(
    points: pd.DataFrame, x: str, y: str, maximize_x: bool, maximize_y: bool = True
) -> pd.Series:
    """True where no other point is at least as good on both axes and strictly better on one.

    Points with NaN in x or y are never optimal (an unfinished run has no accuracy). Exact
    ties are all kept: neither point beats the other.
    """
    xs = points[x].to_numpy(dtype=float) * (1.0 if maximize_x else -1.0)
    ys = points[y].to_numpy(dtype=float) * (1.0 if maximize_y else -1.0)
    valid = ~(np.isnan(xs) | np.isnan(ys))
    vx, vy = xs[valid], ys[valid]
    # (i, j): point j is at least as good as i on both axes and strictly better on one
    ge = (vx[None, :] >= vx[:, None]) & (vy[None, :] >= vy[:, None])
    gt = (vx[None, :] > vx[:, None]) | (vy[None, :] > vy[:, None])
    dominated = (ge & gt).any(axis=1)
    result = np.zeros(len(points), dtype=bool)
    result[np.flatnonzero(valid)] = ~dominated
    return pd.Series(result, index=points.index, name="pareto")


def _fmt(value: float, spec: str, missing: str = "—") -> str:
    """Format a number for hover text; NaN reads as a dash, not 'nan'."""
    return missing if pd.isna(value) else format(value, spec)


def _hover(df: pd.DataFrame) -> list[str]:
    """Run name, method, alpha, scheme '8/5/3', accuracy %, compression, average bits."""
    return [
        f"<b>{plain.html(r.name_)}</b> ({r.method}, {r.status})"
        f"{_by(getattr(r, 'owner', None))}<br>alpha: {_fmt(r.alpha, '.3g')}"
        f"<br>bits per layer: {r.bits or '—'}<br>accuracy: {_fmt(r.accuracy_pct, '.2f')}%"
        f"{bench.bench_hover(r)}<br>compression: {_fmt(r.compression, '.2f')}x"
        f"<br>average bits: {_fmt(r.avg_bits, '.3f')}"
        for r in df.rename(columns={"name": "name_"}).itertuples()
    ]


def _by(owner) -> str:
    return f"<br>started by {plain.html(owner)}" if isinstance(owner, str) and owner else ""


def _run_trace(df: pd.DataFrame, x_mode: XMode, style: dict, name: str) -> go.Scatter:
    """Scatter of runs; customdata is the bare run_id so a click can open the run."""
    trace = go.Scatter(
        x=df[x_mode], y=df["accuracy_pct"], mode="markers", name=name,
        customdata=df["run_id"].tolist(), hovertext=_hover(df),
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": style["symbol"], "color": style["color"], "size": 11,
                "line": {"width": 1, "color": "white"}},
    )  # fmt: skip
    return bench.decorate_run_trace(trace, df, style)


def _running_trace(df: pd.DataFrame, x_mode: XMode) -> go.Scatter:
    """Running runs: hollow rings labelled 'running' (their numbers are still moving)."""
    trace = _run_trace(df, x_mode, RUNNING_STYLE, RUNNING)
    trace.update(mode="markers+text", text=[RUNNING] * len(df), textposition="top center")
    trace.marker.update(size=16, line={"width": 3, "color": RUNNING_STYLE["color"]})
    return trace


def frontier_points(runs_df: pd.DataFrame, x_mode: XMode) -> pd.DataFrame:
    """Finished runs on the frontier, sorted along x (the order the line joins them).
    Collapsed runs (bench column ``collapsed``) are never on it."""
    done = runs_df[runs_df["status"] != RunStatus.RUNNING]
    if "collapsed" in done:
        done = done[done["collapsed"].fillna("") == ""]
    mask = pareto_front(done, x_mode, "accuracy_pct", maximize_x=MAXIMIZE_X[x_mode])
    return done[mask].sort_values([x_mode, "accuracy_pct"])


def _reference_trace(reference_df: pd.DataFrame, x_mode: XMode) -> go.Scatter:
    """Published results as stars, labelled so nobody mistakes them for local runs."""
    acc = reference_df["accuracy"].astype(float)
    acc = acc * 100.0 if acc.max() <= 1.0 else acc  # accept fractions or percents
    hover = [
        f"<b>{r.label}</b> (published, {r.method})<br>accuracy: {a:.2f}%"
        f"<br>compression: {_fmt(r.compression, '.2f')}x<br>average bits: "
        f"{_fmt(r.avg_bits, '.3f')}<br>source: {r.source}"
        for r, a in zip(reference_df.itertuples(), acc)
    ]
    return go.Scatter(
        x=reference_df[x_mode], y=acc, mode="markers+text", name="published",
        text=[f"{label} (published)" for label in reference_df["label"]],
        textposition="bottom center", textfont={"size": 10, "color": REFERENCE_STYLE["color"]},
        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": "star", "size": 15, "color": REFERENCE_STYLE["color"]},
    )  # fmt: skip


def pareto_chart(
    runs_df: pd.DataFrame, x_mode: XMode = "compression", reference_df: pd.DataFrame | None = None
) -> go.Figure:
    """Accuracy (%) against compression or average bits, with the frontier of finished runs.

    runs_df is dashboard.views.frames.runs_frame output, optionally with the bench columns
    of ``dashboard.views.bench.bench_frame`` (family, intervals, marks, collapsed). Traces
    are named 'BSQ', 'uniform' (and the other families), 'collapsed', 'running',
    'Pareto frontier' and 'published' so pages and tests can find them.
    """
    if x_mode not in X_TITLES:
        raise ValueError(f"x_mode must be 'compression', 'avg_bits' or 'bops', got {x_mode!r}")
    fig = style_figure(go.Figure(), "Pareto frontier", X_TITLES[x_mode], "Top-1 accuracy (%)")
    if x_mode not in runs_df:  # BOPs come with the bench columns
        runs_df = runs_df.assign(**{x_mode: np.nan})
    running = runs_df["status"] == RunStatus.RUNNING
    front = frontier_points(runs_df, x_mode)
    if not front.empty:
        fig.add_scatter(
            x=front[x_mode], y=front["accuracy_pct"], mode="lines", name="Pareto frontier",
            line={"color": FRONTIER_COLOR, "dash": "dot", "width": 2}, hoverinfo="skip",
        )  # fmt: skip
    collapsed = ~running & (runs_df.get("collapsed", pd.Series("", runs_df.index)) != "")
    _add_method_traces(fig, runs_df[~running & ~collapsed], x_mode)
    if collapsed.any():
        style = bench.COLLAPSED_STYLE
        fig.add_trace(_run_trace(runs_df[collapsed], x_mode, style, style["name"]))
    bench.add_float_line(fig, runs_df)
    if running.any():
        fig.add_trace(_running_trace(runs_df[running], x_mode))
    if reference_df is not None and not reference_df.empty and x_mode in reference_df:
        fig.add_trace(_reference_trace(reference_df, x_mode))
    if runs_df.empty and (reference_df is None or reference_df.empty):
        fig.add_annotation(text="No runs yet", showarrow=False, xref="paper", yref="paper")
    fig.update_yaxes(ticksuffix="%")
    fig.update_xaxes(ticksuffix="x" if x_mode == "compression" else "")
    if x_mode == "bops":
        fig.update_xaxes(type="log")
    return fig


def _add_method_traces(fig: go.Figure, df: pd.DataFrame, x_mode: XMode) -> None:
    """One trace per method (per family with the bench columns; uniform families also get
    a staircase line through their points)."""
    key = "family" if "family" in df else "method"
    for value, group in df.groupby(key, sort=True, dropna=False):
        style = bench.FAMILY_STYLE.get(value) or METHOD_STYLE.get(value, OTHER_STYLE)
        if key == "family" and str(value).startswith("uniform") and len(group) > 1:
            fig.add_trace(bench.staircase_trace(group, x_mode, style))
        fig.add_trace(_run_trace(group, x_mode, style, style["name"]))


# ---------------------------------------------------------------- the page's data
REFERENCE_COLUMNS = [
    "label", "model", "dataset", "method", "compression", "avg_bits", "accuracy", "source",
]  # fmt: skip
SHOWN = (RunStatus.FINISHED, RunStatus.RUNNING)
TABLE_COLUMNS = {
    "name": "run", "owner": "started by", "method": "method", "alpha": "alpha",
    "bits": "bits per layer", "accuracy_pct": "accuracy (%)", "avg_bits": "average bits",
    "compression": "compression (x)", "run_id": "run id",
}  # fmt: skip


def pair_options(runs_df: pd.DataFrame) -> pd.DataFrame:
    """(model, dataset, finished, total) per pair, the pair with most finished runs first."""
    if runs_df.empty:
        return pd.DataFrame(columns=["model", "dataset", "finished", "total"])
    df = runs_df.assign(done=runs_df["status"] == RunStatus.FINISHED)
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
    the row.
    """
    df = runs_df[runs_df["status"].isin(SHOWN)].copy()
    for run_id, snap in (snapshots or {}).items():
        epochs = (snap or {}).get("epochs") or []
        mask = (df["run_id"] == run_id) & (df["status"] == RunStatus.RUNNING)
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


def references_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Published figures with the expected columns; a missing accuracy stays NaN (the spec
    does not give it)."""
    df = raw.reindex(columns=REFERENCE_COLUMNS)
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
        elif not pd.isna(getattr(row, x_mode, np.nan)):  # published BOPs: none
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
        if trace.name == RUNNING and trace.customdata is not None:
            trace.update(text=[f"{names.get(rid, '')} (running)" for rid in trace.customdata])
        elif trace.name in traces and trace.customdata is not None:
            trace.update(
                mode="markers+text", text=[names.get(rid, "") for rid in trace.customdata],
                textposition="top center", textfont={"size": 11, "color": "#555"},
            )  # fmt: skip
    return fig


def mark_selected(fig: go.Figure, runs: pd.DataFrame, x_mode: XMode, run_id: str, color: str):
    """Ring the selected run in its own colour (``views.colors``: the same on Compare and in
    its run panel); points stay coloured by method, which answers another question."""
    row = runs[runs["run_id"] == run_id]
    if not row.empty:
        ring = {"symbol": "circle-open", "size": 24, "color": color, "line": {"width": 4}}
        fig.add_scatter(x=row[x_mode], y=row["accuracy_pct"], mode="markers", name="selected",
                        hoverinfo="skip", marker=ring)  # fmt: skip
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

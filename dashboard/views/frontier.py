"""Accuracy-vs-size Pareto frontier: the math (pure numpy) and the chart.

A run is worth keeping when no other run is both smaller and more accurate; the frontier
is how alpha sweeps and uniform baselines are compared at a glance.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.views import plain
from dashboard.views.charts import style_figure

XMode = Literal["compression", "avg_bits"]

X_TITLES = {
    "compression": "Compression (x, 32 / average bits)",
    "avg_bits": "Average bits per weight",
}
METHOD_STYLE = {
    "bsq": {"name": "BSQ", "symbol": "circle", "color": "#4C78A8"},
    "uniform": {"name": "uniform", "symbol": "square", "color": "#F58518"},
}
OTHER_STYLE = {"name": "other", "symbol": "diamond", "color": "#54A24B"}
RUNNING_STYLE = {"symbol": "circle-open", "color": "#E45756"}
REFERENCE_STYLE = {"symbol": "star", "color": "#B279A2"}
FRONTIER_COLOR = "#7F7F7F"


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
        f"<br>compression: {_fmt(r.compression, '.2f')}x"
        f"<br>average bits: {_fmt(r.avg_bits, '.3f')}"
        for r in df.rename(columns={"name": "name_"}).itertuples()
    ]


def _by(owner) -> str:
    return f"<br>started by {plain.html(owner)}" if isinstance(owner, str) and owner else ""


def _run_trace(df: pd.DataFrame, x_mode: XMode, style: dict, name: str) -> go.Scatter:
    """Scatter of runs; customdata is the bare run_id so a click can open the run."""
    return go.Scatter(
        x=df[x_mode], y=df["accuracy_pct"], mode="markers", name=name,
        customdata=df["run_id"].tolist(), hovertext=_hover(df),
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": style["symbol"], "color": style["color"], "size": 11,
                "line": {"width": 1, "color": "white"}},
    )  # fmt: skip


def _running_trace(df: pd.DataFrame, x_mode: XMode) -> go.Scatter:
    """Running runs: hollow rings labelled 'running' (their numbers are still moving)."""
    trace = _run_trace(df, x_mode, RUNNING_STYLE, "running")
    trace.update(mode="markers+text", text=["running"] * len(df), textposition="top center")
    trace.marker.update(size=16, line={"width": 3, "color": RUNNING_STYLE["color"]})
    return trace


def frontier_points(runs_df: pd.DataFrame, x_mode: XMode) -> pd.DataFrame:
    """Finished runs on the frontier, sorted along x (the order the line joins them)."""
    done = runs_df[runs_df["status"] != "running"]
    mask = pareto_front(done, x_mode, "accuracy_pct", maximize_x=(x_mode == "compression"))
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

    runs_df is dashboard.views.frames.runs_frame output. Traces are named 'BSQ', 'uniform',
    'running', 'Pareto frontier' and 'published' so pages and tests can find them.
    """
    if x_mode not in X_TITLES:
        raise ValueError(f"x_mode must be 'compression' or 'avg_bits', got {x_mode!r}")
    fig = style_figure(go.Figure(), "Pareto frontier", X_TITLES[x_mode], "Top-1 accuracy (%)")
    running = runs_df["status"] == "running"
    front = frontier_points(runs_df, x_mode)
    if not front.empty:
        fig.add_scatter(
            x=front[x_mode], y=front["accuracy_pct"], mode="lines", name="Pareto frontier",
            line={"color": FRONTIER_COLOR, "dash": "dot", "width": 2}, hoverinfo="skip",
        )  # fmt: skip
    for method, group in runs_df[~running].groupby("method", sort=True, dropna=False):
        style = METHOD_STYLE.get(method, OTHER_STYLE)
        fig.add_trace(_run_trace(group, x_mode, style, style["name"]))
    if running.any():
        fig.add_trace(_running_trace(runs_df[running], x_mode))
    if reference_df is not None and not reference_df.empty:
        fig.add_trace(_reference_trace(reference_df, x_mode))
    if runs_df.empty and (reference_df is None or reference_df.empty):
        fig.add_annotation(text="No runs yet", showarrow=False, xref="paper", yref="paper")
    fig.update_yaxes(ticksuffix="%")
    fig.update_xaxes(ticksuffix="x" if x_mode == "compression" else "")
    return fig

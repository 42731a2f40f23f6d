"""Accuracy-vs-size Pareto frontier: the math (pure numpy) and the chart.

A run is worth keeping when no other run is both smaller and more accurate; the frontier
is how alpha sweeps and uniform baselines are compared at a glance.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.views.charts import style_figure

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
# Families of the bench (dashboard.views.bench.family_of); BSQ and uniform keep their names.
FAMILY_STYLE = {
    "BSQ": METHOD_STYLE["bsq"], "uniform": METHOD_STYLE["uniform"],
    "uniform, first/last 8": {"name": "uniform, first/last 8", "symbol": "triangle-up",
                              "color": "#E8A33D"},
    "scheme QAT": {"name": "scheme QAT", "symbol": "cross", "color": "#72B7B2"},
    "HAWQ-style": {"name": "HAWQ-style", "symbol": "hexagon", "color": "#54A24B"},
}  # fmt: skip
COLLAPSED_STYLE = {"name": "collapsed", "symbol": "x", "color": "#9D9D9D"}
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


def _bench_hover(r) -> str:
    """Interval, tie and collapse lines, when the bench columns are present."""
    text = ""
    if not pd.isna(getattr(r, "acc_low", np.nan)):
        text += f" (95%: {r.acc_low:.2f}-{r.acc_high:.2f})"
    if not pd.isna(getattr(r, "quant_stage_pct", np.nan)):
        text += f"<br>before finetune: {r.quant_stage_pct:.2f}%"
    if getattr(r, "mark", "") == "tied":
        text += "<br>tied: a smaller model is within noise of this accuracy"
    if getattr(r, "collapsed", ""):
        text += f"<br><b>collapsed</b>: {r.collapsed}"
    return text


def _hover(df: pd.DataFrame) -> list[str]:
    """Run name, method, alpha, scheme '8/5/3', accuracy % (and interval), sizes."""
    return [
        f"<b>{r.name_}</b> ({r.method}, {r.status})<br>alpha: {_fmt(r.alpha, '.3g')}"
        f"<br>bits per layer: {r.bits or '—'}<br>accuracy: {_fmt(r.accuracy_pct, '.2f')}%"
        f"{_bench_hover(r)}<br>compression: {_fmt(r.compression, '.2f')}x"
        f"<br>average bits: {_fmt(r.avg_bits, '.3f')}"
        for r in df.rename(columns={"name": "name_"}).itertuples()
    ]


def _run_trace(df: pd.DataFrame, x_mode: XMode, style: dict, name: str) -> go.Scatter:
    """Scatter of runs; customdata is the bare run_id so a click can open the run. With
    the bench columns: 95% error bars, and tied points drawn hollow."""
    symbol = style["symbol"]
    if "mark" in df:
        symbol = [f"{symbol}-open" if m == "tied" else symbol for m in df["mark"]]
    trace = go.Scatter(
        x=df[x_mode], y=df["accuracy_pct"], mode="markers", name=name,
        customdata=df["run_id"].tolist(), hovertext=_hover(df),
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": symbol, "color": style["color"], "size": 11,
                "line": {"width": 1, "color": "white"}},
    )  # fmt: skip
    if "acc_low" in df and df["acc_low"].notna().any():
        trace.update(error_y={
            "type": "data", "array": (df["acc_high"] - df["accuracy_pct"]).tolist(),
            "arrayminus": (df["accuracy_pct"] - df["acc_low"]).tolist(),
            "color": style["color"], "thickness": 1, "width": 3,
        })  # fmt: skip
    return trace


def _running_trace(df: pd.DataFrame, x_mode: XMode) -> go.Scatter:
    """Running runs: hollow rings labelled 'running' (their numbers are still moving)."""
    trace = _run_trace(df, x_mode, RUNNING_STYLE, "running")
    trace.update(mode="markers+text", text=["running"] * len(df), textposition="top center")
    trace.marker.update(size=16, line={"width": 3, "color": RUNNING_STYLE["color"]})
    return trace


def frontier_points(runs_df: pd.DataFrame, x_mode: XMode) -> pd.DataFrame:
    """Finished runs on the frontier, sorted along x (the order the line joins them).
    Collapsed runs (bench column ``collapsed``) are never on it."""
    done = runs_df[runs_df["status"] != "running"]
    if "collapsed" in done:
        done = done[done["collapsed"].fillna("") == ""]
    if x_mode not in done:
        return done.iloc[0:0]
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
    if x_mode not in runs_df:  # BOPs come with the bench columns; older frames lack them
        runs_df = runs_df.assign(**{x_mode: np.nan})
    running = runs_df["status"] == "running"
    front = frontier_points(runs_df, x_mode)
    if not front.empty:
        fig.add_scatter(
            x=front[x_mode], y=front["accuracy_pct"], mode="lines", name="Pareto frontier",
            line={"color": FRONTIER_COLOR, "dash": "dot", "width": 2}, hoverinfo="skip",
        )  # fmt: skip
    collapsed = ~running & (runs_df.get("collapsed", pd.Series("", runs_df.index)).fillna("") != "")
    _add_method_traces(fig, runs_df[~running & ~collapsed], x_mode)
    if collapsed.any():
        fig.add_trace(_run_trace(runs_df[collapsed], x_mode, COLLAPSED_STYLE, "collapsed"))
    _add_float_line(fig, runs_df)
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
    """One trace per method (family with the bench columns); uniform families also get a
    staircase line through their points, the way the field draws uniform baselines."""
    key = "family" if "family" in df else "method"
    for value, group in df.groupby(key, sort=True, dropna=False):
        style = FAMILY_STYLE.get(value) or METHOD_STYLE.get(value, OTHER_STYLE)
        if key == "family" and str(value).startswith("uniform") and len(group) > 1:
            steps = group.sort_values(x_mode)
            fig.add_scatter(
                x=steps[x_mode], y=steps["accuracy_pct"], mode="lines", line_shape="vh",
                line={"color": style["color"], "width": 1}, hoverinfo="skip",
                name=f"{style['name']} staircase", showlegend=False,
            )  # fmt: skip
        fig.add_trace(_run_trace(group, x_mode, style, style["name"]))


def _add_float_line(fig: go.Figure, runs_df: pd.DataFrame) -> None:
    """The float model's accuracy (median over runs: sweeps share one float model)."""
    if "float_accuracy_pct" not in runs_df or runs_df["float_accuracy_pct"].isna().all():
        return
    level = float(runs_df["float_accuracy_pct"].median())
    fig.add_hline(
        y=level, line={"color": "#444", "dash": "dash", "width": 1},
        annotation={"text": f"float model {level:.2f}%"}, annotation_position="top left",
    )  # fmt: skip

"""Live-run charts: bits per layer, bit-plane density, training curves, event log.

DataFrames (from dashboard.views.frames) in, figures out; no Streamlit, no store, so every chart
is unit-testable and the pages stay thin.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from bsq_engine.core.quantize import PrecisionEvent
from bsq_engine.runs.queries import downsample
from bsq_engine.training.config import Stage
from dashboard.views.curves import X_AXES, ChartParts, CurveOptions, ema, with_wall_clock
from dashboard.views.frames import bit_labels, density_matrix, plane_matrix

TEMPLATE = "plotly_white"
# Every figure's look, as Plotly's default: Plotly then applies it to each new figure without
# validating it again (setting it per figure did: 13 ms of a live run's 25-30 ms figures).
pio.templates.default = TEMPLATE
BAR_COLOR = "#4C78A8"
PRUNED_COLOR = "#D62728"
GAP_COLOR = "#E5E5E5"  # plot background shows through NaN cells: dropped planes look grey
DENSITY_SCALE = "Blues"

METRIC_LABELS = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
    "reg": "regularizer R",
    "alpha_reg": "alpha * R",
    "lr": "learning rate",
    "avg_bits": "average bits",
    "compression": "compression (x)",
    "seconds": "seconds per epoch",
    "step_ms": "ms per step",
}
PERCENT_METRICS = {"train_acc", "test_acc"}
MAX_POINTS = 500  # an epoch curve's points at most (evenly spaced epochs, first and last kept)


def base_layout(title: str, x_title: str, y_title: str) -> dict:
    """One look for every Plotly figure, as a layout dict: title, axis titles, compact
    margins, a horizontal legend (the white theme is Plotly's default template)."""
    return {
        "title": {"text": title, "x": 0.0, "xanchor": "left"},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}},
        "margin": {"l": 60, "r": 30, "t": 60, "b": 60},
        "hoverlabel": {"bgcolor": "white"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 1, "xanchor": "right"},
    }


def _template() -> dict:
    """The white theme as a layout entry when Plotly's default is no longer it (changed by
    someone else); nothing while it is (Plotly applies its default without validating)."""
    return {} if pio.templates.default == TEMPLATE else {"template": TEMPLATE}


def style_figure(fig: go.Figure, title: str, x_title: str, y_title: str) -> go.Figure:
    """Give ``fig`` the look of :func:`base_layout` and the white theme."""
    fig.update_layout({**_template(), **base_layout(title, x_title, y_title)})
    return fig


def make_figure(data: list[dict], layout: dict) -> go.Figure:
    """A figure made in one go from trace and layout dicts: Plotly validates it once. The
    live charts are rebuilt every few seconds while a run trains, and each ``add_*`` or
    ``update_*`` call validates again (the bits chart: 9 ms that way, 1.3 ms this way)."""
    return go.Figure(data=data, layout={**layout, **_template()})


def _empty_note(message: str) -> dict:
    """An annotation that says why a chart is empty instead of drawing bare axes."""
    return {"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
            "x": 0.5, "y": 0.5}  # fmt: skip


def bit_text(n_bits: int) -> str:
    """Bar label: the bit count, with pruned layers spelled out."""
    return "0 (pruned)" if int(n_bits) == 0 else str(int(n_bits))


def bits_per_layer_chart(
    snapshot_df: pd.DataFrame, start_bits: int | None = None, color: str = BAR_COLOR,
    planned: pd.DataFrame | None = None,
) -> go.Figure:  # fmt: skip
    """One bar per layer (model order) in ``color`` (the run's colour on every page);
    pruned layers get a red marker (a 0 bar is invisible). Before the first snapshot,
    ``planned`` (``run_model.planned_layers``) is drawn faint: the precision BSQ starts from."""
    layout = base_layout("Bits per layer", "Layer", "Bits")
    faint = snapshot_df.empty and planned is not None and not planned.empty
    if faint:
        snapshot_df, start_bits = planned, None
        layout["annotations"] = [_empty_note("Planned start: measured from the BSQ stage on")]
    elif snapshot_df.empty:
        layout["annotations"] = [_empty_note("No layer snapshot yet (pretraining)")]
        return make_figure([], layout)
    names = [str(n) for n in snapshot_df["name"]]
    bits = [int(b) for b in snapshot_df["n_bits"]]
    pruned = [b == 0 for b in bits]
    marker = {"color": [PRUNED_COLOR if p else color for p in pruned]}
    data = [{
        "type": "bar", "x": names, "y": bits, "name": "bits", "textposition": "outside",
        "text": [bit_text(b) for b in bits], "customdata": list(snapshot_df["n_weights"]),
        "marker": {**marker, "opacity": 0.35} if faint else marker,
        "hovertemplate": "%{x}<br>%{text} bits<br>%{customdata:,} weights<extra></extra>",
    }]  # fmt: skip
    if any(pruned):
        data.append({
            "type": "scatter", "x": [n for n, p in zip(names, pruned) if p],
            "y": [0] * sum(pruned), "mode": "markers", "name": "pruned",
            "marker": {"symbol": "x", "size": 12, "color": PRUNED_COLOR},
            "hovertemplate": "%{x}<br>0 bits (pruned)<extra></extra>",
        })  # fmt: skip
    if start_bits is not None:  # a dashed reference line across the plot, labelled
        line = {"xref": "x domain", "yref": "y", "y0": start_bits, "y1": start_bits}
        layout["shapes"] = [{"type": "line", "x0": 0, "x1": 1, **line,
                             "line": {"dash": "dash", "color": "grey"}}]  # fmt: skip
        layout["annotations"] = [{
            "text": f"start: {start_bits} bits", "showarrow": False, "x": 1, "xref": "x domain",
            "xanchor": "right", "y": start_bits, "yref": "y", "yanchor": "bottom", "yshift": 12,
        }]  # fmt: skip
    top = max([*bits, start_bits or 0]) + 2  # headroom for bar labels and the reference label
    layout["yaxis"].update(range=[0, top], dtick=1)
    layout["xaxis"].update(type="category", tickangle=-45)
    return make_figure(data, {**layout, "showlegend": False})


def _hover_matrix(names: list[str], labels: list[str], dens: np.ndarray, norms: np.ndarray):
    """Per-cell hover text; dropped planes say so rather than showing NaN."""
    text = []
    for i, name in enumerate(names):
        row = []
        for j, label in enumerate(labels):
            if np.isnan(dens[i, j]):
                row.append(f"{name}<br>{label}<br>plane dropped")
            else:
                row.append(
                    f"{name}<br>{label}<br>density: {dens[i, j]:.3f}"
                    f"<br>group norm: {norms[i, j]:.4g}"
                )
        text.append(row)
    return text


def density_trace(snapshot_df: pd.DataFrame, max_bits: int, **kwargs: Any) -> go.Heatmap:
    """Heatmap trace of one snapshot; shared by the live view and the comparison subplots."""
    return go.Heatmap(**_density_trace(snapshot_df, max_bits), **kwargs)


def _density_trace(snapshot_df: pd.DataFrame, max_bits: int) -> dict:
    dens, names, labels = density_matrix(snapshot_df, max_bits)
    norms = plane_matrix(snapshot_df, max_bits, "group_norm")
    return {
        "z": dens, "x": labels, "y": names, "zmin": 0.0, "zmax": 1.0,
        "colorscale": DENSITY_SCALE, "hoverongaps": False, "xgap": 1, "ygap": 1,
        "text": _hover_matrix(names, labels, dens, norms),
        "hovertemplate": "%{text}<extra></extra>",
    }  # fmt: skip


def density_heatmap(snapshot_df: pd.DataFrame, max_bits: int) -> go.Figure:
    """Layers x bit positions (MSB left); colour = fraction of ones, blank = dropped plane."""
    layout = base_layout("Bit-plane density", "Bit position", "Layer")
    if snapshot_df.empty:
        layout["xaxis"].update(categoryorder="array", categoryarray=bit_labels(max_bits))
        return make_figure([], {**layout, "annotations": [_empty_note(
            "No layer snapshot yet (pretraining)")]})  # fmt: skip
    trace = {"type": "heatmap", **_density_trace(snapshot_df, max_bits),
             "colorbar": {"title": {"text": "density"}}}  # fmt: skip
    layout["xaxis"].update(showgrid=False, side="bottom")
    layout["yaxis"].update(autorange="reversed", showgrid=False)
    return make_figure([trace], {**layout, "plot_bgcolor": GAP_COLOR})


def _long(timed: pd.DataFrame, metrics: list[str], max_points: int) -> pd.DataFrame:
    """Tidy (global_epoch, wall, stage, metric, value) rows of a ``with_wall_clock`` frame,
    metric by metric (``DataFrame.melt``'s rows and index), missing values dropped. Built
    from the columns' arrays: ``melt`` and a label ``map`` were a third of a live run's
    chart rebuild."""
    ids = ["global_epoch", "wall", "stage"]
    df = downsample(timed[[*ids, *metrics]], max_points)
    n = len(df)
    long = pd.DataFrame({
        **{c: np.tile(df[c].to_numpy(), len(metrics)) for c in ids},
        "metric": np.repeat(np.array([METRIC_LABELS.get(m, m) for m in metrics], object), n),
        "value": np.concatenate([df[m].to_numpy() for m in metrics]) if metrics else [],
    })  # fmt: skip
    return long[long["value"].notna().to_numpy()]


def _stage_starts(timed: pd.DataFrame, x: str = "epoch") -> pd.DataFrame:
    """Where each stage after the first begins (between two epochs), for vertical rules;
    from a ``with_wall_clock`` frame."""
    rows = timed[["stage", "global_epoch", "wall_start"]].dropna(subset=["stage"])
    firsts = rows.sort_values("global_epoch", kind="stable").drop_duplicates("stage").iloc[1:]
    where = firsts["global_epoch"] - 0.5 if x == "epoch" else firsts["wall_start"]
    return pd.DataFrame({"x": where.to_numpy(), "stage": firsts["stage"].to_numpy()})


def epoch_axis(field: str = "global_epoch", title: str = X_AXES["epoch"]) -> alt.X:
    """An epoch x axis with whole-number ticks (never 0.5 epochs on a short run)."""
    return alt.X(f"{field}:Q", title=title, axis=alt.Axis(tickMinStep=1, format="d"))


def _x(x: str) -> alt.X:
    if x == "wall":
        return alt.X("wall:Q", title=X_AXES["wall"], axis=alt.Axis(format="~g"))
    return epoch_axis()


def _stage_data(timed: pd.DataFrame, x: str = "epoch") -> dict[str, pd.DataFrame]:
    """The "stages" dataset of :func:`_stage_layers`, or none when there is one stage."""
    starts = _stage_starts(timed, x)
    return {} if starts.empty else {"stages": starts}


def _stage_layers(source, stages: bool) -> list[alt.Chart]:
    """Dashed rules at stage boundaries, labelled with the stage that starts there."""
    if not stages:
        return []
    base = alt.Chart(source("stages"))
    rule = base.mark_rule(strokeDash=[4, 4], color="grey").encode(x="x:Q")
    label = base.mark_text(align="left", dx=4, dy=6, baseline="top", color="grey").encode(
        x="x:Q", y=alt.value(0), text="stage:N"
    )
    return [rule, label]


def curves_parts(
    epochs_df: pd.DataFrame,
    metrics: list[str],
    title: str = "Training curves",
    y_title: str = "value",
    max_points: int = MAX_POINTS,
    options: CurveOptions | None = None,
) -> ChartParts:
    """Metrics over the epochs (or wall-clock), one colour per metric, stage boundaries as
    rules; ``options`` adds smoothing (raw curve faint underneath) and a log y axis. The
    chart itself: ``.chart()``."""
    options = options or CurveOptions()
    timed = with_wall_clock(epochs_df)
    return _curves_parts(timed, _stage_data(timed, options.x), metrics, title, y_title,
                         max_points, options)  # fmt: skip


def _curves_parts(timed: pd.DataFrame, stages: dict, metrics: list[str], title: str,
                  y_title: str, max_points: int, options: CurveOptions) -> ChartParts:  # fmt: skip
    long = _long(timed, metrics, max_points)
    if options.smoothing:
        long["smoothed"] = long.groupby("metric")["value"].transform(
            lambda v: ema(v.tolist(), options.smoothing)
        )
    return ChartParts.of(
        _curves_layout, {"curves": long, **stages}, percent=set(metrics) <= PERCENT_METRICS,
        title=title, y_title=y_title, x=options.x, smoothed=bool(options.smoothing),
        log_y=options.log_y, points=len(long) < 60, stages=bool(stages),
    )  # fmt: skip


def epoch_parts(epochs_df: pd.DataFrame, options: CurveOptions | None = None) -> dict:
    """A run's epoch charts: ``"loss"`` and ``"acc"`` (:func:`loss_parts`,
    :func:`accuracy_parts`) and, once an epoch has average bits, ``"avg"``
    (:func:`bits_parts`), equal to those, with the wall-clock columns and the stage starts
    worked out once for the three (the live panel rebuilds them every few seconds)."""
    options = options or CurveOptions()
    timed = with_wall_clock(epochs_df)
    stages = {x: _stage_data(timed, x) for x in {options.x, "epoch"}}
    parts = {name: _curves_parts(timed, stages[options.x], *spec, MAX_POINTS, options)
             for name, spec in (("loss", _LOSS), ("acc", _ACCURACY))}  # fmt: skip
    if epochs_df["avg_bits"].notna().any():
        parts["avg"] = _bits_parts(timed, stages["epoch"], MAX_POINTS)
    return parts


def _curves_layout(source, percent: bool, title: str, y_title: str, x: str, smoothed: bool,
                   log_y: bool, points: bool, stages: bool) -> alt.LayerChart:  # fmt: skip
    fmt = ".1%" if percent else ".4g"
    scale = alt.Scale(zero=False, type="log" if log_y else "linear")
    axis = alt.Axis(format=".0%" if percent else "~g")
    base = alt.Chart(source("curves")).encode(
        x=_x(x),
        color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("global_epoch:Q", title="epoch"), alt.Tooltip("stage:N"),
                 alt.Tooltip("metric:N"), alt.Tooltip("value:Q", format=fmt),
                 alt.Tooltip("wall:Q", title="seconds", format=".1f")],
    )  # fmt: skip
    raw = base.mark_line(point=points, opacity=0.3 if smoothed else 1.0)
    lines = [raw.encode(y=alt.Y("value:Q", title=y_title, scale=scale, axis=axis))]
    if smoothed:
        lines.append(base.mark_line().encode(y=alt.Y("smoothed:Q", scale=scale, axis=axis)))
    chart = alt.layer(*lines, *_stage_layers(source, stages)).properties(title=title)
    return chart.configure_view(strokeWidth=0).configure(background="white")


_LOSS = (["train_loss", "test_loss"], "Loss", "cross-entropy loss")
_ACCURACY = (["train_acc", "test_acc"], "Accuracy", "top-1 accuracy")


def loss_chart(epochs_df: pd.DataFrame, options: CurveOptions | None = None) -> alt.LayerChart:
    """Train and test loss."""
    return loss_parts(epochs_df, options).chart()


def loss_parts(epochs_df: pd.DataFrame, options: CurveOptions | None = None) -> ChartParts:
    """:func:`loss_chart` as rows + layout."""
    return curves_parts(epochs_df, *_LOSS, options=options)


def accuracy_chart(epochs_df: pd.DataFrame, options: CurveOptions | None = None) -> alt.LayerChart:
    """Train and test accuracy, axis and tooltips in %."""
    return accuracy_parts(epochs_df, options).chart()


def accuracy_parts(epochs_df: pd.DataFrame, options: CurveOptions | None = None) -> ChartParts:
    """:func:`accuracy_chart` as rows + layout."""
    return curves_parts(epochs_df, *_ACCURACY, options=options)


# (dataset and column name, metric label, y axis side)
_BITS_METRICS = (("avg_bits", "average bits", "left"), ("compression", "compression (x)", "right"))


def bits_chart(epochs_df: pd.DataFrame, max_points: int = MAX_POINTS) -> alt.LayerChart:
    """Average bits (left axis) and compression (right axis): the same fact on two scales."""
    return bits_parts(epochs_df, max_points).chart()


def bits_parts(epochs_df: pd.DataFrame, max_points: int = MAX_POINTS) -> ChartParts:
    """:func:`bits_chart` as rows + layout."""
    timed = with_wall_clock(epochs_df)
    return _bits_parts(timed, _stage_data(timed), max_points)


def _bits_parts(timed: pd.DataFrame, stages: dict, max_points: int) -> ChartParts:
    long = _long(timed, [column for column, _, _ in _BITS_METRICS], max_points)
    labels = long["metric"].to_numpy()
    data = {name: long[labels == label] for name, label, _ in _BITS_METRICS}
    return ChartParts.of(_bits_layout, {**data, **stages}, stages=bool(stages))


def _bits_layout(source, stages: bool) -> alt.LayerChart:
    color = alt.Color("metric:N", title=None, legend=alt.Legend(orient="top"))
    x = epoch_axis()
    tooltip = [alt.Tooltip("global_epoch:Q", title="epoch"), "stage:N", "metric:N",
               alt.Tooltip("value:Q", format=".3g")]  # fmt: skip
    lines = []
    for name, metric, orient in _BITS_METRICS:
        lines.append(
            alt.Chart(source(name))
            .mark_line()
            .encode(x=x, color=color, tooltip=tooltip,
                    y=alt.Y("value:Q", title=metric, axis=alt.Axis(orient=orient)))
        )  # fmt: skip
    twin = alt.layer(*lines).resolve_scale(y="independent")
    chart = alt.layer(twin, *_stage_layers(source, stages)).properties(title="Bits and compression")
    return chart.configure_view(strokeWidth=0).configure(background="white")


def _message(event: Mapping[str, Any]) -> str:
    """The event's own wording; an event stored without one gets the engine's wording."""
    if event.get("message"):
        return str(event["message"])
    known = {f.name for f in dataclasses.fields(PrecisionEvent)} - {"message"}
    return PrecisionEvent(**{k: v for k, v in event.items() if k in known}).message


_STAGE_ORDER = {stage.value: i for i, stage in enumerate(Stage)}  # the stages in training order


def event_order(event: Mapping[str, Any]) -> tuple[int, float]:
    """Where an event goes in the precision-change log: its stage in training order
    (unknown stages last), then its epoch (missing ones last); equal events keep their
    order."""
    stage = _STAGE_ORDER.get(event.get("stage"), len(_STAGE_ORDER))
    try:
        epoch = float(event.get("epoch"))
    except (TypeError, ValueError):
        epoch = math.nan
    return stage, epoch if math.isfinite(epoch) else math.inf


def events_table(events: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Readable precision-change log in training order (stage, epoch, layer, change)."""
    rows = [
        {"stage": e.get("stage"), "epoch": e.get("epoch"), "layer": e.get("layer"),
         "old_bits": e.get("old_bits"), "new_bits": e.get("new_bits"), "change": _message(e)}
        for e in sorted(events, key=event_order)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["stage", "epoch", "layer", "old_bits", "new_bits", "change"])

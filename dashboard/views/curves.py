"""Curve options a researcher expects (TensorBoard habits): smoothing, log scale, wall-clock
axis, and the live per-step loss of a running run.

Smoothing is TensorBoard's: an exponential moving average with its start-up bias removed,
drawn over the faint raw curve, so a noisy per-step loss stays readable without hiding it.
The wall-clock axis is the cumulative ``seconds`` of the epochs (time spent training and
evaluating; queue time and process start are not in it). A finished run's stored per-step
series (``RunStore.step_points``) counts its ``wall`` the same way and carries a fractional
epoch, so its curves take the same three x axes: step, epoch, wall-clock.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from bsq_engine.runs.queries import downsample

__all__ = [
    "SERIES_COLUMNS", "X_AXES", "ChartParts", "CurveOptions", "ema", "series_chart",
    "series_frame", "step_chart", "step_frame", "step_parts", "with_wall_clock",
]  # fmt: skip

#: x-axis choices: field in the tidy frame -> axis title.
X_AXES = {"epoch": "epoch (all stages)", "wall": "wall-clock (s)", "step": "step"}


@dataclass(frozen=True)
class CurveOptions:
    """How curves are drawn: x axis (``X_AXES`` key), smoothing weight in [0, 1), log y."""

    x: str = "epoch"
    smoothing: float = 0.0
    log_y: bool = False

    def __post_init__(self):
        if self.x not in X_AXES:
            raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {self.x!r}.")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1); got {self.smoothing}.")


def ema(values: Sequence[float], weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); NaNs are skipped.

    >>> ema([1.0, 3.0], 0.0).tolist()
    [1.0, 3.0]
    >>> ema([2.0, 2.0, 2.0], 0.9).tolist()  # a constant stays constant (no start-up bias)
    [2.0, 2.0, 2.0]
    """
    out = np.full(len(values), np.nan)
    last, n = 0.0, 0
    for i, value in enumerate(values):
        if value is None or not np.isfinite(value):
            continue
        n += 1
        last = weight * last + (1 - weight) * float(value)
        out[i] = last / (1 - weight**n) if weight else last
    return out


@dataclass(frozen=True)
class ChartParts:
    """A Vega-Lite chart in two parts: its rows, and a layout that reads them by name.

    ``layout(source)`` builds the Altair chart, taking each dataset as ``source(name)``: the
    rows themselves (:meth:`chart`, the whole chart as before) or ``alt.NamedData`` (a
    layout without rows). ``key`` names the layout: charts with equal keys differ in their
    rows only. Made by :meth:`of`, which puts every argument of the layout function in the
    key, so nothing about the rows can shape a layout without being in its key. The live
    panel builds each layout once and sends new rows (``run_charts.shared_spec``): building
    Altair charts was most of what a watched run's figures cost the server."""

    key: tuple
    data: Mapping[str, pd.DataFrame]
    layout: Callable[[Callable[[str], Any]], alt.TopLevelMixin]

    @classmethod
    def of(cls, layout_fn: Callable, data: Mapping[str, pd.DataFrame], **args) -> ChartParts:
        """``layout_fn(source, **args)`` with ``data``; ``args`` must be hashable."""
        key = (layout_fn.__module__, layout_fn.__qualname__, *sorted(args.items()))
        return cls(key, dict(data), functools.partial(layout_fn, **args))

    def chart(self) -> alt.TopLevelMixin:
        """The chart with its rows inline."""
        return self.layout(self.data.__getitem__)


def with_wall_clock(epochs_df: pd.DataFrame) -> pd.DataFrame:
    """Epoch rows plus ``wall`` and ``wall_start``: seconds of training so far at the end
    and at the start of each epoch (rows in training order)."""
    df = epochs_df.copy()
    raw = df["seconds"] if "seconds" in df else pd.Series(0.0, index=df.index)
    seconds = pd.to_numeric(raw, errors="coerce").fillna(0.0)
    df["wall"] = seconds.cumsum()
    df["wall_start"] = df["wall"] - seconds
    return df


def step_frame(steps: Sequence[dict]) -> pd.DataFrame:
    """The live per-step curve (``snapshot()["steps"]``) as a frame with ``wall`` seconds."""
    df = pd.DataFrame(list(steps), columns=["step", "stage", "epoch", "loss", "batch_acc",
                                            "reg", "time"])  # fmt: skip
    df["wall"] = df["time"] - df["time"].min() if len(df) else []
    return df


def step_chart(frame: pd.DataFrame, options: CurveOptions = CurveOptions(x="step")) -> alt.Chart:
    """Training loss per step (batch loss incl. alpha * R during BSQ): raw faint, smoothed
    bold, one colour per stage."""
    return step_parts(frame, options).chart()


def step_parts(frame: pd.DataFrame, options: CurveOptions = CurveOptions(x="step")) -> ChartParts:
    """:func:`step_chart` as rows + layout."""
    x = options.x if options.x in ("step", "wall") else "step"
    df = frame.assign(smoothed=ema(frame["loss"].tolist(), options.smoothing))
    return ChartParts.of(_step_layout, {"steps": df}, x=x, smoothed=bool(options.smoothing),
                         log_y=options.log_y)  # fmt: skip


def _step_layout(source, x: str, smoothed: bool, log_y: bool) -> alt.Chart:
    scale = alt.Scale(type="log" if log_y else "linear", zero=False)
    base = alt.Chart(source("steps")).encode(
        x=alt.X(f"{x}:Q", title=X_AXES[x], axis=alt.Axis(tickMinStep=1, format="~g")),
        color=alt.Color("stage:N", title=None, legend=alt.Legend(orient="top")),
    )
    raw = base.mark_line(opacity=0.3 if smoothed else 1.0).encode(
        y=alt.Y("loss:Q", title="training loss (per step)", scale=scale)
    )
    layers = [raw]
    if smoothed:
        layers.append(base.mark_line().encode(
            y=alt.Y("smoothed:Q", scale=scale),
            tooltip=["step:Q", "stage:N", alt.Tooltip("loss:Q", format=".4g"),
                     alt.Tooltip("smoothed:Q", format=".4g")],
        ))  # fmt: skip
    chart = alt.layer(*layers).properties(title="Training loss per step (live)")
    return chart.configure_view(strokeWidth=0).configure(background="white")


#: The stored per-step series' columns (``records.STEP_COLS``), in CSV order.
SERIES_COLUMNS = ["step", "epoch_frac", "wall", "stage", "epoch", "loss", "ce", "reg",
                  "batch_acc", "lr"]  # fmt: skip
_SERIES_X = {"step": "step", "epoch": "epoch_frac", "wall": "wall"}
# Points drawn per metric of a stored series: a run keeps about 2,000 points plus each
# epoch's last step, so a long run has many more, and Altair refuses a chart of over 5,000
# rows (a 7,000-row series broke a long run's finished view). The CSV keeps every point.
SERIES_MAX_POINTS = 1500
SERIES_LABELS = {"loss": "loss (CE + alpha x R)", "ce": "cross-entropy",
                 "batch_acc": "batch accuracy"}  # fmt: skip


def series_frame(points: Sequence[dict]) -> pd.DataFrame:
    """Stored step points as a frame with :data:`SERIES_COLUMNS` (empty when none)."""
    return pd.DataFrame(list(points)).reindex(columns=SERIES_COLUMNS)


def series_chart(frame: pd.DataFrame, metrics: Sequence[str], options: CurveOptions,
                 title: str, y_title: str, color: str | None = None) -> alt.Chart:  # fmt: skip
    """Per-step metrics of a finished run against step, fractional epoch or wall-clock:
    raw faint under the smoothed line (``options.smoothing``), log y on request. The first
    metric is drawn in ``color`` (the run's colour on every page), the others dashed."""
    x = _SERIES_X[options.x]
    long = (
        frame[[x, "stage", *metrics]]
        .melt([x, "stage"], var_name="metric", value_name="value")
        .dropna()
    )
    long["metric"] = long["metric"].map(lambda m: SERIES_LABELS.get(m, m))
    long["smoothed"] = long.groupby("metric")["value"].transform(
        lambda v: ema(v.tolist(), options.smoothing)
    )  # over every point; only the drawing is thinned
    if len(long):
        long = pd.concat(downsample(g, SERIES_MAX_POINTS) for _, g in long.groupby("metric"))
    names = [SERIES_LABELS.get(m, m) for m in metrics]
    palette = [color or "#4C78A8", "#888888", "#BBBBBB"][: len(names)]
    scale = alt.Scale(type="log" if options.log_y else "linear", zero=False)
    fmt = "d" if x == "step" else "~f"  # 20, 0.5 (never 2e+1)
    base = alt.Chart(long).encode(
        x=alt.X(f"{x}:Q", title=X_AXES[options.x], axis=alt.Axis(format=fmt)),
        color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=names, range=palette)),
        strokeDash=alt.StrokeDash("metric:N", legend=None,
                                  scale=alt.Scale(domain=names, range=[[1, 0], [4, 3], [2, 2]])),
    )  # fmt: skip
    layers = [base.mark_line(opacity=0.3 if options.smoothing else 1.0).encode(
        y=alt.Y("value:Q", title=y_title, scale=scale))]  # fmt: skip
    if options.smoothing:
        layers.append(base.mark_line().encode(
            y=alt.Y("smoothed:Q", scale=scale),
            tooltip=[f"{x}:Q", "stage:N", "metric:N", alt.Tooltip("value:Q", format=".4g"),
                     alt.Tooltip("smoothed:Q", format=".4g")],
        ))  # fmt: skip
    chart = alt.layer(*layers).properties(title=title)
    return chart.configure_view(strokeWidth=0).configure(background="white")

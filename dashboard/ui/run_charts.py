"""The run panel's charts: bits per layer, plane densities, per-step curves (live from the
job manager, or stored for an ended run), epoch curves with their options, precision
changes; CSV and PNG under every chart.

The figures with the default curve options are built once per (run, version) for every
session (``build_figures``, called by ``live.live_frame``); a session that changed the
options builds its own, only when an epoch, a snapshot or an event arrived (``_figures``); the
per-step chart of a live run, whose data move every step, is rebuilt at most every
``STEP_REBUILD_S``, once for every session that keeps the default options. A queued run
has nothing to draw yet and says so.
"""

from __future__ import annotations

import threading
import time

import altair as alt
import pyarrow as pa
import streamlit as st
from streamlit import dataframe_util

from bsq_engine.runs.status import RunStatus
from dashboard.ui.accessors import RunView, color_of, planned_layers
from dashboard.ui.chart_downloads import chart_downloads
from dashboard.views import charts, curves, frames

__all__ = ["build_figures", "render_charts", "shared_spec", "vega_spec"]

_FIGURES = "run_panel.figures"  # session state: {panel key: (signature, figures, when, cost)}
_STEPS = "run_panel.step_chart"  # session state: {panel key: (when, n points, spec)}
_MIN_REBUILD_S, _MAX_REBUILD_S, STEP_REBUILD_S = 2.0, 6.0, 3.0
# The default-options step chart of each live run, for every session: {run id: (when, n
# points, spec, options)}. Specs are never mutated after they are stored.
_SHARED_STEPS: dict[str, tuple] = {}
_SHARED_LOCK = threading.Lock()
# {run id: (events, their table)}: the last precision-change table of each run, shared
_EVENT_TABLES: dict[str, tuple[list[dict], pa.Table | None]] = {}
_MAX_EVENT_TABLES = 64
_EPOCH_COLS = ["stage", "epoch", "global_epoch", "seconds"]
X_CHOICES = {"epoch": "Epoch", "step": "Step", "wall": "Wall-clock"}


def vega_spec(chart) -> dict:
    """Altair chart -> Vega-Lite dict, once per rebuild (``st.altair_chart`` would convert
    and validate it again on every tick). Altair's default 300 px view size is dropped, as
    ``st.altair_chart`` does, so the chart fills its column.

    Its datasets are Arrow IPC bytes, made here by the function ``st.vega_lite_chart``
    would call on every send (rows -> Arrow): bytes it passes through as they are, so a
    viewer's tick re-sends a shared chart without converting its rows again (that
    conversion was most of a chart's cost per viewer per tick). ``chart_downloads.png_bytes``
    reads them back for a PNG."""
    spec = chart.to_dict(validate=False)  # built by our own code: schema checks are CPU only
    view = spec.get("config", {}).get("view", {})
    for size in ("continuousWidth", "continuousHeight"):
        view.pop(size, None)
    if isinstance(spec.get("datasets"), dict):
        arrow = dataframe_util.convert_anything_to_arrow_bytes
        spec["datasets"] = {name: rows if isinstance(rows, bytes) else arrow(rows)
                            for name, rows in spec["datasets"].items()}  # fmt: skip
    return spec


_LAYOUTS: dict[tuple, dict] = {}  # ChartParts.key -> Vega-Lite spec without rows
_LAYOUTS_LOCK = threading.Lock()
_MAX_LAYOUTS = 128


def shared_spec(parts: curves.ChartParts) -> dict:
    """``vega_spec`` of ``parts.chart()``, the layout built once per key (Altair's chart
    building and spec conversion, about 40 ms a chart on the 2-core machine) and only the
    rows converted each time (to Arrow, as ``vega_spec`` does). Layouts are never mutated
    after they are stored; each spec is a new top-level dict."""
    with _LAYOUTS_LOCK:
        layout = _LAYOUTS.get(parts.key)
    if layout is None:
        layout = vega_spec(parts.layout(alt.NamedData))
        layout.pop("datasets", None)
        with _LAYOUTS_LOCK:
            _LAYOUTS[parts.key] = layout
            while len(_LAYOUTS) > _MAX_LAYOUTS:
                _LAYOUTS.pop(next(iter(_LAYOUTS)))
    arrow = dataframe_util.convert_anything_to_arrow_bytes
    rows = {name: arrow(frame.reset_index(drop=True)) for name, frame in parts.data.items()}
    return {**layout, "datasets": rows}


def _options(key: str) -> curves.CurveOptions:
    """x axis, smoothing and log scale of the curves (per panel, kept in the session)."""
    x_col, smooth_col, log_col = st.columns([2, 2, 1], vertical_alignment="bottom")
    x = x_col.segmented_control("Curves against", list(X_CHOICES), format_func=X_CHOICES.get,
                                default="epoch", required=True, key=f"{key}-curve-x")  # fmt: skip
    smoothing = smooth_col.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key=f"{key}-smooth",
                                  help="TensorBoard's: a debiased moving average")  # fmt: skip
    log_y = log_col.toggle("Log y", key=f"{key}-log-y")
    return curves.CurveOptions(x=x or "epoch", smoothing=smoothing, log_y=log_y)


def build_figures(view: RunView, options: curves.CurveOptions | None = None) -> dict:
    """The panel's figures of one view (Plotly and Vega-Lite specs); ``live.live_frame``
    calls it once per (run, version) for every session, with the default options."""
    ep, layers = view.epochs, view.layers
    options = curves.CurveOptions() if options is None else options
    start_bits, color = int(view.config.get("n_bits") or 8), color_of(view.run_id)
    figures = {
        "bits": charts.bits_per_layer_chart(
            layers, start_bits=start_bits, color=color, planned=_planned(view)
        ),
        "density": charts.density_heatmap(layers, view.max_bits),
        "events": _events_of(view),
    }
    if len(ep):  # "loss", "acc" and, once there are average bits, "avg"
        figures.update({k: shared_spec(p) for k, p in charts.epoch_parts(ep, options).items()})
    if not view.active and len(view.steps):
        figures.update(_series_figures(view.steps, options, color))
    return figures


def _planned(view: RunView):
    """The layers a run starts from, drawn while it starts and pretrains (known from its
    config before the training process has taken a step)."""
    if view.active and view.layers.empty and view.run.get("method") in ("bsq", "uniform"):
        return planned_layers(view.config)
    return None


def _series_figures(steps, options: curves.CurveOptions, color: str) -> dict:
    """A finished run's stored per-step curves: training loss (with the cross-entropy
    under it when alpha x R makes them differ) and batch accuracy."""
    differs = (steps["loss"] - steps["ce"]).abs().max() > 1e-9
    losses = ["loss", "ce"] if differs else ["loss"]
    return {
        "series_loss": vega_spec(curves.series_chart(
            steps, losses, options, "Training loss per step", "loss (nats)", color)),
        "series_acc": vega_spec(curves.series_chart(
            steps, ["batch_acc"], options, "Batch accuracy per step", "accuracy", color)),
    }  # fmt: skip


def _figures(view: RunView, key: str, options: curves.CurveOptions) -> dict:
    """The panel's figures, rebuilt only when an epoch, a snapshot, an event or an option
    changed. Building costs far more than re-sending (Plotly templates, Altair schema checks)
    and competes with training for the GIL, so while a run is live a rebuild waits at least
    ``_MIN_REBUILD_S`` (or 3x the last build's time); the first data are drawn at once."""
    ep, layers = view.epochs, view.layers
    signature = (
        view.run_id, view.status, len(ep), int(ep["global_epoch"].max()) if len(ep) else 0,
        int(layers["global_epoch"].max()) if len(layers) else -1, len(view.events), options,
    )  # fmt: skip
    cache = st.session_state.setdefault(_FIGURES, {})
    if key in cache:
        old, figures, built_at, cost = cache[key]
        wait = min(max(_MIN_REBUILD_S, 3 * cost), _MAX_REBUILD_S)
        first_data = (old[2] == 0 and len(ep)) or (old[4] == -1 and len(layers))
        if not view.active or old[0] != view.run_id or first_data or old[6] != options:
            wait = 0.0  # a finished run, another run, the first data, new options
        if old == signature or time.monotonic() - built_at < wait:
            return figures
    started = time.monotonic()
    figures = build_figures(view, options)
    cache[key] = (signature, figures, time.monotonic(), time.monotonic() - started)
    return figures


def _step_chart(view: RunView, key: str, options: curves.CurveOptions) -> dict | None:
    """The live per-step loss (from the job manager's snapshot: live runs only). With the
    default options one spec per run serves every session (``_SHARED_STEPS``); a session
    with its own options keeps its own in its session state."""
    steps = (view.snapshot or {}).get("steps") or []
    if len(steps) < 2:
        return None
    shared = options == curves.CurveOptions()
    if shared:
        with _SHARED_LOCK:
            when, count, spec, old_options = _SHARED_STEPS.get(view.run_id, (0.0, 0, None, None))
    else:
        cache = st.session_state.setdefault(_STEPS, {})
        when, count, spec, old_options = cache.get(key, (0.0, 0, None, None))
    fresh = time.monotonic() - when < STEP_REBUILD_S or count == len(steps)
    if spec is not None and fresh and old_options == options:
        return spec
    step_options = curves.CurveOptions(
        x="wall" if options.x == "wall" else "step", smoothing=options.smoothing or 0.6,
        log_y=options.log_y,
    )  # fmt: skip
    spec = shared_spec(curves.step_parts(curves.step_frame(steps), step_options))
    if shared:  # two sessions may build the same spec at once: harmless, the last one stays
        with _SHARED_LOCK:
            _SHARED_STEPS[view.run_id] = (time.monotonic(), len(steps), spec, options)
            while len(_SHARED_STEPS) > 64:
                _SHARED_STEPS.pop(next(iter(_SHARED_STEPS)))
    else:
        cache[key] = (time.monotonic(), len(steps), spec, options)
    return spec


def render_charts(view: RunView, key: str, shared: dict | None = None) -> None:
    """Every chart of the panel, each with its CSV and PNG downloads. ``shared``: figures
    built for every session with the default options (``live.live_frame``), used while
    this session keeps those options."""
    if view.status == RunStatus.QUEUED:
        st.caption("Charts appear as soon as the run starts training.")
        return
    options = _options(key) if view.n_epochs or view.active else curves.CurveOptions()
    if shared is not None and options == curves.CurveOptions():
        figures = shared
    else:
        figures = _figures(view, key, options)
    name = view.run_id
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures["bits"], key=f"{key}-bits", width="stretch")
        cols = ["name", "n_bits", "n_weights", "msb_offset"]
        chart_downloads(figures["bits"], lambda: view.layers.reindex(columns=cols),
                        f"{name}-bits-per-layer", f"{key}-bits")  # fmt: skip
    with right:
        st.plotly_chart(figures["density"], key=f"{key}-density", width="stretch")
        chart_downloads(figures["density"], lambda: frames.planes_long(view.layers, view.max_bits),
                        f"{name}-plane-density", f"{key}-density")  # fmt: skip
    if "series_loss" in figures:
        _series(view, key, figures)
    elif not view.active:
        st.caption("No per-step curves: this run was trained before they were recorded, "
                   "or on Ray. Its epoch curves are below.")  # fmt: skip
    if view.active and (spec := _step_chart(view, key, options)) is not None:
        st.vega_lite_chart(spec=spec, key=f"{key}-steps", width="stretch")
        steps = (view.snapshot or {}).get("steps") or []
        chart_downloads(spec, lambda: curves.step_frame(steps), f"{name}-step-loss",
                        f"{key}-steps")  # fmt: skip
    if "loss" not in figures:
        st.info("Epoch curves appear after the first epoch.")
        return
    _curves(view, key, figures)


def _series(view: RunView, key: str, figures: dict) -> None:
    left, right = st.columns(2)
    for where, kind in ((left, "series_loss"), (right, "series_acc")):
        with where:
            st.vega_lite_chart(spec=figures[kind], key=f"{key}-{kind}", width="stretch")
            chart_downloads(figures[kind], view.steps, f"{view.run_id}-steps", f"{key}-{kind}")


def _curves(view: RunView, key: str, figures: dict) -> None:
    name = view.run_id
    left, right = st.columns(2)
    for where, kind, metrics in ((left, "loss", ["train_loss", "test_loss"]),
                                 (right, "acc", ["train_acc", "test_acc"])):  # fmt: skip
        with where:
            st.vega_lite_chart(spec=figures[kind], key=f"{key}-{kind}", width="stretch")
            chart_downloads(figures[kind], _epoch_columns(view, *metrics),
                            f"{name}-{kind}", f"{key}-{kind}")  # fmt: skip
    left, right = st.columns(2)
    with left:
        if "avg" in figures:
            st.vega_lite_chart(spec=figures["avg"], key=f"{key}-avg", width="stretch")
            chart_downloads(figures["avg"], _epoch_columns(view, "avg_bits", "compression"),
                            f"{name}-avg-bits", f"{key}-avg")  # fmt: skip
        else:
            st.info("Average bits and compression are measured from the BSQ stage on.")
    with right:
        _events(view, key, figures)


def _epoch_columns(view: RunView, *columns: str):
    """The CSV of an epoch chart, made when its button is clicked (a live tick re-sends
    the buttons and should not build the frame)."""
    return lambda: view.epochs.reindex(columns=[*_EPOCH_COLS, *columns])


def _events(view: RunView, key: str, figures: dict) -> None:
    st.markdown("**Precision changes**")
    table = figures["events"]  # made with the figures (build_figures)
    if table is None:
        every = view.config.get("requant_interval")
        st.caption(
            f"None yet: layers change precision at re-quantization (every {every} BSQ epochs)."
        )
        return
    st.dataframe(table, key=f"{key}-events", hide_index=True, width="stretch")


def _events_of(view: RunView) -> pa.Table | None:
    """``events_arrow(view.events)``, kept while the run's events are unchanged and extended
    by the new ones when they only add to the log (a live run's figures are rebuilt every
    few seconds, its events change at re-quantizations, and a long run's whole log took
    5 ms to make, more as it grows)."""
    events = view.events
    with _SHARED_LOCK:
        hit = _EVENT_TABLES.get(view.run_id)
    if hit is not None and hit[0] == events:
        return hit[1]
    table = (_extended(*hit, events) if hit else None) or events_arrow(events)
    with _SHARED_LOCK:
        _EVENT_TABLES.pop(view.run_id, None)
        _EVENT_TABLES[view.run_id] = (list(events), table)
        while len(_EVENT_TABLES) > _MAX_EVENT_TABLES:
            _EVENT_TABLES.pop(next(iter(_EVENT_TABLES)))
    return table


def _extended(old: list[dict], table: pa.Table | None, events: list[dict]) -> pa.Table | None:
    """``events_arrow(events)`` made from ``table = events_arrow(old)`` and the new events'
    rows, when ``events`` is ``old`` plus events that sort after all of it
    (``charts.event_order``); else None."""
    n = len(old)
    if table is None or len(events) <= n or events[:n] != old:
        return None
    if min(map(charts.event_order, events[n:])) < max(map(charts.event_order, old)):
        return None
    new = events_arrow(events[n:])
    return pa.concat_tables([table, new]) if new.schema.equals(table.schema) else None


def events_arrow(events: list[dict]) -> pa.Table | None:
    """The precision-change log as the table the panel shows, already in Arrow (made with
    the figures, once per build: a live tick of every viewer re-sends it), None if empty."""
    if not events:
        return None
    table = charts.events_table(events)[["stage", "epoch", "change"]]
    return pa.Table.from_pandas(table, preserve_index=False)

"""The "Per-layer sensitivity" section of a run (run panel) and of the Learn page's step 3.

Nothing is measured until someone presses the button (a few seconds on the small models,
under a spinner, in that viewer's own script thread: other viewers are not held up); the
result is stored in the run's folder, so every later view shows it at once. Numbers,
table, chart and verdict come from ``dashboard.views.sensitivity``.
"""

from __future__ import annotations

import streamlit as st

from bsq_engine.data import DatasetUnavailable
from bsq_engine.runs.store import RunNotFound, StoreError
from bsq_engine.training.checkpoint import CheckpointError
from dashboard.ui.accessors import measure_sensitivity, run_sensitivity
from dashboard.ui.chart_downloads import chart_downloads
from dashboard.views import sensitivity as views

__all__ = ["TEACHING", "render_sensitivity", "sensitivity_section"]

TEACHING = (
    "**Which layers can lose bits?** The *Hessian trace* of a layer sums the curvature of "
    "the loss along each of its weights: a large trace per weight means a small nudge of "
    "those weights (the rounding error of fewer bits) raises the loss a lot. Such a "
    "*sensitive* layer must keep more bits; a flat one can lose planes almost for free. BSQ "
    "never computes this: its group Lasso empties planes everywhere, and the cross-entropy "
    "pushes back hardest where the loss is curved, so, if it works, the planes that die are "
    "those of flat layers. Below, measured on this run: the trace of each layer, the accuracy "
    "lost when only that layer is quantized, and the bits the run kept."
)
_MEASURE_ERRORS = (
    CheckpointError,
    DatasetUnavailable,
    RunNotFound,
    StoreError,
    ValueError,
    OSError,
)


def _measure(run_id: str, recompute: bool) -> dict | None:
    with st.spinner("Measuring each layer (a few seconds on small models)..."):
        try:
            return measure_sensitivity(run_id, recompute=recompute)
        except _MEASURE_ERRORS as exc:  # their messages say what is missing and what to do
            st.error(f"Could not measure this run's sensitivity: {exc}")
            return None


def _show(result: dict, key: str, teaching: bool) -> None:
    if result.get("note"):
        st.info(result["note"])
    st.text(views.verdict(result))  # plain text: it names layers (user models' names)
    if teaching:
        st.text(views.teaching_sentence(result))
    frame = views.sensitivity_frame(result)
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key=f"{key}-table",
        column_config={
            "Hessian trace": st.column_config.NumberColumn(format="%.4g"),
            "trace per weight": st.column_config.NumberColumn(format="%.3g"),
        },
    )
    figure = views.sensitivity_figure(result)
    st.plotly_chart(figure, key=f"{key}-chart", width="stretch")
    chart_downloads(figure, frame, f"{result['run_id']}-sensitivity", key)
    st.caption(views.measured_caption(result))


def render_sensitivity(run_id: str, key: str, *, teaching: bool = False) -> None:
    """The stored sensitivity of ``run_id`` (table, chart, verdict), or a button to measure
    it; ``key`` prefixes element keys; ``teaching`` adds the lesson's sentence."""
    try:
        result, damaged = run_sensitivity(run_id)
    except (RunNotFound, StoreError) as exc:
        st.error(f"Could not read this run: {exc}")
        return
    slot = st.empty()  # the damage warning, unless this click measures again
    label = "Measure sensitivity" if result is None else "Measure again"
    pressed = st.button(
        label,
        key=f"{key}-measure",
        icon=":material/query_stats:",
        type="primary" if result is None else "tertiary",
        help="Hessian trace and one-layer-at-a-time cost of each layer of "
        "this run's float model; stored with the run.",
    )
    if pressed:
        result = _measure(run_id, recompute=result is not None) or result
    elif damaged:
        slot.warning(damaged)
    if result is None:
        st.caption(
            "Not measured yet: press the button (seconds on MLP and LeNet-5; the "
            "result is kept with the run for every later visit)."
        )
        return
    _show(result, key, teaching)


def sensitivity_section(run_id: str, key: str) -> None:
    """The run panel's collapsed "Per-layer sensitivity" expander."""
    with st.expander("Per-layer sensitivity", icon=":material/query_stats:"):
        render_sensitivity(run_id, key=f"{key}-sens")

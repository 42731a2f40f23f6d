"""Streamlit pieces of the Compare page: the run picker (kept in ``?runs=``) and the side-by-
side charts, summary and scheme downloads, live while one of the runs trains. The charts
and the summary's rules live in ``dashboard.views.compare``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bsq_engine.runs.export import COUNTING_CONVENTION
from bsq_engine.runs.status import ACTIVE
from bsq_engine.runs.store import RunNotFound
from dashboard.ui.accessors import RunView, list_runs_frame, load_run_view, scheme_file
from dashboard.ui.chart_downloads import chart_downloads
from dashboard.ui.state import set_url_runs, store, url_runs
from dashboard.views import compare as cp
from dashboard.views.charts import METRIC_LABELS
from dashboard.views.colors import run_colors
from dashboard.views.frames import planes_long

__all__ = ["choose_runs", "comparison"]

LIVE_S = 2.0
MAX_RUNS = 4
METRICS = ["test_acc", "train_acc", "test_loss", "train_loss", "avg_bits", "compression",
           "alpha_reg", "lr"]  # fmt: skip
KEY = "compare-runs"


def _layers(view: RunView) -> list[dict]:
    """Latest per-layer bits; the summary's layers when no snapshot was stored."""
    if not view.layers.empty:
        return view.layers.to_dict("records")
    return list((view.run.get("summary") or {}).get("layers") or [])


def _views(run_ids: list[str]) -> list[RunView]:
    views = []
    for run_id in run_ids:
        try:
            views.append(load_run_view(run_id))
        except RunNotFound:
            st.warning(f"Run `{run_id}` no longer exists; it was left out.")
    return views


def _comparison(run_ids: list[str], live: bool) -> None:
    views = _views(run_ids)
    if live and not any(v.active for v in views):
        st.rerun()  # once: every run ended, show the static comparison
    if len(views) < 2:
        return
    labels = cp.run_labels([v.run for v in views])
    by_id = run_colors(list_runs_frame(), [v.run_id for v in views])
    colors = {label: by_id[v.run_id] for label, v in zip(labels, views)}
    layers = {label: _layers(v) for label, v in zip(labels, views)}
    bits_fig = cp.grouped_bits_chart(layers, colors)
    st.plotly_chart(bits_fig, key="compare-bits", width="stretch")
    bits_rows = [{"run": lb, "layer": r["name"], "n_bits": r["n_bits"]}
                 for lb, rows in layers.items() for r in rows]  # fmt: skip
    chart_downloads(bits_fig, pd.DataFrame(bits_rows), "compare-bits-per-layer", "compare-bits")
    max_bits = max(v.max_bits for v in views)
    grids = {lb: v.layers_in_grid(max_bits) for lb, v in zip(labels, views)}
    heat = cp.density_heatmaps(grids, max_bits)
    st.plotly_chart(heat, key="compare-density", width="stretch")
    chart_downloads(heat, lambda: pd.concat(
        [planes_long(g, max_bits).assign(run=lb) for lb, g in grids.items()], ignore_index=True
    ), "compare-plane-density", "compare-density")  # fmt: skip
    metric = st.segmented_control(
        "Curve", METRICS, format_func=lambda m: METRIC_LABELS.get(m, m), default="test_acc",
        required=True, key="compare-metric",
    )  # fmt: skip
    epochs = {lb: v.epochs for lb, v in zip(labels, views)}
    curves_fig = cp.overlay_curves(epochs, metric or "test_acc", colors)
    st.plotly_chart(curves_fig, key="compare-curves", width="stretch")
    chart_downloads(curves_fig, lambda: pd.concat(
        [df.assign(run=lb) for lb, df in epochs.items()], ignore_index=True
    ), f"compare-{metric or 'test_acc'}", "compare-curves")  # fmt: skip
    st.subheader("Summary", anchor=False)
    st.caption("Highlighted rows differ between the runs.")
    summary = cp.summary_frame([v.run for v in views])
    st.dataframe(
        cp.highlight_differences(summary),
        key="compare-summary",
        width="stretch",
        height=35 * (len(summary) + 1) + 3,
    )  # every row visible: no inner scroll
    st.subheader("Export a winner", anchor=False)
    st.caption(f"Bits per layer, accuracy and settings of each run as JSON. {COUNTING_CONVENTION}")
    db = store()
    row = st.container(horizontal=True)
    for label, view in zip(labels, views):
        row.download_button(
            f"{label}: scheme.json", data=scheme_file(db, view.run, _layers(view)),
            file_name=f"{view.run_id}-scheme.json", mime="application/json",
            key=f"compare-scheme-{view.run_id}", on_click="ignore", icon=":material/download:",
        )  # fmt: skip


_comparison_live = st.fragment(run_every=LIVE_S)(_comparison)


def comparison(run_ids: list[str], live: bool) -> None:
    """Charts, summary and downloads of ``run_ids``; refreshed while one is ``live``."""
    (_comparison_live if live else _comparison)(run_ids, live)


def choose_runs() -> tuple[list[str], bool] | None:
    """The run picker, started from ``?runs=`` and written back to it: (chosen ids, any of
    them active), or None (with a hint) while fewer than two runs are chosen."""
    runs = list_runs_frame()
    if len(runs) < 2:
        st.info("Comparing needs at least two runs.")
        st.page_link("pages/train.py", label="Train a run", icon=":material/model_training:")
        return None
    labels_by_id = {r.run_id: cp.option_label(r) for r in runs.itertuples()}
    # First visit: the selection comes from the URL; later, runs deleted meanwhile drop out.
    wanted = st.session_state.get(KEY, url_runs())
    st.session_state[KEY] = [r for r in wanted if r in labels_by_id][:MAX_RUNS]
    chosen = st.multiselect(
        "Runs", list(labels_by_id), key=KEY, format_func=labels_by_id.get,
        max_selections=MAX_RUNS, placeholder="Choose 2 to 4 runs",
    )  # fmt: skip
    set_url_runs(chosen)
    if len(chosen) < 2:
        st.info("Choose at least two runs to compare them.")
        return None
    return chosen, bool(runs.loc[runs["run_id"].isin(chosen), "status"].isin(ACTIVE).any())

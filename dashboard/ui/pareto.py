"""Streamlit pieces of the Pareto page: the pair and axis pickers, the frontier chart with its
table and downloads, sweep progress, and the panel of a clicked run. The frontier's math and
figure live in ``dashboard.views.pareto``."""

from __future__ import annotations

import importlib.util

import streamlit as st

from bsq_engine.runs.export import COUNTING_CONVENTION
from bsq_engine.runs.status import ACTIVE, RunStatus
from bsq_engine.runs.sweep import sweep_progress
from bsq_engine.units import MISSING
from dashboard.ui import bench as bench_ui
from dashboard.ui.accessors import color_of, list_runs_frame, load_references
from dashboard.ui.navigation import anchor, jump_to
from dashboard.ui.run_panel import render_run_panel
from dashboard.ui.state import manager, store
from dashboard.views import bench, plain
from dashboard.views import pareto as pp
from dashboard.views.frames import runs_frame

__all__ = ["choose_pair", "frontier"]

KEY_BY_OWNER = "pareto-by-owner"
LIVE_S = 2.0
X_LABELS = {"compression": "Compression", "avg_bits": "Average bits", "bops": "BOPs"}
HAS_KALEIDO = importlib.util.find_spec("kaleido") is not None
TRAIN_PAGE = "pages/train.py"
_SHOWN = "pareto.shown_run"  # the clicked run whose panel was last scrolled into view


def _sweep_progress(model: str, dataset: str) -> None:
    """A progress bar per unfinished sweep of this pair."""
    for sweep in store().list_sweeps():
        if (sweep["model"], sweep["dataset"]) != (model, dataset):
            continue
        progress = sweep_progress(store(), sweep["sweep_id"])
        if not progress["done"]:
            st.progress(
                progress["fraction"],
                text=f"Sweep **{plain.md(progress['name'])}**: {progress['finished']} of "
                f"{progress['total']} runs finished",
            )


def _downloads(table, fig, model: str, dataset: str) -> None:
    row = st.container(horizontal=True)
    row.download_button(
        "Frontier as CSV", data=table.to_csv(index=False).encode(), mime="text/csv",
        file_name=f"pareto-{model}-{dataset}.csv", icon=":material/download:",
        key="pareto-csv", on_click="ignore",
    )  # fmt: skip
    if HAS_KALEIDO:  # rendered only when clicked: kaleido takes a few seconds
        row.download_button(
            "Chart as PNG", data=lambda: fig.to_image(format="png", width=1400, height=800),
            mime="image/png", file_name=f"pareto-{model}-{dataset}.png",
            icon=":material/image:", key="pareto-png", on_click="ignore",
        )  # fmt: skip
    st.caption("The chart's own toolbar (camera icon, top right of the chart) also saves a PNG.")


def _frontier(model: str, dataset: str, x_mode: str, live: bool) -> None:
    stored = store().list_runs(model=model, dataset=dataset)  # summaries: the bench's facts
    pair = runs_frame(stored)
    active = pair.loc[pair["status"].isin(ACTIVE), "run_id"].tolist()
    if live and not active:
        st.rerun()  # once: every run ended, redraw the page without polling
    _sweep_progress(model, dataset)
    runs = pp.chart_runs(pair, {run_id: manager().snapshot(run_id) for run_id in active})
    runs = bench.bench_frame(runs, stored)
    points, lines = pp.split_references(load_references(), model, dataset)
    fig = pp.pareto_chart(runs, x_mode, points if not points.empty else None)
    pp.add_published_marks(fig, lines, x_mode)
    by = "owner" if st.session_state.get(KEY_BY_OWNER) else "name"
    pp.label_points(fig, runs, by=by)
    if chosen := pp.selected_run_id(st.session_state.get("pareto-chart")):  # the last click
        pp.mark_selected(fig, runs, x_mode, chosen, color_of(chosen))
    fig.update_layout(height=560)
    event = st.plotly_chart(
        fig, key="pareto-chart", on_select="rerun", selection_mode="points", width="stretch",
        config={"toImageButtonOptions": {"filename": f"pareto-{model}-{dataset}", "scale": 2}},
    )  # fmt: skip
    if not lines.empty:
        sources = "; ".join(sorted(set(lines["source"])))
        st.caption(
            "Purple lines are **published figures**, not runs of this app (ResNet-20 on "
            "CIFAR-10, 4-bit activations): vertical lines mark published compression rates "
            "whose accuracy our spec does not give, the horizontal line the published float "
            f"accuracy. Source: {sources}."
        )
    bench_ui.caption(COUNTING_CONVENTION)
    bench_ui.collapsed_notice(runs)
    front = pp.frontier_points(runs, x_mode)
    finished = int((runs["status"] == RunStatus.FINISHED).sum())
    if finished < 2:
        st.info("A frontier needs at least two finished runs of this pair.")
        st.page_link(TRAIN_PAGE, label="Run a sweep to draw a frontier", icon=":material/tune:")
    st.subheader(f"Frontier runs ({len(front)} of {finished} finished)", anchor=False)
    table = pp.frontier_table(front)
    st.dataframe(
        table, key="pareto-table", hide_index=True, width="stretch",
        column_config={"accuracy (%)": st.column_config.NumberColumn(format="%.2f"),
                       "average bits": st.column_config.NumberColumn(format="%.3f"),
                       "compression (x)": st.column_config.NumberColumn(format="%.2f")},
        placeholder=MISSING,
    )  # fmt: skip
    _downloads(table, fig, model, dataset)
    bench_ui.best_of_methods(runs)
    bench_ui.measured_bench()
    run_id = pp.selected_run_id(event)
    if run_id:
        st.divider()
        with anchor("pareto-panel"):
            st.page_link(TRAIN_PAGE, label="Open this run on the Train page",
                         query_params={"run": run_id}, icon=":material/open_in_new:")  # fmt: skip
            render_run_panel(run_id, key="pareto-panel")
        bench_ui.scheme_tools(run_id)
        if st.session_state.get(_SHOWN) != run_id:  # a new click: bring the panel into view
            st.session_state[_SHOWN] = run_id
            jump_to("pareto-panel")


_frontier_live = st.fragment(run_every=LIVE_S)(_frontier)


def frontier(model: str, dataset: str, x_mode: str, live: bool) -> None:
    """The frontier of one pair; it refreshes itself while one of its runs is ``live``."""
    st.toggle(
        "Class frontier: label each point by who started it", key=KEY_BY_OWNER,
        help="Every student's runs of this model and dataset; finished ones join the "
        "frontier as they come in (the chart refreshes while any of them trains).",
    )  # fmt: skip
    (_frontier_live if live else _frontier)(model, dataset, x_mode, live)


def choose_pair() -> tuple[str, str, str, bool] | None:
    """Pair and x-axis pickers: (model, dataset, x mode, any run of the pair active), or
    None (with a hint) when there is no run yet."""
    all_runs = list_runs_frame()
    pairs = pp.pair_options(all_runs)
    if pairs.empty:
        st.info("No runs yet. An alpha sweep trains several runs that share one float model.")
        st.page_link(TRAIN_PAGE, label="Run a sweep to draw a frontier", icon=":material/tune:")
        return None
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    counts = {f"{r.model}/{r.dataset}": (r.finished, r.total) for r in pairs.itertuples()}
    pair_key = left.selectbox(
        "Model and dataset", list(counts), key="pareto-pair",
        format_func=lambda k: f"{k.replace('/', ' / ')} ({counts[k][0]} finished of "
        f"{counts[k][1]})",
    )  # fmt: skip
    x_mode = right.segmented_control(
        "x axis", list(X_LABELS), format_func=X_LABELS.get, default="compression",
        required=True, key="pareto-x",
    )  # fmt: skip
    model, dataset = pair_key.split("/", 1)
    pair_runs = all_runs[(all_runs["model"] == model) & (all_runs["dataset"] == dataset)]
    live = bool(pair_runs["status"].isin(ACTIVE).any())
    return model, dataset, x_mode or "compression", live

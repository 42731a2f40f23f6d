"""Train: configure one BSQ run (or an alpha sweep), start it, and watch it live."""

import streamlit as st

from bsq_engine.runs.jobs import QueueFull
from bsq_engine.runs.store import SweepNotFound
from bsq_engine.runs.sweep import start_sweep, sweep_progress
from dashboard.ui import identity, state, widgets
from dashboard.ui.run_panel import render_run_panel
from dashboard.views import plain

st.title("Train", anchor=False)
st.caption(
    "BSQ learns how many bits each layer needs in one training run: a penalty on every bit "
    "plane (strength **alpha**) drives whole planes to zero, and re-quantization drops them."
)
state.pop_flash()
widgets.init_form()


def _start_run() -> None:
    try:
        config = widgets.build_config(widgets.form_values())
    except ValueError as exc:
        st.error(f"Cannot start this run: {exc}", icon=":material/error:")
        return
    try:
        run_id = state.manager().start(config, owner=identity.user_name())
    except QueueFull as exc:
        st.warning(plain.md(str(exc)), icon=":material/hourglass:")
        return
    except (ValueError, RuntimeError) as exc:
        st.error(f"Could not queue the run: {exc} Reload the page and try again.")
        return
    state.set_url_run(run_id)


def _start_sweep(kwargs: dict) -> None:
    try:
        sweep_id = start_sweep(state.manager(), owner=identity.user_name(), **kwargs)
    except (ValueError, RuntimeError) as exc:
        st.error(f"Cannot start this sweep: {exc}", icon=":material/error:")
        return
    st.session_state[state.KEY_SWEEP_ID] = sweep_id
    run_ids = sweep_progress(state.store(), sweep_id)["run_ids"]
    if run_ids:  # watch the first run below while the rest wait in the queue
        state.set_url_run(run_ids[0])


def _sweep_progress(sweep_id: str) -> dict | None:
    try:
        return sweep_progress(state.store(), sweep_id)
    except SweepNotFound:  # deleted meanwhile
        st.session_state.pop(state.KEY_SWEEP_ID, None)
        return None


def _render_sweep(progress: dict) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(progress["counts"].items()))
    st.progress(progress["fraction"], text=f"**{progress['name']}**: {counts}")
    st.page_link("pages/pareto.py", label="See the accuracy / bits trade-off on the Pareto page",
                 icon=":material/scatter_plot:")  # fmt: skip


@st.fragment(run_every=2.0)
def _sweep_live(sweep_id: str) -> None:
    progress = _sweep_progress(sweep_id)
    if progress is None or progress["done"]:
        st.rerun()  # once, so a finished sweep stops polling
    _render_sweep(progress)


def _show_sweep(sweep_id: str) -> None:
    progress = _sweep_progress(sweep_id)
    if progress is not None and progress["done"]:
        _render_sweep(progress)
    elif progress is not None:
        _sweep_live(sweep_id)


with st.container(border=True):
    dataset_ok, how_to_get = widgets.model_dataset_picker()
    widgets.method_picker()
    if st.session_state[widgets.KEY("method")] == "bsq":
        widgets.alpha_controls()
    widgets.advanced_settings()
    start = st.button(
        "Start training", type="primary", icon=":material/play_arrow:", disabled=not dataset_ok,
        help=None if dataset_ok else "Get the dataset first (see above).",
    )  # fmt: skip
    if start:
        _start_run()

with st.expander("Sweep alpha: several runs for the Pareto frontier", icon=":material/tune:"):
    sweep_kwargs = None
    try:
        sweep_kwargs = widgets.sweep_form(dataset_ok)
    except ValueError as exc:  # the shared settings above do not make a valid config
        st.error(f"Cannot start this sweep: {exc}", icon=":material/error:")
    if sweep_kwargs:
        _start_sweep(sweep_kwargs)
    if sweep_id := st.session_state.get(state.KEY_SWEEP_ID):
        _show_sweep(sweep_id)
widgets.save_form()

run_id = state.url_run_id()
if run_id:
    st.divider()
    render_run_panel(run_id, key="train")
else:
    st.info(
        "Pick a model and dataset, keep the preset alpha for a first try, and press "
        "**Start training**. The run's bits per layer and bit planes appear here as it trains.",
        icon=":material/lightbulb:",
    )

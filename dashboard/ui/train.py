"""Streamlit pieces of the Train page: the run form's start button, the alpha sweep with its
progress, and the panel of the run in the URL."""

from __future__ import annotations

import time

import streamlit as st

from bsq_engine.runs.estimate import estimate_run
from bsq_engine.runs.jobs import QueueFull
from bsq_engine.runs.store import SweepNotFound
from bsq_engine.runs.sweep import start_sweep, sweep_progress
from dashboard.ui import identity, state, widgets
from dashboard.ui.navigation import anchor, jump_to
from dashboard.ui.run_panel import render_run_panel, start_warm_up
from dashboard.views import plain

__all__ = ["run_form", "sweep_section", "watched_run"]

SWEEP_POLL_S = 2.0
ESTIMATE_HELP = (
    "Measured from earlier runs in this store on this machine with the same model, dataset, "
    "batch size and precision settings (alpha does not change the cost). Other load on the "
    "machine changes it."
)
_JUMP = "train.jump_to_panel"  # set by Start: scroll to the run panel once it is drawn
_START_PROBLEM = "train.start_problem"  # (kind, text) left by the Start callback
# Problems are kept as plain text and escaped where they are shown: they may quote user text
# (a full queue names its owner).
_SWEEP_PROBLEM = "train.sweep_problem"  # the text left by the Start sweep callback
_SWEEP_EXECUTOR = "train.sweep_executor"  # the radio: this machine's job queue or Ray
_LAST_START = "train.last_start"  # (what was started, when): see _repeated
# Streamlit replays a button's click in the next script run when the run that saw it was
# interrupted (a timed fragment, another widget), and that calls its on_click callback again:
# one click queued two identical runs 10 ms apart (tests/test_browser_classroom.py, a loaded
# machine). Short: a student may mean to queue the same settings again a few seconds later.
REPEAT_S = 1.0


def _repeated(request: object) -> bool:
    """True when this session asked to start the same ``request`` less than ``REPEAT_S``
    ago: the same click seen again, or a double click; either way one start is meant."""
    now, key = time.monotonic(), repr(request)
    last = st.session_state.get(_LAST_START)
    st.session_state[_LAST_START] = (key, now)
    return last is not None and last[0] == key and now - last[1] < REPEAT_S


def _start_run() -> None:
    """Start button callback: runs before the page's script, so the job is submitted at
    once (its training process starts while the page redraws); problems are shown below
    the button by ``run_form``."""
    try:
        config = widgets.build_config(widgets.form_values())
    except ValueError as exc:
        st.session_state[_START_PROBLEM] = ("error", f"Cannot start this run: {exc}")
        return
    if _repeated(("run", config)):
        return
    try:
        run_id = state.manager().start(config, owner=identity.user_name())
    except QueueFull as exc:
        st.session_state[_START_PROBLEM] = ("warning", str(exc))
        return
    except (ValueError, RuntimeError) as exc:
        message = f"Could not queue the run: {exc} Reload the page and try again."
        st.session_state[_START_PROBLEM] = ("error", message)
        return
    state.set_url_run(run_id)
    st.session_state[_JUMP] = True  # the panel is below the form: bring it into view


def _time_estimate() -> None:
    """How long these settings take here: measured from this store, never a typed claim."""
    try:
        config = widgets.build_config(widgets.form_values())
    except ValueError:
        return  # the start button reports what is wrong with the settings
    found = estimate_run(state.store(), config)
    if found is None:
        st.caption("No run with these settings has trained on this machine yet: the first "
                   "one measures how long they take.", help=ESTIMATE_HELP)  # fmt: skip
    else:
        st.caption(f"Expected duration: {found.describe()}.", help=ESTIMATE_HELP)


def run_form() -> bool:
    """Model, dataset, method, alpha and advanced settings, and the start button; returns
    whether the chosen dataset is on disk (the sweep needs it too)."""
    dataset_ok, _ = widgets.model_dataset_picker()
    widgets.method_picker()
    if st.session_state[widgets.KEY("method")] == "bsq":
        widgets.alpha_controls()
    widgets.advanced_settings()
    _time_estimate()
    st.button(
        "Start training", type="primary", icon=":material/play_arrow:", disabled=not dataset_ok,
        help=None if dataset_ok else "Get the dataset first (see above).", on_click=_start_run,
    )  # fmt: skip
    if problem := st.session_state.pop(_START_PROBLEM, None):
        kind, message = problem
        icon = ":material/hourglass:" if kind == "warning" else ":material/error:"
        getattr(st, kind)(plain.md(message), icon=icon)
    return dataset_ok


def _start_sweep() -> None:
    """Start sweep button callback (as :func:`_start_run`): problems are shown below the
    form by ``sweep_section``."""
    on_ray = st.session_state.get(_SWEEP_EXECUTOR) == "Ray"
    try:
        kwargs = widgets.sweep_request()
        if _repeated(("sweep", on_ray, kwargs)):
            return
        executor = state.ray_executor() if on_ray else state.manager()
        owner = None if on_ray else identity.user_name()  # Ray runs: no owner recorded yet
        sweep_id = start_sweep(executor, owner=owner, **kwargs)
    except (ValueError, RuntimeError, ConnectionError) as exc:  # incl. Ray failing to start
        st.session_state[_SWEEP_PROBLEM] = f"Cannot start this sweep: {exc}"
        return
    state.set_url_sweep(sweep_id)
    run_ids = sweep_progress(state.store(), sweep_id)["run_ids"]
    if run_ids:  # watch the first run below while the rest wait in the queue
        state.set_url_run(run_ids[0])
        st.session_state[_JUMP] = True


def _sweep_progress(sweep_id: str) -> dict | None:
    try:
        return sweep_progress(state.store(), sweep_id)
    except SweepNotFound:  # deleted meanwhile
        state.set_url_sweep(None)
        return None


def _render_sweep(progress: dict) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(progress["counts"].items()))
    st.progress(progress["fraction"], text=f"**{plain.md(progress['name'])}**: {counts}")
    st.page_link("pages/pareto.py", label="See the accuracy / bits trade-off on the Pareto page",
                 icon=":material/scatter_plot:")  # fmt: skip


@st.fragment(run_every=SWEEP_POLL_S)
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


def sweep_section(dataset_ok: bool) -> None:
    """The sweep form (sharing the run form's settings) and the progress of its sweep."""
    if state.ray_installed():  # Ray is optional: offer it only where it is importable
        st.radio("Run the sweep on", ["this machine's job queue", "Ray"], horizontal=True,
                 key=_SWEEP_EXECUTOR)  # fmt: skip
    widgets.sweep_form(dataset_ok, _start_sweep)
    if problem := st.session_state.pop(_SWEEP_PROBLEM, None):
        st.error(plain.md(problem), icon=":material/error:")
    if sweep_id := state.url_sweep_id():
        _show_sweep(sweep_id)


def watched_run() -> None:
    """The panel of the run in ``?run=``, or a first-time hint."""
    run_id = state.url_run_id()
    start_warm_up()  # chart libraries loaded before a Start, not by its first chart
    if run_id:
        st.divider()
        with anchor("train-panel"):
            render_run_panel(run_id, key="train")
        if st.session_state.pop(_JUMP, False):
            jump_to("train-panel")
    else:
        st.info(
            "Pick a model and dataset, keep the preset alpha for a first try, and press "
            "**Start training**. The run's bits per layer and bit planes appear here as it "
            "trains.",
            icon=":material/lightbulb:",
        )

"""The view of one run, live or finished; used by the Train and Runs pages (and others).

While a run is queued or running, the page draws its header once and then two
``st.fragment``s: the progress (bar, Stop) re-renders itself every ``live.poll_interval``
(1.5 s), the tiles and the charts every ``live.chart_tick_s`` (8 s; re-sending them is most
of a tick's cost; the tiles then show the epoch the charts end at); both ticks are longer
for a viewer who opens a run a crowd already watches (``live.crowd_scale``: 3 s and 16 s
with 8 others watching, 4.5 s and 24 s with 16); element keys are stable so charts update
in place. A tick reads nothing and builds nothing unless the run's version moved: the view
and figures come from ``live.live_frame``, built once per (run, version) for all sessions.
(Streamlit 1.5x+ removes a fragment's elements that a rerun does not re-emit, so a tick
re-sends the shared elements rather than returning empty.) When the run ends, the top
fragment draws its outcome in place at once, and at its next tick calls ``st.rerun()`` once:
the page then shows the static, finished view, which no longer polls.

Served through ``serve.py``, the progress fragment has no timer: its bar is pushed
(``live_progress``: it polls ``live_route`` for :func:`progress_line` every tick) and reruns
the fragment only when :func:`page_rerun_due` or the run's end asks for more than the bar.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import streamlit as st

from bsq_engine.runs.export import COUNTING_CONVENTION
from bsq_engine.runs.status import ACTIVE, RunStatus
from bsq_engine.runs.store import RunNotFound, StoreError
from bsq_engine.training.config import Stage, describe_method
from bsq_engine.units import (
    MISSING,
    format_bits,
    format_compression,
    format_duration,
    format_pct,
    is_number,
)
from dashboard.ui import identity, live, live_progress
from dashboard.ui.accessors import RunView, export_files
from dashboard.ui.run_charts import build_figures, render_charts, vega_spec
from dashboard.ui.sensitivity import sensitivity_section
from dashboard.ui.state import manager, store
from dashboard.views import charts, frames, plain

__all__ = ["STATUS_COLORS", "ahead_text", "render_run_panel", "start_warm_up"]

_S = RunStatus
STOP_WAIT_S = 1.5
STATUS_COLORS = {
    _S.QUEUED: "gray", _S.RUNNING: "blue", _S.FINISHED: "green",
    _S.FAILED: "red", _S.STOPPED: "orange", _S.INTERRUPTED: "orange",
}  # fmt: skip
EXPORT_NAMES = (
    "scheme.json", "metrics.csv", "layers.csv", "quantized.safetensors", "float_model.safetensors",
)  # fmt: skip
REGULARIZER_HELP = (
    "alpha x R, added to the cross-entropy in the training loss, so it is in the same unit "
    "(nats), averaged over the last BSQ epoch's steps. R sums each bit plane's L2 norm, "
    "weighted by the layer's share of the memory (N_l n_l / N); it falls as planes empty "
    "and is large at the start of BSQ, when all 8 planes of every layer are still dense."
)
_STAGE_LABELS = {
    Stage.PRETRAIN: "Pretraining (float)", Stage.BSQ: "BSQ training",
    Stage.QAT: "Quantized training", Stage.FINETUNE: "Finetuning", Stage.DONE: "Final evaluation",
}  # fmt: skip


def render_run_panel(run_id: str, *, key: str = "panel") -> None:
    """Show run ``run_id``; ``key`` prefixes element keys (one panel per key per page)."""
    start_warm_up()
    try:
        frame = live.live_frame(run_id, build_figures)
    except RunNotFound:
        st.warning(f"There is no run {plain.md(plain.short(run_id))} in this store; it may "
                   "have been deleted.")  # fmt: skip
        st.page_link("pages/runs.py", label="See all runs", icon=":material/list:")
        return
    except StoreError as exc:  # a damaged row: its message says how to repair the store
        st.error(plain.md(exc), icon=":material/error:")
        return
    if frame.view.active:  # the pace and the crowd set the ticks; a new fragment per change
        viewer = _viewer()
        scale = live.crowd_scale(run_id, viewer)  # kept by the fragments: see live.py
        live.watching(run_id, viewer)
        every = live.poll_interval(frame, scale)
        _header(frame.view)  # once: it does not change while the run is live
        push = live_progress.served()  # pushed bars poll the server; else the fragment ticks
        top = st.fragment(_live_top, run_every=None if push else every)
        top(run_id, key, every, scale, frame.view.status, push)
        # Right after a Start the charts tick fast too: the first chart is what is awaited.
        charts_every = every if every == live.FAST_TICK_S else live.chart_tick_s(scale)
        st.fragment(_live_charts, run_every=charts_every)(run_id, key)
    else:
        _render(frame.view, key, frame.figures)


def _live_frame(run_id: str, *, figures: bool = True) -> live.LiveFrame:
    """The shared frame, or a whole-page rerun when the run is gone."""
    try:
        return live.live_frame(run_id, build_figures, figures=figures)
    except RunNotFound:
        st.rerun()


def _viewer() -> str:
    """This browser session's id, for counting a run's watchers (``live.watching``)."""
    return st.session_state.setdefault("run_panel.viewer", uuid.uuid4().hex)


def _live_top(run_id: str, key: str, every: float, scale: int, status: str, push: bool) -> None:
    """Progress and Stop: the cheap part, every tick (1.5 s alone, longer in a crowd). It
    draws no figure, so it never waits for one to be built, nor the header, which does not
    change while the run is live (drawn once by the page: re-sent with each tick it was a
    fifth of the tick's work in the browser); ``status``: the one the header shows.
    ``push``: the fragment has no timer; its bar polls ``live_route`` and reruns it only
    when something else than the bar must change (see ``live_progress``)."""
    viewer = _viewer()
    live.watching(run_id, viewer)
    frame = _live_frame(run_id, figures=False)
    if not frame.view.active:
        _ended_in_place(frame.view)
        if push:  # no timer brings the page's rerun: ask for it
            live_progress.rerun_once(every, key=f"{key}-ended")
        return
    if page_rerun_due(frame, every, scale, status):
        # The run left the queue (the header's badge), or its pace changed (pretraining ->
        # BSQ; the first seconds after a Start, which tick fast, are over): a new tick
        # length. Not sooner: a full rerun on a busy machine would hold back the first
        # charts (the charts fragment draws them). A change of the crowd waits for the
        # page's next run (live.crowd_scale).
        st.rerun()
    pushed = None
    if push:
        url = live_progress.url(run_id, viewer=viewer, every=every, scale=scale, status=status)
        pushed = live_progress.Push(url=url, every=every, key=f"{key}-pushed")
    _progress(frame.view, key, pushed)


def page_rerun_due(frame: live.LiveFrame, every: float, scale: int, status: str) -> bool:
    """Whether a live panel drawn for ``status`` and ticking every ``every`` s must redraw
    its page: the run left the queue, or its pace now asks for another tick length (the
    fast ticks of a new run's first seconds excepted)."""
    fast = every == live.FAST_TICK_S and live.run_age_s(frame.view) < live.FAST_UNTIL_S
    paced = every / 2 <= live.poll_interval(frame, scale) <= every * 2
    return frame.view.status != status or (not fast and not paced)


def _ended_in_place(view: RunView) -> None:
    """The run has ended (stopped, finished, failed): first its outcome in the fragment's
    own place, which reaches the browser at once (a whole page took 11-26 s to
    show a Stop with 30 viewers on the 2-core machine; a whole-page rerun straight away
    may also drop the fragment's output), then, at the next tick, the whole page as the
    finished view, which no longer polls (its tiles the run's final figures: the charts
    fragment's tiles stay until then)."""
    drawn = f"run_panel.ended.{view.run_id}"
    if st.session_state.pop(drawn, False):
        st.rerun()
    st.session_state[drawn] = True
    _outcome(view)  # under the page's header, whose badge the page's rerun brings up to date
    _stop_toast(view.run_id)


def _live_charts(run_id: str, key: str) -> None:
    """The tiles and the charts, every ``live.chart_tick_s``: the figures change no faster.
    The tiles show the view the figures were built from, so they agree with the bars and
    the curves' last points (drawn with the progress, from the newest view, they ran up to
    a rebuild ahead of the charts, and their elements were a third of that tick's cost to
    the server). Once the run has ended they show its last figures until the top fragment
    redraws the page."""
    frame = _live_frame(run_id)
    _tiles(frame.figures_view)
    render_charts(frame.view, key, frame.figures)


def _render(view: RunView, key: str, figures: dict) -> None:
    _header(view)
    if view.active:
        _progress(view, key)
    else:
        _outcome(view)
        _stop_toast(view.run_id)
    _tiles(view)
    if view.status == RunStatus.FINISHED:
        _downloads(view, key)
    render_charts(view, key, figures)
    if not view.active:  # measured on demand; never inside the live fragment's ticks
        sensitivity_section(view.run_id, key)


def _header(view: RunView) -> None:
    run, cfg = view.run, view.config
    title, badge = st.columns([4, 1], vertical_alignment="center")
    title.subheader(plain.md(run.get("name") or view.run_id), anchor=False)
    with badge:
        st.badge(view.status, color=STATUS_COLORS.get(view.status, "gray"))
    method = describe_method({"method": run.get("method"), **cfg})
    owner = run.get("owner") or "no recorded owner"
    st.caption(plain.md(f"{run.get('model')} on {run.get('dataset')} · {method} · "
                        f"run {view.run_id} · started by {owner}"))  # fmt: skip


def progress_line(view: RunView) -> tuple[float, str]:
    """The progress bar's fraction (0..1) and its line, as plain text: the stage, the
    epoch and step, the share done and the time left; for a queued run its place. Drawn
    by the page (:func:`_progress`) and sent by ``live_route`` to pushed bars."""
    snap, cfg = view.snapshot or {}, view.config
    last = view.last_epoch()
    stage = snap.get("stage") or (last["stage"] if last is not None else Stage.PRETRAIN)
    epoch = snap["epoch"] if "epoch" in snap else (int(last["epoch"]) if last is not None else 0)
    per_stage = frames.stage_epochs(cfg)
    progress = snap.get("progress")
    if progress is None:
        total = sum(per_stage.values()) or 1
        progress = (int(last["global_epoch"]) if last is not None else 0) / total
    if view.status == RunStatus.QUEUED:
        text = _queue_text(view.run_id)
    else:
        epoch = snap.get("epoch_in_progress") or epoch  # the epoch being trained right now
        text = _STAGE_LABELS.get(stage, stage)
        if stage in per_stage:  # the final evaluation has no epochs to count
            text += f" · epoch {epoch} of {per_stage[stage]}"
        if stage in per_stage and snap.get("step_in_epoch") and snap.get("steps_in_epoch"):
            text += f" · step {snap['step_in_epoch']} of {snap['steps_in_epoch']}"
        text += f" · {progress:.0%}"
        eta = snap.get("eta_seconds")
        if is_number(eta):
            text += f" · about {format_duration(eta, missing=MISSING)} left"
    return min(max(float(progress), 0.0), 1.0), text


def _progress(view: RunView, key: str, push: live_progress.Push | None = None) -> None:
    """The bar and Stop. ``push``: the bar is a pushed one (``live_progress``), which
    polls the run's progress itself between this fragment's runs."""
    fraction, text = progress_line(view)
    bar, button = st.columns([6, 1], vertical_alignment="bottom")
    with bar:
        if push is None:
            st.progress(fraction, text=plain.md(text))
        else:
            live_progress.bar(fraction, text, push)
    refusal = identity.refusal(view.run, "stop")
    # on_click: the callback runs before the fragment's next rerun even when a timed tick
    # interrupts the click's own rerun (a plain `if st.button(...)` lost clicks that way).
    button.button("Stop", key=f"{key}-stop", icon=":material/stop_circle:", width="stretch",
                  on_click=_stop, args=(view.run,), disabled=refusal is not None,
                  help=refusal)  # fmt: skip
    _stop_toast(view.run_id)


def _stop_toast(run_id: str) -> None:
    """The Stop callback's message, once: on the live panel, or on the ended run's view
    when the stop landed before the panel redrew."""
    message = st.session_state.pop(f"run_panel.stop.{run_id}", None)
    if message:
        st.toast(message)


def _stop(run: dict) -> None:
    """Stop button callback: the ownership rule again (a stale page may show the button)."""
    refusal = identity.refusal(run, "stop")
    try:
        if refusal is not None:
            raise ValueError(refusal)
        manager().stop(run["run_id"])
        # Wait briefly for the step to end, so this very rerun already draws the stopped
        # run (else the next tick, up to 4 s later, would); a slow step is not waited for.
        status = manager().wait(run["run_id"], timeout=STOP_WAIT_S)
        message = "Stopped." if status not in ACTIVE else "Stopping after the current step..."
    except (KeyError, ValueError) as exc:
        message = f"Could not stop the run: {exc}"
    st.session_state[f"run_panel.stop.{run['run_id']}"] = message


def _queue_text(run_id: str) -> str:
    place = live.queue_place(run_id)
    if place is None:
        return "Queued: waits for a free worker."
    text = f"Queued: place {place['place']} of {place['of']}"
    if place["ahead"]:
        text += f" · ahead: {ahead_text(place['ahead'])}"
    if place["start_s"] is not None:
        text += f" · starts in about {format_duration(place['start_s'])}"
    return text


def ahead_text(owners: list[str], shown: int = 4) -> str:
    """Who is ahead in the queue, by name in queue order with each one's number of runs:
    ``zed (6 runs), ana, cid (5 runs) and 2 more people`` (a class queues runs by the
    handful; a name per run repeated itself). Plain text: escape it where Markdown shows it."""
    counts = Counter(owners)  # first appearance order: the queue's
    parts = [plain.short(name, 20) + (f" ({n} runs)" if n > 1 else "")
             for name, n in list(counts.items())[:shown]]  # fmt: skip
    rest = len(counts) - len(parts)
    more = f" and {rest} more {'person' if rest == 1 else 'people'}" if rest > 0 else ""
    return ", ".join(parts) + more


def _outcome(view: RunView) -> None:
    run, status = view.run, view.status
    if status == RunStatus.FINISHED:
        acc, flt = run.get("accuracy"), run.get("float_accuracy")
        text = f"Finished in {format_duration(run.get('seconds'), missing=MISSING)}: "
        text += f"**{format_pct(acc)}** test accuracy"
        if is_number(flt) and is_number(acc):
            text += f" (float model {format_pct(flt)}, {100 * (acc - flt):+.2f} points)"
        if run.get("avg_bits") is not None:
            text += f" at **{format_bits(run['avg_bits'])} average bits**"
            comp = run.get("compression")  # None when every layer is pruned (collapsed)
            text += f" = {format_compression(comp)} compression." if comp else " (all pruned)."
        st.success(text)
        for warning in (run.get("summary") or {}).get("warnings") or []:
            st.warning(warning)  # e.g. the BSQ stage wrecked accuracy: what to change
    elif status == RunStatus.FAILED:
        st.error(f"This run failed: {_clean_error(run.get('error'))}")
        st.caption("Change the settings and start a new run, or resume it from the Runs page.")
    elif status in (RunStatus.STOPPED, RunStatus.INTERRUPTED):
        if run.get("error"):
            reason = _clean_error(run.get("error"))
        elif status == RunStatus.STOPPED:
            reason = "It was stopped."
        else:
            reason = "Its process ended before it finished."
        advice = "" if "resume" in reason.lower() else " Resume it from the Runs page."
        st.warning(f"This run did not finish. {reason}{advice}")


def _tiles(view: RunView) -> None:
    run, last = view.run, view.last_epoch()
    done = view.status == RunStatus.FINISHED
    acc = run.get("accuracy") if done or last is None else last["test_acc"]
    flt = run.get("float_accuracy") or (view.snapshot or {}).get("float_accuracy")
    bits = run.get("avg_bits") if done or last is None else last["avg_bits"]
    comp = run.get("compression") if done or last is None else last["compression"]
    quantized = done or (last is not None and last["stage"] != Stage.PRETRAIN)
    compare = quantized and is_number(acc) and is_number(flt)
    delta = f"{100 * (acc - flt):+.2f} pts vs float" if compare else None
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Test accuracy", format_pct(acc), delta, border=True)
    c2.metric("Average bits", format_bits(bits), border=True,
              help="Weighted by layer size; measured from the BSQ stage on.")  # fmt: skip
    c3.metric("Compression", format_compression(comp), border=True,
              help=COUNTING_CONVENTION)  # fmt: skip
    if run.get("method") == "uniform":
        c4.metric("Regularizer", "off", border=True, help="Uniform k-bit runs use no regularizer.")
        return
    bsq = view.last_epoch(Stage.BSQ)
    reg = bsq["alpha_reg"] if bsq is not None else None
    ce = bsq["train_loss"] if bsq is not None else None
    share = reg / (reg + ce) if is_number(reg) and is_number(ce) and reg + ce > 0 else None
    c4.metric(
        "Regularizer alpha·R (nats)", f"{reg:.4g}" if is_number(reg) else MISSING,
        f"{share:.0%} of the loss" if share is not None else None,
        delta_color="off", border=True, help=REGULARIZER_HELP,
    )  # fmt: skip


def _downloads(view: RunView, key: str) -> None:
    with st.expander("Download results", icon=":material/download:"):
        folder = store().run_dir(view.run_id) / "export"
        paths = {name: folder / name for name in EXPORT_NAMES}
        if not all(p.exists() for p in paths.values()):
            if not st.button("Prepare files", key=f"{key}-export"):
                st.caption("Scheme (JSON), curves and layers (CSV), packed integer weights "
                           "and the float model (safetensors).")  # fmt: skip
                return
            try:
                files = export_files(view.run_id)
            except Exception as exc:  # export says what is missing and what to do
                st.error(f"Could not export this run: {exc}")
                return
            paths = {p.name: p for p in files.values() if p.name in EXPORT_NAMES}
        for col, (name, path) in zip(st.columns(len(paths)), paths.items()):
            col.download_button(
                name, data=path.read_bytes, file_name=f"{view.run_id}-{name}",
                key=f"{key}-dl-{name}", on_click="ignore", width="stretch",
                help=f"{path.stat().st_size / 1024:,.1f} KiB",
            )  # fmt: skip


def _warm_up() -> None:
    """Build one figure of each kind, so the first live tick is not the one paying for
    Plotly's template and Altair's schema loading (seconds on a busy 2-core machine)."""
    try:
        epochs = frames.epochs_frame([{"stage": Stage.PRETRAIN, "epoch": 1, "global_epoch": 1}])
        charts.bits_per_layer_chart(frames.layers_frame([]), start_bits=8).to_json()
        charts.density_heatmap(frames.layers_frame([]), 8).to_json()
        vega_spec(charts.loss_chart(epochs))
    except Exception:  # only an optimisation: never let it break an import
        pass


_warm_up_started = threading.Event()


def start_warm_up() -> None:
    """Warm the chart libraries once per process, from the first panel drawn (importing
    this module never starts a thread)."""
    if not _warm_up_started.is_set():
        _warm_up_started.set()
        threading.Thread(target=_warm_up, name="bsq-chart-warm-up", daemon=True).start()


def _clean_error(error: str | None) -> str:
    """The message, never a traceback (its last line is the message)."""
    if not error:
        return "no error message was recorded."
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if "Traceback" in error else " ".join(lines)

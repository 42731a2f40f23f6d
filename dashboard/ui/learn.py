"""Streamlit pieces of the Learn page: BSQ in five steps a teacher can project.

Every number comes from ``bsq_engine`` through ``dashboard.views.learn`` (pure) and every
model from ``dashboard.ui.accessors``; this module only lays the lesson out. Presentation
mode enlarges the type and hides the advanced controls.
"""

from __future__ import annotations

import streamlit as st

from bsq_engine.core.quantize import quantized_layers
from bsq_engine.runs.status import RunStatus
from bsq_engine.units import format_bits, format_compression, format_pct
from dashboard.ui.accessors import load_run_view, model_for_lesson
from dashboard.ui.learn_try import ALPHAS, step_try
from dashboard.ui.presentation import PRESENT_CSS, SHORT_STEPS
from dashboard.ui.presentation import plot as _plot
from dashboard.ui.presentation import table as _table
from dashboard.ui.sensitivity import TEACHING, render_sensitivity
from dashboard.ui.state import set_url_run, store, url_run_id
from dashboard.views import charts, frames, lesson_runs
from dashboard.views import learn as lesson

__all__ = ["STEPS", "header", "init_state", "render_step"]

STEPS = {1: "A weight in bits", 2: "A layer's bit planes", 3: "Why whole planes die",
         4: "Replay", 5: "Try it"}  # fmt: skip
PLAY_S = 1.0


def _url_int(name: str, default: int, lo: int, hi: int) -> int:
    try:
        return min(max(int(st.query_params.get(name, default)), lo), hi)
    except ValueError:
        return default


def _init(key: str, value) -> None:
    """First visit: a widget starts from the URL; later its own state rules."""
    if key not in st.session_state:
        st.session_state[key] = value


# ---------------------------------------------------------------- step 1
def step_value(present: bool) -> None:
    st.markdown(
        "A BSQ layer does not store a float weight: it stores **bits**. A weight $v$ in "
        "$[-1, 1]$ gets $n$ magnitude bits; they sit in the **positive** plane when $v > 0$, "
        "in the **negative** plane otherwise. Bit $b$ (MSB first) is worth $2^{n-1-b}/(2^n-1)$."
    )
    st.latex(
        r"v = \sum_{b=0}^{n-1} (\mathrm{pos}_b - \mathrm{neg}_b)\,\frac{2^{n-1-b}}{2^n-1}"
        r"\qquad Q_n(x) = \mathrm{sign}(x)\,\frac{\mathrm{round}(|x|\,(2^n-1))}{2^n-1}"
    )
    left, right = st.columns(2)
    value = left.number_input("Weight value v", -1.0, 1.0, step=0.01, key="learn-v",
                              format="%.3f")  # fmt: skip
    n_bits = right.slider("Bits n", 1, 8, key="learn-n")
    vb = lesson.value_bits(value, n_bits)
    _plot(st, lesson.bits_figure(vb), "learn-bits", config={"displayModeBar": False})
    levels = 2**n_bits - 1
    sign = "-" if vb.value < 0 else "+"
    st.latex(
        rf"Q_{{{n_bits}}}({vb.value:.3f}) = {sign}\,\frac{{\mathrm{{round}}"
        rf"({abs(vb.value):.3f} \times {levels})}}{{{levels}}} = "
        rf"{sign}\frac{{{vb.q}}}{{{levels}}} = {vb.reconstruction:+.4f}"
    )
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Magnitude bits", vb.binary, border=True)
    c2.metric("Integer q", vb.q, border=True)
    c3.metric("Reconstruction Q_n(v)", f"{vb.reconstruction:+.4f}", border=True)
    c4.metric("Rounding error", f"{vb.error:+.4f}", border=True,
              help=f"Never more than half a step: {vb.step / 2:.4f}")  # fmt: skip
    if not present:
        rows = [
            {"plane": lesson.plane_label(b, n_bits), "place value": p, "pos bit": vb.pos[b],
             "neg bit": vb.neg[b], "contributes": (vb.pos[b] - vb.neg[b]) * p}
            for b, p in enumerate(vb.place)
        ]  # fmt: skip
        _table(rows, "learn-place")


# ---------------------------------------------------------------- steps 2 and 3
def _chosen_layer(run: dict | None, present: bool):
    fresh = "mlp"
    if run is None and not present:
        fresh = st.radio("Model", ["mlp", "lenet5"], horizontal=True, key="learn-model")
    model, source = model_for_lesson(run, fresh)
    layers = dict(quantized_layers(model))
    st.caption(f"Weights: {source}.")
    name = st.selectbox("Layer", list(layers), key="learn-layer")
    if name not in layers:  # the model changed under a kept selection
        name = next(iter(layers))
    return model, name, layers[name]


def step_planes(run: dict | None, present: bool) -> None:
    st.markdown(
        "Every bit position of a layer is one **bit plane**: a black-and-white image with one "
        "pixel per weight (black = 1). A conv weight (out, in, kh, kw) is drawn as "
        "(out, in·kh·kw). BSQ trains these planes directly."
    )
    _, name, layer = _chosen_layer(run, present)
    side = 64 if present else st.slider("Crop (pixels per side)", 16, 128, 64, 16,
                                         key="learn-crop")  # fmt: skip
    planes = lesson.layer_planes(name, layer, side)
    if planes.n_bits == 0:
        st.warning(f"`{name}` was pruned: every plane is zero, so the layer uses 0 bits.")
        return
    rows, cols = planes.pos.shape[1:]
    _plot(st, lesson.planes_figure(planes), "learn-planes")
    st.caption(
        f"`{name}`: {planes.n_bits} bits, {planes.n_weights:,} weights, shape {planes.shape}; "
        f"showing the top-left {rows} x {cols} crop, MSB on the left. Percentages are each "
        "plane's density (fraction of ones) over the whole layer."
    )


def _push_sentence(table) -> None:
    """Name the sparsest and densest planes and the push each of their ones gets."""
    live = table.dropna(subset=["push per one"])
    if len(live) < 2:
        return
    lo, hi = live.loc[live["ones"].idxmin()], live.loc[live["ones"].idxmax()]
    st.markdown(
        f"Here the sparsest plane **{lo['plane']}** ({lo['ones']:,} ones) pushes each of its "
        f"ones by **{lo['push per one']:.3g}**, the densest **{hi['plane']}** "
        f"({hi['ones']:,} ones) only by **{hi['push per one']:.3g}**."
    )


def step_penalty(run: dict | None, present: bool) -> None:
    st.markdown(
        "BSQ adds a **group Lasso** with one group per plane. Its gradient on one bit is "
        "$x / \\lVert\\text{plane}\\rVert$: a plane with few ones has a small norm, so each of "
        "its ones is pushed harder towards 0. Sparse planes empty first, then a whole plane "
        "can be dropped, and the layer loses a bit."
    )
    st.latex(r"R = \sum_l \frac{N_l\,n_l}{N}\sum_b \sqrt{\epsilon + \sum_i "
             r"\mathrm{pos}_{i,b}^2 + \mathrm{neg}_{i,b}^2}\qquad "
             r"\text{loss} = \text{CE} + \alpha R")  # fmt: skip
    model, name, layer = _chosen_layer(run, present)
    reweigh = lesson.reweigh_table(model)
    factor = float(reweigh.loc[reweigh["layer"] == name, "factor"].iloc[0])
    alpha = st.select_slider("alpha", ALPHAS, key="learn-alpha")
    planes = lesson.layer_planes(name, layer)
    if planes.n_bits == 0:
        st.warning(f"`{name}` was pruned: no plane is left to penalise.")
        return
    table = lesson.penalty_table(planes, alpha, factor)
    _push_sentence(table)
    left, right = st.columns([3, 2])
    _plot(left, lesson.penalty_figure(table), "learn-penalty")
    right.metric("This layer's alpha · factor · Σ norms", f"{table.iloc[:, 4].sum():.4g}",
                 border=True)  # fmt: skip
    right.metric("Layer factor N_l n_l / N", f"{factor:.3f}", border=True)
    _table(table, "learn-penalty-table", percent=("density",))
    st.markdown(
        "**Memory-aware reweighing**: the factor $N_l n_l / N$ makes big, high-precision "
        "layers pay more, so the bits BSQ removes are the ones that save memory."
    )
    _table(reweigh, "learn-reweigh", percent=("memory share",))
    st.markdown(TEACHING)
    if run is None:
        st.info("Pick a finished run above to measure its layers' sensitivity.")
    else:
        render_sensitivity(run["run_id"], key="learn-sens", teaching=True)


# ---------------------------------------------------------------- step 4
def _epoch_metrics(view, global_epoch: int) -> None:
    """Accuracy and size at the replayed epoch."""
    rows = view.epochs[view.epochs["global_epoch"] == global_epoch]
    if rows.empty:
        return
    row = rows.iloc[0]
    c1, c2, c3 = st.columns(3)
    c1.metric("Test accuracy", format_pct(row["test_acc"], digits=1), border=True)
    c2.metric("Average bits", format_bits(row["avg_bits"]), border=True)
    c3.metric("Compression", format_compression(row["compression"]), border=True)


def _replay(run_id: str, playing: bool) -> None:
    view = load_run_view(run_id)
    epochs = lesson.replay_frames(view.snapshots)
    if not epochs:
        st.info("This run has no layer snapshots yet (they start after pretraining).")
        return
    _init("learn-frame", epochs[0])
    if st.session_state["learn-frame"] not in epochs:
        st.session_state["learn-frame"] = epochs[0]
    if playing:
        i = epochs.index(st.session_state["learn-frame"])
        if i + 1 >= len(epochs):
            st.session_state["learn-playing"] = False
            st.rerun()
        st.session_state["learn-frame"] = epochs[i + 1]
    snap_of = {f: frames.snapshot_at(view.snapshots, f) for f in epochs}
    epoch = st.select_slider(
        "Epoch", epochs, key="learn-frame",
        format_func=lambda f: f"{snap_of[f]['stage'].iloc[0]} {snap_of[f]['epoch'].iloc[0]}",
    )  # fmt: skip
    snap = snap_of[epoch]
    _epoch_metrics(view, int(epoch))
    left, right = st.columns(2)
    _plot(left, charts.density_heatmap(snap, view.max_bits), "learn-replay-density")
    start = int(view.config.get("n_bits") or 8)
    _plot(right, charts.bits_per_layer_chart(snap, start_bits=start), "learn-replay-bits")
    events = lesson.epoch_events(view.events, snap)
    for event in events:  # the engine's own wording (PrecisionEvent.message)
        st.markdown(f":orange-badge[precision change] {event.get('message', '')}")
    if not events:
        st.caption("No precision change at this epoch; they happen at re-quantization.")


_replay_playing = st.fragment(run_every=PLAY_S)(_replay)


def step_replay(run: dict | None) -> None:
    st.markdown(
        "Watch a finished run: blue cells are planes with ones, grey cells planes that were "
        "dropped. Scrub the epochs or press play."
    )
    if run is None:
        st.info("No finished run to replay yet. Start one in step 5 (about a minute).")
        return
    _init("learn-playing", False)
    playing = bool(st.session_state["learn-playing"])
    if st.button("Pause" if playing else "Play", icon=":material/pause:" if playing
                 else ":material/play_arrow:", key="learn-play"):  # fmt: skip
        st.session_state["learn-playing"] = not playing
        st.rerun()
    (_replay_playing if playing else _replay)(run["run_id"], playing)


# ---------------------------------------------------------------- the page
FRESH = ""  # the run picker's "no run" choice (None would read as "nothing selected")


def _finished_run(present: bool, allow_none: bool) -> dict | None:
    """The lesson's run: ``?run=`` if it is finished, else the newest finished run; a picker
    (hidden in presentation mode) can change it, or choose a freshly converted model."""
    finished = {r["run_id"]: r for r in store().list_runs(status=RunStatus.FINISHED)}
    ordered = lesson_runs.lesson_order(finished.values())  # BSQ runs that dropped planes first
    ids = ([FRESH] if allow_none else []) + ordered
    if ids in ([], [FRESH]):
        return None
    labels = {run_id: lesson_runs.lesson_label(run) for run_id, run in finished.items()}
    labels[FRESH] = "none: a freshly converted model"
    key = "learn-run-model" if allow_none else "learn-run-replay"
    linked = url_run_id()  # a shared link names the run; otherwise the best lesson
    good_link = linked in finished and lesson_runs.dropped_planes(finished[linked])
    _init(key, linked if good_link else ordered[0])
    if st.session_state[key] not in ids:  # the run was deleted meanwhile
        st.session_state[key] = ids[0]
    run_id = st.session_state[key]
    if not present:
        run_id = st.selectbox("Run", ids, key=key, format_func=labels.get)
    if run_id == FRESH:
        return None
    set_url_run(run_id)
    return store().get_run(run_id)


def init_state() -> None:
    """First visit: the step and presentation mode come from the URL, the widgets from the
    lesson's defaults."""
    _init("learn-step", _url_int("step", 1, 1, len(STEPS)))
    _init("learn-present", st.query_params.get("present") == "1")
    _init("learn-v", 0.6)
    _init("learn-n", 3)
    _init("learn-alpha", 0.2)


def header() -> tuple[int, bool]:
    """Title, presentation toggle and step picker (both kept in the URL): (step, present)."""
    title, toggle = st.columns([3, 1], vertical_alignment="bottom")
    title.title("Learn: how BSQ finds bits")
    present = toggle.toggle("Presentation mode", key="learn-present")
    if present:
        st.html(PRESENT_CSS)
        st.query_params["present"] = "1"
        st.set_page_config(initial_sidebar_state="collapsed")  # the projector gets the width
    else:  # this run's router read the old URL: undo its collapsed sidebar now
        st.query_params.pop("present", None)
        st.set_page_config(initial_sidebar_state="expanded")
    labels = SHORT_STEPS if present else STEPS
    step = st.segmented_control("Step", list(STEPS), key="learn-step", required=True,
                                format_func=lambda s: f"{s}. {labels[s]}")  # fmt: skip
    step = step or 1
    st.query_params["step"] = str(step)
    st.header(f"{step}. {STEPS[step]}", anchor=False)
    return step, present


def render_step(step: int, present: bool) -> None:
    """The lesson's ``step`` (1-5)."""
    if step == 1:
        step_value(present)
    elif step in (2, 3):
        lesson_run = _finished_run(present, allow_none=True)
        (step_planes if step == 2 else step_penalty)(lesson_run, present)
    elif step == 4:
        step_replay(_finished_run(present, allow_none=False))
    else:
        step_try(present)

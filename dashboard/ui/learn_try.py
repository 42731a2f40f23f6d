"""Step 5 of the Learn page, "Try it": two experiments a student starts and watches.

- **Watch the bits drop** (digits MLP, the fastest demo): one BSQ run at the student's
  alpha, drawn live. On digits even uniform 1-bit is at float level, so this run shows
  *how* BSQ removes planes, not that mixed precision wins.
- **Where mixed precision wins** (dsnet on Fashion-MNIST, the bench's workload): uniform
  2-bit and a sensitivity-based allocation at the same 16x, side by side with intervals
  (``dashboard.views.headroom``).

Only runs this browser session started here are shown, never someone else's; each is
recorded with the session's owner name, like a run started on the Train page.
"""

from __future__ import annotations

import streamlit as st

from bsq_engine.data import get_dataset_info
from bsq_engine.runs.estimate import estimate_run
from bsq_engine.runs.jobs import QueueFull
from bsq_engine.runs.status import ACTIVE
from bsq_engine.training.presets import make_config, preset_for
from dashboard.ui import bench as bench_ui
from dashboard.ui import identity
from dashboard.ui.run_panel import render_run_panel
from dashboard.ui.state import manager, set_url_run, store
from dashboard.views import bench, headroom, plain

__all__ = ["ALPHAS", "step_try"]

ALPHAS = [0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0]
_DEMOS = {"watch": "Watch the bits drop (digits)", "headroom": "Where mixed precision wins"}
_PAIR_KEY = "learn-pair-runs"  # the (uniform, mixed) run ids this session started
_PAIR_TICK_S = 3.0


def step_try(present: bool) -> None:
    demo = st.segmented_control("Experiment", list(_DEMOS), format_func=_DEMOS.get,
                                key="learn-try-demo", required=True) or "watch"  # fmt: skip
    (_headroom if demo == "headroom" else _watch)()


def _start(config) -> str | None:
    """Queue ``config`` for this session's owner; problems are shown, never raised."""
    try:
        # a dict, not the object: the manager outlives reruns, and a module reloaded by the
        # file watcher would make its RunConfig a different class than ours
        return manager().start(config.to_dict(), owner=identity.user_name())
    except QueueFull as exc:
        st.warning(plain.md(str(exc)))
    except (ValueError, RuntimeError) as exc:
        st.error(f"Could not queue the run: {plain.md(str(exc))} Reload the page and retry.")
    return None


# ---------------------------------------------------------------- watch the bits drop
def _watch() -> None:
    preset = preset_for("mlp", "digits")
    st.markdown(
        f"Train a small MLP on handwritten digits with the default recipe: "
        f"{preset['pretrain_epochs']} float epochs, {preset['bsq_epochs']} BSQ epochs, "
        f"{preset['finetune_epochs']} finetune epochs. Pick alpha: larger = fewer bits. "
        "This shows *how* BSQ removes bit planes; on digits even uniform 1-bit stays at "
        "float level, so it cannot show mixed precision winning (the second experiment does)."
    )
    if "learn-try-alpha" not in st.session_state:
        st.session_state["learn-try-alpha"] = preset["alpha"]
    alpha = st.select_slider("alpha", ALPHAS, key="learn-try-alpha")
    if st.button("Start the run", type="primary", icon=":material/play_arrow:", key="learn-go"):
        run_id = _start(make_config("mlp", "digits", alpha=alpha, name=f"lesson α={alpha:g}"))
        if run_id:
            st.session_state["learn-try-run"] = run_id
            set_url_run(run_id)
    mine = st.session_state.setdefault("learn-try-runs", [])
    if st.session_state.get("learn-try-run") and st.session_state["learn-try-run"] not in mine:
        mine.append(st.session_state["learn-try-run"])
    if not mine:  # only runs this student started here: never someone else's
        st.caption("Your run appears here once you press the button.")
        return
    if len(mine) > 1:
        run_id = st.radio("Your runs", mine[::-1], horizontal=True, key="learn-try-pick",
                          format_func=lambda r: f"run {mine.index(r) + 1}")  # fmt: skip
    else:
        run_id = mine[0]
    render_run_panel(run_id, key="learn-panel")


# ---------------------------------------------------------------- where mixed precision wins
def _bench_line() -> str | None:
    """The bench's measured verdict for the pair's mixed setting, read from its document."""
    summary = bench.bench_summary(bench_ui.read_bench())
    if summary is None or summary[2].get("model") != headroom.PAIR_MODEL:
        return None
    label = headroom.pair_overrides()[1]["name"].removeprefix("lesson: ")
    found = [line for line in summary[1] if line.startswith(label)]
    seeds = len(summary[2].get("seeds") or [])
    return f"Measured by the bench over {seeds} seed(s): {found[0]}." if found else None


def _bench_cost() -> str:
    """The pair's measured CPU time per run in the bench, as a clause ('' when unknown)."""
    doc = bench_ui.read_bench() or {}
    labels = {o["name"].removeprefix("lesson: ") for o in headroom.pair_overrides()}
    try:
        cpu = [r["cpu_s"] for r in doc.get("rows", []) if r["label"] in labels]
    except (KeyError, TypeError):
        return ""
    if len(cpu) != len(labels) or not all(isinstance(c, int | float) for c in cpu):
        return ""
    return f" (the bench measured about {max(cpu):.0f} CPU seconds a run)"


def _headroom() -> None:
    model, dataset = headroom.PAIR_MODEL, headroom.PAIR_DATASET
    st.markdown(
        "A depthwise-separable CNN (`dsnet`) on 10,000 Fashion-MNIST images with 4-bit "
        "activations. Its layers differ in how much quantization hurts them (conv1 and the "
        "depthwise layers are fragile), so giving each layer its own bits can beat one "
        "width for all. Two runs at the **same 16x compression**: uniform 2-bit, and bits "
        "chosen per layer from each layer's Hessian trace (HAWQ-style) at 2 bits on average."
    )
    line = _bench_line()
    if line:
        st.text(line)
    ok, how = get_dataset_info(dataset).available()
    if not ok:
        st.info(f"Fashion-MNIST is not on this machine. {how}", icon=":material/download:")
        return
    configs = [make_config(model, dataset, **o) for o in headroom.pair_overrides()]
    found = estimate_run(store(), configs[1])
    unknown = "No run of this pair has trained on this machine yet" + _bench_cost() + "."
    st.caption(f"Expected duration of each run here: {found.describe()}." if found else unknown)
    if st.button("Start both runs", type="primary", icon=":material/play_arrow:",
                 key="learn-pair-go"):  # fmt: skip
        ids = [_start(config) for config in configs]
        if all(ids):
            st.session_state[_PAIR_KEY] = ids
    pair = st.session_state.get(_PAIR_KEY)
    if not pair:
        st.caption("Your two runs appear here once you press the button.")
        return
    _pair_status(pair)


def _pair_status(pair: list[str]) -> None:
    """The pair's status, refreshing itself while either run trains."""
    active = any((run := store().get_run(run_id)) and run["status"] in ACTIVE for run_id in pair)
    (_pair_live if active else _pair_body)(pair, active)


def _pair_body(pair: list[str], was_active: bool) -> None:
    runs = [store().get_run(run_id) for run_id in pair]
    if any(run is None for run in runs):
        st.info("One of your two runs was deleted; start the pair again.")
        return
    for column, run in zip(st.columns(2), runs):
        column.text(f"{run['name']}: {run['status']}")
    if any(run["status"] in ACTIVE for run in runs):
        st.caption("The comparison appears when both runs have finished.")
        return
    if was_active:  # the pair just ended: one page rerun stops the refreshing fragment
        st.rerun()
    st.text(headroom.pair_sentence(*runs))
    st.page_link("pages/compare.py", label="Compare the two runs side by side",
                 query_params={"runs": ",".join(pair)}, icon=":material/compare:")  # fmt: skip


_pair_live = st.fragment(run_every=_PAIR_TICK_S)(_pair_body)

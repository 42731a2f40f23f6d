"""Streamlit pieces of the honest bench on the Pareto page: collapsed runs, the best of each
method at a chosen compression, the measured bench, and a selected run's scheme tools.
The rules live in ``dashboard.views.bench``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from bsq_engine.runs.status import RunStatus
from dashboard.ui.state import manager, store
from dashboard.views import bench

__all__ = ["BENCH_PATH", "best_of_methods", "caption", "collapsed_notice", "measured_bench",
           "scheme_tools"]  # fmt: skip

BENCH_PATH = Path(__file__).resolve().parents[2] / "assets" / "bench_frontier.json"
# Other workloads screened for headroom (issue 12), saved by ``frontier.py --save``.
SCREENS_DIR = BENCH_PATH.parent / "bench_screens"


def caption(convention: str) -> None:
    st.caption(
        "Error bars: 95% interval of each test accuracy (Wilson, from the test-set size). "
        "A hollow marker is **tied**: a smaller model is within that noise of it. Grey "
        "crosses are **collapsed** runs (every layer pruned, or accuracy at chance): never "
        f"on the frontier. Counting convention: {convention} BOPs: MACs x weight bits x "
        "activation bits (32 when float). Click a point to open its run."
    )


def collapsed_notice(runs: pd.DataFrame) -> None:
    bad = runs[(runs["status"] == RunStatus.FINISHED) & (runs["collapsed"] != "")]
    if not bad.empty:
        lines = [f"- {name}: {reason}" for name, reason in zip(bad["name"], bad["collapsed"])]
        st.warning("Collapsed runs, flagged and kept off the frontier:\n" + "\n".join(lines))


def best_of_methods(runs: pd.DataFrame) -> None:
    """The best of each method at a compression the user picks, with intervals."""
    st.subheader("Best of each method at a chosen compression", anchor=False)
    left, right = st.columns(2)
    target = left.number_input("At least this compression (x)", min_value=1.0,
                               value=8.0, step=1.0, key="pareto-at")  # fmt: skip
    points = right.number_input("Best alpha within this many points of float", 0.0, 50.0,
                                1.0, 0.5, key="pareto-within")  # fmt: skip
    best = bench.best_at(runs, target)
    st.text(bench.best_sentence(best, target))
    if not best.empty:
        number = st.column_config.NumberColumn
        st.dataframe(best, hide_index=True, width="stretch", key="pareto-best",
                     column_config={"accuracy (%)": number(format="%.2f"),
                                    "± (95%)": number(format="%.2f"),
                                    "compression (x)": number(format="%.1f")})  # fmt: skip
    pick = bench.best_alpha_within(runs, points)
    if pick is None:
        st.text(f"No finished BSQ run is within {points:g} points of the float model.")
    else:
        st.text(f"Most compressed BSQ run within {points:g} points of float: {pick['name']} "
                f"(alpha {pick['alpha']:g}), {pick['accuracy_pct']:.2f}% at "
                f"{pick['compression']:.1f}x.")  # fmt: skip


_BENCH_FORMATS = {
    name: st.column_config.NumberColumn(format=fmt)
    for name, fmt in (("accuracy (%)", "%.2f"), ("± (95%)", "%.2f"), ("seed sd", "%.2f"),
                      ("compression (x)", "%.1f"))
}  # fmt: skip


def read_bench(path: Path = BENCH_PATH) -> dict | None:
    """The saved bench document (``frontier.py --save``), or None when missing or damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measured_bench(path: Path = BENCH_PATH) -> None:
    """Where each method wins, from the saved bench (numbers read, never typed)."""
    found = bench.bench_summary(read_bench(path))
    if found is None:
        return
    table, lines, workload = found
    with st.expander("Measured bench: does mixed precision beat uniform at equal size?"):
        st.text(f"benchmarks/frontier.py on {workload.get('model')}/{workload.get('dataset')}, "
                f"{workload.get('max_train')} training images, {workload.get('act_bits')}-bit "
                f"activations, seeds {workload.get('seeds')}:")  # fmt: skip
        st.dataframe(table, hide_index=True, width="stretch", key="pareto-bench",
                     column_config=_BENCH_FORMATS)  # fmt: skip
        st.text("\n".join(lines))
        st.caption(
            "A win needs more accuracy at equal or better compression, by more than the test "
            "noise and the seeds' spread. Mixed precision needs headroom (layers whose "
            "sensitivity really differs) and long schedules (the paper's 350 + 300 epochs) to "
            "beat uniform baselines; see the README, 'An honest bench'."
        )
        _screens()


def _screens(folder: Path = SCREENS_DIR) -> None:
    """The other workloads tried, each with its table and verdicts (read, never typed)."""
    for path in sorted(folder.glob("*.json")):
        found = bench.bench_summary(read_bench(path))
        if found is None:
            continue
        table, lines, w = found
        wins = [line for line in lines if line.endswith(", wins")]
        st.text(f"Also tried: {w.get('model')}/{w.get('dataset')}, {w.get('max_train')} training "
                f"images, {w.get('act_bits')}-bit activations, seeds {w.get('seeds')}: "
                + ("mixed precision wins here." if wins else "no mixed setting wins."))  # fmt: skip
        st.dataframe(table, hide_index=True, width="stretch", key=f"pareto-screen-{path.stem}",
                     column_config=_BENCH_FORMATS)  # fmt: skip
        st.text("\n".join(lines))


def scheme_tools(run_id: str) -> None:
    """'Retrain this scheme' (QAT from float) and, for HAWQ-style runs, the sensitivities."""
    run = store().get_run(run_id)
    retrain = bench.retrain_config(run)
    if retrain is not None:
        label = "-".join(str(b) for b in retrain["scheme"])
        if st.button(f"Retrain this scheme ({label}) from the float model", key="pareto-retrain",
                     help="Same schedule, bits fixed from the start: is it the scheme or "
                          "BSQ's training that wins?"):  # fmt: skip
            try:
                new_id = manager().start(retrain, name=f"scheme {label} (from {run['name']})")
            except ValueError as exc:  # the run's stored settings no longer pass validation
                st.error(f"Cannot retrain this scheme: {exc}")
            else:
                st.success(f"Queued run {new_id}: it appears on this chart as 'scheme QAT'.")
    table = bench.sensitivity_table((run.get("summary") or {}).get("plan"))
    if not table.empty:
        st.subheader("Per-layer sensitivity (why each layer got its bits)", anchor=False)
        st.dataframe(table, hide_index=True, width="stretch", key="pareto-sensitivity")

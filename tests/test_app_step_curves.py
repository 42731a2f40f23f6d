"""A finished run's stored per-step curves in the run panel (TensorBoard habits: step,
epoch or wall-clock axis, smoothing, log y, CSV) and its one colour across pages."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from apptest_helpers import make_run, open_page, page_text
from shared import TINY

from bsq_engine.runs.jobs import get_manager
from bsq_engine.training.presets import make_config
from dashboard.views import colors, curves, frames

pytestmark = pytest.mark.usefixtures("bsq_home")  # an isolated store per test


def _points(n: int = 40) -> list[dict]:
    return [{"stage": "bsq", "epoch": 1 + i // 10, "step": i + 1, "epoch_frac": 1 + (i + 1) / 10,
             "wall": 0.1 * (i + 1), "time": 1e9 + i, "loss": 2.0 - i / 40 + 0.5,
             "ce": 2.0 - i / 40, "reg": 5.0, "batch_acc": i / n, "lr": 0.1}
            for i in range(n)]  # fmt: skip


_TITLES = {
    "runs-series_loss": "Training loss per step",
    "runs-series_acc": "Batch accuracy per step",
}


def _spec(at, key: str) -> dict:
    """The Vega-Lite spec of one per-step chart (Vega elements carry no key in AppTest)."""
    specs = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]
    return next(s for s in specs if s.get("title") == _TITLES[key])


def _run_with_steps():
    store = get_manager().store
    older = make_run(store, name="older")  # the run below is the second: palette[1]
    run_id = make_run(store, name="stepped")
    store.add_step_points(run_id, _points())
    return store, older, run_id


def test_a_finished_run_shows_its_stored_steps_with_the_curve_options():
    _, _, run_id = _run_with_steps()
    at = open_page("pages/runs.py", run=run_id)
    assert not at.exception, page_text(at)
    loss = _spec(at, "runs-series_loss")
    assert loss["layer"][0]["encoding"]["x"]["field"] == "epoch_frac"  # default: epochs
    names = loss["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert names == ["loss (CE + alpha x R)", "cross-entropy"]  # alpha x R differs
    at.segmented_control(key="runs-curve-x").set_value("wall").run()
    at.slider(key="runs-smooth").set_value(0.6).run()
    at.toggle(key="runs-log-y").set_value(True).run()
    loss = _spec(at, "runs-series_loss")
    assert loss["layer"][0]["encoding"]["x"]["field"] == "wall"
    assert loss["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"
    assert len(loss["layer"]) == 2  # the smoothed line over the faint raw one
    at.segmented_control(key="runs-curve-x").set_value("step").run()
    assert _spec(at, "runs-series_acc")["layer"][0]["encoding"]["x"]["field"] == "step"
    labels = [d.label for d in at.download_button]
    charts = sum(len(at.get(k)) for k in ("plotly_chart", "vega_lite_chart"))
    assert labels.count("CSV") == charts == 7  # bits, planes, 2 per-step, loss, acc, avg bits


def test_a_long_series_is_thinned_for_drawing_only():
    """A long run keeps more points than Altair draws (its limit: 5,000 rows; 7,000 broke
    the finished view): at most SERIES_MAX_POINTS per metric, the last one included,
    smoothed over every point; the CSV keeps them all."""
    store = get_manager().store
    run_id = make_run(store, name="long")
    store.add_step_points(run_id, _points(7000))
    at = open_page("pages/runs.py", run=run_id)
    assert not at.exception, page_text(at)
    assert {"Training loss per step", "Batch accuracy per step"} <= {
        json.loads(e.proto.spec).get("title") for e in at.get("vega_lite_chart")
    }
    frame = curves.series_frame(_points(7000))
    options = curves.CurveOptions(x="step", smoothing=0.9)
    spec = curves.series_chart(frame, ["loss", "ce"], options, "t", "y").to_dict(validate=False)
    rows = next(iter(spec["datasets"].values()))
    ce = [r for r in rows if r["metric"] == "cross-entropy"]
    assert len(rows) == 2 * len(ce) == 2 * curves.SERIES_MAX_POINTS
    assert ce[-1]["step"] == 7000
    full = curves.ema(frame["ce"].tolist(), 0.9)
    assert ce[-1]["smoothed"] == pytest.approx(full[-1])  # not the thinned curve's average


def test_a_run_without_stored_steps_says_why():
    run_id = make_run(get_manager().store, name="old")
    at = open_page("pages/runs.py", run=run_id)
    assert not at.exception
    assert any("No per-step curves" in c.value for c in at.caption)


def test_the_run_has_its_compare_colour_in_the_panel():
    store, older, run_id = _run_with_steps()
    colour = colors.run_color(frames.runs_frame(store.list_runs()), run_id)
    assert (
        colour == colors.PALETTE[1] != colors.run_color(frames.runs_frame(store.list_runs()), older)
    )
    at = open_page("pages/runs.py", run=run_id)
    bars = json.loads(at.get_by_key("runs-bits").proto.spec)["data"][0]
    assert set(bars["marker"]["color"]) == {colour}
    scale = _spec(at, "runs-series_loss")["layer"][0]["encoding"]["color"]["scale"]
    assert scale["range"][0] == colour  # the run's own line, on every page the same


def test_one_colour_per_run_on_compare_pareto_and_the_panel():
    store, older, run_id = _run_with_steps()
    colour = colors.run_color(frames.runs_frame(store.list_runs()), run_id)
    at = open_page("pages/compare.py", runs=f"{older},{run_id}")
    bars = json.loads(at.get_by_key("compare-bits").proto.spec)["data"]
    assert [t["marker"]["color"] for t in bars] == [colors.PALETTE[0], colour]
    at = open_page("pages/pareto.py")
    at.session_state["pareto-chart"] = {"selection": {"points": [{"customdata": run_id}]}}
    at.run()
    assert not at.exception, page_text(at)
    traces = json.loads(at.get_by_key("pareto-chart").proto.spec)["data"]
    ring = next(t for t in traces if t.get("name") == "selected")
    assert ring["marker"]["color"] == colour


def test_a_starting_run_shows_the_layers_it_starts_from_before_its_first_step():
    store = get_manager().store
    run_id = store.create_run(make_config(**TINY).to_dict(), name="starting")
    store.set_status(run_id, "running")  # taken by a training process: no step yet
    at = open_page("pages/runs.py", run=run_id)
    assert not at.exception, page_text(at)
    fig = json.loads(at.get_by_key("runs-bits").proto.spec)
    bars = fig["data"][0]
    assert bars["x"] == ["fc1", "fc2", "fc3"] and _values(bars["y"]) == [8, 8, 8]
    assert bars["marker"]["opacity"] == 0.35  # faint: planned, not measured
    assert "Planned start" in fig["layout"]["annotations"][0]["text"]


def _values(array) -> list:
    """Plotly's JSON may carry numeric arrays as base64 ``{"dtype", "bdata"}``."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)

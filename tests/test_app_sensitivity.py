"""The per-layer sensitivity section: the pure view on hand-built numbers, and (AppTest) the
run panel's expander and the Learn page's step 3 measuring a run once, then showing it."""

from __future__ import annotations

import json

import pytest
from apptest_helpers import chart_titles, make_run, open_page, page_text

from bsq_engine.runs.paths import cache_dir, sensitivity_path
from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import RunConfig
from bsq_engine.training.float_cache import FloatCache
from bsq_engine.training.run_model import build_model, shape_of
from dashboard.views import sensitivity as views


def _result(traces=(4e-3, 9e-4, 3e-4, -1e-6, 1e-4), bits=(8, 4, 4, 3, 6)) -> dict:
    names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    layers = [{"name": n, "n_weights": 100 * (i + 1), "trace": t * 100 * (i + 1),
               "trace_per_weight": t, "loss_increase": {"1": 0.5 - i / 10, "2": 0.01},
               "accuracy_drop_points": {"1": 20.0 - i, "2": 0.5}}
              for i, (n, t) in enumerate(zip(names, traces))]  # fmt: skip
    return {"run_id": "r1", "layers": layers, "bits": list(bits), "bits_whose": "BSQ's",
            "bit_widths": [1, 2], "base": {"loss": 0.06, "accuracy": 0.98}, "seconds": 0.8,
            "device": "cpu", "source_note": "the float model", "hutchinson_samples": 32,
            "train_images": 512, "test_images": 360}  # fmt: skip


def test_view_table_chart_and_sentences_from_the_numbers():
    result = _result()
    frame = views.sensitivity_frame(result)
    assert list(frame["layer"]) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert list(frame["bits"]) == [8, 4, 4, 3, 6]
    assert frame["accuracy drop at 1 bit (points)"].tolist() == [20.0, 19.0, 18.0, 17.0, 16.0]
    # ranks of trace per weight 5,4,3,1,2 against bits 5,2.5,2.5,1,4: rho = 0.667
    assert "follow sensitivity" in views.verdict(result) and "+0.67" in views.verdict(result)
    teaching = views.teaching_sentence(result)
    assert teaching.startswith("In this run, conv1 is the most sensitive layer")
    assert "fc2 the least" in teaching and "kept 8 and 3 bits" in teaching
    figure = views.sensitivity_figure(result)
    assert "1 negative trace estimate(s) not drawn" in figure.layout.title.text
    assert list(figure.data[0].x) == ["conv1", "conv2", "fc1", "fc3"]  # log axis: > 0 only
    assert figure.layout.yaxis.type == "log"
    assert "0.8 s on cpu" in views.measured_caption(result)


def _measurable_run(home, **overrides) -> str:
    store = RunStore(home)
    run_id = make_run(store, **overrides)
    config = RunConfig.from_dict(store.get_run(run_id)["config"])
    FloatCache(cache_dir(home)).save(config, build_model(config, shape_of(config)), 0.1,
                                     [{}] * config.pretrain_epochs)  # fmt: skip
    return run_id


def _measure_button(at, key: str):
    return next(b for b in at.button if b.key == key)


def test_run_panel_measures_once_then_shows_the_stored_result(bsq_home):
    run_id = _measurable_run(bsq_home, bits=(4, 3, 5))
    at = open_page("pages/runs.py", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert "Per-layer sensitivity" in [e.label for e in at.expander]
    assert "Not measured yet" in page_text(at)
    _measure_button(at, "runs-sens-measure").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert "Too few layers to say whether BSQ's bits follow sensitivity" in text
    assert "Measured in" in text and "pretrained float model (float cache)" in text
    assert any(title.startswith("Per-layer sensitivity") for title in chart_titles(at))
    assert sensitivity_path(RunStore(bsq_home), run_id).is_file()
    again = open_page("pages/runs.py", run=run_id)  # a later visit: shown at once
    assert "Measured in" in page_text(again)
    assert _measure_button(again, "runs-sens-measure").label == "Measure again"


def test_run_panel_says_why_a_run_cannot_be_measured(bsq_home):
    run_id = make_run(RunStore(bsq_home))  # no float model, no checkpoint
    at = open_page("pages/runs.py", run=run_id)
    _measure_button(at, "runs-sens-measure").click().run()
    assert not at.exception
    assert any("no float model to measure" in e.value for e in at.error)


def test_run_panel_shows_a_damaged_file_and_measures_again(bsq_home):
    run_id = _measurable_run(bsq_home)
    path = sensitivity_path(RunStore(bsq_home), run_id)
    path.write_text("{broken")
    at = open_page("pages/runs.py", run=run_id)
    assert any("is damaged" in w.value for w in at.warning)
    _measure_button(at, "runs-sens-measure").click().run()
    assert any("kept as sensitivity.json.damaged" in i.value for i in at.info)
    assert json.loads(path.read_text())["layers"]


@pytest.mark.parametrize("present", ["0", "1"])
def test_learn_step_three_teaches_with_the_runs_numbers(bsq_home, present):
    run_id = _measurable_run(bsq_home, bits=(2, 1, 6))
    query = {"step": "3", "run": run_id} | ({"present": "1"} if present == "1" else {})
    at = open_page("pages/learn.py", **query)
    assert not at.exception, [e.value for e in at.exception]
    assert "Hessian trace" in page_text(at)
    _measure_button(at, "learn-sens-measure").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert "is the most sensitive layer" in text and "The run kept" in text

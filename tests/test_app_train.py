"""AppTest of the Train page: defaults, a real tiny run, validation, failures, re-attach."""

import pytest
from apptest_helpers import (
    button,
    chart_titles,
    make_run,
    open_page,
    page_text,
    run_until,
    shown,
)

from bsq_engine import preset_for
from bsq_engine.runs.jobs import get_manager
from dashboard.ui.widgets import ALPHA_GRID, build_config

pytestmark = pytest.mark.usefixtures("bsq_home")  # an isolated store per test
TINY_INPUTS = {"pretrain_epochs": 1, "bsq_epochs": 2, "finetune_epochs": 1, "requant_interval": 1}


def _set_inputs(at, **values):
    for field, value in values.items():
        at.number_input(key=f"train.{field}").set_value(value)
    return at


def _status(at, run_id):
    return get_manager().store.get_run(run_id)["status"]


def test_defaults_render():
    at = open_page()
    assert not at.exception
    assert at.selectbox(key="train.model").value == "mlp"
    assert at.selectbox(key="train.dataset").value == "digits"
    preset = preset_for("mlp", "digits")["alpha"]
    assert at.number_input(key="train.alpha").value == preset
    assert at.select_slider(key="train.alpha_slider").value == preset
    epochs = preset_for("mlp", "digits")["bsq_epochs"]
    assert at.number_input(key="train.bsq_epochs").value == epochs
    start = button(at, "Start training")
    assert start.proto.type == "primary" and not start.disabled
    assert f"preset for mlp on digits is **{preset:g}**" in page_text(at)


def test_preset_refills_and_alpha_inputs_stay_in_sync():
    at = open_page()
    at.selectbox(key="train.dataset").set_value("fashion_mnist").run()
    preset = preset_for("mlp", "fashion_mnist")
    assert at.number_input(key="train.alpha").value == preset["alpha"]
    assert at.number_input(key="train.bsq_epochs").value == preset["bsq_epochs"]
    at.select_slider(key="train.alpha_slider").set_value(ALPHA_GRID[10]).run()
    assert at.number_input(key="train.alpha").value == ALPHA_GRID[10]
    at.number_input(key="train.alpha").set_value(0.0123).run()
    assert at.number_input(key="train.alpha").value == 0.0123
    assert at.select_slider(key="train.alpha_slider").value == 0.0123  # one number in both
    box = at.number_input(key="train.alpha")
    assert (box.min, box.max) == (ALPHA_GRID[0], ALPHA_GRID[-1])  # 0 and 1e6 are refused


@pytest.mark.slow  # trains for seconds
def test_start_training_runs_to_finished_view():
    at = _set_inputs(open_page(), **TINY_INPUTS)
    assert "No run with these settings has trained on this machine yet" in page_text(at)
    button(at, "Start training").click().run()
    assert not at.exception, page_text(at)
    run_id = at.query_params["run"]
    assert _status(at, run_id) in ("queued", "running", "finished")
    assert button(at, "Stop")  # the live panel, while queued/running
    get_manager().wait(run_id, 120)
    run_until(at, lambda a: "Stop" not in [b.label for b in a.button])
    run = get_manager().store.get_run(run_id)
    assert run["status"] == "finished", run["error"]
    titles = chart_titles(at)
    assert "Bits per layer" in titles and "Bit-plane density" in titles
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Test accuracy"] == f"{100 * run['accuracy']:.2f} %"
    assert tiles["Average bits"] == f"{run['avg_bits']:.2f}"
    assert f"{100 * run['accuracy']:.2f} %" in at.success[0].value
    text = page_text(at)  # the next run of these settings: measured from this one
    assert "Expected duration: about " in text and "1 earlier run(s) on this machine" in text
    assert "pretraining skipped: a cached float model fits" in text  # it reuses this one's


def test_invalid_combination_is_rejected_without_a_run():
    at = _set_inputs(open_page(), n_bits=8, max_bits=4)
    button(at, "Start training").click().run()
    assert not at.exception
    assert any(
        "Starting bits (n_bits) must be between 1 and Max bits on overflow (4)" in shown(e.value)
        for e in at.error
    )  # the message is shown as plain text: Markdown escapes in its source
    assert get_manager().store.list_runs() == []
    assert "run" not in at.query_params


BAD_VALUES = [
    ("batch_size", 0, "Batch size must be"),
    ("alpha", -1.0, "Exact alpha must be >= 0"),
    ("act_bits", 1, "Activation bits must be"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_VALUES)
def test_config_builder_rejects_bad_values(field, value, message):
    values = {"model": "mlp", "dataset": "digits", "act_bits": "float", field: value}
    with pytest.raises(ValueError, match=message):
        build_config(values)


def test_config_builder_maps_float_activations():
    assert build_config({"act_bits": "float", "alpha": 1}).act_bits is None
    assert build_config({"act_bits": 4}).act_bits == 4


@pytest.mark.slow  # trains for seconds
def test_diverging_run_shows_its_message_not_a_traceback():
    at = _set_inputs(open_page(), **TINY_INPUTS, pretrain_lr=1e6)
    button(at, "Start training").click().run()
    run_id = at.query_params["run"]
    get_manager().wait(run_id, 120)
    run_until(at, lambda a: bool(a.error))
    text = at.error[0].value
    assert "diverged" in text and "smaller learning rate" in text
    assert "Traceback" not in page_text(at)


def test_unavailable_dataset_explains_and_disables_start():
    from bsq_engine import get_dataset_info

    info = get_dataset_info("mnist")
    if info.available()[0]:
        pytest.skip("MNIST is on disk here")
    at = open_page()
    at.selectbox(key="train.dataset").set_value("mnist").run()
    assert any("not available" in w.value and "IDX files" in w.value for w in at.warning)
    assert button(at, "Start training").disabled


def test_url_reattaches_to_a_run():
    run_id = make_run(get_manager().store, name="reattach-me", accuracy=0.875)
    at = open_page(run=run_id)
    assert not at.exception
    text = page_text(at)
    assert "reattach-me" in text and "87.50 %" in text
    assert "Bits per layer" in chart_titles(at)


def test_unknown_run_in_url_warns():
    at = open_page(run="20000101-000000-dead")
    assert not at.exception
    assert any("no run" in w.value for w in at.warning)
    assert any("runs" in str(link.proto.page) for link in at.get("page_link"))


def test_failed_run_in_url_shows_error_with_advice():
    error = "Training diverged: the loss became nan. Try a smaller alpha."
    run_id = make_run(get_manager().store, status="failed", error=error)
    at = open_page(run=run_id)
    assert any(error in e.value for e in at.error)
    assert "resume it from the Runs page" in page_text(at)


@pytest.mark.slow  # trains for seconds
def test_stop_button_stops_a_live_run():
    at = _set_inputs(open_page(), **{**TINY_INPUTS, "bsq_epochs": 400})
    button(at, "Start training").click().run()
    run_id = at.query_params["run"]
    run_until(at, lambda a: _status(a, run_id) == "running")
    button(at, "Stop").click().run()
    # the callback's message shows, whether the panel redrew live or as the ended run
    assert {t.value for t in at.toast} & {"Stopped.", "Stopping after the current step..."}
    assert get_manager().wait(run_id, 60) == "stopped"
    run_until(at, lambda a: "Stop" not in [b.label for b in a.button])
    assert any("did not finish" in w.value for w in at.warning)


def test_sweep_queues_runs_and_links_to_pareto():
    at = _set_inputs(open_page(), **TINY_INPUTS)
    at.number_input(key="train.sweep_n").set_value(2)
    at.number_input(key="train.sweep_lo").set_value(0.1)
    at.number_input(key="train.sweep_hi").set_value(1.0).run()
    assert "Alphas (log-spaced): 0.1, 1" in page_text(at)
    at.multiselect(key="train.sweep_bits").set_value([4])
    button(at, "Start sweep").click().run()
    assert not at.exception, page_text(at)
    runs = get_manager().store.list_runs()
    assert sorted((r["method"], r["alpha"]) for r in runs) == [
        ("bsq", 0.1), ("bsq", 1.0), ("uniform", None)
    ]  # fmt: skip
    assert {r["config"]["bsq_epochs"] for r in runs} == {2}
    assert at.query_params["run"] in {r["run_id"] for r in runs}
    assert any("pareto" in str(link.proto.page) for link in at.get("page_link"))
    for r in runs:
        get_manager().wait(r["run_id"], 120)


def test_one_start_is_one_run_even_when_its_click_comes_back(monkeypatch):
    """Streamlit replays a click in the next script run when the run that saw it was
    interrupted, which calls the Start callback again: the same start from the same session
    within ``REPEAT_S`` queues nothing more (one click queued two runs on a loaded machine);
    later, or with other settings, Start queues another run."""
    from dashboard.ui import train

    monkeypatch.setattr(train, "REPEAT_S", 60.0)  # an AppTest run may take a second here
    at = _set_inputs(open_page(), **TINY_INPUTS)
    button(at, "Start training").click().run()
    first = at.query_params["run"]
    button(at, "Start training").click().run()  # the same click, seen again
    assert [r["run_id"] for r in get_manager().store.list_runs()] == [first]
    assert at.query_params["run"] == first and not at.exception
    at.number_input(key="train.bsq_epochs").set_value(3).run()
    button(at, "Start training").click().run()  # other settings: a new run
    monkeypatch.setattr(train, "REPEAT_S", 0.0)
    button(at, "Start training").click().run()  # the same settings, but not right after
    runs = get_manager().store.list_runs()
    assert len(runs) == 3 and at.query_params["run"] == runs[0]["run_id"]
    for run in runs:
        get_manager().wait(run["run_id"], 120)

"""Learn page (AppTest): every step renders, the bits of a hand-picked value, URL state."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest_helpers import (
    chart_titles,
    make_run,
    open_page,
    page_text,
    train_run,
)

from bsq_engine.runs.store import RunStore

PAGE = "pages/learn.py"


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_step_one_shows_the_bits_of_a_hand_picked_value(bsq_home):
    at = open_page(PAGE)
    assert not at.exception
    # 0.6 at 3 bits: q = round(0.6 * 7) = 4 = 0b100, Q = 4/7
    assert _metric(at, "Magnitude bits") == "100"
    assert _metric(at, "Integer q") == "4"
    assert _metric(at, "Reconstruction Q_n(v)") == "+0.5714"
    assert any(r"\frac{4}{7}" in latex.value for latex in at.latex)
    at.number_input(key="learn-v").set_value(-0.3)
    at.slider(key="learn-n").set_value(4).run()
    # -0.3 at 4 bits: round(0.3 * 15) = round(4.5) = 4 (half to even) = 0b0100, neg plane
    assert _metric(at, "Magnitude bits") == "0100"
    assert _metric(at, "Reconstruction Q_n(v)") == "-0.2667"
    assert at.query_params["step"] in ("1", ["1"])


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
def test_every_step_renders_without_runs(bsq_home, step):
    at = open_page(PAGE, step=str(step))
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key="learn-step").value == step
    if step == 2:
        assert at.selectbox(key="learn-layer").options == ["fc1", "fc2", "fc3"]
        assert "freshly initialised" in page_text(at)
    if step == 3:
        assert "Group norm and density per plane" in chart_titles(at)
        assert len(at.dataframe) == 2  # per-plane penalties, per-layer reweighing


@pytest.mark.slow  # trains for seconds
def test_steps_use_a_real_finished_run(bsq_home):
    run_id = train_run(bsq_home, alpha=0.3)
    for step in (2, 3):
        at = open_page(PAGE, step=str(step), run=run_id)
        assert not at.exception, [e.value for e in at.exception]
        assert f"the final model of run **{run_id}**" in page_text(at)
        at.selectbox(key="learn-layer").set_value("fc2").run()
        assert not at.exception
    at = open_page(PAGE, step="4", run=run_id)
    assert not at.exception
    assert {"Bit-plane density", "Bits per layer"} <= set(chart_titles(at))
    frames = at.select_slider(key="learn-frame").options
    assert frames == ["bsq 1", "bsq 2", "finetune 1"]  # snapshots from the BSQ stage on


def test_replay_lists_the_events_of_an_epoch_and_plays(bsq_home):
    store = RunStore(bsq_home)
    run_id = make_run(store, name="replayed", alpha=0.2, bits=(4, 3, 5))
    at = open_page(PAGE, step="4", run=run_id)
    slider = at.select_slider(key="learn-frame")
    assert slider.options == ["bsq 1", "bsq 2", "finetune 1"]
    first = slider.value  # global epoch 2 (after one pretrain epoch)
    assert "No precision change at this epoch" in page_text(at)
    at.select_slider(key="learn-frame").set_value(first + 1).run()  # bsq 2: re-quantization
    assert "fc1: 8 -> 4 bits" in page_text(at)
    at.select_slider(key="learn-frame").set_value(first).run()
    next(b for b in at.button if b.label == "Play").click().run()
    at.run()  # AppTest never fires run_every: each run of the player advances one frame
    assert not at.exception
    assert at.select_slider(key="learn-frame").value > first


def test_presentation_mode_is_kept_in_the_url(bsq_home):
    at = open_page(PAGE, present="1", step="3")
    assert not at.exception
    assert at.toggle(key="learn-present").value is True
    assert any("font-size" in h.proto.body for h in at.html)
    assert not [s for s in at.slider if s.key == "learn-crop"]  # advanced controls hidden
    at.toggle(key="learn-present").set_value(False).run()
    assert "present" not in at.query_params


def test_presentation_mode_hides_the_run_picker(bsq_home):
    run_id = make_run(RunStore(bsq_home), name="shown", alpha=0.2)
    at = open_page(PAGE, present="1", step="2", run=run_id)
    assert not at.exception
    assert [s.label for s in at.selectbox] == ["Layer"]
    at = open_page(PAGE, step="2", run=run_id)
    assert at.selectbox(key="learn-run-model").value == run_id


def test_try_it_starts_a_run_through_the_job_manager(bsq_home):
    at = open_page(PAGE, step="5")
    next(b for b in at.button if b.label == "Start the run").click().run()
    assert not at.exception
    runs = RunStore(bsq_home).list_runs()
    assert len(runs) == 1 and runs[0]["name"].startswith("lesson α=")
    assert at.query_params["run"] in (runs[0]["run_id"], [runs[0]["run_id"]])


def test_try_it_records_the_session_owner(bsq_home):
    at = open_page(PAGE, step="5", user="ada")
    next(b for b in at.button if b.label == "Start the run").click().run()
    [run] = RunStore(bsq_home).list_runs()
    assert run["owner"] == "ada"  # so the student can stop their own lesson run


def _finished_pair(store: RunStore, accs: tuple[float, float]) -> list[str]:
    ids = []
    for acc, method in zip(accs, ({"method": "uniform", "uniform_bits": 2},
                                  {"method": "hawq", "avg_bits": 2.0})):  # fmt: skip
        run_id = make_run(store, status="running", accuracy=acc, **method)
        store.finish(run_id, {"accuracy": acc, "compression": 16.0, "test_size": 10000,
                              "avg_bits": 2.0, "layers": []})  # fmt: skip
        ids.append(run_id)
    return ids


def test_headroom_pair_compares_the_students_two_runs(bsq_home):
    store = RunStore(bsq_home)
    pair = _finished_pair(store, (0.818, 0.843))
    make_run(store, name="someone else's", accuracy=0.99)  # never shown in step 5
    at = _with_state(open_page(PAGE, step="5"), {"learn-pair-runs": pair})
    at.segmented_control(key="learn-try-demo").set_value("headroom").run()
    assert not at.exception
    text = page_text(at)
    assert "HAWQ-style (hessian) at 2 avg bits is ahead by 2.50 points" in text
    assert "someone else's" not in text
    [bench_line] = [t.value for t in at.text if t.value.startswith("Measured by the bench")]
    assert "HAWQ-style (hessian) at 2 avg bits vs uniform 2-bit" in bench_line


def test_headroom_pair_says_tied_within_noise(bsq_home):
    pair = _finished_pair(RunStore(bsq_home), (0.818, 0.823))
    at = _with_state(open_page(PAGE, step="5"), {"learn-pair-runs": pair})
    at.segmented_control(key="learn-try-demo").set_value("headroom").run()
    assert "Tied: 0.50 points apart" in page_text(at)


def _with_state(at, state: dict):
    for key, value in state.items():
        at.session_state[key] = value
    return at


def test_headroom_pair_without_fashion_mnist_says_how_to_get_it(bsq_home, monkeypatch):
    from bsq_engine.data import sources

    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (), "mnist": ()})
    monkeypatch.setenv("HOME", str(bsq_home))  # no download folder either
    at = open_page(PAGE, step="5")
    at.segmented_control(key="learn-try-demo").set_value("headroom").run()
    assert not at.exception
    assert any("dataset-fashion-mnist" in i.value for i in at.info)
    assert not [b for b in at.button if b.label == "Start both runs"]


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="needs apt-get install dataset-fashion-mnist",
)
def test_headroom_pair_starts_both_runs_for_this_student(bsq_home):
    at = open_page(PAGE, step="5", user="ada")
    at.segmented_control(key="learn-try-demo").set_value("headroom").run()
    next(b for b in at.button if b.label == "Start both runs").click().run()
    assert not at.exception
    runs = RunStore(bsq_home).list_runs()
    assert sorted(r["config"]["method"] for r in runs) == ["hawq", "uniform"]
    assert {(r["model"], r["dataset"], r["owner"]) for r in runs} == {
        ("dsnet", "fashion_mnist", "ada")
    }
    assert sorted(at.session_state["learn-pair-runs"]) == sorted(r["run_id"] for r in runs)

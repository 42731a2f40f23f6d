"""Pure views behind the daily-use features: run colours, lesson defaults, curve options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.views import colors, curves, lesson_runs


def test_colours_follow_creation_order_and_are_stable_across_subsets():
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(12)], "created_at": range(12)})
    every = colors.run_colors(runs)
    assert every["r0"] == every["r10"] == colors.PALETTE[0]  # the palette cycles
    assert len({every[f"r{i}"] for i in range(10)}) == 10  # ten neighbours never share one
    assert colors.run_colors(runs, ["r7", "r3"]) == {"r7": every["r7"], "r3": every["r3"]}
    assert colors.run_color(runs, "gone") == colors.PALETTE[-1]


def _run(run_id, method="bsq", bits=(8, 8), start=8):
    return {"run_id": run_id, "method": method, "config": {"n_bits": start}, "name": run_id,
            "model": "mlp", "dataset": "digits",
            "summary": {"layers": [{"n_bits": b} for b in bits]}}  # fmt: skip


def test_lesson_prefers_bsq_runs_that_dropped_planes():
    newest_first = [_run("uniform", "uniform", (4, 4)), _run("flat"), _run("dropped", bits=(3, 8)),
                    _run("older-dropped", bits=(5, 5))]  # fmt: skip
    assert lesson_runs.lesson_order(newest_first) == ["dropped", "older-dropped", "flat",
                                                      "uniform"]  # fmt: skip
    assert lesson_runs.dropped_planes(newest_first[0]) == 0  # uniform: 4 < 8 is not a drop
    assert "uniform baseline" in lesson_runs.lesson_label(newest_first[0])
    assert "5 plane(s) dropped" in lesson_runs.lesson_label(newest_first[2])


def test_ema_matches_tensorboard_smoothing():
    values = [1.0, 2.0, float("nan"), 4.0]
    out = curves.ema(values, 0.5)
    assert out[0] == 1.0 and np.isnan(out[2])
    assert out[1] == pytest.approx((0.25 * 1 + 0.5 * 2) / 0.75)  # debiased
    assert out[3] == pytest.approx((0.125 * 1 + 0.25 * 2 + 0.5 * 4) / 0.875)


def test_wall_clock_and_options():
    epochs = pd.DataFrame({"global_epoch": [1, 2, 3], "seconds": [1.5, None, 2.0]})
    assert curves.with_wall_clock(epochs)["wall"].tolist() == [1.5, 1.5, 3.5]
    with pytest.raises(ValueError, match="smoothing must be in"):
        curves.CurveOptions(smoothing=1.0)
    with pytest.raises(ValueError, match="x must be one of"):
        curves.CurveOptions(x="minutes")


def test_step_chart_layers_raw_and_smoothed():
    steps = [{"step": i, "stage": "bsq", "epoch": 1, "loss": 1 / i, "time": 100.0 + i}
             for i in range(1, 30)]  # fmt: skip
    frame = curves.step_frame(steps)
    assert frame["wall"].iloc[0] == 0.0 and frame["wall"].iloc[-1] == 28.0
    spec = curves.step_chart(frame, curves.CurveOptions("wall", 0.6, log_y=True)).to_dict()
    assert len(spec["layer"]) == 2
    assert spec["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"
    assert spec["layer"][0]["encoding"]["x"]["field"] == "wall"


def test_epoch_curves_take_options_and_keep_whole_epochs():
    from dashboard.views import charts

    epochs = pd.DataFrame({
        "global_epoch": [1, 2, 3, 4], "stage": ["pretrain", "pretrain", "bsq", "bsq"],
        "train_loss": [2.0, 1.0, 1.5, 0.5], "test_loss": [2.1, 1.1, 1.6, 0.6],
        "seconds": [1.0, 1.0, 2.0, 2.0],
    })  # fmt: skip
    spec = charts.loss_chart(epochs).to_dict()
    assert spec["layer"][0]["encoding"]["x"]["axis"]["tickMinStep"] == 1
    wall = charts.loss_chart(epochs, curves.CurveOptions("wall", 0.5, log_y=True)).to_dict()
    raw, smoothed = wall["layer"][:2]
    assert raw["encoding"]["x"]["field"] == "wall" and raw["mark"]["opacity"] == 0.3
    assert smoothed["encoding"]["y"]["field"] == "smoothed"
    assert raw["encoding"]["y"]["scale"]["type"] == "log"
    starts = charts._stage_starts(curves.with_wall_clock(epochs), "wall")
    assert starts["x"].tolist() == [2.0] and starts["stage"].tolist() == ["bsq"]


def test_uniform_planes_sit_at_their_place_values():
    from dashboard.ui.accessors import RunView
    from dashboard.views import frames

    row = {"name": "fc1", "n_bits": 4, "n_weights": 10, "density": [0.5] * 4, "stage": "qat",
           "group_norm": [1.0] * 4, "msb_offset": 0, "global_epoch": 3, "epoch": 1}  # fmt: skip
    config = {"uniform_bits": 4, "max_bits": 8}
    view = RunView(run={"run_id": "u", "method": "uniform", "status": "finished",
                        "config": config}, epochs=frames.epochs_frame([]),
                   layers=frames.layers_frame([row]))  # fmt: skip
    assert view.max_bits == 4  # its own grid: b3..b0, no "dropped" cells
    placed = view.layers_in_grid(8)  # next to an 8-bit BSQ run: the LSB end
    assert frames.planes_long(placed, 8)["plane"].tolist() == ["b3", "b2", "b1", "b0"]
    bsq = RunView(run={"run_id": "b", "method": "bsq", "status": "finished", "config": config},
                  epochs=frames.epochs_frame([]), layers=frames.layers_frame([row]))  # fmt: skip
    assert bsq.max_bits == 8 and bsq.layers_in_grid(8)["msb_offset"].tolist() == [0]

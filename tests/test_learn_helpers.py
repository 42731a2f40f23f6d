"""Pure helpers of the Learn page and the Pareto page, on hand-picked values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from torch import nn

from bsq_engine.core.quantize import prepare_bsq, prepare_uniform, quantized_layers, requantize_
from dashboard.ui import accessors
from dashboard.views import learn
from dashboard.views import pareto as pp
from dashboard.views.frames import layers_frame, runs_frame, snapshot_at


@pytest.mark.parametrize(
    ("value", "n_bits", "q", "binary", "positive"),
    [(0.6, 3, 4, "100", True), (-0.3, 4, 4, "0100", False), (1.0, 2, 3, "11", True),
     (0.0, 3, 0, "000", False), (-1.0, 1, 1, "1", False)],
)  # fmt: skip
def test_value_bits_hand_picked(value, n_bits, q, binary, positive):
    vb = learn.value_bits(value, n_bits)
    assert (vb.q, vb.binary) == (q, binary)
    bits = [int(c) for c in binary]
    assert (vb.pos, vb.neg) == ((bits, [0] * n_bits) if positive else ([0] * n_bits, bits))
    levels = 2**n_bits - 1
    assert vb.reconstruction == pytest.approx(math.copysign(q / levels, value) if q else 0.0)
    assert abs(vb.error) <= vb.step / 2 + 1e-12
    assert vb.place == pytest.approx([2 ** (n_bits - 1 - b) / levels for b in range(n_bits)])


def test_value_bits_clamps_and_rejects_zero_bits():
    assert learn.value_bits(3.0, 2).reconstruction == 1.0
    with pytest.raises(ValueError, match="n_bits"):
        learn.value_bits(0.5, 0)


def test_plane_label():
    assert [learn.plane_label(b, 3) for b in range(3)] == ["b2 (MSB)", "b1", "b0 (LSB)"]


def _conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 3))


def test_layer_planes_of_a_conv_reshape_crop_and_density():
    model = prepare_bsq(_conv_model())
    name, layer = quantized_layers(model)[0]
    planes = learn.layer_planes(name, layer, max_side=5)
    assert planes.n_bits == 8 and planes.shape == (4, 2, 3, 3)
    assert planes.pos.shape == (8, 4, 5)  # (n, out, min(in*kh*kw, 5))
    assert set(np.unique(planes.pos)) <= {0.0, 1.0}
    assert not np.any(planes.pos * planes.neg)  # a weight's bits are in one plane only
    ones = (layer.pos_planes + layer.neg_planes).reshape(-1, 8).mean(0)
    assert planes.density == pytest.approx(ones.tolist())
    assert planes.density[0] > 0  # the largest weight sets the scale: its MSB is 1


def test_layer_planes_of_fixed_and_pruned_layers():
    model = prepare_uniform(_conv_model(), bits=3)
    name, layer = quantized_layers(model)[1]
    assert learn.layer_planes(name, layer).n_bits == 3
    bsq = prepare_bsq(nn.Sequential(nn.Linear(3, 2)))
    with torch.no_grad():
        bsq[0].pos_planes.zero_()
        bsq[0].neg_planes.zero_()
    requantize_(bsq)
    assert learn.layer_planes("0", bsq[0]).n_bits == 0


def test_reweigh_table_factors():
    model = prepare_bsq(nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2)))
    table = learn.reweigh_table(model)
    assert table["N_l"].tolist() == [100, 20]
    assert table["factor"].tolist() == pytest.approx([100 * 8 / 120, 20 * 8 / 120])
    assert table["memory share"].sum() == pytest.approx(1.0)


def test_penalty_table_sparse_planes_get_larger_pushes():
    empty = np.zeros((2, 1, 1))
    planes = learn.LayerPlanes("l", 2, (100,), empty, empty, density=[0.04, 0.64],
                               group_norm=[2.0, 8.0], n_weights=100)  # fmt: skip
    table = learn.penalty_table(planes, alpha=0.5, factor=2.0)
    assert table["ones"].tolist() == [4, 64]
    assert table["alpha * factor * norm"].tolist() == pytest.approx([2.0, 8.0])
    assert table["push per one"].tolist() == pytest.approx([0.5, 0.125])


def test_replay_frames_snapshots_and_events():
    epochs = (("bsq", 1, 3), ("bsq", 2, 4), ("finetune", 1, 5))
    rows = [{"stage": s, "epoch": e, "global_epoch": g, "name": n, "n_bits": 4, "n_weights": 9,
             "density": [0.5] * 4, "group_norm": [1.0] * 4, "msb_offset": 4}
            for s, e, g in epochs for n in "ab"]  # fmt: skip
    df = layers_frame(rows)
    assert learn.replay_frames(df) == [3, 4, 5]
    snap = snapshot_at(df, 4)
    assert snap["name"].tolist() == ["a", "b"]
    events = [{"stage": "bsq", "epoch": 2, "layer": "a"}, {"stage": "bsq", "epoch": 1}]
    assert learn.epoch_events(events, snap) == [events[0]]
    assert learn.replay_frames(layers_frame([])) == []


def test_lesson_model_is_converted(tmp_path):
    model, source = accessors.lesson_model("mlp", tmp_path)
    assert [n for n, _ in quantized_layers(model)] == ["fc1", "fc2", "fc3"]
    assert "untrained" in source


def _runs(*rows) -> pd.DataFrame:
    return runs_frame(
        {"run_id": rid, "name": rid, "status": status, "method": method, "model": model,
         "dataset": "digits", "alpha": 0.1, "accuracy": acc, "avg_bits": bits,
         "compression": None if bits is None else 32 / bits}
        for rid, status, method, model, acc, bits in rows
    )  # fmt: skip


def test_pair_options_most_finished_first():
    runs = _runs(("a", "finished", "bsq", "mlp", 0.9, 4), ("b", "running", "bsq", "lenet5", 0, 8),
                 ("c", "finished", "bsq", "lenet5", 0.9, 4),
                 ("d", "finished", "bsq", "lenet5", 0.9, 3))  # fmt: skip
    pairs = pp.pair_options(runs)
    assert pairs[["model", "finished", "total"]].values.tolist() == [["lenet5", 2, 3],
                                                                     ["mlp", 1, 1]]  # fmt: skip


def test_chart_runs_places_running_runs_from_the_snapshot():
    runs = _runs(("a", "finished", "uniform", "mlp", 0.9, 4), ("b", "running", "bsq", "mlp", None,
                 None), ("c", "failed", "bsq", "mlp", 0.5, 2))  # fmt: skip
    snap = {"epochs": [{"test_acc": 0.7, "avg_bits": 4.0, "compression": 8.0},
                       {"test_acc": 0.8, "avg_bits": None, "compression": None}]}  # fmt: skip
    df = pp.chart_runs(runs, {"b": snap})
    assert df["run_id"].tolist() == ["a", "b"]  # failed runs are not points
    assert np.isnan(df["alpha"][0])  # uniform: no alpha
    assert df.loc[1, ["accuracy_pct", "avg_bits", "compression"]].tolist() == [80.0, 4.0, 8.0]


def test_references_split_and_marks():
    refs = accessors.load_references()
    points, lines = pp.split_references(refs, "resnet20", "cifar10")
    assert points.empty and len(lines) == 3
    assert lines["accuracy"].isna().sum() == 2  # the spec gives no BSQ/HAWQ accuracy
    fig = pp.add_published_marks(go.Figure(), lines, "compression")
    texts = [a.text for a in fig.layout.annotations]
    assert "published: BSQ α=5e-3 14.24x" in texts and "published: HAWQ 13.11x" in texts
    assert any("92.5%" in t for t in texts)
    assert pp.split_references(refs, "mlp", "digits")[1].empty


def test_label_points_names_runs():
    running = go.Scatter(name="running", customdata=["b"], text=["running"])
    fig = go.Figure([go.Scatter(name="BSQ", customdata=["a"]), running, go.Scatter(name="x")])
    runs = pd.DataFrame({"run_id": ["a", "b"], "name": ["α=0.1", "live"]})
    pp.label_points(fig, runs)
    assert fig.data[0].text == ("α=0.1",) and fig.data[0].mode == "markers+text"
    assert fig.data[1].text == ("live (running)",)
    assert fig.data[2].text is None


def test_selected_run_id():
    event = {"selection": {"points": [{"x": 1}, {"customdata": "r1"}]}}
    assert pp.selected_run_id(event) == "r1"
    assert pp.selected_run_id({"selection": {"points": [{"customdata": ["r2"]}]}}) == "r2"
    assert pp.selected_run_id(None) is None

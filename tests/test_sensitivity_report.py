"""Per-layer sensitivity of a run: the measurement on a model whose sensitivities are known
by construction, the rank verdict, the JSON cache in the run folder (damaged files, no float
model, the checkpoint fallback) and ``python -m bsq_engine sensitivity``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from apptest_helpers import make_run, train_run
from torch import nn

from bsq_engine.cli import main as cli
from bsq_engine.runs import sensitivity_cache
from bsq_engine.runs.paths import cache_dir, sensitivity_path
from bsq_engine.runs.store import RunStore
from bsq_engine.training.checkpoint import CheckpointError
from bsq_engine.training.config import RunConfig
from bsq_engine.training.float_cache import FloatCache
from bsq_engine.training.run_model import build_model, shape_of
from bsq_engine.training.sensitivity_report import (
    agreement_sentence,
    measure_model,
    rank_agreement,
)


class _TwoGains(nn.Module):
    """``logits = 2 * a(x) + 0.05 * b(x)``: ``a`` and ``b`` start from the same weights, so
    the loss is (2 / 0.05)^2 = 1600 times as curved along ``a``'s weights as along ``b``'s,
    and quantizing ``a`` moves the logits 40 times as much."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(8, 4), nn.Linear(8, 4)
        with torch.no_grad():
            self.a.weight.normal_(0, 0.3)
            self.b.weight.copy_(self.a.weight)

    def forward(self, x):
        return 2 * self.a(x) + 0.05 * self.b(x)


def _batches(model, n=4, size=128, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(size, 8, generator=generator)
        with torch.no_grad():
            y = model(x).argmax(1)  # the model's own answers: 100% accurate in float
        out.append((x, y))
    return out


def test_a_layer_with_a_large_gain_is_the_sensitive_one():
    model = _TwoGains()
    result = measure_model(model, ["a", "b"], _batches(model), _batches(model, seed=1),
                           hutchinson_samples=16)  # fmt: skip
    a, b = result["layers"]
    assert (a["name"], b["name"]) == ("a", "b")
    assert result["base"]["accuracy"] == 1.0
    assert a["trace"] > 100 * b["trace"] > 0  # exact ratio 1600, Hutchinson is noisy
    for bits in ("1", "2", "4"):  # at 4 bits the loss may even fall: compare the change
        assert abs(a["loss_increase"][bits]) > abs(b["loss_increase"][bits])
        assert a["accuracy_drop_points"][bits] >= b["accuracy_drop_points"][bits]
    assert a["accuracy_drop_points"]["1"] > 5  # a 1-bit layer with gain 2 changes answers
    assert a["loss_increase"]["1"] > a["loss_increase"]["4"]  # fewer bits, larger cost
    assert a["trace_per_weight"] == pytest.approx(a["trace"] / 32)
    assert torch.equal(model.a.weight, model.b.weight)  # weights put back after each probe


def test_rank_verdict_sentences():
    layers = [{"trace_per_weight": t} for t in (0.1, 5.0, 2.0, 9.0)]
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert "follow sensitivity" in agreement_sentence(layers, [2, 6, 4, 8], "BSQ's")
    assert "+1.00" in agreement_sentence(layers, [2, 6, 4, 8], "BSQ's")
    assert "go against" in agreement_sentence(layers, [8, 2, 4, 1], "BSQ's")
    assert "same bits" in agreement_sentence(layers, [4, 4, 4, 4], "this run's")
    assert "Too few layers" in agreement_sentence(layers[:3], [2, 6, 4], "BSQ's")
    assert "No bits" in agreement_sentence(layers, None, "BSQ's")


def _run_with_float_model(home) -> tuple[RunStore, str]:
    """A finished MLP run written through the store (bits 4-3-5), and its float model in the
    store's float cache, as pretraining would leave it: no training needed."""
    store = RunStore(home)
    run_id = make_run(store, bits=(4, 3, 5))
    config = RunConfig.from_dict(store.get_run(run_id)["config"])
    model = build_model(config, shape_of(config))
    FloatCache(cache_dir(home)).save(config, model, 0.1, [{}] * config.pretrain_epochs)
    return store, run_id


def test_measured_once_then_read_from_the_run_folder(bsq_home, monkeypatch):
    store, run_id = _run_with_float_model(bsq_home)
    assert sensitivity_cache.cached_sensitivity(store, run_id) == (None, None)
    first = sensitivity_cache.sensitivity_of(store, run_id)
    assert [layer["name"] for layer in first["layers"]] == ["fc1", "fc2", "fc3"]
    assert first["bits"] == [4, 3, 5] and first["bits_whose"] == "BSQ's"
    assert first["source"] == "float_cache" and first["bit_widths"] == [1, 2, 4]
    stored = json.loads(sensitivity_path(store, run_id).read_text())
    assert "bits" not in stored  # bits are read from the run each time, never cached

    def no_second_measurement(*_):
        raise AssertionError("measured again")

    monkeypatch.setattr(sensitivity_cache, "measure_run", no_second_measurement)
    again = sensitivity_cache.sensitivity_of(store, run_id)
    assert again["measured_at"] == first["measured_at"]
    assert sensitivity_cache.cached_sensitivity(store, run_id)[0]["layers"] == first["layers"]


@pytest.mark.parametrize("damage", ["{not json", '{"format": 1, "layers": []}', "NaN"])
def test_a_damaged_file_is_kept_aside_and_measured_again(bsq_home, damage):
    store, run_id = _run_with_float_model(bsq_home)
    path = sensitivity_path(store, run_id)
    path.write_text(damage)
    result, note = sensitivity_cache.cached_sensitivity(store, run_id)
    assert result is None and "damaged" in note and "measure again" in note
    fresh = sensitivity_cache.sensitivity_of(store, run_id)
    assert "kept as sensitivity.json.damaged" in fresh["note"]
    assert path.with_name("sensitivity.json.damaged").read_text() == damage  # nothing lost
    assert json.loads(path.read_text())["format"] == sensitivity_cache.FORMAT


_CORRUPTIONS = {
    "a layer is not an object": lambda doc: doc["layers"].__setitem__(0, 1),
    "costs are a list": lambda doc: doc["layers"][0].__setitem__("loss_increase", [1]),
    "a trace is text": lambda doc: doc["layers"][1].__setitem__("trace", "x"),
    "no float accuracy": lambda doc: doc.pop("base"),
    "no bit widths": lambda doc: doc.__setitem__("bit_widths", []),
}


def test_every_damaged_field_is_caught_before_a_page_reads_it(bsq_home):
    store, run_id = _run_with_float_model(bsq_home)
    sensitivity_cache.sensitivity_of(store, run_id)
    path = sensitivity_path(store, run_id)
    good = path.read_text()
    for what, corrupt in _CORRUPTIONS.items():
        doc = json.loads(good)
        corrupt(doc)
        path.write_text(json.dumps(doc))
        result, note = sensitivity_cache.cached_sensitivity(store, run_id)
        assert result is None and "damaged" in note, what


def test_a_run_without_any_float_model_says_what_to_do(bsq_home):
    store = RunStore(bsq_home)
    run_id = make_run(store)  # no float cache entry, no checkpoint
    with pytest.raises(CheckpointError, match="no float model to measure"):
        sensitivity_cache.sensitivity_of(store, run_id)
    assert not sensitivity_path(store, run_id).exists()


@pytest.mark.slow  # trains a tiny run (seconds)
def test_without_the_float_cache_the_final_model_is_turned_back_into_float(bsq_home):
    run_id = train_run(bsq_home, alpha=0.3)
    shutil.rmtree(cache_dir(bsq_home))
    with RunStore(bsq_home) as store:
        result = sensitivity_cache.sensitivity_of(store, run_id)
        bits = [layer["n_bits"] for layer in store.get_run(run_id)["summary"]["layers"]]
    assert result["source"] == "final_checkpoint" and "grid" in result["source_note"]
    assert result["bits"] == bits


def test_cli_prints_the_table_and_json(bsq_home, capsys):
    _, run_id = _run_with_float_model(bsq_home)
    assert cli.main(["sensitivity", run_id]) == 0
    out = capsys.readouterr().out
    assert "fc1" in out and "acc drop 1b" in out and "Too few layers" in out
    assert cli.main(["sensitivity", run_id, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["bits"] == [4, 3, 5] and doc["agreement"].startswith("Too few layers")


def test_cli_bad_run_id_exits_2_with_one_line(bsq_home, capsys):
    assert cli.main(["sensitivity", "no-such-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No run 'no-such-run'" in err

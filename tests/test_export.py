"""Export: a rebuilt model that scores exactly like its run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from bsq_engine.core.quantize import quantized_layers
from bsq_engine.data import load_dataset
from bsq_engine.runs.export import export_run, load_quantized, load_run_model
from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.store import RunNotFound, RunStore
from bsq_engine.training.checkpoint import CheckpointError
from bsq_engine.training.presets import make_config

TINY = dict(pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
            max_train=256)  # fmt: skip


# ---------------------------------------------------------------- exporting runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished BSQ run (4 bits at conversion) and a finished uniform 3-bit run."""
    store = RunStore(tmp_path_factory.mktemp("export_store"))
    ids = {}
    for method, extra in (("bsq", {"n_bits": 4}), ("uniform", {"uniform_bits": 3})):
        config = make_config(method=method, **TINY, **extra)
        run_id = store.create_run(config.to_dict())
        assert execute_run(store, run_id)["status"] == "finished"
        ids[method] = run_id
    return store, ids


def _accuracy(model: torch.nn.Module, dataset: str = "digits") -> float:
    """The trainer's evaluation: same test split, same batches of 1024."""
    data = load_dataset(dataset)
    correct = 0
    with torch.no_grad():
        for xb, yb in data.test_loader(1024):
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / len(data.test_y)


@pytest.mark.parametrize("method", ["bsq", "uniform"])
def test_export_writes_every_file(runs, method, tmp_path):
    store, ids = runs
    result = export_run(store, ids[method], tmp_path / "out")
    for kind in ("scheme", "metrics", "layers", "quantized", "float", "export"):
        assert Path(result["files"][kind]).is_file(), kind
    written = json.loads((tmp_path / "out" / "export.json").read_text())
    assert written["quantized_bytes"] == result["quantized_bytes"]
    scheme = json.loads((tmp_path / "out" / "scheme.json").read_text())
    run = store.get_run(ids[method])
    assert scheme["accuracy"] == run["accuracy"]
    assert scheme["avg_bits"] == pytest.approx(run["avg_bits"])
    assert scheme["compression"] == pytest.approx(32 / scheme["avg_bits"])
    assert "sign" in scheme["counting_convention"]
    assert [layer["name"] for layer in scheme["layers"]] == ["fc1", "fc2", "fc3"]
    assert all(layer["scale"] > 0 and layer["shape"] for layer in scheme["layers"])
    with open(tmp_path / "out" / "metrics.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(store.epochs(ids[method])) == 4
    with open(tmp_path / "out" / "layers.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["n_bits"]) for r in rows] == [layer["n_bits"] for layer in scheme["layers"]]


@pytest.mark.parametrize("method", ["bsq", "uniform"])
def test_rebuilt_model_scores_exactly_the_runs_accuracy(runs, method, tmp_path):
    store, ids = runs
    result = export_run(store, ids[method], tmp_path)
    rebuilt = load_quantized(result["files"]["quantized"])
    assert _accuracy(rebuilt) == store.get_run(ids[method])["accuracy"]
    original, _, _ = load_run_model(store, ids[method])
    for (name, a), (_, b) in zip(quantized_layers(original), quantized_layers(rebuilt)):
        assert a.n_bits == b.n_bits, name
        assert torch.equal(a.effective_weight(), b.effective_weight()), name


@pytest.mark.parametrize("method", ["bsq", "uniform"])
def test_quantized_file_is_smaller_than_float(runs, method, tmp_path):
    store, ids = runs
    assert store.get_run(ids[method])["avg_bits"] < 8
    result = export_run(store, ids[method], tmp_path)
    assert result["quantized_bytes"] < result["float_bytes"]
    assert result["size_ratio"] == pytest.approx(result["float_bytes"] / result["quantized_bytes"])
    assert result["size_ratio"] > 3  # <= 4 bits + sign vs 32 bits, plus a little metadata


def test_export_needs_a_finished_run(runs, tmp_path):
    store, _ = runs
    with pytest.raises(RunNotFound):
        export_run(store, "no-such-run", tmp_path)
    queued = store.create_run(make_config(**TINY).to_dict())
    with pytest.raises(CheckpointError, match="No checkpoint"):
        export_run(store, queued, tmp_path)
    with pytest.raises(CheckpointError, match=r"not a readable|No export"):
        load_quantized(tmp_path / "missing.safetensors")

"""Atomic, pickle-free checkpoints (safetensors + JSON metadata)."""

from __future__ import annotations

import ast
import inspect
import random

import pytest
import torch
from safetensors.torch import save_file

from bsq_engine.training import checkpoint
from bsq_engine.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_tensors,
    save_checkpoint,
)

_META = {"stage": "bsq", "epoch": 3, "layers": {"fc1": {"n_bits": 5}}, "alpha": 5e-3}


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "model.fc1.pos_planes": torch.rand(4, 3, 5),
        "model.fc1.scale": torch.tensor(0.25),
        "model.bn.num_batches_tracked": torch.tensor(7),
        "model.view": torch.arange(12.0).reshape(3, 4).t(),  # non-contiguous is fine
    }


def test_round_trip(tmp_path):
    tensors = _tensors()
    path = save_checkpoint(tmp_path / "sub" / "run.safetensors", tensors, _META)
    assert path.is_file()
    loaded, meta = load_checkpoint(path)
    assert meta == _META
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value)
    assert [p.name for p in path.parent.iterdir()] == ["run.safetensors"]  # no temp left


def test_overwrite_replaces_previous(tmp_path):
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, _tensors(), _META)
    save_checkpoint(path, {"x": torch.ones(2)}, {"stage": "done"})
    tensors, meta = load_checkpoint(path)
    assert list(tensors) == ["x"] and meta == {"stage": "done"}


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, _tensors(), _META)
    shared = torch.ones(3)
    with pytest.raises(RuntimeError):  # safetensors refuses tensors sharing memory
        save_checkpoint(path, {"a": shared, "b": shared}, {"stage": "x"})
    _, meta = load_checkpoint(path)
    assert meta == _META
    assert [p.name for p in tmp_path.iterdir()] == ["run.safetensors"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "nope.safetensors")


def _assert_helpful(error: CheckpointError, path) -> None:
    text = str(error)
    assert str(path) in text
    assert "corrupt or truncated" in text and "Resume from an earlier checkpoint" in text


@pytest.mark.parametrize("keep", [0.5, 0.1, 8 / 1e9])
def test_truncated_file(tmp_path, keep):
    path = save_checkpoint(tmp_path / "run.safetensors", _tensors(), _META)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    _assert_helpful(info.value, path)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "garbage.safetensors"
    blob = bytes(rng.randrange(256) for _ in range(2048))
    if seed % 2:  # a plausible header length followed by garbage
        blob = (100).to_bytes(8, "little") + blob
    path.write_bytes(blob)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    _assert_helpful(info.value, path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a BSQ Explorer checkpoint"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a BSQ Explorer checkpoint"):
        load_checkpoint(path)


def test_bad_json_metadata(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"bsq_explorer": "{not json"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    _assert_helpful(info.value, path)


def test_optimizer_tensors_keyed_by_parameter_name():
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    names = {p: n for n, p in layer.named_parameters()}
    out = optimizer_tensors(optimizer, names)
    assert set(out) == {"optim.weight", "optim.bias"}
    assert torch.equal(out["optim.weight"], optimizer.state[layer.weight]["momentum_buffer"])


def test_module_never_unpickles():
    """Guard: no pickle import and no torch.load / pickle.load call in the module's code."""
    tree = ast.parse(inspect.getsource(checkpoint))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported |= {alias.name for alias in node.names}
    assert not imported & {"pickle", "dill", "cloudpickle", "joblib"}
    calls = {
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not {c for c in calls if c.endswith(("torch.load", "pickle.load", "pickle.loads"))}
    assert "torch.load(" not in inspect.getsource(checkpoint)

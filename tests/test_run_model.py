"""training.run_model: the one place a run's model is built, fresh or from a checkpoint."""

from __future__ import annotations

import pytest
import torch

from bsq_engine.core.layers import BitLayer, QuantLayer
from bsq_engine.core.quantize import (
    apply_layer_meta_,
    bit_report,
    layer_meta,
    memory_weights,
    scheme_summary,
)
from bsq_engine.data import get_dataset_info
from bsq_engine.models import list_models
from bsq_engine.training.float_cache import FloatCache
from bsq_engine.training.presets import make_config
from bsq_engine.training.run_model import (
    build_model,
    model_from_checkpoint,
    model_shape,
    planned_layers,
    pretrained_model,
    shape_of,
)

SHAPE = model_shape(get_dataset_info("digits"))


def _kinds(model) -> set[type]:
    kinds = set()
    for module in model.modules():
        if isinstance(module, BitLayer):
            kinds.add(BitLayer)
        elif isinstance(module, QuantLayer):
            kinds.add(QuantLayer)
    return kinds


@pytest.mark.parametrize(
    ("method", "stage", "kinds"),
    [
        ("bsq", "pretrain", set()),
        ("bsq", "bsq", {BitLayer}),
        ("bsq", "finetune", {QuantLayer}),
        ("bsq", "done", {QuantLayer}),
        ("uniform", "qat", {QuantLayer}),
        ("uniform", "done", {QuantLayer}),
    ],
)
def test_build_model_has_the_layers_of_its_stage(method, stage, kinds):
    model = build_model(make_config(method=method), SHAPE, stage)
    assert _kinds(model) == kinds


def test_a_fresh_model_is_seeded():
    config = make_config(seed=3)
    a, b = build_model(config, SHAPE), build_model(config, SHAPE)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_checkpoint_round_trip_keeps_bits_and_weights():
    config = make_config()
    model = build_model(config, SHAPE, "bsq")
    first = next(iter(layer_meta(model)))
    apply_layer_meta_(model, {first: {**layer_meta(model)[first], "n_bits": 5}})
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(0, 1)
    tensors = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    meta = {"stage": "bsq", "layers": layer_meta(model)}
    rebuilt = model_from_checkpoint(config, SHAPE, tensors, meta)
    assert layer_meta(rebuilt)[first]["n_bits"] == 5
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(rebuilt(x), model(x))


def test_pretrained_model_comes_from_the_float_cache(tmp_path):
    config = make_config()
    fresh, accuracy = pretrained_model(config, SHAPE, tmp_path)
    assert accuracy is None and not _kinds(fresh)
    with torch.no_grad():
        for param in fresh.parameters():
            param.add_(1.0)
    records = [{"epoch": e + 1} for e in range(config.pretrain_epochs)]
    FloatCache(tmp_path).save(config, fresh, 0.75, records)
    cached, accuracy = pretrained_model(config, SHAPE, tmp_path)
    assert accuracy == 0.75
    assert all(torch.equal(a, b) for a, b in zip(cached.parameters(), fresh.parameters()))


def test_shape_of_a_registered_dataset_needs_no_data():
    assert shape_of(make_config()) == SHAPE == {"in_channels": 1, "num_classes": 10,
                                                  "image_size": 8}  # fmt: skip


def test_memory_weights_sum_to_the_average_bits():
    model = build_model(make_config(), SHAPE, "bsq")
    first = next(iter(layer_meta(model)))
    apply_layer_meta_(model, {first: {**layer_meta(model)[first], "n_bits": 3}})
    layers = scheme_summary(model)["layers"]
    weights = memory_weights(layers)
    total = sum(layer["n_weights"] for layer in layers)
    assert weights == [layer["n_weights"] * layer["n_bits"] / total for layer in layers]
    assert sum(weights) == pytest.approx(scheme_summary(model)["avg_bits"])
    assert memory_weights([]) == []


@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("method", ["bsq", "uniform"])
def test_planned_layers_are_the_layers_the_quantized_stage_reports(model, method):
    """What the panel draws before the first step is what BSQ starts from: same names,
    sizes and starting bits as ``bit_report`` of the run's model in its quantized stage."""
    config = make_config(model, "cifar10" if model.startswith("resnet") else "digits",
                         method=method, uniform_bits=4)  # fmt: skip
    built = bit_report(build_model(config, shape_of(config), config.stages[1]), config.max_bits)
    keys = ("name", "n_bits", "n_weights", "msb_offset", "kind")
    assert planned_layers(config) == [{k: r[k] for k in keys} for r in built]
    assert {r["n_bits"] for r in planned_layers(config)} == {8 if method == "bsq" else 4}

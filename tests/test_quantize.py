"""Layer swapping, re-quantization with precision adjustment, reports (BSQ_METHOD.md 1, 3, 6)."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from bsq_engine.core.functional import int_to_planes, planes_to_int
from bsq_engine.core.layers import ActQuant, BitConv2d, BitLayer, BitLinear, QuantLayer
from bsq_engine.core.quantize import (
    BSQConfig,
    PrecisionEvent,
    apply_layer_meta_,
    bit_report,
    layer_meta,
    prepare_bsq,
    prepare_uniform,
    quantized_layers,
    requantize_,
    scheme_summary,
    to_fixed_,
)
from bsq_engine.models import create_model, get_model_info, list_models

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _shape_for(name: str) -> tuple[int, int]:
    """(in_channels, image_size): colour 8x8 for the CIFAR-sized models (kept small)."""
    return (3, 8) if "cifar10" in get_model_info(name).datasets_hint else (1, 8)


def _count(model: nn.Module, types) -> int:
    return sum(type(m) in types for m in model.modules())


# ---------------------------------------------------------------- prepare


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "resnet18" else n for n in list_models()],
)  # resnet18 (ImageNet size, 11 M weights) takes seconds to convert
def test_prepare_bsq_swaps_every_conv_and_linear(name):
    torch.manual_seed(0)
    in_channels, size = _shape_for(name)
    model = create_model(name, in_channels=in_channels, num_classes=10, image_size=size)
    n_conv, n_fc = _count(model, (nn.Conv2d,)), _count(model, (nn.Linear,))
    n_act = _count(model, (nn.ReLU, nn.ReLU6))
    model = prepare_bsq(model, BSQConfig(n_bits=1, act_bits=4))  # 1 plane: cheap for big nets
    assert _count(model, (nn.Conv2d, nn.Linear)) == 0
    assert _count(model, (BitConv2d,)) == n_conv and _count(model, (BitLinear,)) == n_fc
    assert _count(model, (nn.ReLU, nn.ReLU6)) == 0 and _count(model, (ActQuant,)) == n_act
    x = torch.randn(2, in_channels, size, size)
    logits = model.eval()(x)
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())
    model.train()(x).sum().backward()
    planes = [m.pos_planes.grad for m in model.modules() if isinstance(m, BitLayer)]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in planes)


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", in_channels=3, num_classes=10, image_size=32)


def test_resnet20_float_shortcuts_like_the_reference():
    model = prepare_bsq(_resnet20(), BSQConfig(float_shortcuts=True))
    assert _count(model, (BitConv2d,)) == 19 and _count(model, (BitLinear,)) == 1
    floats = [n for n, m in model.named_modules() if type(m) is nn.Conv2d]
    assert floats == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert [r["name"] for r in scheme_summary(model)["layers"]][-1] == "fc"
    assert len(scheme_summary(model)["layers"]) == 20


def test_resnet20_without_float_shortcuts_quantizes_them_too():
    model = prepare_bsq(_resnet20(), BSQConfig())
    assert _count(model, (BitConv2d,)) == 21 and _count(model, (nn.Conv2d,)) == 0


@pytest.mark.parametrize(
    ("skip", "kept_float"),
    [({"skip_first": True}, ["fc1"]), ({"skip_last": True}, ["fc3"])],
)
def test_skip_first_and_last(skip, kept_float):
    model = create_model("mlp", in_channels=1, num_classes=10, image_size=8)
    model = prepare_bsq(model, BSQConfig(**skip))
    assert [n for n, m in model.named_modules() if type(m) is nn.Linear] == kept_float
    assert len(quantized_layers(model)) == 2


def test_act_bits_none_keeps_relu_modules():
    model = prepare_bsq(create_model("mlp", in_channels=1, num_classes=10, image_size=8))
    assert _count(model, (nn.ReLU,)) == 2 and _count(model, (ActQuant,)) == 0


def test_prepare_bsq_on_a_bare_layer_returns_the_new_layer():
    layer = prepare_bsq(nn.Linear(4, 3), BSQConfig(n_bits=3))
    assert isinstance(layer, BitLinear) and layer.n_bits == 3


def test_prepare_uniform_sets_every_layer_to_k_bits():
    model = prepare_uniform(_resnet20(), 3, BSQConfig(float_shortcuts=True, act_bits=4))
    layers = quantized_layers(model)
    assert len(layers) == 20
    assert all(isinstance(m, QuantLayer) and m.n_bits == 3 for _, m in layers)
    assert scheme_summary(model)["avg_bits"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bits": 9}, "n_bits must be between 1 and max_bits"),
        ({"max_bits": 17, "n_bits": 8}, "max_bits must be between 1 and 16"),
        ({"act_bits": 1}, "act_bits must be None"),
    ],
)
def test_bsq_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BSQConfig(**kwargs)


# ---------------------------------------------------------------- requantize_


def _named_linear(n_in: int = 4, n_out: int = 3, n_bits: int = 8) -> nn.Sequential:
    """``Sequential(fc1=BitLinear)`` so events carry the layer name ``fc1``."""
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(n_in, n_out, bias=False)))
    return prepare_bsq(model, BSQConfig(n_bits=n_bits))


def _set_ints_(layer: BitLayer, signed: torch.Tensor, scale: float) -> None:
    """Exact planes holding the signed integers ``signed`` (shape of the weight)."""
    n_bits = layer.n_bits
    with torch.no_grad():
        layer.pos_planes.copy_(int_to_planes(signed.clamp(min=0), n_bits))
        layer.neg_planes.copy_(int_to_planes((-signed).clamp(min=0), n_bits))
        layer.scale.fill_(scale)


def test_requantize_drops_zero_msb_and_lsb_planes_keeping_weights():
    model = _named_linear()
    layer = model.fc1
    # Even integers below 64: planes 0-1 (128, 64) and plane 7 (1) are zero -> 5 bits.
    signed = torch.tensor([[62, -2, 0, 10], [-34, 4, 6, -62], [32, -8, 16, 2]])
    _set_ints_(layer, signed, 0.37)
    before = layer.effective_weight().detach().clone()
    assert torch.allclose(before, 0.37 * signed / 255)
    events = requantize_(model, 8, stage="bsq", epoch=3)
    assert layer.n_bits == 5 and layer.reported_bits == 5 and not layer.pruned
    assert len(events) == 1
    event = events[0]
    assert (event.layer, event.old_bits, event.new_bits) == ("fc1", 8, 5)
    assert (event.msb_dropped, event.lsb_dropped, event.grown) == (2, 1, 0)
    assert (event.stage, event.epoch) == ("bsq", 3)
    assert event.message == "fc1: 8 -> 5 bits (dropped 2 MSB, 1 LSB) at epoch 3"
    assert torch.allclose(layer.effective_weight(), before, rtol=0, atol=1e-6 * 0.37)
    # The remaining planes hold R / 2 exactly, as 0/1 values.
    assert set(layer.pos_planes.unique().tolist()) <= {0.0, 1.0}
    r = planes_to_int(layer.pos_planes.detach()) - planes_to_int(layer.neg_planes.detach())
    assert torch.equal(r, signed // 2)
    assert layer.msb_offset == 2
    assert requantize_(model, 8, stage="bsq", epoch=4) == []  # idempotent


def test_requantize_rounds_continuous_planes_only():
    torch.manual_seed(0)
    model = _named_linear(16, 8)
    layer = model.fc1
    with torch.no_grad():  # continuous planes with |v| <= 0.5: no overflow
        layer.pos_planes.copy_(0.5 * torch.rand_like(layer.pos_planes))
        layer.neg_planes.copy_(0.5 * torch.rand_like(layer.neg_planes))
    scale = float(layer.scale)
    continuous = scale * layer.value().detach()  # s * v
    before = layer.effective_weight().detach().clone()
    requantize_(model)
    after = layer.effective_weight().detach()
    assert float((after - continuous).abs().max()) <= scale / 255 / 2 * (1 + 1e-5)
    # The forward already rounded v: re-quantization must not move it further.
    assert torch.allclose(after, before, rtol=0, atol=1e-6 * scale)
    assert set(layer.pos_planes.unique().tolist()) <= {0.0, 1.0}


def test_requantize_grows_one_bit_on_overflow():
    model = _named_linear(2, 2, n_bits=4)
    layer = model.fc1
    _set_ints_(layer, torch.tensor([[1, -3], [5, 0]]), 0.5)
    with torch.no_grad():
        layer.pos_planes[0, 0, 0] = 2.0  # v = (2 * 8 + 1) / 15 > 1 -> R = 17
    events = requantize_(model, max_bits=8, stage="bsq", epoch=7)
    assert layer.n_bits == 5
    assert float(layer.scale) == pytest.approx(0.5 * 31 / 15)
    expected = 0.5 * torch.tensor([[17.0, -3.0], [5.0, 0.0]]) / 15  # unclamped s * R / 15
    assert torch.allclose(layer.effective_weight(), expected, atol=1e-6)
    assert [(e.old_bits, e.new_bits, e.grown, e.msb_dropped, e.lsb_dropped) for e in events] == [
        (4, 5, 1, 0, 0)
    ]
    assert "grew 1 MSB on overflow" in events[0].message


def test_requantize_clips_overflow_at_max_bits():
    model = _named_linear(2, 2, n_bits=4)
    layer = model.fc1
    _set_ints_(layer, torch.tensor([[1, -3], [5, 0]]), 0.5)
    with torch.no_grad():
        layer.pos_planes[0, 0, 0] = 2.0
    before = layer.effective_weight().detach().clone()  # forward clamps v to 1
    events = requantize_(model, max_bits=4)
    assert layer.n_bits == 4 and events == []
    assert planes_to_int(layer.pos_planes.detach())[0, 0] == 15
    assert torch.allclose(layer.effective_weight(), before, atol=1e-6)


def test_requantize_all_zero_layer_is_pruned():
    model = _named_linear()
    layer = model.fc1
    _set_ints_(layer, torch.zeros(3, 4, dtype=torch.long), 0.2)
    with torch.no_grad():
        layer.pos_planes[0, 0, 7] = 0.3  # rounds to zero: still an all-zero layer
    events = requantize_(model, epoch=5)
    assert layer.pruned and layer.reported_bits == 0 and layer.n_bits == 1
    assert layer.pos_planes.shape == (3, 4, 1)
    assert torch.equal(layer.effective_weight().detach(), torch.zeros(3, 4))
    assert [(e.old_bits, e.new_bits) for e in events] == [(8, 0)]
    assert "pruned" in events[0].message
    assert scheme_summary(model)["avg_bits"] == 0.0
    assert scheme_summary(model)["compression"] is None  # undefined, never "inf"
    assert requantize_(model) == []


def test_requantize_leaves_unchanged_layers_without_event():
    torch.manual_seed(1)
    model = _named_linear(8, 4)
    with torch.no_grad():  # the max-abs weight maps to 255: MSB and LSB planes in use
        model.fc1.pos_planes.copy_(int_to_planes(torch.randint(0, 256, (4, 8)), 8))
        model.fc1.pos_planes[0, 0] = 1.0
        model.fc1.neg_planes.zero_()
    planes = model.fc1.pos_planes.detach().clone()
    assert requantize_(model) == []
    assert torch.equal(model.fc1.pos_planes.detach(), planes)


def test_requantize_skips_fixed_layers():
    model = prepare_uniform(nn.Sequential(nn.Linear(3, 2)), 4)
    assert requantize_(model) == []
    assert model[0].n_bits == 4


def test_precision_event_dict_has_the_documented_keys():
    event = PrecisionEvent("conv2", 8, 5, 2, 1, 0, "bsq", 12)
    assert set(event.to_dict()) == {
        "layer", "old_bits", "new_bits", "msb_dropped", "lsb_dropped", "grown",
        "stage", "epoch", "message",
    }  # fmt: skip
    assert event.to_dict()["message"] == "conv2: 8 -> 5 bits (dropped 2 MSB, 1 LSB) at epoch 12"


# ---------------------------------------------------------------- reports


def _small_bsq_model() -> nn.Module:
    torch.manual_seed(2)
    model = create_model("lenet5", in_channels=1, num_classes=10, image_size=8)
    return prepare_bsq(model, BSQConfig(n_bits=6))


def test_bit_report_does_not_modify_the_model():
    model = _small_bsq_model()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, BitLayer):
                layer.pos_planes.add_(0.4 * torch.rand_like(layer.pos_planes))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    records = bit_report(model, max_bits=8)
    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [r["name"] for r in records] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    for record in records:
        assert set(record) == {
            "name", "n_bits", "n_weights", "density", "group_norm", "msb_offset", "kind", "shape",
        }  # fmt: skip
        assert len(record["group_norm"]) == record["n_bits"] == 6
        assert len(record["density"]) in (6, 7)  # 7: overflow view (planes up to 2)
        assert all(0.0 <= d <= 1.0 for d in record["density"])
    assert records[0]["kind"] == "conv" and records[2]["kind"] == "linear"
    assert records[0]["shape"] == list(model.conv1.weight_shape)


def test_bit_report_density_matches_what_requantize_writes():
    model = _small_bsq_model()
    with torch.no_grad():  # continuous, no overflow, MSB and LSB planes in use
        for layer in model.modules():
            if isinstance(layer, BitLayer):
                layer.pos_planes.mul_(0.9).add_(0.1 * torch.rand_like(layer.pos_planes))
    density = {r["name"]: r["density"] for r in bit_report(model, max_bits=8)}
    requantize_(model)
    for name, layer in quantized_layers(model):
        ones = (layer.pos_planes + layer.neg_planes).detach().reshape(-1, layer.n_bits)
        assert ones.mean(0).tolist() == pytest.approx(density[name])


def test_scheme_summary_average_bits_and_compression():
    model = nn.Sequential(
        OrderedDict(a=nn.Linear(4, 3, bias=False), b=nn.Linear(3, 2), c=nn.Linear(2, 2))
    )
    model = prepare_bsq(model, BSQConfig(n_bits=8))
    _set_ints_(model.b, torch.tensor([[7, -1, 2], [0, 5, 3]]), 1.0)  # 3 bits after drop
    _set_ints_(model.c, torch.zeros(2, 2, dtype=torch.long), 1.0)  # pruned
    requantize_(model)
    summary = scheme_summary(model)
    avg = (12 * 8 + 6 * 3 + 4 * 0) / 22
    assert summary["avg_bits"] == pytest.approx(avg)
    assert summary["compression"] == pytest.approx(32 / avg)
    assert summary["layers"] == [
        {"name": "a", "n_bits": 8, "n_weights": 12},
        {"name": "b", "n_bits": 3, "n_weights": 6},
        {"name": "c", "n_bits": 0, "n_weights": 4},
    ]


def _varied_model() -> nn.Module:
    """LeNet-5 at 8 bits after a re-quantization that leaves 3 different precisions."""
    model = _small_bsq_model()
    _set_ints_(model.conv1, torch.randint(-7, 8, model.conv1.weight_shape) * 4, 0.3)
    _set_ints_(model.fc3, torch.zeros(model.fc3.weight_shape, dtype=torch.long), 0.1)
    requantize_(model)
    bits = [m.reported_bits for _, m in quantized_layers(model)]
    assert (bits[0], bits[-1]) == (3, 0)
    return model


@pytest.mark.parametrize("fixed", [False, True])
def test_layer_meta_round_trip_through_state_dict(fixed):
    model = _varied_model()
    if fixed:
        model = to_fixed_(model)
    meta = json.loads(json.dumps(layer_meta(model)))
    state = copy.deepcopy(model.state_dict())
    fresh = _small_bsq_model()
    if fixed:
        fresh = to_fixed_(fresh)
    apply_layer_meta_(fresh, meta)
    fresh.load_state_dict(state)
    assert layer_meta(fresh) == meta
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_apply_layer_meta_rejects_unknown_layers():
    with pytest.raises(ValueError, match="different model"):
        apply_layer_meta_(_small_bsq_model(), {"nope": {"n_bits": 2}})


def test_to_fixed_keeps_outputs_exactly():
    model = _varied_model()
    x = torch.randn(3, 1, 8, 8)
    expected = model.eval()(x)
    bits = [m.reported_bits for _, m in quantized_layers(model)]
    fixed = to_fixed_(model)
    assert all(isinstance(m, QuantLayer) for _, m in quantized_layers(fixed))
    assert [m.reported_bits for _, m in quantized_layers(fixed)] == bits
    assert torch.equal(fixed(x), expected)

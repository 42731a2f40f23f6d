"""Quantized layers: BSQ bit-plane layers, fixed-precision layers, activation quantizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bsq_engine.core.layers import (
    ActQuant,
    BitConv2d,
    BitLinear,
    QuantConv2d,
    QuantLayer,
    QuantLinear,
)
from bsq_engine.core.quantize import requantize_

# float(parameter) in assertions is fine here: nothing is differentiated through it.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _max_quant_error(module: nn.Module, n_bits: int) -> float:
    return float(module.weight.detach().abs().max()) / (2**n_bits - 1) / 2


_CONVS = {
    "plain": dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    "strided_dilated": dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2
    ),
    "depthwise": dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8),
    "grouped_1x1_bias": dict(in_channels=6, out_channels=4, kernel_size=1, groups=2, bias=True),
}


@pytest.mark.parametrize("name", list(_CONVS))
@pytest.mark.parametrize("n_bits", [2, 8])
def test_bit_conv_forward_close_to_float(name, n_bits):
    torch.manual_seed(0)
    kwargs = dict(bias=False) | _CONVS[name]
    conv = nn.Conv2d(**kwargs)
    bit = BitConv2d.from_float(conv, n_bits)
    assert (bit.stride, bit.padding, bit.dilation, bit.groups) == (
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
    )
    assert bit.pos_planes.shape == (*conv.weight.shape, n_bits)
    error = (bit.effective_weight() - conv.weight).detach().abs().max()
    assert float(error) <= _max_quant_error(conv, n_bits) * (1 + 1e-5)
    x = torch.randn(2, kwargs["in_channels"], 7, 7)
    with torch.no_grad():
        y_float, y_bit = conv(x), bit(x)
    assert y_bit.shape == y_float.shape
    # Each output sums (in/groups * k * k) products, each off by <= |x| * weight error.
    fan_in = conv.weight[0].numel()
    bound = fan_in * float(x.abs().max()) * _max_quant_error(conv, n_bits)
    assert float((y_bit - y_float).abs().max()) <= bound
    if n_bits == 8:
        assert torch.allclose(y_bit, y_float, atol=0.05 * float(y_float.abs().max()))


@pytest.mark.parametrize("n_bits", [3, 8])
def test_bit_linear_forward_close_to_float(n_bits):
    torch.manual_seed(1)
    fc = nn.Linear(10, 5)
    bit = BitLinear.from_float(fc, n_bits)
    x = torch.randn(4, 10)
    bound = 10 * float(x.abs().max()) * _max_quant_error(fc, n_bits)
    with torch.no_grad():
        assert float((bit(x) - fc(x)).abs().max()) <= bound
    assert torch.equal(bit.bias, fc.bias) and bit.bias is not fc.bias


@pytest.mark.parametrize("name", list(_CONVS))
def test_bit_conv_to_float_reproduces_forward_exactly(name):
    torch.manual_seed(2)
    bit = BitConv2d.from_float(nn.Conv2d(**_CONVS[name]), 4)
    with torch.no_grad():  # continuous planes, as during training
        bit.pos_planes.add_(0.3 * torch.rand_like(bit.pos_planes))
    x = torch.randn(2, _CONVS[name]["in_channels"], 6, 6)
    plain = bit.to_float()
    assert type(plain) is nn.Conv2d
    assert (plain.stride, plain.padding, plain.dilation, plain.groups) == (
        bit.stride,
        bit.padding,
        bit.dilation,
        bit.groups,
    )
    assert torch.equal(plain(x), bit(x))


def test_bit_linear_to_float_reproduces_forward_exactly():
    torch.manual_seed(3)
    bit = BitLinear.from_float(nn.Linear(7, 3), 5)
    plain = bit.to_float()
    x = torch.randn(4, 7)
    assert type(plain) is nn.Linear and torch.equal(plain(x), bit(x))


@pytest.mark.parametrize("cls", [BitConv2d, BitLinear])
def test_bit_layer_parameters_and_bits(cls):
    module = nn.Conv2d(2, 3, 3) if cls is BitConv2d else nn.Linear(4, 3, bias=False)
    bit = cls.from_float(module, 6)
    names = {n for n, _ in bit.named_parameters()}
    expected = {"pos_planes", "neg_planes", "scale"} | (
        {"bias"} if module.bias is not None else set()
    )
    assert names == expected
    assert bit.n_bits == bit.reported_bits == 6
    assert bit.n_weights == module.weight.numel()
    assert bit.kind == ("conv" if cls is BitConv2d else "linear")


def test_clip_keeps_planes_in_range():
    bit = BitLinear.from_float(nn.Linear(3, 2), 4)
    with torch.no_grad():
        bit.pos_planes.fill_(3.0)
        bit.neg_planes.fill_(-1.0)
        bit.scale.fill_(-5.0)
    bit.clip_()
    assert float(bit.pos_planes.max()) == 2.0 and float(bit.neg_planes.min()) == 0.0
    assert float(bit.scale) > 0


# ------------------------------------------------------------ fixed precision


def _requantized_conv() -> BitConv2d:
    torch.manual_seed(4)
    bit = BitConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1, bias=True), 8)
    with torch.no_grad():
        bit.pos_planes[..., :2] = 0.0  # two zero MSB planes
        bit.neg_planes[..., :2] = 0.0
        bit.pos_planes.add_(0.2 * torch.rand_like(bit.pos_planes))
    requantize_(bit)
    return bit


@pytest.mark.parametrize("continuous", [False, True])
def test_quant_layer_from_bit_layer_keeps_outputs_exactly(continuous):
    bit = _requantized_conv()
    if continuous:  # mid-training planes, v may exceed 1: both layers clamp it the same way
        with torch.no_grad():
            bit.pos_planes.add_(0.7 * torch.rand_like(bit.pos_planes))
    fixed = QuantConv2d.from_bit_layer(bit)
    assert fixed.n_bits == bit.reported_bits
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(fixed(x), bit(x))
    assert float(fixed.weight.abs().max()) <= 1.0


def test_quant_layer_from_pruned_bit_layer_is_zero_bits():
    bit = BitLinear.from_float(nn.Linear(3, 2, bias=False), 4)
    with torch.no_grad():
        bit.pos_planes.zero_()
        bit.neg_planes.zero_()
    requantize_(bit)
    fixed = QuantLinear.from_bit_layer(bit)
    assert fixed.n_bits == 0 and fixed.pruned
    assert torch.equal(fixed(torch.randn(2, 3)), torch.zeros(2, 2))


def test_quant_layer_from_float_uniform_baseline():
    torch.manual_seed(5)
    fc = nn.Linear(6, 4)
    fixed = QuantLinear.from_float(fc, 3)
    scale = float(fc.weight.abs().max())
    assert float(fixed.scale) == pytest.approx(scale)
    ints = fixed.integer_weight()
    assert int(ints.abs().max()) == 7  # the max-abs weight maps to the top level
    expected = scale * torch.round(fc.weight.detach() / scale * 7) / 7
    assert torch.allclose(fixed.effective_weight(), expected, atol=1e-6)
    assert len(torch.unique(fixed.effective_weight().detach())) <= 2 * 7 + 1
    assert torch.allclose(ints.float() / 7 * scale, fixed.effective_weight().detach(), atol=1e-6)


def test_quant_layer_gradient_is_straight_through_and_clip():
    fixed = QuantLinear.from_float(nn.Linear(3, 2, bias=False), 2)
    x = torch.randn(5, 3)
    fixed(x).sum().backward()
    # dL/dw = s * dL/dW (STE), dL/dW = sum over batch of x
    expected = float(fixed.scale) * x.sum(0).expand(2, 3)
    assert torch.allclose(fixed.weight.grad, expected, atol=1e-6)
    with torch.no_grad():
        fixed.weight.fill_(1.5)
    fixed.clip_()
    assert float(fixed.weight.max()) == 1.0


def test_quant_conv_preserves_depthwise_hyper_parameters():
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    fixed = QuantConv2d.from_float(conv, 8)
    assert (fixed.stride, fixed.padding, fixed.groups) == ((2, 2), (1, 1), 8)
    x = torch.randn(1, 8, 6, 6)
    assert fixed(x).shape == conv(x).shape == (1, 8, 3, 3)
    assert torch.equal(fixed.to_float()(x), fixed(x))


def test_bit_conv_keeps_padding_mode():
    torch.manual_seed(6)
    conv = nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    bit = BitConv2d.from_float(conv, 8)
    x = torch.randn(1, 2, 5, 5)
    assert torch.allclose(bit.to_float()(x), bit(x))
    assert torch.allclose(bit(x), conv(x), atol=0.05)


# ------------------------------------------------------------ activations


def test_act_quant_float_is_relu():
    act = ActQuant(None)
    x = torch.randn(50)
    assert torch.equal(act(x), torch.relu(x))
    assert list(act.parameters()) == []


def test_act_quant_4_bits_takes_at_most_16_values():
    act = ActQuant(4)
    assert not act.use_pact and act.clip_level is None
    x = torch.linspace(-3, 9, 1000)
    y = act(x)
    assert len(torch.unique(y)) <= 2**4
    assert float(y.min()) == 0.0 and float(y.max()) == pytest.approx(6.0)  # ReLU6 range
    assert float((y - torch.relu(x).clamp(max=6)).abs().max()) <= 6.0 / 15 / 2 + 1e-6


def test_act_quant_ste_gradient_passes_through():
    act = ActQuant(4)
    x = torch.tensor([-1.0, 0.3, 2.2, 5.9, 7.0], requires_grad=True)
    act(x).backward(torch.ones(5))
    # identity through the rounding inside ReLU6's linear range, zero outside it
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_pact_clip_level_is_learnable_and_clips():
    act = ActQuant(2)
    assert act.use_pact and isinstance(act.clip_level, nn.Parameter)
    with torch.no_grad():
        act.clip_level.fill_(3.0)
    x = torch.tensor([-1.0, 0.4, 1.1, 2.0, 3.5, 10.0], requires_grad=True)
    y = act(x)
    assert len(torch.unique(y)) <= 4 and float(y.max()) == pytest.approx(3.0)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert act.clip_level.grad is not None and float(act.clip_level.grad) > 0


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [([-1.0, 0.4, 1.1, 2.0, 2.9], 0.0), ([-1.0, 0.4, 1.1, 2.0, 3.5, 10.0], 2.0)],
    ids=["all_below", "two_above"],
)
def test_pact_clip_level_gradient_comes_only_from_inputs_above_it(inputs, expected):
    """PACT (Choi et al. 2018): d y_q / d alpha = 1 where x >= alpha, else 0."""
    act = ActQuant(2)
    with torch.no_grad():
        act.clip_level.fill_(3.0)
    act(torch.tensor(inputs)).sum().backward()
    assert float(act.clip_level.grad) == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------ constructors


@pytest.mark.parametrize("cls", [BitConv2d, QuantConv2d])
def test_conv_layers_construct_directly_like_conv2d(cls):
    torch.manual_seed(7)
    layer = cls(4, 6, 3, stride=2, padding=1, groups=2, bias=False, n_bits=5)
    reference = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (4, 6, (3, 3))
    assert (layer.stride, layer.padding, layer.groups, layer.bias) == ((2, 2), (1, 1), 2, None)
    assert layer.n_bits == 5 and layer.effective_weight().shape == reference.weight.shape
    x = torch.randn(2, 4, 7, 7)
    assert layer(x).shape == reference(x).shape == (2, 6, 4, 4)


@pytest.mark.parametrize("cls", [BitLinear, QuantLinear])
def test_linear_layers_construct_directly_like_linear(cls):
    layer = cls(5, 3, n_bits=4)
    assert (layer.in_features, layer.out_features, layer.n_bits) == (5, 3, 4)
    assert layer.bias is not None and layer(torch.randn(2, 5)).shape == (2, 3)


@pytest.mark.parametrize("cls", [BitConv2d, BitLinear, QuantConv2d, QuantLinear])
def test_from_float_draws_no_random_numbers(cls):
    """prepare_bsq runs mid-pipeline: converting must not shift the run's random stream."""
    module = nn.Conv2d(3, 4, 3) if "Conv" in cls.__name__ else nn.Linear(4, 3)
    before = torch.random.get_rng_state()
    layer = cls.from_float(module, 4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(p.device.type == "cpu" for p in layer.parameters())


@pytest.mark.parametrize("n_bits", [3, 8])
def test_quant_layer_to_float_is_its_own(n_bits):
    torch.manual_seed(8)
    fixed = QuantLinear.from_float(nn.Linear(6, 4), n_bits)
    plain = fixed.to_float()
    assert type(plain) is nn.Linear
    x = torch.randn(3, 6)
    assert torch.equal(plain(x), fixed(x))
    assert isinstance(fixed, QuantLayer) and plain.bias is not fixed.bias


# ------------------------------------------------------------ memory format


def _bsq_conv_net() -> nn.Sequential:
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1))
    model[0] = BitConv2d.from_float(model[0], 4)
    model[2] = QuantConv2d.from_float(model[2], 4)
    return model


def test_bsq_model_converts_to_channels_last():
    model = _bsq_conv_net()
    planes_before = model[0].pos_planes.detach().clone()
    x = torch.randn(2, 2, 5, 5)
    expected = model(x)
    converted = model.to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    y = converted(x_last)
    assert y.shape == (2, 4, 3, 3)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, expected, atol=1e-5)
    # The planes keep their documented dense (*S, n) layout and values.
    assert model[0].pos_planes.is_contiguous()
    assert torch.equal(model[0].pos_planes, planes_before)
    assert model[2].weight.is_contiguous(memory_format=torch.channels_last)


def test_bsq_conv_weight_follows_the_input_memory_format():
    layer = _bsq_conv_net()[0]
    seen = []
    layer.register_forward_hook(lambda m, inputs, out: seen.append(out))
    layer(torch.randn(1, 2, 5, 5).contiguous(memory_format=torch.channels_last)).sum().backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert layer.pos_planes.grad.shape == layer.pos_planes.shape
    assert layer.pos_planes.grad.is_contiguous()

"""Bit-level group Lasso with memory-aware reweighing (BSQ_METHOD.md section 2) and clipping."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from bsq_engine.core.layers import BitLayer
from bsq_engine.core.quantize import BSQConfig, prepare_bsq, prepare_uniform, requantize_
from bsq_engine.core.regularizer import EPS, bit_group_lasso, clip_planes_

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _two_layers() -> nn.Sequential:
    """A conv (2*1*2*2 = 8 weights, 3 bits) and a linear (3*2 = 6 weights, 2 bits)."""
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 2, 2, bias=False),
            flat=nn.Flatten(),
            bn=nn.BatchNorm1d(2),  # float parameters: never part of R
            fc=nn.Linear(2, 3),
        )
    )
    model = prepare_bsq(model, BSQConfig(n_bits=3))
    model.fc = prepare_bsq(nn.Linear(2, 3), BSQConfig(n_bits=2))
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in (model.conv, model.fc):
            layer.pos_planes.copy_(2 * torch.rand_like(layer.pos_planes))
            layer.neg_planes.copy_(2 * torch.rand_like(layer.neg_planes))
    return model


def _by_hand(model: nn.Sequential, eps: float) -> float:
    """R written out element by element, in plain Python floats."""
    layers = [model.conv, model.fc]
    total = sum(layer.pos_planes[..., 0].numel() for layer in layers)
    value = 0.0
    for layer in layers:
        n_bits = layer.pos_planes.shape[-1]
        pos = layer.pos_planes.detach().reshape(-1, n_bits).tolist()
        neg = layer.neg_planes.detach().reshape(-1, n_bits).tolist()
        groups = 0.0
        for b in range(n_bits):
            squares = sum(p[b] ** 2 for p in pos) + sum(q[b] ** 2 for q in neg)
            groups += math.sqrt(eps + squares)
        value += len(pos) * n_bits / total * groups
    return value


@pytest.mark.parametrize("eps", [EPS, 0.5])
def test_value_matches_the_formula(eps):
    model = _two_layers()
    assert (model.conv.n_weights, model.conv.n_bits) == (8, 3)
    assert (model.fc.n_weights, model.fc.n_bits) == (6, 2)
    assert float(bit_group_lasso(model, eps=eps)) == pytest.approx(_by_hand(model, eps), rel=1e-6)


def test_gradient_of_one_plane_element():
    model = _two_layers()
    bit_group_lasso(model).backward()
    total = 8 + 6
    for layer, n_weights, n_bits in ((model.conv, 8, 3), (model.fc, 6, 2)):
        pos = layer.pos_planes.detach().reshape(-1, n_bits)
        neg = layer.neg_planes.detach().reshape(-1, n_bits)
        norms = torch.sqrt(EPS + pos.square().sum(0) + neg.square().sum(0))  # (n_bits,)
        factor = n_weights * n_bits / total
        expected_pos = factor * pos / norms
        expected_neg = factor * neg / norms
        assert torch.allclose(layer.pos_planes.grad.reshape(-1, n_bits), expected_pos, rtol=1e-5)
        assert torch.allclose(layer.neg_planes.grad.reshape(-1, n_bits), expected_neg, rtol=1e-5)
        assert layer.scale.grad is None or float(layer.scale.grad) == 0.0
    # one element spelled out: conv weight (0, 0, 1, 0), bit 2 (LSB)
    x = float(model.conv.pos_planes[0, 0, 1, 0, 2])
    pos = model.conv.pos_planes.detach()[..., 2]
    neg = model.conv.neg_planes.detach()[..., 2]
    norm = math.sqrt(EPS + float(pos.square().sum() + neg.square().sum()))
    grad = float(model.conv.pos_planes.grad[0, 0, 1, 0, 2])
    assert grad == pytest.approx((8 * 3 / 14) * x / norm, rel=1e-5)


def test_pruned_layer_contributes_nothing_but_counts_in_n():
    model = _two_layers()
    with torch.no_grad():
        model.fc.pos_planes.zero_()
        model.fc.neg_planes.zero_()
    requantize_(model)
    assert model.fc.pruned
    conv = model.conv
    pos = conv.pos_planes.detach().reshape(-1, conv.n_bits)
    neg = conv.neg_planes.detach().reshape(-1, conv.n_bits)
    norms = torch.sqrt(EPS + pos.square().sum(0) + neg.square().sum(0))
    expected = 8 * conv.n_bits / (8 + 6) * float(norms.sum())  # N still includes the 6
    assert float(bit_group_lasso(model)) == pytest.approx(expected, rel=1e-6)


def test_no_bit_layers_gives_zero():
    assert float(bit_group_lasso(nn.Linear(2, 2))) == 0.0
    assert float(bit_group_lasso(prepare_uniform(nn.Sequential(nn.Linear(2, 2)), 4))) == 0.0


def test_alpha_free_gradient_pushes_planes_towards_zero():
    """One plain SGD step on R alone shrinks every group norm (that is the Lasso's job)."""
    model = _two_layers()
    before = [layer.plane_stats()[1] for layer in (model.conv, model.fc)]
    bit_group_lasso(model).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    after = [layer.plane_stats()[1] for layer in (model.conv, model.fc)]
    for b_layer, a_layer in zip(before, after):
        assert all(a < b for a, b in zip(a_layer, b_layer))


def test_clip_planes_clamps_to_range():
    model = _two_layers()
    model.fixed = prepare_uniform(nn.Linear(3, 3), 4)
    with torch.no_grad():
        model.conv.pos_planes.mul_(3).sub_(1)  # values in [-1, 5)
        model.fc.neg_planes.fill_(7.0)
        model.fixed.weight.mul_(10)
        model.bn.weight.fill_(5.0)
    clip_planes_(model)
    for layer in model.modules():
        if isinstance(layer, BitLayer):
            for planes in (layer.pos_planes, layer.neg_planes):
                assert float(planes.min()) >= 0.0 and float(planes.max()) <= 2.0
    assert float(model.conv.pos_planes.max()) == 2.0 and float(model.conv.pos_planes.min()) == 0
    assert float(model.fixed.weight.abs().max()) == 1.0
    assert float(model.bn.weight.max()) == 5.0  # float parameters are left alone

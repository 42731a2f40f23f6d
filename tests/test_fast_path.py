"""The fused planes -> weight + group norms path: same values, same gradients as the plain
path (separate weight and regularizer graphs), and never a stale or reused graph."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from shared import continuous_planes
from torch import nn

from bsq_engine.core.functional import (
    from_bit_planes,
    plane_group_norm,
    weight_and_group_norms,
)
from bsq_engine.core.layers import BitLayer
from bsq_engine.core.quantize import BSQConfig, prepare_bsq
from bsq_engine.core.regularizer import bit_group_lasso, clip_planes_
from bsq_engine.models import create_model

# float(parameter) in assertions is fine here: nothing is differentiated through it.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _grads(pos, neg, scale, fused, use_weight, use_norms, seed=0):
    for t in (pos, neg, scale):
        t.grad = None
    if fused:
        weight, norms = weight_and_group_norms(pos, neg, scale)
    else:
        weight, norms = from_bit_planes(pos, neg, scale), plane_group_norm(pos, neg)
    gen = torch.Generator().manual_seed(seed)
    loss = 0.0
    if use_weight:
        loss = loss + (weight * torch.randn(weight.shape, generator=gen)).sum()
    if use_norms:
        loss = loss + (norms * torch.rand(norms.shape, generator=gen)).sum()
    loss.backward()
    grads = [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in (pos, neg, scale)]
    return weight.detach(), norms.detach(), grads


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (7, 4), (11,)])
@pytest.mark.parametrize("n_bits", [1, 3, 8])
@pytest.mark.parametrize(("use_weight", "use_norms"), [(1, 1), (1, 0), (0, 1)])
def test_fused_values_and_gradients_equal_the_plain_path(shape, n_bits, use_weight, use_norms):
    pos, neg, scale = continuous_planes(shape, n_bits, seed=n_bits)
    w_f, n_f, g_f = _grads(pos, neg, scale, True, use_weight, use_norms)
    w_p, n_p, g_p = _grads(pos, neg, scale, False, use_weight, use_norms)
    assert torch.equal(w_f, w_p)  # the same arithmetic: bit-identical weights
    assert torch.allclose(n_f, n_p, rtol=1e-6, atol=0)
    for fused, plain, name in zip(g_f, g_p, ("pos", "neg", "scale")):
        assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-6), name
    if not use_weight:  # only the regularizer: no straight-through term, no scale gradient
        assert torch.equal(g_f[2], torch.zeros(()))


def test_fused_weight_in_channels_last_and_without_norms_equals_the_plain_path():
    pos, neg, scale = continuous_planes((6, 3, 3, 3), 5, seed=4)
    upstream = torch.randn(6, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    plain_w = from_bit_planes(pos, neg, scale)
    plain_w.backward(upstream)
    plain_grads = [t.grad.clone() for t in (pos, neg, scale)]
    for t in (pos, neg, scale):
        t.grad = None
    w, norms = weight_and_group_norms(
        pos, neg, scale, with_norms=False, memory_format=torch.channels_last
    )
    assert norms is None
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert torch.equal(w.detach(), plain_w.detach())
    w.backward(upstream)
    for fused, plain in zip((pos.grad, neg.grad, scale.grad), plain_grads):
        assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-6)


def _resnet(fused: bool, channels_last: bool = False):
    torch.manual_seed(0)
    model = create_model("resnet20", in_channels=3, num_classes=10, image_size=16)
    model = prepare_bsq(model, BSQConfig(n_bits=6, act_bits=4, float_shortcuts=True)).train()
    with torch.no_grad():  # continuous planes, as mid-training
        for layer in model.modules():
            if isinstance(layer, BitLayer):
                layer.fused = fused
                layer.pos_planes.add_(0.4 * torch.rand_like(layer.pos_planes))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _model_step(model, channels_last=False):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 16, 16, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), generator=gen)
    ce = F.cross_entropy(model(x), y)
    reg = bit_group_lasso(model)
    (ce + 5e-3 * reg).backward()
    return float(ce.detach()), float(reg.detach()), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_fused_training_step_matches_plain_step_on_resnet(channels_last):
    ce_f, reg_f, grads_f = _model_step(_resnet(True, channels_last), channels_last)
    ce_p, reg_p, grads_p = _model_step(_resnet(False), False)
    assert ce_f == pytest.approx(ce_p, rel=1e-5) and reg_f == pytest.approx(reg_p, rel=1e-6)
    largest = max(float(g.abs().max()) for g in grads_p.values())
    for name, plain in grads_p.items():
        # relative to the largest gradient: behind BatchNorm a scale's gradient is ~0 (scale
        # invariance), so per-tensor relative errors would measure rounding noise
        assert float((grads_f[name] - plain).abs().max()) <= 1e-5 * largest, name


def _node_names(tensor: torch.Tensor) -> set[str]:
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    return {type(node).__name__ for node in seen}


def test_regularizer_reuses_the_forward_norms_once():
    model = _resnet(True)
    model(torch.randn(2, 3, 16, 16))
    reg = bit_group_lasso(model)
    assert "PlanesToWeightBackward" in _node_names(reg)
    assert "SqrtBackward0" not in _node_names(reg)
    first = next(m for m in model.modules() if isinstance(m, BitLayer))
    # a second call cannot reuse the forward's norms (their graph is consumed by one
    # backward): it computes them afresh, through the plain path's own nodes
    again = bit_group_lasso(model)
    assert "SqrtBackward0" in _node_names(again)
    assert float(again.detach()) == pytest.approx(float(reg.detach()), rel=1e-6)
    reg.backward()
    again.backward()  # its own graph: no "backward through the graph a second time"
    assert first.pos_planes.grad is not None


def test_regularizer_after_planes_changed_in_place_sees_the_new_planes():
    model = _resnet(True)
    model(torch.randn(2, 3, 16, 16))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, BitLayer):
                layer.pos_planes.mul_(3.0)
    clip_planes_(model)
    plain = copy.deepcopy(model)
    for layer in plain.modules():
        if isinstance(layer, BitLayer):
            layer.fused = False
    assert float(bit_group_lasso(model).detach()) == pytest.approx(
        float(bit_group_lasso(plain).detach()), rel=1e-6
    )


def test_eval_forward_keeps_no_graph_and_model_deep_copies():
    model = _resnet(True)
    model(torch.randn(2, 3, 16, 16))  # training forward: norms kept outside the modules
    copy.deepcopy(model)  # a graph tensor in a module's __dict__ would refuse to copy
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 16, 16))
    reg = bit_group_lasso(model)
    assert reg.requires_grad  # computed afresh from the parameters


def test_clip_planes_clamps_every_layer_kind():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model = prepare_bsq(model, BSQConfig(n_bits=3))
    from bsq_engine.core.quantize import to_fixed_

    fixed = to_fixed_(prepare_bsq(nn.Sequential(nn.Linear(3, 2)), BSQConfig(n_bits=3)))
    with torch.no_grad():
        for layer in model:
            layer.pos_planes.fill_(5.0)
            layer.neg_planes.fill_(-1.0)
            layer.scale.fill_(-2.0)
        fixed[0].weight.fill_(-4.0)
        fixed[0].scale.fill_(0.0)
    clip_planes_(model)
    clip_planes_(fixed)
    for layer in model:
        assert float(layer.pos_planes.detach().max()) == 2.0
        assert float(layer.neg_planes.detach().min()) == 0.0
        assert float(layer.scale) == pytest.approx(1e-12)
    assert float(fixed[0].weight.min()) == -1.0 and float(fixed[0].scale) == pytest.approx(1e-12)


def test_regularizer_after_requantization_without_a_forward_uses_the_new_planes():
    """A forward whose norms were never used (alpha 0), then re-quantization replaces the
    planes: the regularizer must compute from the new planes, not compare old ones."""
    from bsq_engine.core.quantize import requantize_

    model = _resnet(True)
    model(torch.randn(2, 3, 16, 16))
    requantize_(model)
    plain = copy.deepcopy(model)
    for layer in plain.modules():
        if isinstance(layer, BitLayer):
            layer.fused = False
    value = float(bit_group_lasso(model).detach())
    assert value == pytest.approx(float(bit_group_lasso(plain).detach()), rel=1e-6)


def test_a_step_without_regularizer_skips_the_norms_and_the_regularizer_still_computes():
    from bsq_engine.training.fast_path import step_forward

    model = _resnet(True)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    _, _, reg = step_forward(model, torch.contiguous_format, use_reg=False)(x, y)
    assert reg is None
    layers = [m for m in model.modules() if isinstance(m, BitLayer)]
    assert all(not layer.fused_norms for layer in layers)
    assert "SqrtBackward0" in _node_names(bit_group_lasso(model))  # computed, not cached
    _, _, reg = step_forward(model, torch.contiguous_format, use_reg=True)(x, y)
    assert all(layer.fused_norms for layer in layers)
    assert "PlanesToWeightBackward" in _node_names(reg)  # the forward's norms again


def test_planes_sgd_in_backward_attaches_for_the_trainers_sgd_only_and_always_detaches():
    """Attached per BSQ layer for momentum SGD; none when disabled (distributed, compiled),
    for an SGD rule the kernel does not apply (Nesterov, no momentum) or another optimizer;
    detached when the block ends, also by an error."""
    from bsq_engine.training import fast_path

    torch.manual_seed(0)
    model = prepare_bsq(create_model("lenet5", in_channels=1, num_classes=10, image_size=16),
                        BSQConfig(n_bits=4))  # fmt: skip
    layers = [m for m in model.modules() if isinstance(m, BitLayer)]

    def attached(opt, enabled=True):
        with fast_path.planes_sgd_in_backward(model, opt, enabled) as updaters:
            return len(updaters), sum(m.plane_sgd is not None for m in layers)

    sgd = dict(lr=0.1, momentum=0.9)
    assert attached(fast_path.make_sgd(model.parameters(), **sgd)) == (len(layers), len(layers))
    assert attached(fast_path.make_sgd(model.parameters(), **sgd), enabled=False) == (0, 0)
    nesterov = torch.optim.SGD(model.parameters(), nesterov=True, **sgd)
    assert attached(nesterov) == (0, 0)
    assert attached(torch.optim.SGD(model.parameters(), lr=0.1)) == (0, 0)
    assert attached(torch.optim.Adam(model.parameters())) == (0, 0)
    assert all(m.plane_sgd is None for m in layers)
    opt = fast_path.make_sgd(model.parameters(), **sgd)
    epoch = fast_path.planes_sgd_in_backward(model, opt)
    with pytest.raises(RuntimeError, match="mid-epoch"), epoch:
        raise RuntimeError("mid-epoch")
    assert all(m.plane_sgd is None for m in layers)

"""The C++ plane kernels (``core.native``): the same values and gradients as the eager fused
node, thread-count independent, and an optional accelerator (off, or failing to build, the
eager path runs and one line says why)."""

from __future__ import annotations

import logging

import pytest
import torch
from shared import continuous_planes

from bsq_engine.core import native
from bsq_engine.core.functional import _place, _value_2d, weight_and_group_norms
from bsq_engine.core.layers import BitLayer
from bsq_engine.core.quantize import BSQConfig, prepare_bsq
from bsq_engine.models import create_model


@pytest.fixture(scope="module")
def kernels():
    """The built extension; the first build on a machine compiles C++ (about 30 s)."""
    built = native.kernels()
    if built is None:
        pytest.skip(f"the C++ plane kernels cannot be built here: {native.status()}")
    return built


def _run(pos, neg, scale, use_native, with_norms, memory_format, seed=0):
    for t in (pos, neg, scale):
        t.grad = None
    weight, norms = weight_and_group_norms(
        pos, neg, scale, with_norms=with_norms, memory_format=memory_format, native=use_native
    )
    gen = torch.Generator().manual_seed(seed)
    loss = (weight * torch.randn(weight.shape, generator=gen)).sum()
    if with_norms:
        loss = loss + (norms * torch.rand(norms.shape, generator=gen)).sum()
    loss.backward()
    return weight.detach(), norms, [t.grad.clone() for t in (pos, neg, scale)]


def _assert_same_weight(w_native, w_eager, pos, neg):
    """Bit-identical, except where ``v * L`` sits within float rounding of a half level:
    the C++ loop sums ``pos @ place`` in its own order (BLAS's is unspecified), and there
    the rounding may go the other way, by exactly one level."""
    n_bits = pos.shape[-1]
    levels = 2**n_bits - 1
    differ = (w_native != w_eager).reshape(-1)
    if not differ.any():
        return
    v = _value_2d(
        pos.detach().reshape(-1, n_bits).double(),
        neg.detach().reshape(-1, n_bits).double(),
        _place(n_bits, pos.device, torch.float64),
    )  # (N,)
    distance = ((v[differ].clamp(-1, 1) * levels).abs().frac() - 0.5).abs()
    assert float(distance.max()) < 1e-4, "a weight differs away from a rounding tie"
    step = float(w_eager.abs().max()) / levels  # the scale is the largest magnitude's
    gap = (w_native - w_eager).reshape(-1)[differ].abs()
    assert float(gap.max()) <= step * 1.001
    assert int(differ.sum()) <= max(1, differ.numel() // 1000)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (7, 4), (11,), (33, 17, 3, 3)])
@pytest.mark.parametrize("n_bits", range(1, 9))
@pytest.mark.parametrize("with_norms", [True, False], ids=["norms", "no-norms"])
def test_native_values_and_gradients_equal_the_eager_node(kernels, shape, n_bits, with_norms):
    pos, neg, scale = continuous_planes(shape, n_bits, seed=n_bits)
    conv = len(shape) == 4
    formats = [None, torch.channels_last] if conv else [None]
    for memory_format in formats:
        w_n, norms_n, g_n = _run(pos, neg, scale, True, with_norms, memory_format)
        w_e, norms_e, g_e = _run(pos, neg, scale, False, with_norms, memory_format)
        assert w_n.stride() == w_e.stride()  # written in the requested memory format
        _assert_same_weight(w_n, w_e, pos, neg)
        if with_norms:
            assert torch.allclose(norms_n.detach(), norms_e.detach(), rtol=1e-6, atol=0)
        else:
            assert norms_n is None and norms_e is None
        for got, want, name in zip(g_n, g_e, ("pos", "neg", "scale")):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), name


@pytest.mark.slow
def test_native_results_do_not_depend_on_the_thread_count(kernels):
    """Blocked reductions summed in block order: a resumed run may use another thread
    count only if the results stay the same; they must, bit for bit."""
    pos, neg, scale = continuous_planes((64, 64, 3, 3), 8, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(pos, neg, scale, True, True, torch.channels_last)
        torch.set_num_threads(max(2, threads))
        many = _run(pos, neg, scale, True, True, torch.channels_last)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    for a, b in zip(one[2], many[2]):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_native_training_step_matches_the_eager_step_on_resnet(kernels):
    def step(use_native):
        torch.manual_seed(0)
        model = create_model("resnet20", in_channels=3, num_classes=10, image_size=16)
        model = prepare_bsq(model, BSQConfig(n_bits=6, act_bits=4, float_shortcuts=True))
        model = model.train().to(memory_format=torch.channels_last)
        for layer in model.modules():
            if isinstance(layer, BitLayer):
                layer.native = use_native
                layer.pos_planes.data.add_(0.4 * torch.rand_like(layer.pos_planes))
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(8, 3, 16, 16, generator=gen).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (8,), generator=gen)
        from bsq_engine.core.regularizer import bit_group_lasso

        loss = torch.nn.functional.cross_entropy(model(x), y) + 5e-3 * bit_group_lasso(model)
        loss.backward()
        return float(loss.detach()), {n: p.grad for n, p in model.named_parameters()}

    loss_n, grads_n = step(True)
    loss_e, grads_e = step(False)
    assert loss_n == pytest.approx(loss_e, rel=1e-5)
    largest = max(float(g.abs().max()) for g in grads_e.values())
    for name, eager in grads_e.items():
        assert float((grads_n[name] - eager).abs().max()) <= 1e-5 * largest, name


@pytest.mark.parametrize("used", ["weight", "norms", "both"])
@pytest.mark.parametrize("scale_grad", [True, False], ids=["scale-grad", "frozen-scale"])
def test_native_gradients_equal_the_eager_ones_whatever_the_loss_uses(kernels, used, scale_grad):
    """A loss of the weight only, of the norms only (the weight's gradient is then
    undefined) or of both; with and without a scale gradient."""
    grads = {}
    for use_native in (True, False):
        pos, neg, scale = continuous_planes((6, 5, 3, 3), 8, seed=2)
        scale.requires_grad_(scale_grad)
        weight, norms = weight_and_group_norms(
            pos, neg, scale, memory_format=torch.channels_last, native=use_native
        )
        gen = torch.Generator().manual_seed(0)
        loss = 0.0
        if used in ("weight", "both"):
            loss = loss + (weight * torch.randn(weight.shape, generator=gen)).sum()
        if used in ("norms", "both"):
            loss = loss + (norms * torch.rand(norms.shape, generator=gen)).sum()
        loss.backward()
        grads[use_native] = [t.grad for t in (pos, neg, scale)]
    for got, want, name in zip(grads[True], grads[False], ("pos", "neg", "scale")):
        if want is None:
            assert got is None, name
        else:
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), name


# ------------------------------------------- the planes' SGD update inside the backward pass


def _train_steps(in_backward: bool, steps=3, *, alpha=5e-3, momentum=0.9, weight_decay=1e-4,
                 lr=0.5, use_twice=False):  # fmt: skip
    """A small BSQ conv net, a few SGD steps with (``in_backward``) or without the planes'
    update in the fused node's backward; a large lr drives planes past both clip bounds."""
    from bsq_engine.core.regularizer import clip_planes_
    from bsq_engine.training import fast_path

    torch.manual_seed(0)
    model = create_model("lenet5", in_channels=1, num_classes=10, image_size=16)
    model = prepare_bsq(model, BSQConfig(n_bits=6, act_bits=4)).train()
    model = model.to(memory_format=torch.channels_last)
    layers = [m for m in model.modules() if isinstance(m, BitLayer)]
    hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt = fast_path.make_sgd(model.parameters(), **hyper)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen))
               for _ in range(steps)]  # fmt: skip
    grads_none = []
    with fast_path.planes_sgd_in_backward(model, opt, in_backward) as updaters:
        forward = fast_path.step_forward(model, torch.channels_last, alpha > 0, False, updaters)
        for x, y in batches:
            _logits, ce, reg = forward(x, y)
            loss = ce + alpha * reg if alpha > 0 else ce
            if use_twice:  # the first layer used again in the same step
                x_cl = x.contiguous(memory_format=torch.channels_last)
                loss = loss + 1e-3 * layers[0](x_cl).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads_none.append([layer.pos_planes.grad is None for layer in layers])
            opt.step()
            clip_planes_(model)
    assert all(layer.plane_sgd is None for layer in layers)  # detached after the epoch
    buffers = [opt.state[p].get("momentum_buffer") for p in model.parameters()]
    return model, buffers, grads_none


def _assert_same_training(a, b, tol=1e-5):
    (model_a, buffers_a, _), (model_b, buffers_b, _) = a, b
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        pa, pb = pa.detach(), pb.detach()
        assert float((pa - pb).abs().max()) <= tol * max(1.0, float(pa.abs().max())), name
    for ba, bb in zip(buffers_a, buffers_b):
        assert (ba is None) == (bb is None)
        if ba is not None:
            assert float((ba - bb).abs().max()) <= tol * max(1.0, float(ba.abs().max()))


@pytest.mark.parametrize(
    "settings",
    [{}, {"alpha": 0.0}, {"weight_decay": 0.0}, {"momentum": 0.0}, {"lr": 5.0, "alpha": 0.5}],
    ids=["default", "no-regularizer", "no-weight-decay", "no-momentum", "past-the-bounds"],
)
def test_sgd_in_backward_trains_as_the_optimizer_does(kernels, settings):
    """Planes, scales and momentum buffers after three steps equal the optimizer path's to
    float rounding (the same arithmetic, in a fused loop), and the planes never got a
    gradient tensor. With a large lr, planes leave [0, 2] and are clipped alike. Without
    momentum the optimizer keeps the update (torch keeps no momentum buffer then)."""
    plain = _train_steps(False, **settings)
    fused = _train_steps(True, **settings)
    _assert_same_training(plain, fused)
    assert not any(any(step) for step in plain[2])
    # without momentum torch keeps no buffer, which the kernel would: the optimizer updates
    in_backward = settings.get("momentum", 0.9) > 0
    assert all(all(step) == in_backward for step in fused[2])
    for layer in (m for m in fused[0].modules() if isinstance(m, BitLayer)):
        planes = torch.cat([layer.pos_planes.reshape(-1), layer.neg_planes.reshape(-1)]).detach()
        assert float(planes.min()) >= 0.0 and float(planes.max()) <= 2.0
    if settings.get("lr") == 5.0:  # the bounds were reached, so the clip was exercised
        named = fused[0].named_parameters()
        planes = torch.cat([p.detach().reshape(-1) for n, p in named if "planes" in n])
        assert bool((planes == 0).any()) and bool((planes == 2).any())


def test_a_layer_used_twice_in_a_step_leaves_its_update_to_the_optimizer(kernels):
    """Two nodes of one layer in a step: neither updates in backward (the first would
    update before the second's gradient), both write gradients, and training is the same."""
    plain = _train_steps(False, use_twice=True)
    fused = _train_steps(True, use_twice=True)
    _assert_same_training(plain, fused)
    assert all(step[0] is False and all(step[1:]) for step in fused[2])


def test_sgd_in_backward_keeps_a_nan_as_the_optimizer_does(kernels):
    """A diverged gradient leaves NaN planes on both paths (torch.clamp keeps NaN; a clip
    that turned it into 0 would hide the divergence from the next step's loss)."""
    from bsq_engine.core.functional import InBackwardSGD

    results = []
    for in_backward in (False, True):
        pos, neg, scale = continuous_planes((4, 3), 8, seed=3)
        opt = torch.optim.SGD([pos, neg, scale], lr=0.1, momentum=0.9)
        sgd = InBackwardSGD(opt, opt.param_groups[0], pos, neg) if in_backward else None
        if sgd is not None:
            sgd.arm()
        weight, _norms = weight_and_group_norms(pos, neg, scale, native=True, sgd=sgd)
        (weight * torch.tensor(float("nan"))).sum().backward()
        assert (pos.grad is None) == in_backward  # the update ran in the backward pass
        opt.step()
        results.append(pos.detach())
    assert bool(results[0].isnan().all()) and bool(results[1].isnan().all())


# ------------------------------------------------ an optional accelerator (no build needed)


@pytest.fixture
def fresh_state(monkeypatch):
    """A process that has not tried to build yet (restored afterwards)."""
    monkeypatch.setattr(native, "_STATE", {"tried": False, "module": None, "why": ""})


def test_bsq_native_0_turns_the_kernels_off_without_building(monkeypatch, fresh_state, caplog):
    monkeypatch.setenv("BSQ_NATIVE", "0")
    monkeypatch.setattr(native, "_build", lambda: pytest.fail("built although BSQ_NATIVE=0"))
    with caplog.at_level(logging.INFO, logger=native.__name__):
        assert native.kernels() is None and native.kernels() is None
    assert "BSQ_NATIVE=0" in native.status()
    assert len(caplog.records) == 1  # one line per process


def test_a_failed_build_logs_once_and_the_eager_path_runs(monkeypatch, fresh_state, caplog):
    monkeypatch.delenv("BSQ_NATIVE", raising=False)
    calls = []

    def broken_build():
        calls.append(1)
        raise OSError("g++: command not found")

    monkeypatch.setattr(native, "_build", broken_build)
    pos, neg, scale = continuous_planes((4, 3, 3, 3), 4, seed=0)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        w_native, _, grads = _run(pos, neg, scale, True, True, torch.channels_last)
        w_eager, _, eager = _run(pos, neg, scale, False, True, torch.channels_last)
    assert len(calls) == 1 and len(caplog.records) == 1  # tried once, said once
    assert "g++: command not found" in native.status() and "eager" in native.status()
    assert torch.equal(w_native, w_eager)
    for got, want in zip(grads, eager):
        assert torch.equal(got, want)


def test_native_kernels_are_not_used_off_the_cpu_float32_path(monkeypatch, fresh_state):
    monkeypatch.setattr(native, "_build", lambda: pytest.fail("built for a float64 layer"))
    planes = torch.rand(3, 4, dtype=torch.float64)
    assert native.kernels_for(planes, planes) is None
    assert native.kernels_for(torch.rand(8, 4)[:, :2], torch.rand(4, 2)) is None  # strided

"""The trainer's fused SGD, and why a fused run once ended differently from its resumed twin."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bsq_engine.core import native
from bsq_engine.core.layers import BitConv2d, BitLayer
from bsq_engine.core.quantize import BSQConfig, prepare_bsq, requantize_
from bsq_engine.training import fast_path
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.checkpoint import load_checkpoint, save_checkpoint
from bsq_engine.training.fast_path import make_sgd
from bsq_engine.training.presets import make_config
from bsq_engine.training.trainer import Trainer


def _two_steps(param: nn.Parameter, fused: bool | None) -> torch.Tensor:
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=1e-4, fused=fused)
    for k in range(2):
        param.grad = torch.full_like(param, 1.0 + k)
        opt.step()
    return param.detach().clone()


def test_torch_fused_sgd_mishandles_a_strided_parameter():
    """The root cause, kept as a test so a torch upgrade that fixes it is noticed: the fused
    kernel updates a sliced (strided) parameter wrongly, foreach does not."""
    base = torch.rand(4, 3, 8, generator=torch.Generator().manual_seed(0))
    dense = _two_steps(nn.Parameter(base[..., 1:7].contiguous()), fused=None)
    assert torch.allclose(_two_steps(nn.Parameter(base[..., 1:7]), fused=None), dense)
    assert not torch.allclose(_two_steps(nn.Parameter(base[..., 1:7]), fused=True), dense)


def test_make_sgd_is_fused_for_dense_parameters_and_falls_back_for_strided_ones():
    dense = [nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(2, 3, 3, 3))]
    dense[1].data = dense[1].data.contiguous(memory_format=torch.channels_last)
    assert make_sgd(dense, lr=0.1).defaults["fused"] is True
    strided = nn.Parameter(torch.zeros(4, 8)[:, 1:7])
    opt = make_sgd([*dense, strided], lr=0.1)
    assert not opt.defaults["fused"]


def test_requantize_leaves_dense_planes():
    torch.manual_seed(0)
    layer = BitConv2d.from_float(nn.Conv2d(3, 4, 3), 8)
    with torch.no_grad():  # two empty MSB planes and one empty LSB plane: a middle slice
        for planes in (layer.pos_planes, layer.neg_planes):
            planes[..., :2] = 0.0
            planes[..., -1] = 0.0
    requantize_(layer)
    assert layer.n_bits == 5
    assert layer.pos_planes.is_contiguous() and layer.neg_planes.is_contiguous()


class _SaveAt(Callback):
    def __init__(self, path, epoch: int):
        self.path, self.epoch = path, epoch

    def on_epoch_end(self, trainer, record, layers):
        if (record["stage"], record["epoch"]) == ("bsq", self.epoch):
            save_checkpoint(self.path, *trainer.checkpoint_state())


class _PlaneUpdates(Callback):
    """Where each BSQ step's plane update ran: ``True`` in the backward pass."""

    def __init__(self):
        self.in_backward = []

    def on_step_end(self, trainer, info):
        if info["stage"] == "bsq":
            layers = [m for m in trainer.model.modules() if isinstance(m, BitLayer)]
            done = [m.plane_sgd is not None and m.plane_sgd.done for m in layers]
            self.in_backward.append(all(done))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "memory_format"), [("mlp", torch.contiguous_format), ("lenet5", torch.channels_last)]
)
def test_fused_resumed_run_ends_identical_to_uninterrupted_run(tmp_path, model, memory_format):
    """A strong alpha with a large lr drops planes by the second re-quantization (the case
    that once diverged); the run and its resumed twin both train with the fused optimizer,
    a conv model in channels_last, and (with the C++ kernels) the planes' update in the
    backward pass, whose momentum buffers the checkpoint carries."""
    settings = dict(
        model=model, pretrain_epochs=1, bsq_epochs=3, finetune_epochs=1, requant_interval=1,
        alpha=2.2, lr=2.0, max_train=256, max_test=128,
    )  # fmt: skip
    path = tmp_path / "mid.safetensors"
    updates = _PlaneUpdates()
    trainer = Trainer(make_config(**settings), [_SaveAt(path, 2), updates])
    full = trainer.run()
    assert trainer.optimizer.defaults["fused"] is True
    assert updates.in_backward and set(updates.in_backward) == {native.kernels() is not None}
    assert trainer.memory_format is memory_format
    tensors, meta = load_checkpoint(path)
    assert any(layer["n_bits"] < 8 for layer in meta["layers"].values())  # planes dropped
    resumed_trainer = Trainer(make_config(**settings))
    resumed = resumed_trainer.run(resume=(tensors, meta))
    assert resumed_trainer.optimizer.defaults["fused"] is True
    assert resumed_trainer.memory_format is memory_format
    assert resumed["accuracy"] == full["accuracy"] and resumed["layers"] == full["layers"]
    full_state, resumed_state = trainer.model.state_dict(), resumed_trainer.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key


# ------------------------------------------------------------ torch.compile (CUDA, opt-in)


def test_compile_is_only_wanted_on_cuda_when_asked(monkeypatch):
    monkeypatch.delenv("BSQ_COMPILE", raising=False)
    assert not fast_path.compile_wanted(torch.device("cuda"))
    monkeypatch.setenv("BSQ_COMPILE", "1")
    assert fast_path.compile_wanted(torch.device("cuda"))
    assert not fast_path.compile_wanted(torch.device("cpu"))


def _tiny_bsq(fused: bool) -> nn.Module:  # linear only: compiling convs takes minutes here
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3))
    model = prepare_bsq(model, BSQConfig(n_bits=4, act_bits=4)).train()
    for layer in model.modules():
        if isinstance(layer, BitLayer):
            layer.fused = fused
    return model


@pytest.mark.slow
def test_compiled_step_forward_matches_eager():
    """What BSQ_COMPILE=1 runs on CUDA, compiled here on the CPU: same loss, same gradients."""
    x = torch.randn(6, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    results = []
    for compile_ in (False, True):
        model = _tiny_bsq(fused=True)
        forward = fast_path.step_forward(model, torch.contiguous_format, True, compile_)
        _, ce, reg = forward(x, y)
        (ce + 0.01 * reg).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((float(ce.detach()), float(reg.detach()), grads))
    (ce_e, reg_e, grads_e), (ce_c, reg_c, grads_c) = results
    assert ce_c == pytest.approx(ce_e, rel=1e-5) and reg_c == pytest.approx(reg_e, rel=1e-5)
    for name, grad in grads_e.items():
        assert torch.allclose(grads_c[name], grad, rtol=1e-4, atol=1e-6), name

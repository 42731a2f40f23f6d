"""How the trainer makes a step fast without changing what it computes.

- :func:`make_sgd`: SGD with one fused kernel per step (falls back to foreach when a
  parameter is strided, which the fused kernel updates wrongly).
- :func:`memory_format_for`: ``channels_last`` for models with 2-D convolutions. BSQ layers
  support it (``core.layers``: planes keep their layout, the weight follows the input), and
  on the CPU the float ResNet-20 step took 1.2x less CPU time in it
  (``benchmarks/step_overhead.py``).
- The fused planes -> weight + group norms node is the layers' default
  (``BitLayer.fused``); :func:`step_forward` only tells it whether the step has a
  regularizer (``BitLayer.fused_norms``: with alpha = 0 no group-norm pass is made).
- :func:`planes_sgd_in_backward`: for one epoch, the fused node's C++ backward applies
  SGD and the clip to the planes in its pass over them (``functional.InBackwardSGD``):
  the planes' gradients are never written, nor read back by the optimizer, nor clipped in
  another pass. Single-process only (DDP must average gradients before any update), not
  under ``torch.compile``, and only for SGD with momentum and no dampening, Nesterov or
  maximize (the trainer's).
- :func:`step_forward`: the forward half of a training step (logits, cross-entropy,
  regularizer), compiled with ``torch.compile`` on CUDA when ``BSQ_COMPILE=1``. Opt-in
  because it was never measured on a GPU (none was available): whether it helps there is
  unknown. On the CPU it stays off: compiled plane kernels (inductor, C++) measured slower
  than the eager ones on ResNet-20's planes, after a minute of compiling (README, "Speed").
  Mixed precision is not offered: autocast would run the convolutions on a 16-bit copy of
  the quantized weight ``s * q / (2^n - 1)``, which the method defines exactly.

Results stay exactly resumable: a resumed run rebuilds the same optimizer and memory format
(``tests/test_optimizer.py``). Outside this module, ``Trainer.run`` holds
``allocator.keep_freed_memory`` so that a step reuses the host memory the last one freed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from bsq_engine.core.functional import InBackwardSGD
from bsq_engine.core.layers import BitConv2d, BitLayer, QuantConv2d
from bsq_engine.core.regularizer import bit_group_lasso

__all__ = [
    "compile_wanted",
    "make_sgd",
    "memory_format_for",
    "planes_sgd_in_backward",
    "step_forward",
    "to_memory_format",
]


def _is_dense(param: torch.Tensor) -> bool:
    return param.is_contiguous() or (
        param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last)
    )


def make_sgd(params, **kwargs) -> torch.optim.SGD:
    """The trainer's SGD: one fused kernel per step when every parameter is dense.

    The fused kernel walks a parameter, its gradient and its momentum buffer as if they
    shared one memory layout. A parameter that is a strided view (bit planes sliced by an
    older ``requantize_``) gets a dense gradient, and the fused update then lands on the
    wrong elements: that, not the checkpoint, is why a fused run once differed from its
    resumed twin (which reloads dense tensors). Layers now store dense planes; this guard
    keeps any other strided parameter on the (correct) foreach path.
    """
    params = list(params)
    return torch.optim.SGD(params, fused=all(_is_dense(p) for p in params) or None, **kwargs)


def memory_format_for(model: nn.Module) -> torch.memory_format:
    """``channels_last`` when the model has a 2-D convolution, else the default format."""
    convs = (nn.Conv2d, BitConv2d, QuantConv2d)
    if any(isinstance(m, convs) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """An input batch in the model's format (only image batches have one to change)."""
    if memory_format is torch.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compile_wanted(device: torch.device) -> bool:
    """``torch.compile`` for the step: only on CUDA, only when ``BSQ_COMPILE=1``."""
    return device.type == "cuda" and os.environ.get("BSQ_COMPILE", "") == "1"


def _plain_sgd(group: dict) -> bool:
    """SGD whose rule the kernel applies: with momentum (without, torch keeps no buffer in
    the optimizer state, which the kernel's first step would add), no dampening, etc."""
    return (
        group.get("momentum", 0) > 0
        and group.get("dampening", 0) == 0
        and not group.get("nesterov", False)
        and not group.get("maximize", False)
        and not group.get("differentiable", False)
    )


@contextmanager
def planes_sgd_in_backward(
    model: nn.Module, optimizer: torch.optim.Optimizer, enabled: bool = True
) -> Iterator[list[InBackwardSGD]]:
    """Attach an :class:`InBackwardSGD` to each BSQ layer whose planes the optimizer holds
    (plain SGD only), for the ``with`` block; yields them (arm each step: ``step_forward``
    does). ``enabled=False`` (distributed, compiled) attaches none."""
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    attached = []
    if enabled and isinstance(optimizer, torch.optim.SGD):
        for layer in model.modules():
            if not isinstance(layer, BitLayer):
                continue
            pos, neg = layer.pos_planes, layer.neg_planes
            group = groups.get(id(pos))
            if group is None or groups.get(id(neg)) is not group or not _plain_sgd(group):
                continue
            layer.plane_sgd = InBackwardSGD(optimizer, group, pos, neg)
            attached.append(layer)
    try:
        yield [layer.plane_sgd for layer in attached]
    finally:
        for layer in attached:
            layer.plane_sgd = None


def step_forward(
    model: nn.Module, memory_format, use_reg: bool, compile: bool = False, plane_sgd=()
):
    """``forward(xb, yb) -> (logits, cross_entropy, regularizer or None)`` for one step.

    ``plane_sgd``: the epoch's :class:`InBackwardSGD` updaters, armed before each forward."""

    for layer in model.modules():
        if isinstance(layer, BitLayer):
            layer.fused_norms = use_reg  # no group-norm pass in a step without regularizer

    def forward(xb: torch.Tensor, yb: torch.Tensor):
        for updater in plane_sgd:
            updater.arm()
        logits = model(to_memory_format(xb, memory_format))
        reg = bit_group_lasso(model) if use_reg else None
        return logits, F.cross_entropy(logits, yb), reg

    if not compile:
        return forward
    for layer in model.modules():
        if isinstance(layer, BitLayer):
            # the compiler fuses the plain graph itself; the fused node hands its norms to
            # the regularizer through a Python side effect, which would split the graph
            layer.fused = False
    return torch.compile(forward)

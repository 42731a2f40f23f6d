"""How the trainer makes a step fast without changing what it computes.

- :func:`make_sgd`: SGD with one fused kernel per step (falls back to foreach when a
  parameter is strided, which the fused kernel updates wrongly).
- :func:`memory_format_for`: ``channels_last`` for models with 2-D convolutions. BSQ layers
  support it (``core.layers``: planes keep their layout, the weight follows the input), and
  on the CPU the float ResNet-20 step measured about 1.3x faster in it
  (``benchmarks/step_overhead.py``).
- The fused planes -> weight + group norms node is the layers' default
  (``BitLayer.fused``); nothing to switch on here.

Results stay exactly resumable: a resumed run rebuilds the same optimizer and memory format
(``tests/test_optimizer.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from bsq_engine.core.layers import BitConv2d, QuantConv2d

__all__ = ["make_sgd", "memory_format_for", "to_memory_format"]


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

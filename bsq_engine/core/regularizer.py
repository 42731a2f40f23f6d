"""The bit-level group Lasso with memory-aware reweighing (BSQ_METHOD.md section 2).

Each bit plane of each layer is one group:

    R = sum_l (N_l * n_l / N) * sum_b sqrt(eps + sum_i pos[i, b]^2 + neg[i, b]^2)

The factor ``N_l * n_l / N`` makes big, high-precision layers pay more, so what the
regularizer saves is memory.

Called after the model's forward (as the trainer does), each layer's group norms come from
that forward's fused weight node (see ``layers``): the regularizer then adds no pass over the
planes and its gradient is written together with the weight's. Called on its own, it
computes them.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from bsq_engine.core.functional import EPS
from bsq_engine.core.layers import BitLayer, QuantLayer

__all__ = ["EPS", "bit_group_lasso", "clip_planes_"]


def bit_group_lasso(model: nn.Module, eps: float = EPS) -> torch.Tensor:
    """Regularizer value ``R`` over every ``BitLayer`` (a differentiable scalar).

    >>> from torch import nn; from bsq_engine.core.quantize import prepare_bsq
    >>> m = prepare_bsq(nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = m.pos_planes.zero_(); _ = m.neg_planes.zero_(); m.pos_planes[0, 0, 0] = 1.0
    >>> round(float(bit_group_lasso(m, eps=0.0)), 6)  # (2 * 8 / 2) * 1
    8.0
    """
    layers = [m for m in model.modules() if isinstance(m, BitLayer)]
    if not layers:
        return torch.zeros(())
    sizes = [layer.n_weights for layer in layers]
    total_weights = sum(sizes)
    norms = [layer.group_norms(eps) for layer in layers]  # (n_l,) each
    # one cat and one dot (2 autograd nodes) instead of a product and a sum per layer: the
    # same sum in another order, equal to float rounding
    coef = [
        size * layer.reported_bits / total_weights
        for size, layer, n in zip(sizes, layers, norms)
        for _ in range(n.shape[0])
    ]
    flat = torch.cat(norms)  # (sum_l n_l,)
    return torch.dot(flat, _coefficients(tuple(coef), flat.device, flat.dtype))


@lru_cache(maxsize=16)
def _cached_coefficients(coef: tuple, device: torch.device, dtype: torch.dtype):
    return torch.tensor(coef, dtype=dtype, device=device)


def _coefficients(coef: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The per-plane factors as a tensor, built once per (bits, device): on CUDA a fresh
    copy from host memory each step would wait for the queued kernels. Built in the graph
    under ``torch.compile`` (the compiler cannot trace the cache)."""
    if torch.compiler.is_compiling():
        return torch.tensor(coef, dtype=dtype, device=device)
    return _cached_coefficients(coef, device, dtype)


@torch.no_grad()
def clip_planes_(model: nn.Module) -> None:
    """After every optimizer step: planes back into [0, 2] (fixed weights into [-1, 1]).

    One ``clamp_`` per plane tensor (one pass over it; the multi-tensor kernels need a pass
    per bound and measured 3x slower on ResNet-20's planes), one multi-tensor clamp for
    all the (scalar) scales."""
    scales = []
    for module in model.modules():
        if isinstance(module, BitLayer):
            sgd = module.plane_sgd
            if sgd is None or not sgd.done:  # else: clipped by the update in backward
                module.pos_planes.clamp_(0.0, 2.0)
                module.neg_planes.clamp_(0.0, 2.0)
        elif isinstance(module, QuantLayer):
            module.weight.clamp_(-1.0, 1.0)
        else:
            continue
        scales.append(module.scale)
    if scales:
        torch._foreach_clamp_min_(scales, 1e-12)

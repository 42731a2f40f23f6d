"""The bit-level group Lasso with memory-aware reweighing (BSQ_METHOD.md section 2).

Each bit plane of each layer is one group:

    R = sum_l (N_l * n_l / N) * sum_b sqrt(eps + sum_i pos[i, b]^2 + neg[i, b]^2)

The factor ``N_l * n_l / N`` makes big, high-precision layers pay more, so what the
regularizer saves is memory.
"""

from __future__ import annotations

import torch
from torch import nn

from bsq_engine.core.layers import BitLayer, QuantLayer

__all__ = ["EPS", "bit_group_lasso", "clip_planes_"]

EPS = 1e-8


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
    total_weights = sum(layer.n_weights for layer in layers)
    terms = []
    for layer in layers:
        n_bits = layer.n_bits
        pos = layer.pos_planes.reshape(-1, n_bits)  # (N_l, n_bits)
        neg = layer.neg_planes.reshape(-1, n_bits)  # (N_l, n_bits)
        group_norms = torch.sqrt(eps + pos.square().sum(0) + neg.square().sum(0))  # (n_bits,)
        weight = layer.n_weights * layer.reported_bits / total_weights
        terms.append(weight * group_norms.sum())
    return torch.stack(terms).sum()


@torch.no_grad()
def clip_planes_(model: nn.Module) -> None:
    """After every optimizer step: planes back into [0, 2] (fixed weights into [-1, 1])."""
    for module in model.modules():
        if isinstance(module, BitLayer | QuantLayer):
            module.clip_()

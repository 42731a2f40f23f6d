"""Per-layer sensitivity to quantization, for HAWQ-style bit allocation.

Two estimators of "how much does the loss grow if layer l is quantized to b bits":

- ``hessian``: HAWQ-V2's second-order model, ``cost = Tr(H_l) / N_l * ||Q_b(W_l) - W_l||^2``,
  with the Hessian trace of each layer's weights estimated by Hutchinson's method
  (``E[v^T H v]`` over Rademacher vectors ``v``, one Hessian-vector product per sample).
- ``loo``: measured one-layer-at-a-time: quantize only layer l to b bits and measure the
  loss increase on a few batches (no model, no approximation; costs L x B evaluations).

``Q_b`` is the fixed-precision quantizer of the uniform baselines (``s = max|W|``, then
``s * Q_b(W / s)``), so the costs describe the scheme that QAT will then train.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from bsq_engine.core.functional import quantize_unit

__all__ = [
    "SENSITIVITY_METHODS",
    "hessian_costs",
    "hessian_traces",
    "loo_costs",
    "quant_error",
    "weight_layers",
]

SENSITIVITY_METHODS = ("hessian", "loo")
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def weight_layers(
    model: nn.Module, names: Sequence[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the float ``Conv2d`` / ``Linear`` layers (or those named)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if names is None:
        return found
    by_name = dict(found)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"Layers {missing} are not Conv2d/Linear layers of this model.")
    return [(n, by_name[n]) for n in names]


def quantize_weight(weight: torch.Tensor, n_bits: int) -> torch.Tensor:
    """The uniform baseline's quantizer: ``s * Q_n(W / s)`` with ``s = max|W|``."""
    scale = weight.abs().max().clamp(min=1e-12)
    return scale * quantize_unit(weight / scale, n_bits)


def quant_error(weight: torch.Tensor, n_bits: int) -> float:
    """``||Q_n(W) - W||^2``, the squared perturbation quantization causes.

    >>> quant_error(torch.tensor([1.0, -1.0, 0.0]), 1)
    0.0
    """
    with torch.no_grad():
        return float((quantize_weight(weight, n_bits) - weight).pow(2).sum())


def hessian_traces(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    names: Sequence[str] | None = None,
    n_samples: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Hutchinson estimate of ``Tr(H_l)`` for each layer's weight, averaged over batches.

    Each sample draws a Rademacher ``v`` over all selected weights, computes ``H v`` by
    differentiating ``g . v`` (double backward), and adds ``v_l . (H v)_l`` to layer l.
    The estimate is exact for diagonal Hessians and unbiased otherwise.
    """
    layers = weight_layers(model, names)
    params = [m.weight for _, m in layers]
    generator = torch.Generator().manual_seed(seed)
    totals, n_batches = [0.0] * len(layers), 0
    was_training = model.training
    model.eval()  # BatchNorm statistics must not move while we probe the loss surface
    for xb, yb in batches:
        loss = loss_fn(model, xb, yb)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for _ in range(n_samples):
            vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            for i, (v, h) in enumerate(zip(vs, hv)):
                totals[i] += float((v * h).sum()) / n_samples
        n_batches += 1
    model.train(was_training)
    if n_batches == 0:
        raise ValueError("hessian_traces needs at least one batch of data.")
    return {name: total / n_batches for (name, _), total in zip(layers, totals)}


def hessian_costs(
    model: nn.Module, traces: dict[str, float], candidates: Sequence[int]
) -> list[list[float]]:
    """HAWQ-V2 costs ``Tr(H_l) / N_l * ||Q_b(W_l) - W_l||^2``, one row per traced layer."""
    layers = weight_layers(model, list(traces))
    return [
        [traces[name] / m.weight.numel() * quant_error(m.weight.detach(), b) for b in candidates]
        for name, m in layers
    ]


@torch.no_grad()
def _mean_loss(model: nn.Module, loss_fn: LossFn, batches) -> float:
    losses = [float(loss_fn(model, xb, yb)) for xb, yb in batches]
    if not losses:
        raise ValueError("loo_costs needs at least one batch of data.")
    return sum(losses) / len(losses)


@torch.no_grad()
def loo_costs(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    candidates: Sequence[int],
    names: Sequence[str] | None = None,
) -> list[list[float]]:
    """Measured loss increase when only layer l is quantized to b bits (others float)."""
    was_training = model.training
    model.eval()
    base = _mean_loss(model, loss_fn, batches)
    rows = []
    for _, module in weight_layers(model, names):
        original = module.weight.detach().clone()
        row = []
        for bits in candidates:
            module.weight.copy_(quantize_weight(original, bits))
            row.append(_mean_loss(model, loss_fn, batches) - base)
        module.weight.copy_(original)
        rows.append(row)
    model.train(was_training)
    return rows

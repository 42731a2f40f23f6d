"""Per-layer sensitivity of one float model, measured two ways, and whether bits follow it.

For each layer: the Hutchinson estimate of its Hessian trace (``core.sensitivity``), and the
measured one-layer-at-a-time cost: quantize only that layer to b bits (the fixed-precision
quantizer of the baselines, ``s = max|W|``), keep every other layer float, and measure the
loss increase and the accuracy drop on held-out images. The first is HAWQ-V2's model of
sensitivity, the second the ground truth it approximates.

``rank_agreement`` answers "do a run's bits follow sensitivity?" with Spearman's rank
correlation; ``agreement_sentence`` words it. Both are shared by the CLI and the pages.
No store and no files here (``runs.sensitivity_cache`` does the run's I/O).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from bsq_engine.core.sensitivity import hessian_traces, quantize_weight, weight_layers

__all__ = [
    "BIT_WIDTHS",
    "MIN_LAYERS_FOR_RANK",
    "agreement_sentence",
    "measure_model",
    "rank_agreement",
]

BIT_WIDTHS = (1, 2, 4)  # the one-layer-at-a-time costs (our choice: where layers differ most)
MIN_LAYERS_FOR_RANK = 4  # below this a rank correlation says nothing (3 layers: 6 orders)
Batch = tuple[torch.Tensor, torch.Tensor]


def _cross_entropy(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(xb), yb)


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Sequence[Batch]) -> tuple[float, float]:
    """(mean loss per image, accuracy) over ``batches``."""
    loss, correct, count = 0.0, 0, 0
    for xb, yb in batches:
        logits = model(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        count += len(yb)
    if count == 0:
        raise ValueError("The sensitivity measurement needs at least one test image.")
    return loss / count, correct / count


@torch.no_grad()
def _one_at_a_time(
    model: nn.Module, names: Sequence[str], batches: Sequence[Batch], bit_widths: Sequence[int]
) -> tuple[dict, list[dict]]:
    """The float model's loss/accuracy, and per layer the increase when only it is quantized."""
    base_loss, base_acc = _evaluate(model, batches)
    rows = []
    for _, module in weight_layers(model, names):
        original = module.weight.detach().clone()
        loss_up, acc_drop = {}, {}
        for bits in bit_widths:
            module.weight.copy_(quantize_weight(original, bits))
            loss, acc = _evaluate(model, batches)
            loss_up[str(bits)], acc_drop[str(bits)] = loss - base_loss, 100 * (base_acc - acc)
        module.weight.copy_(original)
        rows.append({"loss_increase": loss_up, "accuracy_drop_points": acc_drop})
    return {"loss": base_loss, "accuracy": base_acc}, rows


def measure_model(
    model: nn.Module,
    names: Sequence[str],
    train_batches: Sequence[Batch],
    test_batches: Sequence[Batch],
    *,
    bit_widths: Sequence[int] = BIT_WIDTHS,
    hutchinson_samples: int = 32,
    seed: int = 0,
) -> dict:
    """Sensitivity of the float ``model``'s layers ``names``.

    The Hessian trace is estimated on ``train_batches`` (as HAWQ does, and as the ``hawq``
    baseline's plan does, so the numbers agree); the one-layer-at-a-time costs are measured
    on ``test_batches`` (held-out images: the accuracy drop a user would see). Returns plain
    JSON-ready data: ``{"layers": [{name, n_weights, trace, trace_per_weight,
    loss_increase: {bits: ...}, accuracy_drop_points: {bits: ...}}], "base": {...},
    "bit_widths", "hutchinson_samples", "seconds"}``.
    """
    started = time.perf_counter()
    was_training = model.training
    model.eval()  # BatchNorm uses its running statistics: the model as it is evaluated
    try:
        traces = hessian_traces(
            model, _cross_entropy, train_batches, names, hutchinson_samples, seed=seed
        )
        base, costs = _one_at_a_time(model, names, test_batches, bit_widths)
    finally:
        model.train(was_training)
    layers = []
    for (name, module), cost in zip(weight_layers(model, names), costs):
        n_weights = module.weight.numel()
        layers.append({"name": name, "n_weights": n_weights, "trace": traces[name],
                       "trace_per_weight": traces[name] / n_weights, **cost})  # fmt: skip
    return {
        "layers": layers, "base": base, "bit_widths": [int(b) for b in bit_widths],
        "hutchinson_samples": hutchinson_samples,
        "train_images": sum(len(y) for _, y in train_batches),
        "test_images": sum(len(y) for _, y in test_batches),
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


def rank_agreement(sensitivity: Sequence[float], bits: Sequence[float]) -> float | None:
    """Spearman's rank correlation of ``sensitivity`` and ``bits`` (ties get average ranks);
    ``None`` when it is undefined (fewer than 2 layers, or either side constant).

    >>> rank_agreement([0.1, 5.0, 2.0, 9.0], [2, 6, 4, 8])
    1.0
    >>> rank_agreement([0.1, 5.0, 2.0, 9.0], [4, 4, 4, 4]) is None
    True
    """
    if len(sensitivity) != len(bits) or len(bits) < 2:
        return None
    a, b = rankdata(np.asarray(sensitivity, float)), rankdata(np.asarray(bits, float))
    if a.std() == 0 or b.std() == 0:
        return None
    rho = float(np.corrcoef(a, b)[0, 1])
    return None if math.isnan(rho) else round(rho, 6)


def agreement_sentence(layers: Sequence[dict], bits: Sequence[int] | None, whose: str) -> str:
    """One sentence, from the numbers: do ``whose`` bits follow the layers' sensitivity?

    The sensitivity ranked is the Hessian trace per weight (HAWQ-V2's average trace): the
    cost of coarser weights in a layer grows with it, whatever the layer's size.
    """
    if not bits:
        return "No bits to compare yet: the run has no final bits per layer (it has not finished)."
    if len(layers) < MIN_LAYERS_FOR_RANK:
        return (f"Too few layers to say whether {whose} bits follow sensitivity: "
                f"{len(layers)} quantized layers, a rank correlation needs at least "
                f"{MIN_LAYERS_FOR_RANK}.")  # fmt: skip
    rho = rank_agreement([layer["trace_per_weight"] for layer in layers], bits)
    if rho is None:
        return (f"Every layer has the same bits in {whose} scheme, so its bits cannot follow "
                "sensitivity (nothing to rank).")  # fmt: skip
    if rho >= 0.5:
        verdict = "follow sensitivity (the more sensitive layers kept more bits)"
    elif rho <= -0.5:
        verdict = "go against sensitivity (the more sensitive layers got fewer bits)"
    else:
        verdict = "barely follow sensitivity (a weak rank relation)"
    return (
        f"{whose[0].upper()}{whose[1:]} bits {verdict}: Spearman rank correlation "
        f"{rho:+.2f} between Hessian trace per weight and bits over {len(layers)} layers."
    )

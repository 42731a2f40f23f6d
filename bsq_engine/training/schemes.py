"""The fixed-scheme baselines: which bits each layer gets before quantization-aware training.

- ``uniform``: every quantized layer at ``uniform_bits``; with ``first_last_bits`` the first
  and last quantized layers get that many bits instead (the field's common practice: the
  input and classifier layers are the most fragile and the smallest).
- ``scheme``: a given per-layer scheme, trained from the float model (the BSQ paper's
  Table-1 control: is BSQ's *scheme* the win, or its training?).
- ``hawq``: per-layer sensitivity of the float model (Hutchinson Hessian trace, or measured
  one layer at a time), then the cheapest bits under the ``avg_bits`` budget by exact
  integer programming (HAWQ-V2/V3 style), then QAT of that scheme.

Every method then trains its scheme with the same ``QuantLayer`` quantizer, epochs and
learning rate (the ``qat`` stage), and finetunes like BSQ does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from bsq_engine.core.allocation import DEFAULT_CANDIDATES, allocate_bits
from bsq_engine.core.quantize import prepare_uniform, quantized_layers
from bsq_engine.core.sensitivity import hessian_costs, hessian_traces, loo_costs
from bsq_engine.training.config import RunConfig

__all__ = ["SENSITIVITY_BATCHES", "plan_scheme", "prepare_fixed"]

# What the sensitivity is measured on (our choice; HAWQ uses a few training batches too):
# 2 batches of 256 training images and 32 Hutchinson samples per batch.
SENSITIVITY_BATCHES, SENSITIVITY_BATCH_SIZE, HUTCHINSON_SAMPLES = 2, 256, 32


def _cross_entropy(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(xb), yb)


def _layer_names(model: nn.Module, config: RunConfig) -> list[str]:
    """Names of the layers ``prepare_uniform`` will quantize, in order (a dry run on a copy
    keeps one rule for "which layers are quantized")."""
    import copy

    probe = prepare_uniform(copy.deepcopy(model), 1, config.bsq_config())
    return [name for name, _ in quantized_layers(probe)]


def _sensitivity_plan(model: nn.Module, config: RunConfig, data, device) -> dict:
    names = _layer_names(model, config)
    loader = data.train_loader(SENSITIVITY_BATCH_SIZE, seed=config.seed, device=device)
    batches = list(itertools.islice(loader, SENSITIVITY_BATCHES))
    candidates = [b for b in DEFAULT_CANDIDATES if b <= config.max_bits]
    traces = None
    if config.sensitivity == "hessian":
        traces = hessian_traces(
            model, _cross_entropy, batches, names, HUTCHINSON_SAMPLES, seed=config.seed
        )
        costs = hessian_costs(model, traces, candidates)
    else:
        costs = loo_costs(model, _cross_entropy, batches, candidates, names)
    sizes = [model.get_submodule(n).weight.numel() for n in names]
    bits = allocate_bits(costs, sizes, config.avg_bits, candidates)
    return {
        "method": config.sensitivity, "layers": names, "candidates": candidates,
        "costs": costs, "traces": traces, "bits": bits, "avg_bits_budget": config.avg_bits,
    }  # fmt: skip


def plan_scheme(model: nn.Module, config: RunConfig, data=None, device="cpu") -> dict:
    """Bits per quantized layer for a fixed-scheme method, from the float ``model``.

    Returns ``{"layers": [...], "bits": [...], ...}``; ``hawq`` adds its sensitivity
    measurements (``costs``, ``traces``) so a page can show why each layer got its bits.
    """
    names = _layer_names(model, config)
    if config.method == "hawq":
        return _sensitivity_plan(model, config, data, device)
    if config.method == "scheme":
        if len(config.scheme) != len(names):
            raise ValueError(
                f"The scheme has {len(config.scheme)} bit-widths but {config.model} has "
                f"{len(names)} quantized layers ({', '.join(names)}): give one per layer."
            )
        return {"layers": names, "bits": list(config.scheme)}
    bits = [config.uniform_bits] * len(names)
    if config.first_last_bits is not None and bits:
        bits[0] = bits[-1] = config.first_last_bits
    return {"layers": names, "bits": bits}


def prepare_fixed(model: nn.Module, config: RunConfig, plan: dict) -> nn.Module:
    """Swap in fixed-precision layers carrying the plan's bits (``QuantLayer.n_bits`` only
    changes the quantizer's grid, so one ``prepare_uniform`` serves every scheme)."""
    model = prepare_uniform(model, config.max_bits, config.bsq_config())
    layers = dict(quantized_layers(model))
    for name, bits in zip(plan["layers"], plan["bits"]):
        layers[name].n_bits = int(bits)
    return model

"""Exact bit allocation against brute force; BOPs on hand-counted layers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from bsq_engine.core.allocation import allocate_bits, scheme_cost
from bsq_engine.core.cost import bops, layer_macs


def _brute_force(costs, sizes, avg_bits, candidates):
    best, best_cost = None, np.inf
    budget = avg_bits * sum(sizes)
    for scheme in itertools.product(candidates, repeat=len(sizes)):
        if sum(n * b for n, b in zip(sizes, scheme)) > budget + 1e-9:
            continue
        cost = scheme_cost(costs, candidates, scheme)
        if cost < best_cost - 1e-12:
            best, best_cost = scheme, cost
    return best, best_cost


@pytest.mark.parametrize("seed", range(12))
def test_allocation_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(2, 5))
    candidates = [1, 2, 4, 8] if seed % 2 else [2, 3, 4, 5, 6]
    sizes = rng.integers(10, 5000, n_layers).tolist()
    # Costs fall with bits, like a real quantization error: sensitivity x 4^-bits + noise.
    sens = rng.lognormal(0, 2, n_layers)
    costs = [[s * 4.0 ** (-b) + rng.uniform(0, 1e-3) for b in candidates] for s in sens]
    avg_bits = float(rng.uniform(min(candidates), max(candidates)))
    scheme = allocate_bits(costs, sizes, avg_bits, candidates)
    _, best_cost = _brute_force(costs, sizes, avg_bits, candidates)
    assert sum(n * b for n, b in zip(sizes, scheme)) <= avg_bits * sum(sizes) + 1e-6
    assert scheme_cost(costs, candidates, scheme) == pytest.approx(best_cost, rel=1e-9)


def test_sensitive_layer_gets_the_bits():
    # Layer 0 is 100x as sensitive; equal sizes; a budget of 4 average bits out of {2, 6}.
    costs = [[100 * 4.0**-2, 100 * 4.0**-6], [4.0**-2, 4.0**-6]]
    assert allocate_bits(costs, [100, 100], 4, [2, 6]) == [6, 2]


def test_budget_met_exactly_is_feasible():
    assert allocate_bits([[1, 0], [1, 0]], [3, 7], 4.0, [4, 8]) == [4, 4]


def test_allocation_refuses_impossible_budgets_and_bad_tables():
    with pytest.raises(ValueError, match="below the smallest candidate"):
        allocate_bits([[1, 0]], [10], 1.5, [2, 4])
    with pytest.raises(ValueError, match="layers x candidates"):
        allocate_bits([[1, 0, 3]], [10], 4, [2, 4])
    with pytest.raises(ValueError, match="NaN"):
        allocate_bits([[np.nan, 0]], [10], 4, [2, 4])


def test_layer_macs_and_bops_by_hand():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 10),
    )  # fmt: skip
    macs = layer_macs(model, torch.zeros(5, 2, 6, 6))
    # conv1: 4x6x6 outputs x 2 inputs x 9; depthwise: 4x4x4 outputs x 1 x 9; fc: 64 x 10
    assert macs == {"0": 4 * 36 * 2 * 9, "2": 64 * 9, "4": 640}
    total = bops(macs, {"0": 8, "2": 0, "4": 2}, act_bits=4)
    assert total == (macs["0"] * 8 + macs["4"] * 2) * 4  # a pruned layer costs nothing
    assert bops(macs, {}, None) == sum(macs.values()) * 32 * 32


def test_layer_macs_counts_quantized_layers_too():
    from bsq_engine.core.quantize import prepare_bsq

    model = prepare_bsq(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)))
    assert layer_macs(model, torch.zeros(1, 1, 4, 4)) == {"0": 8 * 9, "2": 24}

"""Exact bit allocation under a bit budget (the HAWQ-V3 integer program).

Given, for every layer ``l`` and candidate bit-width ``b``, a cost ``c[l][b]`` (the expected
loss increase of quantizing that layer to ``b`` bits) and the layer's weight count ``N_l``,
pick one ``b_l`` per layer minimizing ``sum_l c[l][b_l]`` subject to the average-bits
budget ``sum_l N_l b_l <= avg_bits * sum_l N_l``. Costs are treated as additive across
layers, as HAWQ-V2/V3 do (the second-order model has no cross-layer terms).

Solved exactly with ``scipy.optimize.milp`` over one-hot binary variables (``L x B`` of
them: a few dozen for the models here, solved in milliseconds).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_CANDIDATES", "allocate_bits", "scheme_cost"]

DEFAULT_CANDIDATES = (1, 2, 3, 4, 5, 6, 7, 8)


def _check(costs, sizes, candidates, avg_bits) -> np.ndarray:
    table = np.asarray(costs, dtype=float)
    if table.ndim != 2 or table.shape != (len(sizes), len(candidates)):
        raise ValueError(
            f"costs must be a (layers x candidates) table, {len(sizes)} x {len(candidates)}; "
            f"got shape {table.shape}."
        )
    if not np.isfinite(table).all():
        raise ValueError("costs contain NaN or infinity; re-measure the sensitivities.")
    if any(int(n) <= 0 for n in sizes):
        raise ValueError("every layer needs a positive weight count.")
    lowest = min(candidates)
    if avg_bits < lowest:
        raise ValueError(
            f"A budget of {avg_bits:g} average bits is below the smallest candidate "
            f"({lowest} bits): no scheme fits. Raise --avg-bits to at least {lowest}."
        )
    return table


def allocate_bits(
    costs: Sequence[Sequence[float]],
    sizes: Sequence[int],
    avg_bits: float,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
) -> list[int]:
    """Cheapest bits per layer whose weight-weighted average is at most ``avg_bits``.

    ``costs[l][k]`` is the cost of layer ``l`` at ``candidates[k]`` bits.

    >>> allocate_bits([[9, 1], [2, 1]], sizes=[10, 10], avg_bits=3, candidates=[2, 4])
    [4, 2]
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    table = _check(costs, sizes, candidates, avg_bits)
    n_layers, n_cands = table.shape
    bits = np.asarray(candidates, dtype=float)
    n = np.asarray(sizes, dtype=float)
    # x[l * B + k] = 1 when layer l takes candidate k.
    one_hot = np.kron(np.eye(n_layers), np.ones(n_cands))  # (L, L*B)
    budget_row = (n[:, None] * bits[None, :]).reshape(1, -1)  # (1, L*B)
    constraints = [
        LinearConstraint(one_hot, 1, 1),
        # A tiny slack absorbs float rounding of budgets that are met exactly.
        LinearConstraint(budget_row, -np.inf, avg_bits * n.sum() * (1 + 1e-12)),
    ]
    result = milp(
        c=table.reshape(-1), constraints=constraints, integrality=np.ones(table.size),
        bounds=Bounds(0, 1),
    )  # fmt: skip
    if not result.success:
        raise ValueError(f"The bit allocation found no solution: {result.message}")
    chosen = result.x.reshape(n_layers, n_cands).argmax(axis=1)
    return [int(candidates[k]) for k in chosen]


def scheme_cost(
    costs: Sequence[Sequence[float]], candidates: Sequence[int], scheme: Sequence[int]
) -> float:
    """Total cost of a scheme (bits per layer) under a cost table."""
    index = {b: k for k, b in enumerate(candidates)}
    return float(sum(costs[layer][index[b]] for layer, b in enumerate(scheme)))

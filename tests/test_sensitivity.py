"""Sensitivity estimators on models whose sensitivities are known by construction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsq_engine.core.sensitivity import hessian_costs, hessian_traces, loo_costs, quant_error


class TwoBranch(nn.Module):
    """y = A x1 + B x2: each branch sees its own input, so its Hessian is known exactly."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3, bias=False)
        self.b = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.a(x[:, :4]) + self.b(x[:, 4:])


def _mse(model, xb, yb):
    return 0.5 * F.mse_loss(model(xb), yb, reduction="sum") / len(xb)


def _data(gain_b: float, n: int = 64, orthogonal: bool = True):
    torch.manual_seed(0)
    x = torch.randn(n, 8)
    if orthogonal:  # columns of each branch's input orthogonal: its Hessian is diagonal
        q, _ = torch.linalg.qr(torch.randn(n, 8))
        x = q * n**0.5
    x[:, 4:] *= gain_b
    return x, torch.randn(n, 3)


def _exact_trace(x: torch.Tensor, out: int = 3) -> float:
    # 0.5/n ||W x - y||^2: Hessian w.r.t. W is I_out (x) (X^T X / n); trace = out * ||X||^2 / n
    return out * float(x.pow(2).sum()) / len(x)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    x, y = _data(gain_b=3.0)
    traces = hessian_traces(TwoBranch(), _mse, [(x, y)], n_samples=4)
    assert traces["a"] == pytest.approx(_exact_trace(x[:, :4]), rel=1e-4)
    assert traces["b"] == pytest.approx(_exact_trace(x[:, 4:]), rel=1e-4)
    assert traces["b"] / traces["a"] == pytest.approx(9.0, rel=1e-3)  # gain^2


def test_hutchinson_is_unbiased_for_a_full_hessian():
    x, y = _data(gain_b=2.0, orthogonal=False)
    traces = hessian_traces(TwoBranch(), _mse, [(x, y)], n_samples=400, seed=1)
    assert traces["a"] == pytest.approx(_exact_trace(x[:, :4]), rel=0.1)
    assert traces["b"] == pytest.approx(_exact_trace(x[:, 4:]), rel=0.1)


def test_hessian_costs_scale_with_trace_and_fall_with_bits():
    model = TwoBranch()
    with torch.no_grad():
        model.b.weight.copy_(model.a.weight)  # same weights: only the traces differ
    costs = hessian_costs(model, {"a": 1.0, "b": 10.0}, [1, 2, 4, 8])
    assert costs[1] == pytest.approx([10 * c for c in costs[0]])
    assert costs[0] == sorted(costs[0], reverse=True)
    assert costs[0][0] == pytest.approx(quant_error(model.a.weight.detach(), 1) / 12)


def test_one_layer_at_a_time_finds_the_sensitive_branch():
    torch.manual_seed(0)
    model = TwoBranch()
    x, _ = _data(gain_b=5.0)
    y = model(x).detach()  # the float model is exact: any quantization costs loss
    costs = loo_costs(model, _mse, [(x, y)], [1, 2, 4, 8])
    assert all(cb > 10 * ca for ca, cb in zip(costs[0], costs[1]))  # 25x in expectation
    assert costs[1] == sorted(costs[1], reverse=True)
    assert torch.equal(model(x), y)  # weights restored


def test_loo_cost_is_zero_for_weights_already_on_the_grid():
    model = TwoBranch()
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 1.0]] * 3))  # exact at 1 bit
    x, y = _data(gain_b=1.0)
    assert loo_costs(model, _mse, [(x, y)], [1], names=["a"]) == [[0.0]]


def test_unknown_layer_names_are_refused():
    with pytest.raises(ValueError, match="not Conv2d/Linear"):
        loo_costs(TwoBranch(), _mse, [_data(1.0)], [1], names=["c"])

"""The Learn page's second experiment: where mixed precision beats uniform, as a pair.

Step 5 offers two runs a student can start. The digits MLP shows BSQ dropping bit planes
in seconds, but there uniform 1-bit is already at float level, so no method can win. The
workload the bench found by measurement (``benchmarks/frontier.py``'s default: dsnet, a
depthwise-separable CNN, on 10k Fashion-MNIST images with 4-bit activations) has layers of
very different sensitivity: there a sensitivity-based allocation at 2 average bits beat
uniform 2-bit at the same 16x. This module builds that pair's configs (as overrides of the
pair's preset) and the sentence that compares the student's two finished runs, with the
same Wilson intervals and significance test as the Pareto page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bsq_engine.runs.stats import differs, wilson_interval
from bsq_engine.training.config import describe_method

__all__ = ["PAIR", "PAIR_DATASET", "PAIR_MODEL", "pair_overrides", "pair_sentence"]

PAIR_MODEL, PAIR_DATASET = "dsnet", "fashion_mnist"
# The two settings the bench compares at equal compression (16x): uniform 2-bit, and the
# HAWQ-style allocation (Hutchinson traces, exact integer program) at 2 average bits.
PAIR = (
    {"method": "uniform", "uniform_bits": 2},
    {"method": "hawq", "avg_bits": 2.0, "sensitivity": "hessian"},
)


def pair_overrides(seed: int = 0) -> list[dict[str, Any]]:
    """The pair as ``make_config`` overrides, each with a readable run name."""
    return [
        {**setting, "seed": seed, "name": f"lesson: {describe_method(setting)}"} for setting in PAIR
    ]


def _point(run: Mapping[str, Any]) -> tuple[float, int, str] | None:
    summary = run.get("summary") or {}
    acc, n = run.get("accuracy"), summary.get("test_size")
    if not isinstance(acc, int | float) or not isinstance(n, int) or n <= 0:
        return None
    return float(acc), n, describe_method(run.get("config") or {})


def _line(acc: float, n: int, label: str, run: Mapping[str, Any]) -> str:
    low, high = wilson_interval(acc, n)
    comp = run.get("compression")
    size = f" at {comp:.1f}x" if isinstance(comp, int | float) else ""
    return f"{label}: {100 * acc:.2f}% (95% {100 * low:.1f}-{100 * high:.1f}){size}"


def pair_sentence(uniform: Mapping[str, Any], mixed: Mapping[str, Any]) -> str:
    """Both finished runs with their intervals, and who is ahead by more than the noise.

    >>> u = {"accuracy": 0.818, "compression": 16.0, "summary": {"test_size": 10000},
    ...      "config": {"method": "uniform", "uniform_bits": 2}}
    >>> m = {"accuracy": 0.843, "compression": 16.0, "summary": {"test_size": 10000},
    ...      "config": {"method": "hawq", "avg_bits": 2.0, "sensitivity": "hessian"}}
    >>> pair_sentence(u, m).splitlines()[-1]
    'HAWQ-style (hessian) at 2 avg bits is ahead by 2.50 points, more than the noise.'
    """
    a, b = _point(uniform), _point(mixed)
    if a is None or b is None:
        return "Both runs must finish (with a recorded test-set size) before they compare."
    lines = [_line(*a, uniform), _line(*b, mixed)]
    diff = 100 * (b[0] - a[0])
    if not differs(b[0], b[1], a[0], a[1]):
        lines.append(f"Tied: {abs(diff):.2f} points apart, within the noise of the test set.")
    else:
        ahead = b[2] if diff > 0 else a[2]
        lines.append(f"{ahead} is ahead by {abs(diff):.2f} points, more than the noise.")
    return "\n".join(lines)

"""Uncertainty of test accuracies, statistical ties on a frontier, and collapsed runs.

A test accuracy is a proportion measured on ``n`` images, so it carries binomial noise:
on 1,000 images a run at 90% is 90 ± 1.9 points. Every comparison the app and the
benchmarks print goes through these functions, so "A beats B" always means "by more than
the noise".

Choices the paper leaves open (ours, documented in the README):

- The interval of one accuracy is Wilson's 95% score interval (good at 0% and 100%, where
  the textbook ``p ± 1.96 sqrt(p(1-p)/n)`` breaks down).
- Two accuracies differ significantly when Newcombe's interval for the difference of two
  proportions (built from the two Wilson intervals) excludes 0.
- A run is **collapsed** when every quantized layer is pruned (0 bits: nothing is left to
  compress, so its compression is undefined, never "infinite"), or when its accuracy
  covers less than a tenth of the way from chance to perfect (10 classes: below 19%;
  2 classes: below 55%): such a model has lost its task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "CHANCE_MARGIN",
    "Z95",
    "collapse_reason",
    "diff_interval",
    "differs",
    "frontier_marks",
    "method_verdicts",
    "significantly_better",
    "wilson_interval",
]

Z95 = 1.959963984540054  # two-sided 95% normal quantile
CHANCE_MARGIN = 0.1  # collapsed below chance + 10% of the way to 100% (our choice)


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of a proportion measured on ``n`` samples.

    >>> low, high = wilson_interval(0.9, 1000)
    >>> round(low, 4), round(high, 4)
    (0.8798, 0.9171)
    """
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"n (test-set size) must be a whole number > 0, got {n!r}.")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}.")
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (accuracy + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n))
    return max(center - half, 0.0), min(center + half, 1.0)


def diff_interval(a: float, n_a: int, b: float, n_b: int) -> tuple[float, float]:
    """Newcombe's 95% interval of ``a - b`` from the two Wilson intervals (hybrid score)."""
    la, ua = wilson_interval(a, n_a)
    lb, ub = wilson_interval(b, n_b)
    d = a - b
    return d - math.hypot(a - la, ub - b), d + math.hypot(ua - a, b - lb)


def differs(a: float, n_a: int, b: float, n_b: int) -> bool:
    """True when accuracies ``a`` and ``b`` differ by more than the 95% noise.

    >>> differs(0.91, 10_000, 0.90, 10_000), differs(0.91, 500, 0.90, 500)
    (True, False)
    """
    low, high = diff_interval(a, n_a, b, n_b)
    return low > 0 or high < 0


def collapse_reason(
    accuracy: float | None,
    num_classes: int | None = None,
    layer_bits: Sequence[int] | None = None,
) -> str | None:
    """Why a run is degenerate (``None`` when it is not): every layer pruned, or accuracy
    at chance. Such runs are flagged and kept off the frontier, never plotted as wins.

    >>> collapse_reason(0.12, 10)
    'accuracy 12.0% is at chance (10 classes: chance 10.0%, threshold 19.0%)'
    >>> collapse_reason(0.9, 10, [0, 0]) is not None, collapse_reason(0.9, 10, [0, 3])
    (True, None)
    """
    if layer_bits is not None and len(layer_bits) > 0 and all(b == 0 for b in layer_bits):
        return "every quantized layer is pruned (0 bits): compression is undefined"
    if accuracy is not None and num_classes and num_classes > 1:
        chance = 1.0 / num_classes
        threshold = chance + CHANCE_MARGIN * (1.0 - chance)
        if accuracy < threshold:
            return (
                f"accuracy {100 * accuracy:.1f}% is at chance ({num_classes} classes: "
                f"chance {100 * chance:.1f}%, threshold {100 * threshold:.1f}%)"
            )
    return None


def frontier_marks(
    xs: Sequence[float], accs: Sequence[float], ns: Sequence[int], collapsed: Sequence[bool]
) -> list[str]:
    """Mark each point ``"frontier"``, ``"tied"``, ``"dominated"`` or ``"collapsed"``.

    ``xs``: larger is better (compression). A point is dominated when another
    (non-collapsed) point is at least as good on both axes and strictly better on one. A
    frontier point is ``"tied"`` when some point of larger x is not significantly less
    accurate: its accuracy lead is within the 95% noise, so the smaller model is as good.
    Collapsed points and points without numbers are never on the frontier.

    >>> frontier_marks([4, 8, 8], [0.90, 0.90, 0.89], [1000] * 3, [False] * 3)
    ['dominated', 'frontier', 'dominated']
    >>> frontier_marks([4, 8, 16], [0.95, 0.90, 0.99], [1000] * 3, [False, False, True])
    ['frontier', 'frontier', 'collapsed']
    >>> frontier_marks([4, 8], [0.91, 0.90], [1000, 1000], [False, False])
    ['tied', 'frontier']
    """
    if not len(xs) == len(accs) == len(ns) == len(collapsed):
        raise ValueError("xs, accs, ns and collapsed must have the same length.")
    live = [i for i in range(len(xs)) if not collapsed[i] and _number(xs[i], accs[i])]
    marks = ["collapsed" if collapsed[i] else "dominated" for i in range(len(xs))]
    for i in live:
        dominated = any(
            xs[j] >= xs[i] and accs[j] >= accs[i] and (xs[j] > xs[i] or accs[j] > accs[i])
            for j in live
        )
        if dominated:
            continue
        lead_is_noise = any(
            xs[j] > xs[i] and not differs(accs[i], ns[i], accs[j], ns[j]) for j in live
        )
        marks[i] = "tied" if lead_is_noise else "frontier"
    return marks


def significantly_better(a: dict, b: dict) -> bool:
    """Setting ``a`` is more accurate than ``b`` by more than the test-set noise (Newcombe's
    interval at the two test-set sizes) and by more than twice the seeds' standard error of
    the difference. ``a``/``b``: ``accuracy``, ``test_size``, ``spread`` (seed sd), ``seeds``.
    """
    diff = a["accuracy"] - b["accuracy"]
    seed_se = (a["spread"] ** 2 / a["seeds"] + b["spread"] ** 2 / b["seeds"]) ** 0.5
    noisy = not differs(a["accuracy"], a["test_size"], b["accuracy"], b["test_size"])
    return diff > 0 and not noisy and diff > 2 * seed_se


def method_verdicts(
    rows: Sequence[dict], mixed: Sequence[str] = ("bsq", "hawq"), tolerance: float = 0.02
) -> list[dict]:
    """Each mixed-precision setting M against the uniform settings (``method == "uniform"``,
    first/last-8 included) **at equal compression** (within ``tolerance``):

    - **loses**: a uniform setting at least as compressed is significantly more accurate;
    - **wins**: M is significantly more accurate than the best uniform setting of its size
      (a less compressed uniform setting may still be more accurate: that is a different
      size, and the frontier shows it);
    - **tie**: the best uniform setting of its size is within noise of M;
    - **trade-off**: no uniform setting of M's size; the rival named is the nearest less
      compressed one (the most accurate of equal size), so the line says what M's extra
      compression costs.

    >>> u = dict(method="uniform", test_size=2000, spread=0.0, seeds=1)
    >>> rows = [dict(u, label="u4", accuracy=0.87, compression=8.0),
    ...         dict(u, label="u2", accuracy=0.80, compression=16.0),
    ...         dict(u, label="h16", method="hawq", accuracy=0.86, compression=16.0),
    ...         dict(u, label="h22", method="hawq", accuracy=0.79, compression=22.0)]
    >>> [(v["mixed"], v["uniform"], v["verdict"]) for v in method_verdicts(rows)]
    [('h16', 'u2', 'wins'), ('h22', 'u2', 'trade-off')]
    """
    uniform = [r for r in rows if r["method"] == "uniform" and r["compression"]]
    verdicts = []
    for m in (r for r in rows if r["method"] in mixed and r["compression"]):
        size = m["compression"]
        below = [u for u in uniform if u["compression"] <= size * (1 + tolerance)]
        above = [u for u in uniform if u["compression"] >= size * (1 - tolerance)]
        best_same = max((u for u in below if u in above), key=_acc, default=None)
        best_above = max(above, key=_acc, default=None)
        if best_above is not None and significantly_better(best_above, m):
            rival, verdict = best_above, "loses"
        elif best_same is not None:
            rival = best_same
            verdict = "wins" if significantly_better(m, best_same) else "tie"
        else:
            nearest = max(below, key=lambda u: (u["compression"], u["accuracy"]), default=None)
            rival, verdict = nearest or best_above, "trade-off"
        verdicts.append({
            "mixed": m["label"], "uniform": rival and rival["label"], "verdict": verdict,
            "diff_points": 100 * (m["accuracy"] - rival["accuracy"]) if rival else None,
        })  # fmt: skip
    return verdicts


def _acc(row: dict) -> float:
    return row["accuracy"]


def _number(*values) -> bool:
    return all(v is not None and isinstance(v, int | float) and math.isfinite(v) for v in values)

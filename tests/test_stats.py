"""Wilson intervals, significance of differences, tied frontier points, collapsed runs."""

from __future__ import annotations

import math

import pytest

from bsq_engine.runs.stats import (
    collapse_reason,
    diff_interval,
    differs,
    frontier_marks,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("acc", "n", "low", "high"),
    [
        # Hand-computed from the closed form (z = 1.96): centre (p + z^2/2n) / (1 + z^2/n).
        (0.5, 100, 0.403832, 0.596168),
        (0.0, 10, 0.0, 0.277533),  # Wilson stays inside [0, 1] where the Wald interval is 0
        (1.0, 10, 0.722467, 1.0),
        (0.9, 1000, 0.879848, 0.917091),
    ],
)
def test_wilson_interval_matches_hand_computed_values(acc, n, low, high):
    got = wilson_interval(acc, n)
    assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_narrows_with_more_test_images():
    small, large = wilson_interval(0.9, 500), wilson_interval(0.9, 10_000)
    assert small[1] - small[0] > 3 * (large[1] - large[0])


@pytest.mark.parametrize(("acc", "n"), [(1.2, 10), (-0.1, 10), (0.5, 0), (0.5, 2.5)])
def test_wilson_interval_refuses_bad_input(acc, n):
    with pytest.raises(ValueError, match="must be"):
        wilson_interval(acc, n)


def test_difference_interval_is_symmetric_and_contains_the_difference():
    low, high = diff_interval(0.9, 1000, 0.88, 1000)
    assert low < 0.02 < high
    back = diff_interval(0.88, 1000, 0.9, 1000)
    assert back == pytest.approx((-high, -low))


def test_differs_needs_more_than_noise():
    # one point on 10k images is significant, on 500 it is not; the same run never differs
    assert differs(0.91, 10_000, 0.90, 10_000)
    assert not differs(0.91, 500, 0.90, 500)
    assert not differs(0.9, 1000, 0.9, 1000)
    assert differs(0.97, 1000, 0.90, 1000)


def test_frontier_marks_on_hand_built_points():
    xs = [4.0, 8.0, 8.0, 16.0, 32.0, 40.0, math.nan]
    accs = [0.905, 0.90, 0.85, 0.80, 0.995, 0.10, 0.9]
    ns = [1000] * 7
    collapsed = [False, False, False, False, True, True, False]
    marks = frontier_marks(xs, accs, ns, collapsed)
    assert marks == [
        "tied",  # 0.5 points above the 8x point on 1k images: noise, the 8x model is as good
        "frontier",  # significantly above the 16x point
        "dominated",  # same size as the 8x point, less accurate
        "frontier",  # the smallest live model
        "collapsed",  # its accuracy is never a win, however high
        "collapsed",
        "dominated",  # no compression: never on the frontier
    ]


def test_a_significant_lead_stays_on_the_frontier():
    assert frontier_marks([4, 8], [0.95, 0.90], [1000, 1000], [False, False]) == [
        "frontier", "frontier",
    ]  # fmt: skip


def test_frontier_marks_checks_lengths():
    with pytest.raises(ValueError, match="same length"):
        frontier_marks([1], [0.5, 0.6], [10], [False])


def test_collapse_reasons():
    assert "pruned" in collapse_reason(0.95, 10, [0, 0, 0])
    assert "chance" in collapse_reason(0.185, 10, [2, 2])  # threshold 10% + 0.1 x 90%
    assert collapse_reason(0.195, 10, [2, 2]) is None
    assert collapse_reason(0.6, 2, [1]) is None  # binary task: threshold 55%
    assert "chance" in collapse_reason(0.54, 2, [1])
    assert collapse_reason(None, None, None) is None

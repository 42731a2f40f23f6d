"""Pareto frontier math on hand-built points, and the traces of the Pareto chart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.views.frames import runs_frame
from dashboard.views.pareto import frontier_points, pareto_chart, pareto_front


def _pts(xs, ys) -> pd.DataFrame:
    return pd.DataFrame({"x": xs, "y": ys}, index=[f"p{i}" for i in range(len(xs))])


def test_dominated_point_excluded_when_maximizing_x():
    pts = _pts([10.0, 8.0, 12.0, 5.0], [90.0, 89.0, 85.0, 91.0])
    front = pareto_front(pts, "x", "y", maximize_x=True)
    # p1 (8, 89) is beaten by p0 (10, 90) on both axes; the others trade off
    assert front.tolist() == [True, False, True, True]
    assert list(front.index) == list(pts.index)


def test_minimizing_x_flips_which_points_win():
    pts = _pts([2.0, 3.0, 4.0, 3.0], [88.0, 90.0, 89.0, 87.0])
    front = pareto_front(pts, "x", "y", maximize_x=False)
    # fewer bits is better: (4, 89) is beaten by (3, 90); (3, 87) by (2, 88)
    assert front.tolist() == [True, True, False, False]
    assert pareto_front(pts, "x", "y", maximize_x=True).tolist() == [False, True, True, False]


def test_exact_ties_are_both_optimal_but_weak_domination_is_not():
    pts = _pts([10.0, 10.0, 10.0], [90.0, 90.0, 89.0])
    # equal in x, worse in y: dominated; identical points do not beat each other
    assert pareto_front(pts, "x", "y", maximize_x=True).tolist() == [True, True, False]


def test_nan_points_are_never_optimal_and_do_not_dominate():
    pts = _pts([np.nan, 10.0, 20.0, 5.0], [99.0, 90.0, np.nan, 80.0])
    front = pareto_front(pts, "x", "y", maximize_x=True)
    assert front.tolist() == [False, True, False, False]


def test_single_point_and_all_equal_points():
    assert pareto_front(_pts([3.0], [50.0]), "x", "y", maximize_x=False).tolist() == [True]
    same = _pts([4.0] * 4, [70.0] * 4)
    assert pareto_front(same, "x", "y", maximize_x=True).all()
    assert pareto_front(_pts([], []), "x", "y", maximize_x=True).empty


def _run(run_id, method, acc, bits, status="finished", alpha=5e-3, layers=(8, 4)):
    return {
        "run_id": run_id, "name": f"run-{run_id}", "status": status, "method": method,
        "model": "resnet20", "dataset": "cifar10", "alpha": alpha, "accuracy": acc,
        "float_accuracy": 0.925, "avg_bits": bits, "compression": 32.0 / bits if bits else None,
        "config": {}, "summary": {"layers": [{"name": f"l{i}", "n_bits": b, "n_weights": 10}
                                             for i, b in enumerate(layers)]},
    }  # fmt: skip


@pytest.fixture
def runs_df() -> pd.DataFrame:
    return runs_frame(
        [
            _run("a", "bsq", 0.91, 2.0),  # 16x, 91%: frontier
            _run("b", "bsq", 0.92, 4.0),  # 8x, 92%: frontier
            _run("c", "uniform", 0.90, 4.0),  # 8x, 90%: beaten by b
            _run("d", "uniform", 0.85, 1.0),  # 32x, 85%: frontier
            _run("e", "bsq", None, None, status="running"),
            _run("f", "bsq", 0.99, 1.0, status="running"),  # running: not on the frontier
        ]
    )


def _trace(fig, name):
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, [t.name for t in fig.data]
    return matches[0]


@pytest.mark.parametrize("x_mode", ["compression", "avg_bits"])
def test_frontier_trace_is_sorted_and_holds_only_pareto_points(runs_df, x_mode):
    fig = pareto_chart(runs_df, x_mode)
    assert fig.layout.title.text == "Pareto frontier"
    line = _trace(fig, "Pareto frontier")
    xs = list(line.x)
    assert xs == sorted(xs)
    expected = {"compression": [8.0, 16.0, 32.0], "avg_bits": [1.0, 2.0, 4.0]}[x_mode]
    assert xs == expected
    assert sorted(line.y) == [85.0, 91.0, 92.0]


def test_methods_and_running_runs_have_distinct_traces(runs_df):
    fig = pareto_chart(runs_df, "compression")
    bsq, uniform, running = (_trace(fig, n) for n in ("BSQ", "uniform", "running"))
    assert list(bsq.customdata) == ["a", "b"]
    assert list(uniform.customdata) == ["c", "d"]
    assert list(running.customdata) == ["e", "f"]
    assert len({bsq.marker.symbol, uniform.marker.symbol, running.marker.symbol}) == 3
    assert list(running.text) == ["running", "running"]
    assert "8/4" in bsq.hovertext[0] and "91.00%" in bsq.hovertext[0]
    assert "alpha: 0.005" in bsq.hovertext[0]


def test_reference_points_drawn_as_published_stars(runs_df):
    ref = pd.DataFrame(
        {"label": ["BSQ paper"], "method": ["bsq"], "compression": [14.24],
         "avg_bits": [2.25], "accuracy": [0.9177], "source": ["Yang et al. 2021"]}
    )  # fmt: skip
    fig = pareto_chart(runs_df, "compression", reference_df=ref)
    star = _trace(fig, "published")
    assert star.marker.symbol == "star"
    assert list(star.x) == [14.24]
    assert star.y[0] == pytest.approx(91.77)
    assert "published" in star.text[0]
    assert all(t.name != "published" for t in pareto_chart(runs_df, "compression").data)


def test_frontier_points_ignores_running_and_bad_mode(runs_df):
    front = frontier_points(runs_df, "compression")
    assert front["run_id"].tolist() == ["b", "a", "d"]
    with pytest.raises(ValueError, match="x_mode"):
        pareto_chart(runs_df, "bits")


def test_empty_runs_still_make_a_titled_figure():
    fig = pareto_chart(runs_frame([]), "avg_bits")
    assert fig.layout.title.text == "Pareto frontier"
    assert fig.layout.xaxis.title.text == "Average bits per weight"

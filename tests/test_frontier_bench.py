"""The verdict of ``benchmarks/frontier.py`` on hand-built settings (no training)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bsq_engine.runs.stats import method_verdicts

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "frontier.py"
_spec = importlib.util.spec_from_file_location("frontier_bench", _PATH)
frontier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frontier)


def _row(label, method, acc, comp, spread=0.0, seeds=1):
    return {"label": label, "method": method, "accuracy": acc, "compression": comp,
            "test_size": 2000, "spread": spread, "seeds": seeds}  # fmt: skip


UNIFORM = [_row("u2", "uniform", 0.8455, 16.0), _row("fl1", "uniform", 0.785, 28.8),
           _row("u1", "uniform", 0.64, 32.0)]  # fmt: skip


@pytest.mark.parametrize(
    ("mixed", "verdict", "rival", "extra"),
    [
        (_row("h16", "hawq", 0.87, 16.0), "wins", "u2", ()),  # same size, +2.45 points
        (_row("h16", "hawq", 0.86, 16.0), "tie", "u2", ()),  # +1.45: within noise on 2k images
        (_row("h21", "hawq", 0.8235, 21.4), "trade-off", "u2", ()),  # between sizes: vs the larger
        (_row("h28", "hawq", 0.79, 28.8), "tie", "fl1", ()),  # same size, within noise
        (_row("h23", "hawq", 0.77, 22.6), "trade-off", "u2", ()),  # between fl1 and u2, not "tie"
        (_row("b8", "bsq", 0.80, 8.0), "loses", "u2", ()),  # dominated by a smaller, better run
        (_row("h16", "hawq", 0.87, 16.0, spread=0.03, seeds=3), "tie", "u2", ()),  # seeds disagree
        # a less compressed, more accurate uniform run is another size: still a win at 16x
        (_row("h16", "hawq", 0.87, 16.0), "wins", "u2", [_row("u4", "uniform", 0.88, 8.0)]),
    ],
)
def test_verdict_at_equal_compression(mixed, verdict, rival, extra):
    [result] = method_verdicts([*UNIFORM, *extra, mixed], frontier.MIXED)
    assert (result["verdict"], result["uniform"]) == (verdict, rival)


def test_aggregate_averages_seeds_with_spread_and_interval():
    runs = [{"label": "u2", "method": "uniform", "accuracy": a, "test_size": 1000,
             "compression": 16.0, "bops": 1.0, "collapsed": None, "float_accuracy": 0.9,
             "cpu_s": 1.0} for a in (0.80, 0.82, 0.84)]  # fmt: skip
    [row] = frontier._aggregate(runs)
    assert row["accuracy"] == pytest.approx(0.82) and row["spread"] == pytest.approx(0.02)
    assert row["seeds"] == 3 and 0.02 < row["half_width"] < 0.03


def _saved(path, seed, workload=None):
    import json

    run = {"label": "u2", "method": "uniform", "seed": seed, "accuracy": 0.8, "test_size": 1000,
           "compression": 16.0, "bops": 1.0, "collapsed": None, "float_accuracy": 0.9,
           "cpu_s": 1.0}  # fmt: skip
    workload = workload or {"model": "dsnet", "act_bits": 4}
    doc = {"runs": [run], "workload": {**workload, "seeds": [seed], "cache": f"/c{seed}"}}
    path.write_text(json.dumps(doc))
    return str(path)


def test_combine_joins_seeds_and_refuses_mixtures(tmp_path, capsys):
    a, b = _saved(tmp_path / "a.json", 0), _saved(tmp_path / "b.json", 1)
    runs, workload = frontier._combined([a, b])
    assert [r["seed"] for r in runs] == [0, 1] and workload["seeds"] == [0, 1]
    with pytest.raises(ValueError, match="appears twice"):
        frontier._combined([a, a])
    other = _saved(tmp_path / "c.json", 2, {"model": "lenet5", "act_bits": 4})
    with pytest.raises(ValueError, match="another workload"):
        frontier._combined([a, other])
    (tmp_path / "bad.json").write_text("{damaged")
    assert frontier.main(["--combine", a, str(tmp_path / "bad.json")]) == 2
    assert "cannot combine" in capsys.readouterr().err

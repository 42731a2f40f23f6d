"""The honest bench on the Pareto page: intervals, ties, collapsed runs, best per method."""

from __future__ import annotations

import math

import pytest
from apptest_helpers import open_page, page_text

from bsq_engine.runs.store import RunStore
from dashboard.views.bench import (
    bench_frame,
    best_alpha_within,
    best_at,
    best_sentence,
    retrain_config,
    sensitivity_table,
)
from dashboard.views.frames import runs_frame
from dashboard.views.pareto import frontier_points, pareto_chart

LAYERS = (("fc1", 100), ("fc2", 100))


def _run(run_id, acc, bits, method="bsq", n=1000, seed=0, **config):
    avg = sum(w * b for (_, w), b in zip(LAYERS, bits)) / sum(w for _, w in LAYERS)
    summary = {
        "layers": [{"name": name, "n_bits": b, "n_weights": w}
                   for (name, w), b in zip(LAYERS, bits)],
        "test_size": n, "num_classes": 10, "bops": 1000.0 * avg,
    }  # fmt: skip
    return {
        "run_id": run_id, "name": run_id, "status": "finished", "method": method,
        "model": "lenet5", "dataset": "fashion_mnist", "alpha": config.get("alpha", 0.0),
        "accuracy": acc, "float_accuracy": 0.91, "avg_bits": avg,
        "compression": 32 / avg if avg else None, "summary": summary,
        "config": {"method": method, "seed": seed, **config},
    }  # fmt: skip


RUNS = [
    _run("bsq-a", 0.905, (4, 4), alpha=0.02),  # 8x
    _run("bsq-b", 0.895, (2, 2), alpha=0.05),  # 16x, within 1.5 points of float
    _run("uni2", 0.900, (2, 2), method="uniform", uniform_bits=2),  # 16x: ties bsq-b
    _run("uni1", 0.850, (1, 1), method="uniform", uniform_bits=1),  # 32x
    _run("pruned", 0.10, (0, 0), alpha=0.5),  # every layer pruned: no compression
    _run("chance", 0.12, (1, 0), alpha=0.3),  # 64x at chance: would "win" the frontier
]


@pytest.fixture
def df():
    return bench_frame(runs_frame(RUNS), RUNS)


def test_bench_frame_intervals_marks_and_collapse(df):
    row = df.set_index("run_id")
    assert row.loc["bsq-a", "acc_low"] < 90.5 < row.loc["bsq-a", "acc_high"]
    assert row.loc["bsq-a", "acc_high"] - row.loc["bsq-a", "acc_low"] == pytest.approx(3.6, abs=0.1)
    assert "pruned" in row.loc["pruned", "collapsed"] and math.isnan(
        row.loc["pruned", "compression"]
    )
    assert "chance" in row.loc["chance", "collapsed"]
    assert row.loc["bsq-a", "mark"] == "tied"  # 0.5 points over uni2 (16x) on 1k images
    assert row.loc["uni2", "mark"] == "frontier"  # 5 points over the 32x run: significant
    assert row.loc["uni1", "mark"] == "frontier"
    assert row.loc["bsq-b", "mark"] == "dominated"
    assert set(row.loc[["pruned", "chance"], "mark"]) == {"collapsed"}
    assert set(frontier_points(df, "compression")["run_id"]) == {"bsq-a", "uni2", "uni1"}


def test_chart_flags_collapsed_runs_and_draws_intervals_and_float(df):
    fig = pareto_chart(df, "compression")
    names = [t.name for t in fig.data]
    assert "collapsed" in names and "Pareto frontier" in names
    bsq = next(t for t in fig.data if t.name == "BSQ")
    assert list(bsq.customdata) == ["bsq-a", "bsq-b"]  # collapsed BSQ runs are not here
    assert bsq.error_y.array[0] == pytest.approx(
        df.set_index("run_id").loc["bsq-a", "acc_high"] - 90.5
    )
    line = next(t for t in fig.data if t.name == "Pareto frontier")
    assert 64.0 not in list(line.x)  # the at-chance run never is a win
    assert any("float model 91.00%" in (a.text or "") for a in fig.layout.annotations)
    assert any(t.name == "uniform staircase" for t in fig.data)
    bops = pareto_chart(df, "bops")
    assert bops.layout.xaxis.type == "log"


def test_best_of_each_method_at_a_compression(df):
    best = best_at(df, 16)
    assert best["method"].tolist() == ["uniform", "BSQ"]
    assert best["accuracy (%)"].tolist() == pytest.approx([90.0, 89.5])
    assert best["tied"].tolist() == [True, True]
    sentence = best_sentence(best, 16)
    assert sentence.startswith("At 16x or more: uniform (uni2) 90.0 ± 1.9% at 16.0x; BSQ")
    assert sentence.endswith("Verdict: all within noise of each other.")
    assert best_sentence(best_at(df, 100), 100) == "No finished run reaches 100x."
    alone = best_sentence(best.iloc[:1], 16)  # one method: no comparison to claim
    assert alone.endswith("Verdict: one method only, nothing to compare.")


def test_seeds_are_averaged_per_setting():
    runs = [_run(f"u{s}", acc, (2, 2), method="uniform", uniform_bits=2, seed=s)
            for s, acc in enumerate([0.90, 0.92, 0.94])]  # fmt: skip
    best = best_at(bench_frame(runs_frame(runs), runs), 16)
    assert best.iloc[0]["accuracy (%)"] == pytest.approx(92.0)
    assert best.iloc[0]["seeds"] == 3 and best.iloc[0]["run"] == "uniform 2-bit"


def test_best_alpha_within_points_of_float(df):
    assert best_alpha_within(df, 2.0)["run_id"] == "bsq-b"
    assert best_alpha_within(df, 1.0)["run_id"] == "bsq-a"
    assert best_alpha_within(df, 0.1) is None


def _store_run(store: RunStore, name: str, acc: float, bits: tuple, **config) -> None:
    from apptest_helpers import tiny_config

    run = _run(name, acc, bits, **config)
    cfg = tiny_config(**{k: v for k, v in run["config"].items() if k != "seed"})
    run_id = store.create_run(cfg.to_dict(), name=name)
    store.set_status(run_id, "running")
    summary = {**run["summary"], "accuracy": acc, "float_accuracy": 0.91,
               "avg_bits": run["avg_bits"], "compression": run["compression"]}  # fmt: skip
    store.finish(run_id, summary)


def test_pareto_page_names_the_best_and_flags_the_collapsed(bsq_home):
    store = RunStore(bsq_home)
    _store_run(store, "bsq a=0.05", 0.895, (2, 2), alpha=0.05)
    _store_run(store, "uniform 2", 0.90, (2, 2), method="uniform", uniform_bits=2)
    _store_run(store, "wrecked", 0.10, (0, 0), alpha=0.5)
    at = open_page("pages/pareto.py")
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="pareto-at").set_value(16.0).run()
    text = page_text(at)
    assert "Collapsed runs, flagged and kept off the frontier" in text
    assert "wrecked: every quantized layer is pruned" in text
    assert "At 16x or more: uniform (uniform 2) 90.0 ± 1.9%" in text
    assert "inf" not in text.lower().replace("info", "")
    # the saved bench (assets/bench_frontier.json) is read and shown, with its verdicts
    assert any("Measured bench" in e.label for e in at.expander)
    assert "vs uniform 2-bit:" in text and "points, tie" in text


def test_retrain_this_scheme_makes_a_valid_scheme_config():
    from bsq_engine.training.config import RunConfig
    from bsq_engine.training.presets import make_config

    run = _run("bsq-x", 0.9, (6, 2), alpha=0.05)
    run["config"] = {**make_config().to_dict(), "alpha": 0.05}
    run["summary"]["layers"].append({"name": "fc3", "n_bits": 8, "n_weights": 10})
    config = RunConfig.from_dict(retrain_config(run))
    assert config.method == "scheme" and config.scheme == (6, 2, 8) and config.alpha == 0
    assert retrain_config({**run, "status": "running"}) is None


def test_sensitivity_table_explains_the_allocation():
    plan = {"layers": ["a", "b"], "bits": [4, 1], "candidates": [1, 4],
            "costs": [[9.0, 0.1], [0.2, 0.01]], "traces": {"a": 30.0, "b": 0.5}}  # fmt: skip
    table = sensitivity_table(plan)
    assert table.columns.tolist() == ["layer", "bits", "Hessian trace", "cost @1", "cost @4"]
    assert table["bits"].tolist() == [4, 1] and table["Hessian trace"].tolist() == [30.0, 0.5]
    assert sensitivity_table({"bits": [8]}).empty and sensitivity_table(None).empty


def test_measured_bench_is_read_from_the_saved_json():
    import json

    from dashboard.views.bench import bench_summary

    doc = {
        "rows": [{"label": "uniform 2-bit", "method": "uniform", "accuracy": 0.85,
                  "half_width": 0.016, "spread": 0.004, "seeds": 3, "compression": 16.0,
                  "collapsed": 0, "test_size": 1000},
                 {"label": "HAWQ", "method": "hawq", "accuracy": 0.865, "half_width": 0.015,
                  "spread": 0.004, "seeds": 3, "compression": 16.0, "collapsed": 0,
                  "test_size": 1000}],
        # a stale verdict: the page recomputes it from the rows
        "verdicts": [{"mixed": "HAWQ", "uniform": "uniform 2-bit", "diff_points": 1.5,
                      "verdict": "wins"}],
        "workload": {"model": "lenet5", "dataset": "fashion_mnist"},
    }  # fmt: skip
    table, lines, workload = bench_summary(json.loads(json.dumps(doc)))
    assert table.iloc[0]["accuracy (%)"] == pytest.approx(85.0)
    assert lines == ["HAWQ vs uniform 2-bit: +1.50 points, tie"]
    assert workload["model"] == "lenet5"
    assert bench_summary(None) is None and bench_summary({"rows": [{}], "verdicts": []}) is None


def test_legacy_infinite_compression_is_never_shown():
    from dashboard.views.compare import _num

    legacy = {**_run("old", 0.1, (0, 0)), "compression": float("inf")}
    df = runs_frame([legacy])
    assert df["compression"].isna().all()
    assert "collapsed" in bench_frame(df, [legacy]).iloc[0]["mark"]
    assert _num(float("inf"), ".2f", "x") == _num(None, ".2f", "x")


def _screens_script():
    import json
    import tempfile
    from pathlib import Path

    from dashboard.ui import bench as bench_ui

    folder = Path(tempfile.mkdtemp())
    doc = {
        "rows": [{"label": "uniform 2-bit", "method": "uniform", "accuracy": 0.83,
                  "half_width": 0.007, "spread": 0.0, "seeds": 1, "compression": 16.0,
                  "collapsed": 0, "test_size": 10000},
                 {"label": "BSQ alpha=0.3", "method": "bsq", "accuracy": 0.783,
                  "half_width": 0.008, "spread": 0.0, "seeds": 1, "compression": 18.1,
                  "collapsed": 0, "test_size": 10000}],
        "verdicts": [{"mixed": "BSQ alpha=0.3", "uniform": "uniform 2-bit",
                      "diff_points": -4.7, "verdict": "loses"}],
        "workload": {"model": "dsnet", "dataset": "fashion_mnist", "max_train": 10000,
                     "act_bits": 4, "seeds": [0]},
    }  # fmt: skip
    (folder / "a.json").write_text(json.dumps(doc))
    (folder / "b.json").write_text("{damaged")  # skipped, never an error
    bench_ui._screens(folder)


def test_screened_workloads_are_listed_with_their_verdicts():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_screens_script, default_timeout=30).run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert texts[0].startswith("Also tried: dsnet/fashion_mnist, 10000 training images, 4-bit")
    assert texts[0].endswith("no mixed setting wins.")
    assert texts[1] == "BSQ alpha=0.3 vs uniform 2-bit: -4.70 points, trade-off"
    assert len(at.dataframe) == 1

"""The verdict of ``benchmarks/step_overhead.py`` on hand-made timings (nothing is timed)."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "step_overhead.py"
_spec = importlib.util.spec_from_file_location("step_overhead_bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_median_interval_brackets_the_median_and_narrows_with_more_rounds():
    few = [1.00, 1.08, 1.03, 1.05, 1.02, 1.07, 1.04]
    many = few * 6
    low, high = bench.median_interval(few)
    assert low <= statistics.median(few) <= high
    low_many, high_many = bench.median_interval(many)
    assert high_many - low_many < high - low
    assert bench.median_interval(few) == (low, high)  # seeded: the same interval again


def _times(bsq_fast_ratios):
    float_cl = [100.0 + i for i in range(len(bsq_fast_ratios))]
    return {
        "float": [x * 1.2 for x in float_cl],
        "float-cl": float_cl,
        "bsq-today": [x * 1.3 for x in float_cl],
        "bsq-eager": [x * r * 1.02 * 1.01 for x, r in zip(float_cl, bsq_fast_ratios)],
        "bsq-optim": [x * r * 1.01 for x, r in zip(float_cl, bsq_fast_ratios)],
        "bsq-fast": [x * r for x, r in zip(float_cl, bsq_fast_ratios)],
    }


def test_summary_reports_the_interval_and_a_robust_verdict():
    args = bench.parse_args(["--rounds", "30", "--no-memory"])
    tight = bench.summarize(_times([1.03 + 0.001 * (i % 5) for i in range(30)]), {}, args)
    assert tight["fastest_float"] == "float-cl"
    low, high = tight["ratio_ci95"]
    assert low <= tight["ratio_vs_fastest_float"] <= high <= 1.035
    assert tight["ratio_iqr"][0] <= tight["ratio_vs_fastest_float"] <= tight["ratio_iqr"][1]
    assert tight["targets_met"] and tight["targets_met_robustly"]
    assert tight["speedup_native"] == pytest.approx(1.02)  # bsq-eager / bsq-optim, paired
    assert tight["native_ci95"][0] <= 1 / 1.02 <= tight["native_ci95"][1]
    assert tight["speedup_in_backward"] == pytest.approx(1.01)  # bsq-optim / bsq-fast
    assert tight["in_backward_ci95"][0] <= 1.01 <= tight["in_backward_ci95"][1]
    # the same median with a wide spread: met by the median, not robustly
    spread = [1.03 + 0.008 * (i - 15) for i in range(30)]  # 0.91 .. 1.14
    wide = bench.summarize(_times(spread), {}, args)
    assert wide["targets_met"] and not wide["targets_met_robustly"]


def test_ablation_reports_each_parts_cost_in_points_of_the_float_step():
    args = bench.parse_args(["--rounds", "30", "--no-memory", "--ablate"])
    times = _times([1.06] * 30)
    float_cl = times["float-cl"]
    times["bsq-no-reg"] = [x * 1.045 for x in float_cl]  # the regularizer: 1.5 points
    times["bsq-no-plane-sgd"] = [x * 1.04 for x in float_cl]  # 2 points
    result = bench.summarize(times, {}, args)
    costs = {part: cost["points"] for part, cost in result["ablation"].items()}
    assert costs == pytest.approx(
        {"regularizer": 1.5, "SGD on the planes + clipping": 2.0}, abs=1e-9
    )
    assert result["ratios_paired"]["bsq-no-reg"] == pytest.approx(1.045)
    assert "ablation" not in bench.summarize(_times([1.06] * 30), {}, args)


@pytest.mark.slow
def test_each_ablated_step_leaves_out_its_part_only():
    """One step of each variant on a small batch: what changes in the planes says which
    parts ran (the update, the clipping), where the update ran (in the backward pass: no
    plane gradient) and whether the regularizer's norms are skipped."""
    import torch

    from bsq_engine.core.layers import BitLayer

    args = bench.parse_args(["--batch", "4", "--no-memory"])
    base = bench._float_model(args)

    def planes_after_one_step(variant):
        step = bench.make_step(variant, args, base)
        layer = next(m for m in step.model.modules() if isinstance(m, BitLayer))
        before = layer.pos_planes.detach().clone()
        with torch.no_grad():  # a plane above 2 shows whether the step clips
            layer.pos_planes.view(-1)[0] = 2.5
        step()
        return before, layer.pos_planes.detach(), layer.fused_norms, layer.pos_planes.grad

    for variant in ("bsq-fast", "bsq-optim", "bsq-no-reg", "bsq-no-plane-sgd"):
        before, after, norms, grad = planes_after_one_step(variant)
        first = float(after.view(-1)[0])
        if variant == "bsq-no-plane-sgd":
            assert torch.equal(after.view(-1)[1:], before.view(-1)[1:]) and first == 2.5
        else:
            assert not torch.equal(after, before), variant  # updated
            assert first <= 2.0, variant  # and clipped
        assert norms == (variant != "bsq-no-reg"), variant
        in_backward = variant in ("bsq-fast", "bsq-no-reg") and bench.native.kernels()
        assert (grad is None) == bool(in_backward), variant


@pytest.mark.slow
def test_plane_work_times_both_updates_and_each_one_trains_the_planes():
    """``--planes``: both closures run (the fast one updates in the backward pass, so its
    planes have no gradient) and the summary pairs them."""
    import torch

    from bsq_engine.core.layers import BitLayer

    args = bench.parse_args(["--batch", "4", "--no-memory"])
    gen = torch.Generator().manual_seed(0)
    for variant in ("bsq-optim", "bsq-fast"):
        run = bench._plane_work_of(variant, args, gen)
        layer = next(m for m in run.model.modules() if isinstance(m, BitLayer))
        before = layer.pos_planes.detach().clone()
        run()
        assert not torch.equal(layer.pos_planes.detach(), before), variant
        in_backward = variant == "bsq-fast" and bench.native.kernels() is not None
        assert (layer.pos_planes.grad is None) == in_backward, variant
    result = bench.plane_work(args, rounds=2)
    assert set(result["ms"]) == {"bsq-optim", "bsq-fast"}
    assert result["ci95"][0] <= result["optim_over_fast"] <= result["ci95"][1]


def test_interleaved_timing_reports_each_steps_page_faults_per_round():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    faults = {}
    times = bench.time_interleaved(fns, rounds=3, warmup=1, clock="wall", faults=faults)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotating order
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}
    assert {name: len(f) for name, f in faults.items()} == {"a": 3, "b": 3}
    assert all(isinstance(n, int) and n >= 0 for f in faults.values() for n in f)


def test_only_names_a_subset_with_the_fast_step_and_a_float_step():
    assert bench.parse_args(["--only", "float-cl,bsq-fast"]).only == ("float-cl", "bsq-fast")
    assert bench.parse_args([]).only == bench.VARIANTS
    for bad in ("float-cl", "bsq-fast,bsq-optim", "float-cl,bsq-fast,bsq-turbo"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--only", bad])


def test_a_summary_of_a_subset_leaves_the_missing_comparisons_out():
    times = {k: v for k, v in _times([1.03] * 30).items() if k in ("float-cl", "bsq-fast")}
    result = bench.summarize(times, {}, bench.parse_args(["--only", "float-cl,bsq-fast"]))
    assert result["ratio_vs_fastest_float"] == pytest.approx(1.03)
    assert result["speedup_in_backward"] is None and result["native_ci95"] is None

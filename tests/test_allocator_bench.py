"""``benchmarks/allocator.py``: its summary on hand-made children, and one real child."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "allocator.py"
_spec = importlib.util.spec_from_file_location("allocator_bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _child(faults, sys_ms, user_ms):
    return {"faults": faults, "sys_ms": sys_ms, "user_ms": user_ms, "cpu_ms": sys_ms + user_ms,
            "peak_rss_mb": 400.0}  # fmt: skip


def test_summary_pairs_each_kept_child_with_its_default_twin():
    children = {
        "bsq-fast": {
            "default": [_child(6000, 20, 600), _child(9000, 30, 900)],
            "kept": [_child(0, 0, 589), _child(0, 0, 870)],  # 0.95 and 0.9667 of their twins
        }
    }
    result = bench.summarize(children)["bsq-fast"]
    assert result["default"] == {
        "faults": 7500, "sys_ms": 25, "user_ms": 750, "cpu_ms": 775, "peak_rss_mb": 400.0
    }  # fmt: skip
    assert result["kept"]["faults"] == 0
    assert result["kept_over_default_cpu"] == pytest.approx((0.95 + 870 / 930) / 2)
    assert result["ci95"][0] <= result["kept_over_default_cpu"] <= result["ci95"][1]


@pytest.mark.slow
@pytest.mark.parametrize("policy", bench.POLICIES)
def test_a_child_times_its_steps_under_its_policy(policy):
    result = bench.run_child("bsq-fast", policy, steps=1, batch=2)
    assert set(result) == {"faults", "sys_ms", "user_ms", "cpu_ms", "peak_rss_mb"}
    assert result["cpu_ms"] >= result["user_ms"] > 0
    assert result["peak_rss_mb"] > 100  # torch alone takes more

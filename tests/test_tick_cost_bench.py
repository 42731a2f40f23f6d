"""``benchmarks/tick_cost.py``: the page it serves draws what each variant names, and the
per-tick figure is the ticking tab's cost minus the idle tab's (no browser here)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_DIR))  # tick_cost imports its sibling classroom_load
_spec = importlib.util.spec_from_file_location("tick_cost_bench", _DIR / "tick_cost.py")
tick_cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tick_cost)


def _page(url_query: str) -> AppTest:
    at = AppTest.from_string(tick_cost.APP, default_timeout=60)
    for pair in url_query.lstrip("?").split("&"):
        name, _, value = pair.partition("=")
        at.query_params[name] = value
    return at.run()


def test_each_variant_draws_its_static_content_under_the_ticking_fragment():
    args = argparse.Namespace(charts=2, widgets=3)
    bare = _page(tick_cost.query("bare", 1.5, args))
    assert not bare.exception
    assert len(bare.get("progress")) == 1 and len(bare.button) == 1
    assert not bare.get("plotly_chart") and not bare.selectbox
    charts = _page(tick_cost.query("charts", 1.5, args))
    assert not charts.exception
    assert len(charts.get("plotly_chart")) == 2 and len(charts.get("vega_lite_chart")) == 2
    assert len(charts.get("download_button")) == 8
    widgets = _page(tick_cost.query("widgets", 0.0, args))
    assert not widgets.exception
    assert len(widgets.selectbox) == 3 and len(widgets.slider) == 3


def test_tick_ms_is_the_ticking_minus_idle_cost_times_the_tick():
    cores = {
        f"{page} {kind}": values
        for page in tick_cost.PAGES
        for kind, values in (("ticking", [0.05, 0.04, 0.06]), ("idle", [0.01, 0.02]))
    }
    ms = tick_cost.tick_ms(cores, every=2.0)
    assert ms == {page: pytest.approx((0.05 - 0.015) * 2000) for page in tick_cost.PAGES}


def test_a_tick_length_must_be_positive():
    with pytest.raises(SystemExit):
        tick_cost.main(["--every", "0"])

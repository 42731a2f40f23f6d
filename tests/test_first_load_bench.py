"""``benchmarks/first_load.py``: a page's figures are medians over its loads, apart from the
watching tab's rates, and a variant's entry script switches off what it names (no browser
here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_DIR))  # first_load imports its siblings
_spec = importlib.util.spec_from_file_location("first_load_bench", _DIR / "first_load.py")
first_load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(first_load)


def _load(browser, server, marker, charts_s, charts):
    return {"browser": browser, "server": server, "marker_s": marker, "charts_s": charts_s,
            "charts": charts, "scripts": None}  # fmt: skip


def test_loads_give_medians_and_the_watching_tab_its_own_rates():
    result = {
        "window": 10.0,
        "steady": [{"browser": 0.1, "server": 0.02}, {"browser": 0.3, "server": 0.04}],
        "rows": {
            "train, live run": [
                _load(5.0, 1.0, 2.0, 6.0, 6),
                _load(7.0, 2.0, 4.0, None, 4),
                _load(9.0, 0.5, None, 8.0, 6),
            ],
            "learn": [_load(3.0, 0.1, 1.0, None, 0)],
        },
    }
    figures = first_load.summary(result)
    assert figures["steady_browser_core"] == pytest.approx(0.2)
    assert figures["steady_server_core"] == pytest.approx(0.03)
    assert figures["window_s"] == 10.0
    live = figures["pages"]["train, live run"]
    assert live["browser_cpu_s"] == pytest.approx(7.0) and live["server_cpu_s"] == 1.0
    # a load that never showed its marker or charts does not count in their medians
    assert live["marker_s"] == pytest.approx(3.0) and live["charts_s"] == pytest.approx(7.0)
    assert live["charts"] == 6 and live["loads"] == 3
    assert figures["pages"]["learn"]["charts_s"] is None


def test_variants_name_known_parts_of_the_default_entry_only():
    assert first_load.variant_parts("none", "serve.py") == []
    assert first_load.variant_parts("plotly+vega", "serve.py") == ["plotly", "vega"]
    with pytest.raises(SystemExit, match="parts of"):
        first_load.variant_parts("plotly+tables", "serve.py")
    with pytest.raises(SystemExit, match=r"--app serve\.py"):
        first_load.variant_parts("plotly", "app.py")
    assert first_load.variant_entry("none", "serve.py") is None


def test_a_variants_entry_switches_off_its_parts_and_serves_the_app(monkeypatch):
    path = first_load.variant_entry("vega+downloads", "serve.py")
    try:
        assert path.parent == first_load.ROOT and path.name.startswith("_first_load_")
        source = path.read_text()
    finally:
        path.unlink()
    import streamlit as st

    import dashboard.ui.run_charts as run_charts

    plotly, vega, downloads = st.plotly_chart, st.vega_lite_chart, run_charts.chart_downloads
    for module, name in ((st, "plotly_chart"), (st, "vega_lite_chart"),
                         (run_charts, "chart_downloads")):  # fmt: skip
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    served = []
    monkeypatch.setattr(st, "App", lambda script, routes: served.append((script, routes)))
    exec(compile(source, str(path), "exec"), {"__name__": "entry"})
    assert st.vega_lite_chart is not vega and st.vega_lite_chart() is None
    assert run_charts.chart_downloads is not downloads and run_charts.chart_downloads() is None
    assert st.plotly_chart is plotly
    assert served and served[0][0] == "app.py" and served[0][1]

"""Pareto page (AppTest): the frontier of hand-placed fixture runs, x toggle, references."""

from __future__ import annotations

import base64

import numpy as np
import plotly.io as pio
import pytest
from apptest_helpers import chart_titles, make_run, open_page, page_text

from bsq_engine.runs.store import RunStore

PAGE = "pages/pareto.py"
# name: (alpha, accuracy, bits of fc1/fc2/fc3) -> average bits, compression
#   a0.01: (6, 5, 6) 5.35 bits,  5.98x, 95 %   frontier (most accurate)
#   a0.1:  (4, 3, 5) 3.38 bits,  9.48x, 93 %   frontier
#   a0.5:  (3, 3, 4) 3.03 bits, 10.58x, 78 %   dominated by a1.0 (smaller and more accurate)
#   a1.0:  (2, 2, 3) 2.03 bits, 15.80x, 80 %   frontier (smallest)
#   uni4:  (4, 4, 4) 4.00 bits,  8.00x, 90 %   dominated by a0.1
FIXTURE = {"a0.01": (0.01, 0.95, (6, 5, 6)), "a0.1": (0.1, 0.93, (4, 3, 5)),
           "a0.5": (0.5, 0.78, (3, 3, 4)), "a1.0": (1.0, 0.80, (2, 2, 3))}  # fmt: skip
FRONTIER = {"a0.01", "a0.1", "a1.0"}


@pytest.fixture
def runs(bsq_home):
    store = RunStore(bsq_home)
    ids = {name: make_run(store, name=name, alpha=a, accuracy=acc, bits=b)
           for name, (a, acc, b) in FIXTURE.items()}  # fmt: skip
    ids["uni4"] = make_run(store, name="uni4", method="uniform", uniform_bits=4, alpha=0.0,
                           accuracy=0.90, bits=(4, 4, 4))  # fmt: skip
    ids["rn"] = make_run(store, name="rn", model="resnet20", dataset="cifar10", accuracy=0.9)
    return ids


def _fig(at):
    """The Pareto chart as a plotly Figure (arrays decoded)."""
    return pio.from_json(at.get_by_key("pareto-chart").proto.spec)


def _values(array) -> list:
    """Plotly's JSON may carry numeric arrays as base64 ``{"dtype", "bdata"}``."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _published(at) -> list[str]:
    texts = [a.text or "" for a in _fig(at).layout.annotations]
    return [t for t in texts if "published" in t]


def _frontier_names(at) -> set[str]:
    return set(at.dataframe[0].value["run"])


def test_frontier_table_holds_exactly_the_pareto_optimal_runs(runs):
    at = open_page(PAGE)
    assert not at.exception
    assert "Pareto frontier" in chart_titles(at)
    assert at.selectbox(key="pareto-pair").value == "mlp/digits"  # most finished runs
    assert _frontier_names(at) == FRONTIER
    traces = {t.name for t in _fig(at).data}
    assert {"BSQ", "uniform", "Pareto frontier"} <= traces
    at.segmented_control(key="pareto-x").set_value("avg_bits").run()
    assert not at.exception
    assert _frontier_names(at) == FRONTIER
    assert _fig(at).layout.xaxis.title.text.startswith("Average bits")


def test_hover_and_click_data_name_the_run(runs):
    at = open_page(PAGE)
    points = next(t for t in _fig(at).data if t.name == "BSQ")
    assert set(points.customdata) == {runs[n] for n in FIXTURE}
    assert any("alpha: 0.1<br>bits per layer: 4/3/5" in h for h in points.hovertext)


def test_published_references_only_for_resnet20_on_cifar10(runs):
    at = open_page(PAGE)
    assert _published(at) == []
    at.selectbox(key="pareto-pair").set_value("resnet20/cifar10").run()
    assert not at.exception
    marks = _published(at)
    assert "published: BSQ α=5e-3 14.24x" in marks and "published: HAWQ 13.11x" in marks
    assert any("92.5%" in m for m in marks)
    assert "Yang et al., ICLR 2021" in page_text(at)
    assert "Run a sweep to draw a frontier" in [link.label for link in at.page_link]


def test_csv_download_and_sweep_link(runs):
    at = open_page(PAGE)
    labels = [b.label for b in at.download_button]
    assert "Frontier as CSV" in labels


def test_empty_store_points_to_a_sweep(bsq_home):
    at = open_page(PAGE)
    assert not at.exception
    assert "Run a sweep to draw a frontier" in [link.label for link in at.page_link]


def test_running_run_is_a_live_point(bsq_home):
    store = RunStore(bsq_home)
    make_run(store, name="done", alpha=0.1, accuracy=0.93, bits=(4, 3, 5))
    live = make_run(store, name="live", status="running", alpha=0.3, accuracy=0.7)
    at = open_page(PAGE)
    assert not at.exception
    running = [t for t in _fig(at).data if t.name == "running"]
    assert running and list(running[0].customdata) == [live]
    assert _values(running[0].y) == [pytest.approx(70.0)]  # the latest epoch places it

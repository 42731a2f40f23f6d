"""Compare page (AppTest): URL preselection, highlighted differences, mixed methods, live."""

from __future__ import annotations

import json
import re

import pytest
from apptest_helpers import (
    chart_titles,
    make_run,
    open_page,
    page_text,
    train_run,
)

from bsq_engine.runs.store import RunStore
from dashboard.ui.accessors import scheme_file
from dashboard.views import compare as cp

PAGE = "pages/compare.py"


@pytest.fixture
def pair(bsq_home):
    """A BSQ run and a uniform 4-bit run of the same model and dataset."""
    store = RunStore(bsq_home)
    bsq = make_run(store, name="bsq-a0.1", alpha=0.1, accuracy=0.93, bits=(4, 3, 5))
    uni = make_run(store, name="uniform-4", method="uniform", uniform_bits=4, alpha=0.0,
                   accuracy=0.90, bits=(4, 4, 4))  # fmt: skip
    return store, bsq, uni


def _highlighted(table) -> set[str]:
    """Index labels of the rows the Styler marked (its CSS names rows by position)."""
    css = table.proto.arrow_data.styler.styles
    rows = {int(i) for i in re.findall(r"_row(\d+)_col", css)}
    return {table.value.index[i] for i in rows}


def test_url_preselects_and_everything_renders(pair):
    _, bsq, uni = pair
    at = open_page(PAGE, runs=f"{bsq},{uni}")
    assert not at.exception
    assert at.multiselect(key="compare-runs").value == [bsq, uni]
    titles = chart_titles(at)
    for title in ("Bits per layer by run", "Bit-plane density by run", "Test accuracy by run"):
        assert title in titles
    labels = [d.label for d in at.download_button]
    assert len([label for label in labels if label.endswith("scheme.json")]) == 2
    assert labels.count("CSV") == 3  # every chart's data
    assert labels.count("PNG") in (0, 3)  # optional kaleido


def test_summary_highlights_only_rows_that_differ(pair):
    _, bsq, uni = pair
    at = open_page(PAGE, runs=f"{bsq},{uni}")
    table = at.dataframe[0]
    assert list(table.value.columns) == ["bsq-a0.1", "uniform-4"]
    marked = _highlighted(table)
    assert {"accuracy", "method", "avg bits", "bits: fc2"} <= marked
    assert not marked & {"dataset", "model", "status", "float accuracy", "bits: fc1"}
    assert table.value.loc["alpha", "uniform-4"] == "—"  # no alpha for a uniform run


def test_selection_goes_to_the_url(pair):
    store, bsq, _ = pair
    third = make_run(store, name="bsq-a1", alpha=1.0, accuracy=0.8, bits=(2, 2, 3))
    at = open_page(PAGE, runs=bsq)
    assert "Choose at least two runs" in page_text(at)
    at.multiselect(key="compare-runs").select(third).run()
    assert not at.exception
    assert at.query_params["runs"] in (f"{bsq},{third}", [f"{bsq},{third}"])
    assert "Summary" in page_text(at)


def test_a_running_run_compares_live(pair):
    store, bsq, _ = pair
    live = make_run(store, name="live", status="running", alpha=0.3, accuracy=0.7)
    at = open_page(PAGE, runs=f"{bsq},{live}")
    assert not at.exception
    assert at.dataframe[0].value.loc["status", "live"] == "running"
    assert "Bits per layer by run" in chart_titles(at)


@pytest.mark.slow  # trains for seconds
def test_scheme_from_summary_and_from_a_real_export(pair, bsq_home):
    store, _, uni = pair
    run = store.get_run(uni)
    scheme = json.loads(scheme_file(store, run, run["summary"]["layers"])())
    assert scheme["method"] == "uniform" and scheme["alpha"] is None  # no checkpoint: summary
    assert [layer["n_bits"] for layer in scheme["layers"]] == [4, 4, 4]
    trained = train_run(bsq_home, alpha=0.3)
    real = store.get_run(trained)
    exported = json.loads(scheme_file(store, real, [])())
    assert exported["run_id"] == trained and exported["counting_convention"]
    assert (store.run_dir(trained) / "export" / "scheme.json").exists()


def test_summary_frame_and_labels():
    runs = [{"run_id": "a", "name": "x", "status": "finished", "model": "mlp",
             "dataset": "digits", "method": "bsq", "alpha": 0.1, "accuracy": 0.9},
            {"run_id": "b", "name": "x", "status": "running", "model": "mlp",
             "dataset": "digits", "method": "uniform", "alpha": 0.0, "accuracy": 0.8}]  # fmt: skip
    assert cp.run_labels(runs) == ["x (a)", "x (b)"]
    frame = cp.summary_frame(runs)
    assert frame.loc["status"].tolist() == ["finished", "running"]
    assert frame.loc["alpha"].tolist() == ["0.1", "—"]

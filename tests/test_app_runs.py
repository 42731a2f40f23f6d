"""AppTest of the Runs page: the table, deleting with confirmation, resuming, filters."""

import pytest
from apptest_helpers import (
    button,
    make_run,
    open_page,
    page_text,
    train_run,
)

from bsq_engine.runs.jobs import get_manager

pytestmark = pytest.mark.usefixtures("bsq_home")  # an isolated store per test


def _select(at, *rows):
    key = next(d.key for d in at.dataframe if d.key and d.key.startswith("runs.table"))
    at.session_state[key] = {"selection": {"rows": list(rows), "columns": []}}
    return at.run()


def _row(at, run_id):
    df = at.dataframe[0].value
    return df.index[df["run_id"] == run_id][0], df[df["run_id"] == run_id].iloc[0]


@pytest.fixture
def runs(request):
    request.getfixturevalue("bsq_home")
    store = get_manager().store
    return {
        "finished": make_run(store, name="good", accuracy=0.9125, bits=(4, 3, 5)),
        "failed": make_run(store, status="failed", error="Training diverged.", alpha=2.0),
        "stopped": make_run(store, status="stopped", name="halted", model="lenet5"),
    }


def test_table_lists_runs_with_their_numbers(runs):
    at = open_page("pages/runs.py")
    assert not at.exception
    df = at.dataframe[0].value
    assert set(df["run_id"]) == set(runs.values())
    _, row = _row(at, runs["finished"])
    n = [64 * 256, 256 * 128, 128 * 10]
    avg = (4 * n[0] + 3 * n[1] + 5 * n[2]) / sum(n)
    assert row["status"] == "finished" and row["name"] == "good"
    assert row["accuracy_pct"] == pytest.approx(91.25)
    assert row["avg_bits"] == pytest.approx(avg)
    assert row["compression"] == pytest.approx(32 / avg)
    assert row["bits"] == "4/3/5"
    assert row["duration_s"] == pytest.approx(2.0)
    _, failed = _row(at, runs["failed"])
    assert failed["status"] == "failed" and failed["alpha"] == 2.0
    assert failed["float_accuracy_pct"] == pytest.approx(95.0)


def test_filters(runs):
    at = open_page("pages/runs.py")
    at.selectbox(key="runs.f_model").set_value("lenet5").run()
    assert list(at.dataframe[0].value["run_id"]) == [runs["stopped"]]
    at.selectbox(key="runs.f_model").set_value("all")
    at.multiselect(key="runs.f_status").set_value(["failed", "finished"]).run()
    assert set(at.dataframe[0].value["run_id"]) == {runs["failed"], runs["finished"]}


def test_delete_needs_a_confirmation(runs):
    at = open_page("pages/runs.py")
    index, _ = _row(at, runs["failed"])
    _select(at, int(index))
    button(at, "Delete").click().run()
    assert "cannot be undone" in page_text(at)
    assert get_manager().store.get_run(runs["failed"])  # nothing deleted yet
    button(at, "Cancel").click().run()
    assert "cannot be undone" not in page_text(at)
    _select(at, int(_row(at, runs["failed"])[0]))
    button(at, "Delete").click().run()
    button(at, "Yes, delete").click().run()
    assert not at.exception
    ids = {r["run_id"] for r in get_manager().store.list_runs()}
    assert ids == {runs["finished"], runs["stopped"]}
    assert runs["failed"] not in set(at.dataframe[0].value["run_id"])
    assert any("1 run(s) deleted" in s.value for s in at.success)


@pytest.mark.slow  # trains for seconds
def test_resume_queues_a_stopped_run(runs):
    at = open_page("pages/runs.py")
    _select(at, int(_row(at, runs["stopped"])[0]))
    assert not button(at, "Resume").disabled
    button(at, "Resume").click().run()
    assert not at.exception, page_text(at)
    status = get_manager().store.get_run(runs["stopped"])["status"]
    assert status in ("queued", "running", "finished")
    assert any("queued to resume" in s.value for s in at.success)
    get_manager().wait(runs["stopped"], 120)


def test_resume_is_disabled_for_finished_runs(runs):
    at = open_page("pages/runs.py")
    _select(at, int(_row(at, runs["finished"])[0]))
    assert button(at, "Resume").disabled and button(at, "Stop").disabled
    assert not button(at, "Open").disabled


def test_open_shows_the_run_below(runs):
    at = open_page("pages/runs.py")
    _select(at, int(_row(at, runs["finished"])[0]))
    button(at, "Open").click().run()
    assert at.query_params["run"] == runs["finished"]
    assert "91.25 %" in page_text(at)


def test_empty_store_says_so():
    at = open_page("pages/runs.py")
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)


@pytest.mark.slow  # trains for seconds
def test_finished_run_offers_its_exports():
    run_id = train_run(get_manager().store.home)
    at = open_page("pages/runs.py", run=run_id)
    assert get_manager().store.get_run(run_id)["status"] == "finished"
    button(at, "Prepare files").click().run()
    assert not at.exception, page_text(at)
    labels = [d.label for d in at.get("download_button")]
    exports = [label for label in labels if label not in ("CSV", "PNG")]
    assert exports == ["scheme.json", "metrics.csv", "layers.csv", "quantized.safetensors",
                       "float_model.safetensors"]  # fmt: skip
    charts = sum(
        len(at.get(k)) for k in ("plotly_chart", "arrow_vega_lite_chart", "vega_lite_chart")
    )
    assert labels.count("CSV") == charts == 7  # every chart (2 per-step): its CSV, and a PNG
    assert labels.count("PNG") in (0, charts)  # PNG needs the optional kaleido/vl-convert
    at = open_page("pages/runs.py", run=run_id)  # files exist now: no second export step
    assert len([d for d in at.get("download_button") if d.label not in ("CSV", "PNG")]) == 5


def test_a_run_panel_lists_its_precision_changes():
    """The event log is made with the figures (in Arrow, once per build) and shown as the
    run panel's table; a run without re-quantizations says when they happen."""
    store = get_manager().store
    changed = make_run(store, bits=(4, 8, 5))
    at = open_page("pages/train.py", run=changed)
    assert not at.exception
    tables = [
        d.value for d in at.dataframe if list(d.value.columns) == ["stage", "epoch", "change"]
    ]
    table = tables[0]
    assert len(tables) == 1 and len(table) == 2 and "fc1: 8 -> 4 bits" in " ".join(table["change"])
    same = make_run(store, bits=(8, 8, 8))
    at = open_page("pages/train.py", run=same)
    assert not any("change" in d.value.columns for d in at.dataframe)
    assert "None yet: layers change precision at re-quantization" in " ".join(
        c.value for c in at.caption
    )


def test_a_runs_precision_changes_are_tabled_again_only_when_they_change():
    """A live run's figures are rebuilt every few seconds; its precision-change table only
    when its events changed (equal events in a new list keep the table)."""
    from dashboard.ui import run_charts
    from dashboard.ui.accessors import RunView
    from dashboard.views import frames

    def view(events):
        return RunView(run={"run_id": "events-run", "status": "running", "config": {}},
                       epochs=frames.epochs_frame([]), layers=frames.layers_frame([]),
                       events=events)  # fmt: skip

    change = {"stage": "bsq", "epoch": 2, "layer": "fc1", "old_bits": 8, "new_bits": 6}
    first = run_charts._events_of(view([dict(change)]))
    assert first.num_rows == 1 and run_charts._events_of(view([dict(change)])) is first
    more = [dict(change), {**change, "epoch": 4, "old_bits": 6, "new_bits": 5}]
    second = run_charts._events_of(view(more))
    assert second is not first and second.equals(run_charts.events_arrow(more))
    assert second.column("change").to_pylist()[1] == "fc1: 6 -> 5 bits at epoch 4"
    assert run_charts._events_of(view([])) is None


def test_a_growing_precision_change_log_is_extended_as_a_whole_one_is_made(monkeypatch):
    """New events that sort after the log are appended to its table; any other change
    (an event sorting before the end, an edited or dropped event, a missing epoch) makes
    the whole table again. Either way it equals the whole log's table."""
    import random

    from dashboard.ui import run_charts
    from dashboard.ui.accessors import RunView
    from dashboard.views import frames

    rng = random.Random(0)
    extended, extend = [], run_charts._extended
    monkeypatch.setattr(
        run_charts, "_extended", lambda *a: extended.append(extend(*a)) or extended[-1]
    )

    def event(stage, epoch):
        bits = rng.randint(2, 8)
        return {"stage": stage, "epoch": epoch, "layer": f"conv{rng.randint(1, 3)}",
                "old_bits": bits, "new_bits": bits - 1}  # fmt: skip

    def table_of(events):
        return run_charts._events_of(
            RunView(
                run={"run_id": "growing-log", "status": "running", "config": {}},
                epochs=frames.epochs_frame([]),
                layers=frames.layers_frame([]),
                events=events,
            )
        )

    log, appended = [], 0
    for i in range(80):
        kind = rng.random()
        if kind < 0.75 or not log:  # the usual case: a later re-quantization
            last = log[-1] if log else {"stage": "bsq", "epoch": 0}
            stage = "finetune" if last["stage"] == "finetune" or rng.random() < 0.05 else "bsq"
            epoch = last["epoch"] + rng.randint(0, 3) if stage == last["stage"] else 1
            log = [*log, *(event(stage, epoch) for _ in range(rng.randint(1, 3)))]
            appended += 1
        elif kind < 0.85:  # a stored event arriving late, out of order
            log = [*log, event("bsq", rng.randint(0, log[-1]["epoch"] or 1))]
        elif kind < 0.88 and i > 70:  # no epoch: sorts last, so nothing is appended after it
            log = [*log, event("pretrain", None)]
        elif kind < 0.95:
            log = log[1:]
        else:  # an edited event, and one more
            log = [{**log[0], "new_bits": 1}, *log[1:], event("finetune", 99)]
        table = table_of(log)
        assert table.equals(run_charts.events_arrow(log)), log
    assert appended > 40 and sum(t is not None for t in extended) > 30  # both ways taken
    assert sum(t is None for t in extended) > 5


def test_missing_numbers_read_as_a_dash(runs):
    """A run without a result (failed, stopped, queued) has empty cells: the Runs and
    Pareto tables show them as the app's dash, not Streamlit's grey "None"."""
    from bsq_engine.units import MISSING

    at = open_page("pages/runs.py")
    _, failed = _row(at, runs["failed"])
    assert failed.isna().any()  # there are empty cells to show
    assert at.dataframe[0].proto.placeholder == MISSING == "—"
    at = open_page("pages/pareto.py")
    tables = [d for d in at.dataframe if d.proto.placeholder == MISSING]
    assert not at.exception and tables

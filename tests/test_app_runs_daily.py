"""Runs page, daily use: rename, tag and note a run; optional config columns; clone a run's
settings into the Train form."""

from __future__ import annotations

import pytest
from apptest_helpers import button, make_run, open_page, page_text

from bsq_engine.runs.jobs import get_manager

pytestmark = pytest.mark.usefixtures("bsq_home")  # an isolated store per test


def _select_only(at, run_id):
    key = next(d.key for d in at.dataframe if d.key and d.key.startswith("runs.table"))
    df = at.dataframe[0].value
    row = int(df.index[df["run_id"] == run_id][0])
    at.session_state[key] = {"selection": {"rows": [row], "columns": []}}
    return at.run()


def test_rename_tag_and_note_a_run():
    store = get_manager().store
    run_id = make_run(store, name="first try")
    at = _select_only(open_page("pages/runs.py"), run_id)
    at.text_input(key=f"runs.name.{run_id}").set_value("<b>keeper</b>")  # shown as text, never HTML
    at.text_input(key=f"runs.tags.{run_id}").set_value("paper, baseline")
    at.text_area(key=f"runs.note.{run_id}").set_value("lr too high at epoch 12")
    at = button(at, "Save").click().run()
    assert not at.exception, page_text(at)
    run = store.get_run(run_id)
    assert (run["name"], run["tags"], run["note"]) == (
        "<b>keeper</b>", ["paper", "baseline"], "lr too high at epoch 12")  # fmt: skip
    table = at.dataframe[0].value
    assert table.loc[table["run_id"] == run_id, "tags"].iloc[0] == "paper, baseline"


def test_bad_tags_save_nothing_and_say_why():
    store = get_manager().store
    run_id = make_run(store, name="kept")
    at = _select_only(open_page("pages/runs.py"), run_id)
    at.text_input(key=f"runs.tags.{run_id}").set_value("x" * 41)
    at = button(at, "Save").click().run()
    assert any("Nothing was saved" in e.value for e in at.error)
    assert store.get_run(run_id)["tags"] == []


def test_config_columns_can_be_shown():
    make_run(get_manager().store, name="one")
    at = open_page("pages/runs.py")
    at.multiselect(key="runs.extra_columns").set_value(["epochs", "act_bits", "lr"]).run()
    table = at.dataframe[0]
    assert {"epochs", "act_bits", "lr"} <= set(table.value.columns)
    assert not at.exception


def test_clone_settings_into_the_form():
    store = get_manager().store
    run_id = make_run(store, name="to clone", model="lenet5", alpha=0.03, bsq_epochs=7)
    at = _select_only(open_page("pages/runs.py"), run_id)
    at = button(at, "Clone settings into the form").click().run()
    assert not at.exception, page_text(at)
    assert at.number_input(key="train.alpha").value == 0.03  # now on the Train page
    assert at.number_input(key="train.bsq_epochs").value == 7
    assert at.selectbox(key="train.model").value == "lenet5"

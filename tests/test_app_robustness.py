"""AppTest: a damaged store row or an unusable store file ends in a message, not a traceback."""

import sqlite3
from contextlib import closing

import pytest
from apptest_helpers import make_run, open_page, page_text

from bsq_engine.runs.jobs import get_manager

pytestmark = pytest.mark.usefixtures("bsq_home")


def _damage(home, run_id: str) -> None:
    with closing(sqlite3.connect(home / "runs.db")) as conn, conn:
        conn.execute("UPDATE runs SET config_json = '{' WHERE run_id = ?", (run_id,))


@pytest.mark.parametrize("page", ["pages/runs.py", "pages/pareto.py"])
def test_damaged_row_is_skipped_with_a_warning(bsq_home, page):
    store = get_manager().store
    good = make_run(store, name="good")
    bad = make_run(store, name="bad_*name*")
    _damage(bsq_home, bad)
    at = open_page(page)
    assert not at.exception, page_text(at)
    warnings = [w.value for w in at.warning if "damaged" in w.value]
    assert len(warnings) == 1 and "store repair" in warnings[0]
    if page == "pages/runs.py":
        assert set(at.dataframe[0].value["run_id"]) == {good}


def test_damaged_run_in_the_url_shows_a_message(bsq_home):
    bad = make_run(get_manager().store, name="bad")
    _damage(bsq_home, bad)
    at = open_page("pages/train.py", run=bad)
    assert not at.exception, page_text(at)
    assert any("store repair" in e.value for e in at.error)


def test_unusable_store_file_stops_the_page_with_its_message(bsq_home):
    bsq_home.mkdir(parents=True, exist_ok=True)
    (bsq_home / "runs.db").write_bytes(b"not a database" * 300)
    try:
        at = open_page("pages/runs.py")
        assert not at.exception, page_text(at)
        assert any("store repair" in e.value for e in at.error)
    finally:
        (bsq_home / "runs.db").unlink()  # the fixture's teardown opens the store

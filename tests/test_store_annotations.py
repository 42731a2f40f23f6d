"""Runs can be renamed, tagged and given a note; older stores gain the columns on open."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from bsq_engine.runs import schema
from bsq_engine.runs.store import RunNotFound, RunStore

CONFIG = {"model": "mlp", "dataset": "digits", "method": "bsq", "alpha": 0.2, "seed": 0}


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path) as s:
        yield s


def test_rename_tag_and_note_round_trip(store):
    run_id = store.create_run(CONFIG)
    assert store.get_run(run_id)["tags"] == [] and store.get_run(run_id)["note"] is None
    store.annotate(run_id, name="  baseline   a=0.2 ", tags=["keep", " paper ", "keep", ""])
    run = store.get_run(run_id)
    assert run["name"] == "baseline a=0.2" and run["tags"] == ["keep", "paper"]
    store.annotate(run_id, note="Loss spiked at epoch 12: lr too high?")
    run = store.get_run(run_id)
    assert run["note"].startswith("Loss spiked") and run["tags"] == ["keep", "paper"]
    store.annotate(run_id, tags=[], note="")  # clears both, keeps the name
    run = store.get_run(run_id)
    assert run["tags"] == [] and run["note"] is None and run["name"] == "baseline a=0.2"
    assert store.list_runs()[0]["tags"] == []


@pytest.mark.parametrize(
    "kwargs, message",
    [({"name": "   "}, "1 to 120 characters"), ({"name": "x" * 121}, "1 to 120"),
     ({"tags": ["a,b"]}, "without commas"), ({"tags": [str(i) for i in range(21)]},
     "up to 20"), ({"note": "n" * 4001}, "at most 4000")],
)  # fmt: skip
def test_bad_annotations_say_what_to_fix_and_change_nothing(store, kwargs, message):
    run_id = store.create_run(CONFIG, name="kept")
    with pytest.raises(ValueError, match=message):
        store.annotate(run_id, **kwargs)
    assert store.get_run(run_id)["name"] == "kept"


def test_unknown_run_is_refused(store):
    with pytest.raises(RunNotFound):
        store.annotate("20260101-000000-dead", name="x")


def test_a_version_one_store_gains_tags_and_note(tmp_path):
    db = tmp_path / "runs.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        schema.MIGRATIONS[0](conn)  # the schema as the first release wrote it
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO runs (run_id, name, status, method, model, dataset, alpha, config_json,"
            " created_at) VALUES ('r1', 'old run', 'finished', 'bsq', 'mlp', 'digits', 0.2,"
            " ?, 0)",
            (json.dumps(CONFIG),),
        )
    with RunStore(tmp_path) as s:
        run = s.get_run("r1")
        assert run["name"] == "old run" and run["tags"] == [] and run["note"] is None
        s.annotate("r1", tags=["migrated"])
        assert s.get_run("r1")["tags"] == ["migrated"]

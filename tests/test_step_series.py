"""The per-step series every run persists (``StepSeriesCallback`` -> ``step_points``):
bounded, thinned evenly, complete across a resume without duplicates, deleted with the
run; a store of the previous schema version still loads."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest
from test_runner import epoch_keys, resume_config, stop_run

from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.schema import MIGRATIONS, SCHEMA_VERSION
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import StepSeriesCallback
from bsq_engine.training.presets import make_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture
def store(bsq_home):
    with RunStore(bsq_home) as db:
        yield db


def test_a_finished_run_keeps_every_step_of_a_short_run(store, tiny_config):
    run_id = store.create_run(tiny_config.to_dict())
    execute_run(store, run_id)
    points = store.step_points(run_id)
    epochs = store.epochs(run_id)
    steps_per_epoch = len(points) // len(epochs)
    assert [p["step"] for p in points] == list(range(1, len(points) + 1))  # stride 1
    assert [p["epoch_frac"] for p in points][steps_per_epoch - 1 :: steps_per_epoch] == [
        float(e["global_epoch"]) for e in epochs
    ]  # each epoch's last step ends at a whole epoch
    walls = [p["wall"] for p in points]
    assert walls == sorted(walls) and walls[-1] <= sum(e["seconds"] for e in epochs)
    for p in points:
        if p["stage"] == "bsq":  # the training loss adds alpha * R to the cross-entropy
            assert p["loss"] == pytest.approx(p["ce"] + tiny_config.alpha * p["reg"], rel=1e-5)
        else:
            assert p["loss"] == p["ce"] and p["reg"] == 0.0
        assert 0.0 <= p["batch_acc"] <= 1.0 and p["lr"] > 0


class _Store:
    def __init__(self):
        self.points, self.writes = [], 0

    def epochs(self, run_id):
        return [{"seconds": 5.0}]  # one epoch already trained (a resume): the wall goes on

    def add_step_points(self, run_id, points):
        self.points += points
        self.writes += bool(points)


def test_the_series_is_bounded_and_evenly_thinned():
    db, epochs, batches = _Store(), 10, 100
    series = StepSeriesCallback(db, "r", max_points=50, flush_s=3600)
    trainer = SimpleNamespace(steps_per_epoch=batches, config=SimpleNamespace(total_epochs=epochs),
                              global_epoch=0)  # fmt: skip
    series.on_run_start(trainer)
    assert series.stride == 20
    for step in range(1, epochs * batches + 1):
        batch = (step - 1) % batches + 1
        trainer.global_epoch = (step - 1) // batches + 1
        series.on_step_end(trainer, {"stage": "bsq", "epoch": trainer.global_epoch, "step": step,
                                     "batch": batch, "batches": batches, "loss": 1.0})  # fmt: skip
        if batch == batches:
            series.on_epoch_end(trainer, {"seconds": 1.0}, None)
    assert len(db.points) == 50 and db.writes == epochs  # flushed at each epoch's end
    assert [p["step"] for p in db.points] == list(range(20, 1001, 20))
    assert db.points[0]["wall"] >= 5.0  # the stored epoch's seconds come first


def test_a_resumed_run_appends_without_duplicates(store, tiny_config):
    config = resume_config(tiny_config)
    reference = store.create_run(config.to_dict())
    execute_run(store, reference)
    run_id, _ = stop_run(store, config, lambda s: s["stage"] == "bsq" and s["epoch"] == 4)
    stopped = store.step_points(run_id)
    assert stopped[-1]["stage"] == "bsq" and stopped[-1]["epoch"] == 4  # its steps so far
    execute_run(store, run_id, resume=True)
    points = store.step_points(run_id)
    # Its pretraining came from the float cache the reference filled: no steps to record.
    expected = [p for p in store.step_points(reference) if p["stage"] != "pretrain"]
    steps = [p["step"] for p in points]  # (a cached pretraining adds no global steps)
    assert steps == sorted(set(steps)) and len(steps) == len(expected)
    assert [p["epoch_frac"] for p in points] == [p["epoch_frac"] for p in expected]
    assert [p["loss"] for p in points] == pytest.approx([p["loss"] for p in expected], rel=1e-6)
    walls = [p["wall"] for p in points]
    assert walls == sorted(walls)  # the resume continues the training-time axis
    assert len(epoch_keys(store, run_id)) == config.total_epochs


def test_delete_removes_the_series(store, tiny_config):
    run_id = store.create_run(tiny_config.to_dict())
    execute_run(store, run_id)
    assert store.step_points(run_id)
    store.delete_run(run_id)
    count = store._conn().execute("SELECT COUNT(*) FROM step_points").fetchone()[0]
    assert count == 0


def test_a_store_of_the_previous_version_loads_and_gains_the_table(tmp_path):
    conn = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    for migration in MIGRATIONS[: SCHEMA_VERSION - 1]:
        migration(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.execute(
        "INSERT INTO runs (run_id, name, status, method, model, dataset, config_json,"
        " created_at) VALUES ('old', 'old', 'finished', 'bsq', 'mlp', 'digits', ?, 1.0)",
        (json.dumps(make_config().to_dict()),),
    )
    conn.close()
    db = RunStore(tmp_path)
    assert db.get_run("old")["name"] == "old"
    assert db.step_points("old") == []  # trained before the series existed: none, no error
    assert db._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

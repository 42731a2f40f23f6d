"""Classroom engine: ownership rules, the live version, queue places and caps, stops asked
through the store (the CLI's ``stop``), ``delete`` of a live run, and the process worker."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time

import pytest

from bsq_engine.cli import main as cli
from bsq_engine.runs import runner, schema, worker_process
from bsq_engine.runs.jobs import JobManager, LiveBufferCallback, QueueFull
from bsq_engine.runs.ownership import (
    CLI_OWNER,
    Actor,
    OwnershipError,
    can_control,
    check_control,
    check_password,
    clean_name,
)
from bsq_engine.runs.queueing import queue_places, seconds_per_epoch
from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.store import RunStore
from bsq_engine.runs.sweep import start_sweep
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.presets import make_config

ANA, BEN = Actor("ana"), Actor("ben")


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# ---------------------------------------------------------------- ownership
@pytest.mark.parametrize(
    ("owner", "actor", "allowed"),
    [
        ("ana", ANA, True), ("ana", Actor("ANA"), True), ("ana", BEN, False),
        ("ana", Actor(None), False), ("ana", Actor("ben", admin=True), True),
        (CLI_OWNER, ANA, False), (CLI_OWNER, Actor("cli"), False),  # typed "cli" is no CLI
        (CLI_OWNER, Actor.command_line(), True), (CLI_OWNER, Actor(None, admin=True), True),
        ("ana", Actor.command_line(), True), (None, ANA, True), (None, Actor(None), True),
    ],
)  # fmt: skip
def test_who_may_control_a_run(owner, actor, allowed):
    run = {"run_id": "r1", "owner": owner}
    assert can_control(run, actor) is allowed
    for action in ("stop", "resume", "delete"):
        if allowed:
            check_control(run, actor, action)
        else:
            with pytest.raises(OwnershipError, match=f"cannot {action} run r1"):
                check_control(run, actor, action)


def test_refusals_say_who_may():
    with pytest.raises(OwnershipError, match="belongs to ana"):
        check_control({"run_id": "r", "owner": "ana"}, BEN, "stop")
    with pytest.raises(OwnershipError, match="python -m bsq_engine delete r"):
        check_control({"run_id": "r", "owner": CLI_OWNER}, ANA, "delete")
    with pytest.raises(OwnershipError, match="type your name"):
        check_control({"run_id": "r", "owner": "ana"}, Actor(None), "stop")


def test_names_are_one_clean_line():
    assert clean_name("  Ana   María ") == "Ana María"
    for bad, why in (("", "Type a name"), ("a" * 41, "at most 40"), ("cli", "reserved"),
                     ("CLI", "reserved"), ("ana\x1b[31m", "control")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            clean_name(bad)
    assert clean_name("ana\nben") == "ana ben"  # newlines are whitespace: collapsed


def test_admin_password_from_env_or_secrets(monkeypatch):
    monkeypatch.delenv("BSQ_ADMIN_PASSWORD", raising=False)
    assert not check_password("anything")  # no password set: admin disabled
    assert check_password("s3cret", {"admin_password": "s3cret"})
    assert not check_password("wrong", {"admin_password": "s3cret"})
    monkeypatch.setenv("BSQ_ADMIN_PASSWORD", "fromenv")
    assert check_password("fromenv", {"admin_password": "s3cret"})
    assert not check_password("", {"admin_password": ""})


# ---------------------------------------------------------------- queue estimates
def test_queue_places_with_unknown_durations():
    places = queue_places([None], [("a", 10.0), ("b", 10.0)], workers=2)
    assert [(p["place"], p["ahead"], p["start_s"]) for p in places] == [
        (1, [], 0.0), (2, ["a"], 10.0)]  # fmt: skip
    places = queue_places([5.0], [("a", None), ("b", 10.0)], workers=1)
    assert [p["start_s"] for p in places] == [5.0, None]  # unknown ahead: unknown
    with pytest.raises(ValueError, match="workers"):
        queue_places([], [], workers=0)


def test_seconds_per_epoch_is_the_median_rate():
    cfg = {"pretrain_epochs": 1, "bsq_epochs": 2, "finetune_epochs": 1}
    runs = [{"config": cfg, "seconds": s} for s in (4.0, 8.0, 400.0)]
    assert seconds_per_epoch(runs) == 2.0 and seconds_per_epoch([]) is None


# ---------------------------------------------------------------- live version
class _Trainer:
    """The attributes the live buffer reads."""

    stage, epoch, global_epoch, float_accuracy = "bsq", 1, 2, 0.9

    class config:
        total_epochs = 4

        @staticmethod
        def epochs_of(stage):
            return 2


def test_version_changes_only_with_something_to_draw():
    live, trainer = LiveBufferCallback(), _Trainer()
    live.STEP_VERSION_S = 3600.0  # step progress: one bump, then none within the period
    live.on_run_start(trainer)
    v0 = live.version
    for step in range(1, 6):
        live.on_step_end(trainer, {"step": step, "loss": 1.0, "batch": step, "batches": 10})
    assert live.version == v0 + 1  # the first step's progress is drawn, the next wait
    snap = live.snapshot()
    assert snap["step_in_epoch"] == 5 and snap["steps_in_epoch"] == 10
    live.on_epoch_end(trainer, {"stage": "bsq", "epoch": 1, "global_epoch": 2}, None)
    assert live.version == v0 + 2
    live.on_requantize(trainer, [{"layer": "fc1", "old_bits": 8, "new_bits": 6}])
    snap = live.snapshot()
    assert live.version == snap["version"] == v0 + 3 and len(snap["events"]) == 1
    assert snap["step_in_epoch"] is None  # the epoch ended


def test_step_progress_bumps_the_version_once_per_period():
    live, trainer = LiveBufferCallback(), _Trainer()
    live.STEP_VERSION_S = 0.0  # every step is a period: each one is drawn
    live.on_run_start(trainer)
    v0 = live.version
    for step in range(1, 4):
        live.on_step_end(trainer, {"step": step, "loss": 1.0, "batch": step, "batches": 3})
    assert live.version == v0 + 3


def test_a_snapshot_never_changes_under_its_reader():
    """Snapshots share the buffer's records (copying each record of a long run at every
    view read was most of a snapshot's cost) but get their own lists: what a reader holds
    stays as it was while training goes on, and the buffer keeps its own copies of what
    the trainer hands it."""
    live, trainer = LiveBufferCallback(), _Trainer()
    live.on_run_start(trainer)
    record = {"stage": "bsq", "epoch": 1, "global_epoch": 1, "test_acc": 0.5}
    layers = [{"name": "fc1", "n_bits": 8, "density": [0.5] * 8}]
    live.on_epoch_end(trainer, record, layers)
    live.on_step_end(trainer, {"step": 1, "loss": 1.0})
    live.on_requantize(trainer, [{"layer": "fc1", "old_bits": 8, "new_bits": 6}])
    before = live.snapshot()
    record["test_acc"], layers[0]["density"][0] = 0.0, 0.0  # the trainer reuses its objects
    live.on_epoch_end(trainer, dict(record, epoch=2, global_epoch=2), [dict(layers[0], n_bits=6)])
    live.on_step_end(trainer, {"step": 2, "loss": 0.9})
    live.on_requantize(trainer, [{"layer": "fc1", "old_bits": 6, "new_bits": 5}])
    assert [e["test_acc"] for e in before["epochs"]] == [0.5]
    assert before["layers"][0]["n_bits"] == 8 and before["layers"][0]["density"][0] == 0.5
    assert len(before["steps"]) == 1 and len(before["events"]) == 1
    after = live.snapshot()
    assert len(after["epochs"]) == 2 and after["layers"][0]["n_bits"] == 6
    assert after["epochs"][0] is before["epochs"][0]  # shared, not copied


class _Pipe:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_child_forwards_steps_throttled_with_epoch_edges():
    """The child sends an epoch's first and last step, and others at most once a period."""
    pipe = _Pipe()
    forward = worker_process._Forward(pipe, threading.Event(), step_every_s=3600.0)
    trainer = _Trainer()
    for epoch in (1, 2):
        trainer.epoch = epoch
        for batch in range(1, 11):
            forward.on_step_end(trainer, {"step": batch, "batch": batch, "batches": 10})
    sent = [(p["epoch"], p["step"]["batch"]) for kind, state, p in pipe.sent]
    assert all(kind == "step" and state is None for kind, state, _ in pipe.sent)
    assert sent == [(1, 1), (1, 10), (2, 1), (2, 10)]
    live = LiveBufferCallback()  # the parent applies them as the thread worker's hooks would
    for kind, state, payload in pipe.sent:
        live.apply(kind, state, **payload)
    snap = live.snapshot()
    assert snap["step_in_epoch"] == 10 and snap["epoch_in_progress"] == 2
    assert [p["step"] for p in snap["steps"]] == [1, 10, 1, 10]


@pytest.mark.parametrize(("message", "shutdown"), [("stop", False), ("shutdown", True)])
def test_child_stop_says_who_asked(message, shutdown):
    parent, child = multiprocessing.Pipe()
    stop = runner.StopSignal()
    parent.send(message)
    worker_process._listen(child, stop)
    assert stop.is_set() and stop.by_shutdown is shutdown


class _Gate(Callback):
    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def on_run_start(self, trainer):
        self.entered.set()
        assert self.release.wait(60)


@pytest.mark.slow
def test_manager_version_queue_and_cap(bsq_home, tiny_config):
    manager = JobManager(bsq_home, max_concurrent=1, torch_threads=1, max_queued_per_owner=2)
    try:
        gate = _Gate()
        first = manager.start(tiny_config, callbacks=[gate], owner="ana")
        assert gate.entered.wait(30)
        v_running = manager.version(first)
        second = manager.start(tiny_config, owner="ana")
        third = manager.start(tiny_config, owner="ben")
        fourth = manager.start(tiny_config, owner="ana")
        with pytest.raises(QueueFull, match="ana already has 2 runs waiting"):
            manager.start(tiny_config, owner="ana")
        with pytest.raises(QueueFull):  # a sweep is refused whole
            start_sweep(manager, model="mlp", dataset="digits", alphas=[0.1, 0.2], owner="ben")
        assert manager.store.list_sweeps() == [] and len(manager.store.list_runs()) == 4
        places = manager.queue()
        assert [(p["run_id"], p["place"]) for p in places] == [(second, 1), (third, 2),
                                                               (fourth, 3)]  # fmt: skip
        assert places[2]["ahead"] == [second, third]
        assert manager.version(first) == v_running and manager.version("nope") is None
        assert manager.store.get_run(second)["owner"] == "ana"
        gate.release.set()
        assert manager.wait(fourth, timeout=120) == "finished"
        assert manager.version(first) is None
    finally:
        manager.shutdown()


# ---------------------------------------------------------------- stops through the store
class _Steps(Callback):
    def __init__(self):
        self.count = 0

    def on_step_end(self, trainer, step):
        self.count += 1


def test_stop_asked_through_the_store_lands(bsq_home, tiny_config):
    store = RunStore(bsq_home)
    run_id = store.create_run(tiny_config.replace(bsq_epochs=500).to_dict(), owner="ana")
    steps = _Steps()
    worker = threading.Thread(target=execute_run, args=(store, run_id),
                              kwargs={"callbacks": (steps,)})  # fmt: skip
    worker.start()
    _wait_for(lambda: steps.count >= 3)
    other = RunStore(bsq_home)  # as another process would: through the file
    assert not other.stop_requested(run_id)
    other.request_stop(run_id)
    worker.join(30)
    assert not worker.is_alive() and store.get_run(run_id)["status"] == "stopped"


@pytest.mark.slow
def test_cli_stop_and_delete_rules(bsq_home, tiny_config, capsys):
    store = RunStore(bsq_home)
    queued = store.create_run(tiny_config.to_dict(), owner="ana")
    assert cli.main(["stop", queued]) == 0
    assert store.get_run(queued)["status"] == "stopped"
    assert cli.main(["stop", queued]) == 1  # already ended
    assert "only queued or running" in capsys.readouterr().err

    run_id = store.create_run(tiny_config.replace(bsq_epochs=500).to_dict(), owner=CLI_OWNER)
    steps = _Steps()
    worker = threading.Thread(target=execute_run, args=(store, run_id),
                              kwargs={"callbacks": (steps,)})  # fmt: skip
    worker.start()
    _wait_for(lambda: steps.count >= 3)
    assert cli.main(["delete", run_id, "--yes"]) == 1  # a live process trains it
    assert "python -m bsq_engine stop" in capsys.readouterr().err
    assert store.get_run(run_id)["status"] == "running"
    assert cli.main(["stop", run_id, "--timeout", "30"]) == 0
    worker.join(30)
    assert store.get_run(run_id)["status"] == "stopped"
    assert cli.main(["delete", run_id, "--yes"]) == 0


@pytest.mark.slow
def test_manager_skips_a_run_stopped_elsewhere_while_queued(manager, tiny_config):
    gate = _Gate()
    first = manager.start(tiny_config, callbacks=[gate])
    assert gate.entered.wait(30)
    second = manager.start(tiny_config)
    RunStore(manager.store.home).set_status(second, "stopped", error="by the CLI")
    gate.release.set()
    assert manager.wait(first, timeout=60) == "finished"
    manager.wait(second, timeout=30)
    assert manager.store.get_run(second)["status"] == "stopped"
    assert manager.store.get_run(second)["started_at"] is None  # never trained


def test_v1_store_gains_owner_column(tmp_path):
    conn = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    schema.MIGRATIONS[0](conn)
    conn.execute(
        "INSERT INTO runs (run_id, status, method, model, dataset, alpha, config_json,"
        " created_at) VALUES ('old', 'stopped', 'bsq', 'mlp', 'digits', 0.1, ?, 0)",
        (json.dumps(make_config().to_dict()),),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    run = RunStore(tmp_path).get_run("old")
    assert run["owner"] is None and run["stop_requested"] is None


# ---------------------------------------------------------------- the process worker
@pytest.mark.slow
def test_process_worker_trains_streams_and_stops(bsq_home, tiny_config):
    manager = JobManager(bsq_home, max_concurrent=1, torch_threads=1, worker="process")
    try:
        done = manager.start(tiny_config, owner="ana")
        assert manager.wait(done, timeout=180) == "finished"
        long = manager.start(tiny_config.replace(bsq_epochs=500), owner="ana")
        _wait_for(lambda: len((manager.snapshot(long) or {}).get("epochs", [])) >= 3, 180)
        v = manager.version(long)
        _wait_for(lambda: manager.version(long) != v, 60)  # epochs stream from the child
        # steps too: progress within the epoch (an epoch's end clears it until the next step)
        snaps = []
        _wait_for(lambda: snaps.append(manager.snapshot(long) or {}) or snaps[-1].get(
            "step_in_epoch"), 60)  # fmt: skip
        snap = snaps[-1]
        assert snap["steps"] and snap["steps_in_epoch"] and snap["step_in_epoch"]
        started = time.monotonic()
        manager.stop(long)
        assert manager.wait(long, timeout=30) == "stopped"
        assert time.monotonic() - started < 30
        run = manager.store.get_run(long)
        assert run["pid"] != manager.store.get_run(done)["pid"]  # one child per run
        with pytest.raises(ValueError, match="worker='thread'"):
            manager.start(tiny_config, callbacks=[_Steps()])
    finally:
        manager.shutdown()

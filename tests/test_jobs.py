"""JobManager with real threads, a real store and real tiny training (no Streamlit)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from shared import wait_for

from bsq_engine.runs import jobs
from bsq_engine.runs.jobs import JobManager, LiveBufferCallback, default_torch_threads, get_manager
from bsq_engine.runs.paths import checkpoint_path
from bsq_engine.runs.runner import ResumeError
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback


class OnStep(Callback):
    """Calls ``action(step)`` after every step and records (time, step) pairs."""

    def __init__(self, action=lambda step: None):
        self.action, self.steps = action, []

    def on_step_end(self, trainer, step):
        self.steps.append((time.monotonic(), step))
        self.action(step)


class Gate(Callback):
    """Holds the run at its start until released, so a test knows it is running."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def on_run_start(self, trainer):
        self.entered.set()
        assert self.release.wait(30)


class Boom(Callback):
    def on_stage_start(self, trainer, stage):
        raise KeyError("no such layer")


@pytest.fixture
def long_config(tiny_config):
    """Far too long to finish during a test: every test using it stops it."""
    return tiny_config.replace(bsq_epochs=500, requant_interval=100)


def epoch_keys(store, run_id):
    return [(r["stage"], r["epoch"]) for r in store.epochs(run_id)]


def test_start_returns_at_once_and_finishes(manager, tiny_config):
    run_id = manager.start(tiny_config, name="tiny")
    assert manager.active_runs() == [run_id]
    assert manager.wait(run_id, timeout=60) == "finished"
    run = manager.store.get_run(run_id)
    assert run["name"] == "tiny" and run["summary"]["accuracy"] > 0
    assert manager.snapshot(run_id) is None and manager.active_runs() == []


def test_start_validates_dict_configs(manager, tiny_config):
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        manager.start({**tiny_config.to_dict(), "alpha": -1})
    assert manager.store.list_runs() == []


def test_queue_runs_one_at_a_time_in_order(manager, tiny_config):
    gate = Gate()
    first = manager.start(tiny_config, callbacks=[gate])
    assert gate.entered.wait(30)
    second = manager.start(tiny_config)
    assert manager.status(first) == "running" and manager.status(second) == "queued"
    assert manager.active_runs() == [first, second]
    assert manager.snapshot(second)["status"] == "queued"
    gate.release.set()
    assert manager.wait(second, timeout=60) == "finished"
    a, b = manager.store.get_run(first), manager.store.get_run(second)
    assert a["status"] == "finished" and b["started_at"] >= a["finished_at"]


def test_stop_lands_within_one_step(manager, long_config):
    recorder = OnStep()
    run_id = manager.start(long_config, callbacks=[recorder])
    wait_for(lambda: len(recorder.steps) >= 3)
    stopped_at, asked_at = time.monotonic(), time.time()
    manager.stop(run_id)
    assert manager.wait(run_id, timeout=30) == "stopped"
    run = manager.store.get_run(run_id)
    assert run["error"].startswith("Stopped by the user at ")
    assert asked_at <= run["stop_requested"] <= time.time()  # when it was asked, recorded
    assert sum(t > stopped_at for t, _ in recorder.steps) <= 1  # the step already under way
    assert len(manager.store.epochs(run_id)) < long_config.total_epochs


def test_stop_of_queued_and_ended_runs(manager, tiny_config, long_config):
    running = manager.start(long_config)
    queued = manager.start(tiny_config)
    manager.stop(queued)
    assert manager.status(queued) == "stopped" and queued not in manager.active_runs()
    manager.stop(running)
    assert manager.wait(running, timeout=30) == "stopped"
    manager.stop(running)  # already ended: nothing to do
    assert manager.status(running) == "stopped"


def test_snapshot_is_consistent_and_advances(manager, tiny_config):
    config = tiny_config.replace(pretrain_epochs=2, bsq_epochs=4, finetune_epochs=2)
    seen = []

    class Probe(Callback):  # runs in the worker right after the live buffer's own hook
        def on_epoch_end(self, trainer, record, layers):
            seen.append((record, manager.snapshot(trainer.run_id)))

    run_id = manager.start(config, callbacks=[Probe()])
    assert manager.wait(run_id, timeout=60) == "finished"
    progress = [snap["progress"] for _, snap in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(set(progress)) == 8
    for record, snap in seen:
        assert snap["status"] == "running" and snap["run_id"] == run_id
        assert snap["global_epoch"] == record["global_epoch"] == len(snap["epochs"])
        assert snap["epochs"][-1] == record and snap["stage"] == record["stage"]
        assert snap["total_epochs"] == config.total_epochs == 8
        assert snap["epochs_in_stage"] == config.epochs_of(record["stage"])
        assert snap["eta_seconds"] >= 0 and snap["started_at"] <= snap["updated_at"]
        assert snap["step"]["stage"] == record["stage"]
    last = seen[-1][1]
    assert all(len(layer["density"]) == layer["n_bits"] for layer in last["layers"])
    last["epochs"].clear()  # a snapshot is the caller's own copy
    assert seen[-2][1]["epochs"]


def test_progress_moves_within_an_epoch(manager, tiny_config):
    """Every step moves the bar: a CPU epoch of a real dataset lasts tens of seconds."""
    config = tiny_config.replace(batch_size=32)  # 256 samples: 8 steps per epoch
    seen = []

    class Probe(Callback):
        def on_step_end(self, trainer, step):
            seen.append((step, manager.snapshot(trainer.run_id)))

    run_id = manager.start(config, callbacks=[Probe()])
    assert manager.wait(run_id, timeout=60) == "finished"
    first = [snap for step, snap in seen if step["stage"] == "pretrain"]
    assert [s["step_in_epoch"] for s in first] == list(range(1, 9))
    assert all(s["steps_in_epoch"] == 8 and s["epoch_in_progress"] == 1 for s in first)
    progress = [snap["progress"] for _, snap in seen]
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    total = config.total_epochs
    assert first[0]["progress"] == pytest.approx(1 / 8 / total)
    assert first[0]["eta_seconds"] is not None  # extrapolated before any epoch has ended
    assert progress[-1] == pytest.approx(1.0)


def test_live_step_curve_is_thinned_evenly():
    """The per-step curve stays small (copied on every tick) and evenly spaced."""
    live = LiveBufferCallback()
    live.STEP_POINTS = 4
    trainer = types.SimpleNamespace(epoch=1)
    for step in range(1, 41):
        live.on_step_end(trainer, {"step": step, "stage": "bsq", "epoch": 1, "loss": 1 / step})
    steps = [p["step"] for p in live.snapshot()["steps"]]
    assert len(steps) < 2 * live.STEP_POINTS and steps[-1] >= 32
    gaps = {b - a for a, b in itertools.pairwise(steps)}
    assert len(gaps) == 1 and gaps.pop() == live._stride  # one stride: evenly spaced


def test_live_buffer_snapshot_copies_and_eta():
    live = LiveBufferCallback()
    snap = live.snapshot()
    assert snap["progress"] == 0.0 and snap["eta_seconds"] is None and snap["epochs"] == []


def test_unexpected_error_becomes_failed(manager, tiny_config):
    run_id = manager.start(tiny_config, callbacks=[Boom()])
    assert manager.wait(run_id, timeout=60) == "failed"
    error = manager.store.get_run(run_id)["error"]
    assert error.startswith("Unexpected error: KeyError: 'no such layer'. Details in")
    follow_up = manager.start(tiny_config)  # the worker survived
    assert manager.wait(follow_up, timeout=60) == "finished"


def test_shutdown_stops_joins_and_is_idempotent(manager, tiny_config, long_config):
    recorder = OnStep()
    running = manager.start(long_config, callbacks=[recorder])
    queued = manager.start(tiny_config)
    wait_for(lambda: recorder.steps)
    workers = list(manager._workers)
    manager.shutdown(timeout=30)
    assert not any(w.is_alive() for w in workers)
    assert manager.status(queued) == "stopped"
    assert manager.status(running) == "interrupted"  # nobody pressed Stop: the server went
    error = manager.store.get_run(running)["error"]
    assert error.startswith("Interrupted by server shutdown at ") and "user" not in error
    manager.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        manager.start(tiny_config)


@pytest.mark.slow  # trains for seconds
def test_orphan_of_a_dead_process_becomes_interrupted(bsq_home, tiny_config):
    # A bare package object skips bsq_engine/__init__ (torch, sklearn): the store is stdlib
    # only, and the child then starts in a fraction of a second.
    script = (
        "import sys, types\n"
        "pkg = types.ModuleType('bsq_engine')\n"
        f"pkg.__path__ = [{str(Path(jobs.__file__).parents[1])!r}]\n"
        "sys.modules['bsq_engine'] = pkg\n"
        "from bsq_engine.runs.store import RunStore\n"
        f"store = RunStore({str(bsq_home)!r})\n"
        f"run_id = store.create_run({tiny_config.to_dict()!r})\n"
        "store.set_status(run_id, 'running')\n"
        "print(run_id)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    run = RunStore(bsq_home).get_run(out.stdout.strip())
    assert run["status"] == "interrupted" and "ended without finishing" in run["error"]


@pytest.mark.slow  # trains for seconds
def test_resume_continues_from_the_checkpoint(manager, tiny_config):
    config = tiny_config.replace(bsq_epochs=4, requant_interval=2)
    hits = OnStep(lambda step: step["epoch"] == 4 and manager.stop(run_id))
    run_id = manager.start(config, callbacks=[hits])
    assert manager.wait(run_id, timeout=60) == "stopped"
    assert ("bsq", 3) in epoch_keys(manager.store, run_id)  # after the checkpoint at bsq 2
    with pytest.raises(ValueError, match="only interrupted, stopped or failed"):
        manager.resume(manager.store.create_run(config.to_dict()))  # queued, not ours
    manager.resume(run_id)
    assert manager.wait(run_id, timeout=60) == "finished"
    keys = epoch_keys(manager.store, run_id)
    assert len(keys) == len(set(keys)) == config.total_epochs
    with pytest.raises(ValueError, match="is finished"):
        manager.resume(run_id)


def test_resume_refuses_a_corrupt_checkpoint(manager, tiny_config):
    config = tiny_config.replace(bsq_epochs=4, requant_interval=2)
    run_id = manager.start(
        config, callbacks=[OnStep(lambda s: s["epoch"] == 4 and manager.stop(run_id))]
    )
    assert manager.wait(run_id, timeout=60) == "stopped"
    checkpoint_path(manager.store, run_id).write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeError, match="cannot resume"):
        manager.resume(run_id)
    assert manager.status(run_id) == "stopped" and manager.active_runs() == []


@pytest.mark.slow  # trains for seconds
def test_readers_never_error_while_a_run_writes(manager, bsq_home, tiny_config):
    run_id = manager.start(tiny_config.replace(bsq_epochs=4))
    errors, reads = [], [0]

    def read(store):
        try:
            while run_id in manager.active_runs():
                store.list_runs()
                store.epochs(run_id)
                store.events(run_id)
                store.latest_layers(run_id)
                manager.snapshot(run_id)
                reads[0] += 1
                time.sleep(0.002)  # still far more eager than a page polling twice a second
        except Exception as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    readers = [
        threading.Thread(target=read, args=(s,)) for s in (manager.store, RunStore(bsq_home))
    ]
    for reader in readers:
        reader.start()
    assert manager.wait(run_id, timeout=60) == "finished"
    for reader in readers:
        reader.join(30)
    assert errors == [] and reads[0] > 0


def test_default_torch_threads(monkeypatch):
    monkeypatch.setenv(jobs.TORCH_THREADS_ENV, "3")
    assert default_torch_threads() == 3
    monkeypatch.setenv(jobs.TORCH_THREADS_ENV, "zero")
    with pytest.raises(ValueError, match="BSQ_TORCH_THREADS must be a whole number"):
        default_torch_threads()
    monkeypatch.delenv(jobs.TORCH_THREADS_ENV)
    for cores, expected in ((1, 1), (2, 1), (4, 3), (16, None)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert default_torch_threads() == expected


def test_get_manager_is_one_per_home(bsq_home, single_torch_thread):
    first = get_manager()
    try:
        assert get_manager(str(bsq_home)) is first and first.store.home == bsq_home
        assert JobManager(bsq_home, torch_threads=1) is not first
    finally:
        first.shutdown()
    second = get_manager()
    assert second is not first
    second.shutdown()


class _SlowExit:
    """Stands in for ``worker_process.run_in_child``: the "child" records ``status`` in the
    store, closes its pipe (``on_run_end``), then takes until ``exit`` is set to exit, as
    torch's teardown can. No process is spawned."""

    def __init__(self, status: str, code: int = 0):
        self.status, self.code = status, code
        self.ended, self.exit, self.calls = threading.Event(), threading.Event(), 0
        self.later, self.exit_later = threading.Event(), threading.Event()

    def __call__(self, home, run_id, *, on_run_end=None, **_):
        self.calls += 1
        if self.calls > 1:  # a later job: holds until released, records nothing
            self.later.set()
            assert self.exit_later.wait(30)
            return 0
        store = RunStore(home)
        store.set_status(run_id, "running")
        if self.status != "running":
            store.set_status(run_id, self.status, error="Stopped by the user at bsq epoch 1")
        on_run_end()
        self.ended.set()
        assert self.exit.wait(30)
        return self.code


@pytest.fixture
def process_manager(bsq_home, single_torch_thread):
    manager = JobManager(bsq_home, max_concurrent=1, torch_threads=1, worker="process")
    yield manager
    manager.shutdown()


def test_a_run_is_over_once_recorded_though_its_process_still_exits(
    process_manager, tiny_config, monkeypatch
):
    """Measured before: a Stop's panel waited 1.5 s for the child process to exit after
    its run had recorded "stopped"; the run now leaves the active ones when its pipe
    closes with the outcome recorded."""
    child = _SlowExit("stopped")
    monkeypatch.setattr(jobs.worker_process, "run_in_child", child)
    run_id = process_manager.start(tiny_config)
    assert child.ended.wait(30)
    assert process_manager.wait(run_id, timeout=5) == "stopped"  # before the exit
    assert run_id not in process_manager.active_runs() and not child.exit.is_set()
    assert process_manager.version(run_id) is None  # viewers read the store now
    child.exit.set()


def test_a_child_that_dies_before_recording_keeps_its_run_until_its_exit(
    process_manager, tiny_config, monkeypatch
):
    child = _SlowExit("running", code=-9)  # killed: the pipe closed, nothing recorded
    monkeypatch.setattr(jobs.worker_process, "run_in_child", child)
    run_id = process_manager.start(tiny_config)
    assert child.ended.wait(30)
    assert run_id in process_manager.active_runs()
    child.exit.set()
    assert process_manager.wait(run_id, timeout=30) == "failed"
    assert "exited with code -9" in process_manager.store.get_run(run_id)["error"]


def test_a_run_resumed_while_its_old_process_exits_stays_queued(
    process_manager, tiny_config, monkeypatch
):
    """The old job's worker, when its process finally exits, must not drop the new job."""
    child = _SlowExit("stopped")
    monkeypatch.setattr(jobs.worker_process, "run_in_child", child)
    monkeypatch.setattr(jobs.runner, "load_resume_point", lambda store, run_id: None)
    run_id = process_manager.start(tiny_config)
    assert child.ended.wait(30) and process_manager.wait(run_id, timeout=5) == "stopped"
    process_manager.resume(run_id)  # queued behind the one worker, still busy exiting
    child.exit.set()
    assert child.later.wait(30)  # the old job is released; the worker took the new one
    assert run_id in process_manager.active_runs()
    child.exit_later.set()

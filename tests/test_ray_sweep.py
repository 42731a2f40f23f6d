"""Sweeps on Ray: streamed metrics, one pretraining, dead workers; clear errors without Ray.

One Ray instance (2 CPUs, no dashboard, 127.0.0.1) serves the whole module; every test has
its own store, which is also the storage path the workers write checkpoints to.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from shared import free_port

from bsq_engine.cli.main import main
from bsq_engine.runs import paths, ray_executor, ray_worker
from bsq_engine.runs.ray_executor import RayExecutor, ray_available
from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.store import RunStore
from bsq_engine.runs.sweep import run_sweep_blocking, start_sweep
from bsq_engine.training.presets import make_config

# Ray is optional: the tests marked with this need it, and start a local instance (slow).
needs_ray = pytest.mark.skipif(
    not ray_available(),
    reason="Ray is not installed (optional: pip install -r requirements-cluster.txt)",
)
TINY = {"pretrain_epochs": 1, "bsq_epochs": 3, "finetune_epochs": 1, "requant_interval": 1,
        "max_train": 256, "max_test": 128}  # fmt: skip


RAY_PORTS = range(8660, 8680)  # this project's port range


def test_without_ray_the_cli_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setattr(ray_executor, "ray_available", lambda: False)
    argv = ["sweep", "--model", "mlp", "--dataset", "digits", "--alphas", "0.1"]
    assert main([*argv, "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "requirements-cluster.txt" in err and "--executor local" in err


def test_an_unreachable_cluster_fails_fast():
    port = free_port(RAY_PORTS, "Ray's GCS")  # free = nobody listens there
    with pytest.raises(ConnectionError, match="nothing answers"):
        ray_executor._check_reachable(f"127.0.0.1:{port}")
    ray_executor._check_reachable("auto")  # left to Ray


@pytest.fixture(scope="module")
def local_ray():
    import ray

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {
        "RAY_GCS_SERVER_PORT": str(free_port(RAY_PORTS, "Ray's GCS")),
        "BSQ_TORCH_THREADS": "1",
        "PYTHONPATH": path,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the local raylet and its workers inherit these
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def executor(local_ray, bsq_home):
    ex = RayExecutor(RunStore(bsq_home))
    yield ex
    ex.shutdown(timeout=30)


@pytest.mark.slow
@needs_ray
def test_two_point_sweep_streams_into_the_drivers_store(executor, bsq_home):
    store = executor.store
    # owner="cli", as `python -m bsq_engine sweep --executor ray` passes it
    sweep_id = start_sweep(executor, model="mlp", dataset="digits", alphas=[0.1, 0.3],
                           overrides=TINY, owner="cli")  # fmt: skip
    live = []

    def watch(progress):  # runs in this (driver) process while Ray trains
        for run in store.list_runs(sweep_id=sweep_id, status="running"):
            live.append(len(store.epochs(run["run_id"])))

    assert run_sweep_blocking(executor, sweep_id, poll=0.1, on_progress=watch)["done"]
    assert any(n > 0 for n in live)  # epochs arrived while a run was still training
    runs = store.list_runs(sweep_id=sweep_id)
    assert [r["status"] for r in runs] == ["finished", "finished"]
    assert {r["owner"] for r in runs} == {"cli"}
    total = make_config(**TINY).total_epochs
    for run in runs:
        rid = run["run_id"]
        assert run["pid"] == os.getpid()  # the driver owns the rows (heartbeat, orphans)
        assert run["worker"].startswith("ray ") and run["device"] == "cpu"
        assert [e["global_epoch"] for e in store.epochs(rid)] == list(range(1, total + 1))
        assert store.latest_layers(rid) and store.events(rid) is not None
        assert run["summary"]["accuracy"] == run["accuracy"] > 0.2
    # one pretraining: the second run loaded the first one's float model and its curve
    pre = [[e for e in store.epochs(r["run_id"]) if e["stage"] == "pretrain"] for r in runs]
    assert pre[0][0]["seconds"] == pre[1][0]["seconds"]
    assert len(list((bsq_home / "float_cache").glob("*.safetensors"))) == 1
    rid = runs[0]["run_id"]  # the workers wrote checkpoints where the store looks for them
    assert ray_worker.checkpoint_in(bsq_home, rid) == paths.checkpoint_path(store, rid)
    assert paths.checkpoint_path(store, rid).is_file()


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.slow
@needs_ray
def test_killed_worker_leaves_run_interrupted_and_resumable(executor):
    store = executor.store
    config = make_config(**{**TINY, "bsq_epochs": 40, "pretrain_epochs": 0})
    rid = executor.start(config)

    def worker_pid():  # once a BSQ epoch (and its checkpoint) is stored
        run = store.get_run(rid)
        if run["worker"] and any(e["stage"] == "bsq" for e in store.epochs(rid)):
            return int(run["worker"].rsplit(" ", 1)[1])
        return None

    os.kill(_wait_for(worker_pid), signal.SIGKILL)
    assert executor.wait(rid, timeout=120) == "interrupted"
    run = store.get_run(rid)
    assert "Ray worker" in run["error"] and "Resume" in run["error"]
    assert store.epochs(rid)  # the rows streamed before the kill are kept

    resumed = execute_run(store, rid, resume=True)  # here, from the shared checkpoint
    assert resumed["status"] == "finished"
    epochs = store.epochs(rid)
    assert [e["global_epoch"] for e in epochs] == list(range(1, config.total_epochs + 1))


@pytest.mark.slow
@needs_ray
def test_stop_cancels_the_ray_task_resumably(executor):
    store = executor.store
    config = make_config(**{**TINY, "bsq_epochs": 40, "pretrain_epochs": 0})
    rid = executor.start(config)
    _wait_for(lambda: store.epochs(rid))
    executor.stop(rid)
    assert executor.wait(rid, timeout=120) == "stopped"
    assert store.get_run(rid)["status"] == "stopped"
    assert rid not in executor.active_runs()


@pytest.mark.slow
@needs_ray
def test_train_page_offers_ray_for_sweeps(bsq_home):
    from apptest_helpers import open_page

    at = open_page()  # the Train page; Ray is importable here, so the choice is shown
    assert not at.exception
    choice = at.radio(key="train.sweep_executor")
    assert choice.options == ["this machine's job queue", "Ray"]
    assert choice.value == "this machine's job queue"  # the local queue stays the default


def test_backfill_replays_what_a_dying_worker_checkpointed(bsq_home):
    """The race the kill test can hit: checkpoint written, its epoch message lost in flight."""
    from bsq_engine.training.checkpoint import save_checkpoint

    with RunStore(bsq_home) as store:
        rid = store.create_run(make_config().to_dict(), status="running")
        record = {"stage": "bsq", "epoch": 3, "global_epoch": 3, "test_acc": 0.5}
        event = {"stage": "bsq", "epoch": 3, "layer": "fc1", "old_bits": 8, "new_bits": 6,
                 "message": "fc1: 8 -> 6 bits"}  # fmt: skip
        path = paths.checkpoint_path(store, rid)
        save_checkpoint(path, {}, {"streamed": [("events", [event]), ("epoch", record, None)]})
        assert ray_worker.backfill(store, rid, path) == 2
        assert [e["global_epoch"] for e in store.epochs(rid)] == [3]
        assert [e["new_bits"] for e in store.events(rid)] == [6]
        assert ray_worker.backfill(store, rid, path.with_name("absent")) == 0


class _NoRay:
    """Just what ``RayExecutor._receive`` asks of the ``ray`` module (no cluster)."""

    class exceptions:
        class RayError(Exception):
            pass

    @staticmethod
    def get(ref):
        return ref


@pytest.mark.parametrize(("stopping", "status"), [(True, "stopped"), (False, "interrupted")])
def test_a_task_that_ends_without_its_final_message_is_settled(tmp_path, stopping, status):
    """A cancel can end the generator cleanly, before its "end" message: the run must not
    stay ``running`` once it has left the active runs (the race a loaded suite hit)."""
    store = RunStore(tmp_path)
    config = make_config(**TINY)
    rid = store.create_run(config.to_dict())
    executor = object.__new__(RayExecutor)  # the driver's bookkeeping, without Ray
    executor.store, executor.storage, executor.ray = store, tmp_path, _NoRay
    executor._lock, executor._running, executor._waiting = threading.Lock(), {}, []
    executor._pretrained, executor._leaders = set(), set()
    start = ("start", {"device": "cpu", "worker": "test"})
    task = ray_executor._Task(rid, config, None, gen=iter([start]), stopping=stopping)
    executor._running[rid] = task
    executor._receive(task)  # the start message: running
    assert store.get_run(rid)["status"] == "running"
    executor._receive(task)  # the generator ends, no "end" message
    assert store.get_run(rid)["status"] == status and rid not in executor.active_runs()

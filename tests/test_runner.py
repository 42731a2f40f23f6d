"""execute_run against a real store and real tiny training: outcomes, errors, resume."""

from __future__ import annotations

import pytest

from bsq_engine.data import sources
from bsq_engine.runs.runner import (
    ResumeError,
    cache_dir,
    checkpoint_path,
    execute_run,
    load_resume_point,
)
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class StopAt(Callback):
    """Sets the stop event after the first step matching ``when``; records every step."""

    def __init__(self, event, when):
        self.event, self.when, self.steps = event, when, []

    def on_step_end(self, trainer, step):
        self.steps.append(step)
        if self.when(step):
            self.event.set()


class Boom(Callback):
    def on_epoch_end(self, trainer, record, layers):
        raise RuntimeError("boom")


@pytest.fixture
def store(bsq_home):
    s = RunStore(bsq_home)
    yield s
    s.close()


def stop_run(store, config, when):
    """A run stopped from inside its first step matching ``when``; returns (run_id, steps)."""
    import threading

    run_id = store.create_run(config.to_dict())
    stopper = StopAt(threading.Event(), when)
    run = execute_run(store, run_id, stop_event=stopper.event, callbacks=[stopper])
    assert run["status"] == "stopped" and run["error"].startswith("Stopped by the user at ")
    return run_id, stopper.steps


def epoch_keys(store, run_id):
    return [(r["stage"], r["epoch"], r["global_epoch"]) for r in store.epochs(run_id)]


def test_paths(store):
    assert cache_dir(store.home) == store.home / "float_cache"
    run_id = store.create_run({"model": "mlp", "dataset": "digits", "method": "bsq", "alpha": 1})
    assert checkpoint_path(store, run_id) == store.home / "runs" / run_id / "checkpoint.safetensors"


def test_finished_run_is_fully_persisted(store, tiny_config):
    run_id = store.create_run(tiny_config.replace(alpha=2.0, lr=0.5).to_dict())
    run = execute_run(store, run_id)
    assert run["status"] == "finished" and run["error"] is None
    summary = run["summary"]
    assert summary["run_id"] == run_id and 0 <= summary["accuracy"] <= 1
    assert run["pid"] is not None and run["started_at"] <= run["finished_at"]
    keys = epoch_keys(store, run_id)
    assert keys == [("pretrain", 1, 1), ("bsq", 1, 2), ("bsq", 2, 3), ("finetune", 1, 4)]
    assert {r["global_epoch"] for r in store.layer_snapshots(run_id)} == {2, 3, 4}
    assert store.events(run_id), "alpha=2, lr=0.5 must drop planes"
    assert [layer["n_bits"] for layer in store.latest_layers(run_id)] == [
        layer["n_bits"] for layer in summary["layers"]
    ]
    _, meta = load_resume_point(store, run_id)[1]
    assert meta["stage"] == "done"  # the final model, for export
    assert len(list(cache_dir(store.home).glob("*.safetensors"))) == 1


def test_divergence_fails_with_advice(store, tiny_config):
    config = tiny_config.replace(pretrain_lr=1e6, lr=1e6)
    run = execute_run(store, store.create_run(config.to_dict()))
    assert run["status"] == "failed"
    assert "diverged" in run["error"] and "alpha" in run["error"]
    assert "learning rate" in run["error"]


def test_missing_dataset_fails_with_how_to_get(store, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (), "mnist": ()})
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    empty = tmp_path / "no-data"
    empty.mkdir()
    config = tiny_config.replace(dataset="fashion_mnist", data_root=str(empty))
    run = execute_run(store, store.create_run(config.to_dict()))
    assert run["status"] == "failed"
    assert "apt-get install dataset-fashion-mnist" in run["error"] and str(empty) in run["error"]


def test_unexpected_error_fails_with_error_log(store, tiny_config):
    run_id = store.create_run(tiny_config.to_dict())
    run = execute_run(store, run_id, callbacks=[Boom()])
    log = store.run_dir(run_id) / "error.log"
    assert run["status"] == "failed"
    assert run["error"] == f"Unexpected error: RuntimeError: boom. Details in {log}"
    text = log.read_text()
    assert "Traceback" in text and "on_epoch_end" in text and "boom" in text


def test_invalid_stored_config_fails(store):
    bad = {"model": "mlp", "dataset": "digits", "method": "bsq", "alpha": 1, "epochz": 3}
    run = execute_run(store, store.create_run(bad))
    assert run["status"] == "failed" and "Unknown config keys ['epochz']" in run["error"]


def test_stop_lands_within_one_step(store, tiny_config):
    run_id, steps = stop_run(store, tiny_config, lambda s: s["stage"] == "bsq" and s["step"] >= 6)
    assert steps[-1]["step"] == 6 and steps[-1]["stage"] == "bsq"
    assert store.get_run(run_id)["summary"] is None


def test_finished_run_cannot_start_again(store, tiny_config):
    run_id = store.create_run(tiny_config.to_dict())
    execute_run(store, run_id)
    for resume in (False, True):
        with pytest.raises(ValueError, match="cannot go from finished"):
            execute_run(store, run_id, resume=resume)
    assert store.get_run(run_id)["status"] == "finished"


def resume_config(tiny_config):
    # Checkpoints at bsq epochs 2 and 4 (re-quantization) and at stage ends.
    return tiny_config.replace(pretrain_epochs=2, bsq_epochs=4, requant_interval=2)


def test_resume_matches_an_uninterrupted_run(store, tiny_config):
    config = resume_config(tiny_config)
    reference = execute_run(store, store.create_run(config.to_dict()))
    # Stopped inside bsq epoch 4: the checkpoint is at bsq 2, the store has bsq 3 already.
    run_id, _ = stop_run(store, config, lambda s: s["stage"] == "bsq" and s["epoch"] == 4)
    assert ("bsq", 3, 5) in epoch_keys(store, run_id)
    assert load_resume_point(store, run_id)[1][1]["epoch"] == 2
    run = execute_run(store, run_id, resume=True)
    assert run["status"] == "finished"
    keys = epoch_keys(store, run_id)
    assert len(keys) == len(set(keys)) == config.total_epochs
    assert [k[2] for k in keys] == list(range(1, config.total_epochs + 1))
    # Same seeds per epoch and the checkpoint's momentum: the resumed run is the same run.
    assert run["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-9)
    assert run["avg_bits"] == pytest.approx(reference["avg_bits"])


def test_resume_without_checkpoint_starts_over(store, tiny_config):
    config = tiny_config.replace(pretrain_epochs=2)
    run_id, _ = stop_run(store, config, lambda s: s["epoch"] == 2)  # first save: pretrain end
    assert not checkpoint_path(store, run_id).exists()
    assert epoch_keys(store, run_id) == [("pretrain", 1, 1)]
    run = execute_run(store, run_id, resume=True)
    assert run["status"] == "finished"
    assert [k[2] for k in epoch_keys(store, run_id)] == [1, 2, 3, 4, 5]


def test_corrupt_checkpoint_refuses_resume_and_changes_nothing(store, tiny_config):
    config = resume_config(tiny_config)
    run_id, _ = stop_run(store, config, lambda s: s["stage"] == "bsq" and s["epoch"] == 4)
    path = checkpoint_path(store, run_id)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = epoch_keys(store, run_id)
    with pytest.raises(ResumeError, match=r"cannot resume: .*corrupt or truncated"):
        execute_run(store, run_id, resume=True)
    assert store.get_run(run_id)["status"] == "stopped"
    assert epoch_keys(store, run_id) == before

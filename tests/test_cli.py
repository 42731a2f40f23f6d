"""``python -m bsq_engine``: real tiny runs, in a subprocess and in-process via ``cli.main``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bsq_engine.cli import main as cli
from bsq_engine.data import list_datasets
from bsq_engine.models import list_models
from bsq_engine.runs.export import load_quantized
from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.presets import make_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--pretrain-epochs", "1", "--epochs", "2", "--finetune-epochs", "1",
        "--requant-interval", "1"]  # fmt: skip
FAST = [*TINY, "--max-train", "256"]
SUMMARY_KEYS = {"run_id", "status", "model", "dataset", "method", "alpha", "float_accuracy",
                "accuracy", "avg_bits", "compression", "seconds", "layers"}  # fmt: skip


def _env(home: Path) -> dict:
    # One torch thread: the CI box has 2 cores shared with other jobs.
    return {**os.environ, "BSQ_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bsq_engine", *args],
        cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny digits run, trained by a real ``python -m bsq_engine`` process."""
    home = tmp_path_factory.mktemp("cli_home")
    proc = _cli("train", "--model", "mlp", "--dataset", "digits", *FAST, "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return home, _last_json(proc.stdout), proc


# ---------------------------------------------------------------- train, runs, show
@pytest.mark.slow  # trains for seconds
def test_train_json_reports_the_summary(trained):
    _, summary, proc = trained
    assert set(summary) >= SUMMARY_KEYS
    assert f"run {summary['run_id']}" in proc.stderr  # stdout holds only the JSON
    assert summary["status"] == "finished" and summary["error"] is None
    assert (summary["model"], summary["dataset"], summary["method"]) == ("mlp", "digits", "bsq")
    assert 0 < summary["accuracy"] <= 1 and 0 < summary["float_accuracy"] <= 1
    assert 0 < summary["avg_bits"] <= 8
    assert summary["compression"] == pytest.approx(32 / summary["avg_bits"])
    layers = summary["layers"]
    assert [layer["name"] for layer in layers] == ["fc1", "fc2", "fc3"]
    total = sum(layer["n_weights"] for layer in layers)
    weighted = sum(layer["n_weights"] * layer["n_bits"] for layer in layers) / total
    assert weighted == pytest.approx(summary["avg_bits"])


@pytest.mark.slow  # trains for seconds
def test_trained_run_shows_in_runs_and_show(trained, capsys, monkeypatch):
    home, summary, _ = trained
    proc = _cli("runs", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    (row,) = _last_json(proc.stdout)
    assert {"run_id", "status", "model", "dataset", "method", "alpha", "accuracy",
            "avg_bits", "compression"} <= set(row)  # fmt: skip
    assert row["run_id"] == summary["run_id"] and row["accuracy"] == summary["accuracy"]

    monkeypatch.setenv("BSQ_HOME", str(home))
    code, out, _ = _main(capsys, "show", summary["run_id"], "--json")
    assert code == 0
    shown = _last_json(out)
    assert shown["config"]["bsq_epochs"] == 2 and shown["epochs"] == 4
    assert [layer["n_bits"] for layer in shown["layers"]] == [
        layer["n_bits"] for layer in summary["layers"]
    ]
    assert isinstance(shown["events"], list) and shown["checkpoint"]
    code, out, _ = _main(capsys, "runs", "--status", "finished", "--model", "mlp")
    assert code == 0 and summary["run_id"] in out and "finished" in out
    code, out, _ = _main(capsys, "show", summary["run_id"])
    assert code == 0 and "fc2" in out and "compression" in out


def test_train_human_output_and_uniform_method(capsys):
    # FAST without --requant-interval: a BSQ-only flag is refused with --method uniform
    uniform = ["--pretrain-epochs", "1", "--epochs", "2", "--finetune-epochs", "1",
               "--max-train", "256"]  # fmt: skip
    code, out, err = _main(capsys, "train", *uniform, "--method", "uniform", "--bits", "3")
    assert code == 0, err
    assert out.startswith("run ") and "finished run" in out and "3.00 avg bits" in out
    (row,) = json.loads(_main(capsys, "runs", "--json")[1])
    assert row["method"] == "uniform" and row["alpha"] is None and row["avg_bits"] == 3


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["train", "--alpha", "-1", *FAST], "alpha"),
        (["train", "--model", "nope"], "model"),
        (["train", "--dataset", "nope"], "dataset"),
        (["train", "--lr", "fast"], "--lr"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--act-bits", "eight"], "--act-bits"),
        (["train", "--bogus"], "unrecognized"),
        (["show", "no-such-run"], "no-such-run"),
        (["resume", "no-such-run"], "no-such-run"),
        (["export", "no-such-run", "--out", "x"], "no-such-run"),
        (["delete", "no-such-run", "--yes"], "no-such-run"),
        (["runs", "--status", "sleeping"], "status"),
        (["sweep", "--model", "mlp", "--dataset", "digits", "--alphas", "0.1", "-2"], "alpha"),
        ([], "COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, word):
    code, _, err = _main(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and word in err
    assert "Traceback" not in err and RunStore().list_runs() == []  # nothing was stored


def test_missing_dataset_exits_2_before_storing(capsys, tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    code, _, err = _main(capsys, "train", "--dataset", "imagefolder", "--data-root", str(empty))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "imagefolder" in err
    assert RunStore().list_runs() == []


# ---------------------------------------------------------------- export, delete
def test_export_via_cli_rebuilds_the_run(capsys, tmp_path):
    code, out, _ = _main(capsys, "train", *FAST, "--n-bits", "4", "--json")
    assert code == 0
    summary = _last_json(out)
    code, out, err = _main(capsys, "export", summary["run_id"], "--out", str(tmp_path / "x"),
                           "--json")  # fmt: skip
    assert code == 0, err
    result = _last_json(out)
    assert all(Path(path).is_file() for path in result["files"].values())
    assert result["quantized_bytes"] < result["float_bytes"]
    model = load_quantized(result["files"]["quantized"])
    assert [m.n_bits for m in model.modules() if hasattr(m, "integer_weight")] == [
        layer["n_bits"] for layer in summary["layers"]
    ]
    code, out, _ = _main(capsys, "export", summary["run_id"], "--out", str(tmp_path / "y"))
    assert code == 0 and "smaller" in out and "quantized.safetensors" in out


def test_export_of_an_unfinished_run_exits_2(capsys):
    run_id = RunStore().create_run(make_config().to_dict())
    code, _, err = _main(capsys, "export", run_id, "--out", "unused")
    assert code == 2 and "checkpoint" in err.lower()


def test_delete(capsys, monkeypatch):
    store = RunStore()
    run_id = store.create_run(make_config().to_dict())
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)  # not a terminal: needs --yes
        code, _, err = _main(capsys, "delete", run_id)
    assert code == 1 and "--yes" in err
    assert store.get_run(run_id)["status"] == "queued"

    class _Terminal:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert _main(capsys, "delete", run_id)[0] == 1  # answered no: kept
    assert store.get_run(run_id)["status"] == "queued"
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, _ = _main(capsys, "delete", run_id)
    assert code == 0 and run_id in out
    assert store.list_runs() == []
    code, _, err = _main(capsys, "delete", run_id, "--yes")
    assert code == 2 and "No run" in err


def test_delete_refuses_a_running_run(capsys):
    store = RunStore()
    run_id = store.create_run(make_config().to_dict(), status="running")  # owned by us: alive
    code, _, err = _main(capsys, "delete", run_id, "--yes")
    assert code == 1 and "running" in err
    assert store.get_run(run_id)["status"] == "running"
    store.set_status(run_id, "stopped")


# ---------------------------------------------------------------- stop and resume
class _StopAfter(Callback):
    """Sets the stop event at the end of the first BSQ epoch (a checkpoint is saved there)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def on_epoch_end(self, trainer, record, layers) -> None:
        if record["stage"] == "bsq":
            self.event.set()


def test_resume_finishes_a_stopped_run(capsys):
    store = RunStore()
    config = make_config(pretrain_epochs=1, bsq_epochs=3, finetune_epochs=1, requant_interval=1,
                         max_train=256)  # fmt: skip
    run_id = store.create_run(config.to_dict())
    stop = threading.Event()
    run = execute_run(store, run_id, stop_event=stop, callbacks=[_StopAfter(stop)])
    assert run["status"] == "stopped"
    assert len(store.epochs(run_id)) == 2  # pretrain 1, bsq 1

    code, out, err = _main(capsys, "resume", run_id, "--json")
    assert code == 0, err
    summary = _last_json(out)
    assert summary["run_id"] == run_id and summary["status"] == "finished"
    assert 0 < summary["accuracy"] <= 1
    epochs = store.epochs(run_id)
    assert [(e["stage"], e["epoch"]) for e in epochs] == [
        ("pretrain", 1), ("bsq", 1), ("bsq", 2), ("bsq", 3), ("finetune", 1)
    ]  # fmt: skip
    code, _, err = _main(capsys, "resume", run_id)  # finished: nothing to resume
    assert code == 2 and "already finished" in err


@pytest.mark.slow  # trains for seconds
def test_ctrl_c_stops_the_run_cleanly(tmp_path):
    """SIGINT mid-training: exit 1, the run is `stopped` (resumable), no traceback."""
    argv = [sys.executable, "-m", "bsq_engine", "train", "--max-train", "256", "--json"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            runs = RunStore(tmp_path).list_runs() if (tmp_path / "runs.db").exists() else []
            if runs and RunStore(tmp_path).epochs(runs[0]["run_id"]):
                break  # it is training: at least one epoch is stored
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "resume" in err
    summary = _last_json(out)
    assert summary["status"] == "stopped"
    assert RunStore(tmp_path).get_run(summary["run_id"])["status"] == "stopped"


# ---------------------------------------------------------------- list, sweep
def test_list_json_has_every_model_and_dataset(capsys):
    code, out, _ = _main(capsys, "list", "--json")
    assert code == 0
    listing = _last_json(out)
    assert [m["name"] for m in listing["models"]] == list_models()
    assert [d["name"] for d in listing["datasets"]] == list_datasets()
    digits = next(d for d in listing["datasets"] if d["name"] == "digits")
    assert digits["available"] is True and all(m["description"] for m in listing["models"])
    assert {"model", "dataset", "alpha"} <= set(listing["presets"][0])
    code, out, _ = _main(capsys, "list")
    assert code == 0 and "resnet20" in out and "imagefolder" in out


def test_sweep_runs_every_alpha_and_baseline(capsys):
    argv = ["--model", "mlp", "--dataset", "digits", "--alphas", "0.1", "0.3"]
    code, out, err = _main(capsys, "sweep", *argv, "--uniform-bits", "4", *FAST, "--json")
    assert code == 0, err
    result = _last_json(out)
    runs = result["runs"]
    assert len(runs) == 3 and all(r["status"] == "finished" for r in runs)
    assert [(r["method"], r["alpha"], r["uniform_bits"]) for r in runs] == [
        ("bsq", 0.1, None), ("bsq", 0.3, None), ("uniform", None, 4)
    ]  # fmt: skip
    assert err.count("finished") >= 3  # a progress line per finished run
    stored = RunStore().list_runs(sweep_id=result["sweep_id"])
    assert {r["run_id"] for r in stored} == {r["run_id"] for r in runs}

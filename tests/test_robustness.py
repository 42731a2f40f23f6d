"""Damaged files and hostile paths: a clear one-line reason, and nothing lost.

Fuzz over damaged checkpoints (truncated, garbled, wrong types, hostile sizes) and damaged
store rows: never a traceback, and a refused resume leaves the run's status and metrics
exactly as they were. ``store repair`` brings back an index deleted from under the app.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsq_engine.cli import main as cli
from bsq_engine.runs.runner import ResumeError, checkpoint_path, execute_run
from bsq_engine.runs.store import RunStore, StoreError
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.checkpoint import load_checkpoint, save_checkpoint
from bsq_engine.training.presets import make_config

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
            max_train=256, max_test=128)  # fmt: skip


class _StopAt(Callback):
    def __init__(self, event: threading.Event):
        self.event = event

    def on_epoch_end(self, trainer, record, layers):
        if (record["stage"], record["epoch"]) == ("bsq", 1):
            self.event.set()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, str]:
    """A store with one run stopped after BSQ epoch 1 (a checkpoint there, metrics stored)."""
    home = tmp_path_factory.mktemp("template")
    with RunStore(home) as store:
        run_id = store.create_run(make_config(**TINY).to_dict())
        stop = threading.Event()
        run = execute_run(store, run_id, stop_event=stop, callbacks=(_StopAt(stop),))
    assert run["status"] == "stopped" and checkpoint_path(RunStore(home), run_id).is_file()
    return home, run_id


@pytest.fixture
def copy(template, bsq_home) -> tuple[Path, str]:
    """A private copy of the template store, as ``$BSQ_HOME``."""
    home, run_id = template
    shutil.copytree(home, bsq_home)
    return bsq_home, run_id


def _state(home: Path, run_id: str) -> tuple:
    with RunStore(home) as store:
        run = store.get_run(run_id)
        return run["status"], run["error"], store.epochs(run_id), store.events(run_id)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _one_line_error(code: int, err: str) -> None:
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- damaged checkpoints
def _meta_damage(kind: str, tensors: dict, meta: dict):
    layer = next(iter(meta["layers"]))
    layers_with = lambda **kw: {layer: meta["layers"][layer] | kw}  # noqa: E731
    damage = {
        "meta-list": lambda: [1, 2],
        "no-stage": lambda: {k: v for k, v in meta.items() if k != "stage"},
        "bad-stage": lambda: meta | {"stage": "zzz"},
        "negative-epoch": lambda: meta | {"epoch": -5},
        "epoch-past-stage": lambda: meta | {"epoch": 10**6},
        "huge-n-bits": lambda: meta | {"layers": layers_with(n_bits=100_000)},
        "n-bits-text": lambda: meta | {"layers": layers_with(n_bits="8")},
        "layers-list": lambda: meta | {"layers": []},
        "no-config": lambda: {k: v for k, v in meta.items() if k != "config"},
        "accuracy-text": lambda: meta | {"float_accuracy": "x"},
    }  # fmt: skip
    if kind in damage:
        return tensors, damage[kind]()
    key = next(k for k in tensors if k.endswith("pos_planes"))
    if kind == "wrong-shape":
        return tensors | {key: torch.zeros(3, 3, 3)}, meta
    if kind == "int-dtype":
        return tensors | {key: tensors[key].to(torch.int64)}, meta
    return {k: v for k, v in tensors.items() if k != key}, meta  # "missing-tensor"


KINDS = ["meta-list", "no-stage", "bad-stage", "negative-epoch", "epoch-past-stage",
         "huge-n-bits", "n-bits-text", "layers-list", "no-config", "accuracy-text",
         "wrong-shape", "int-dtype", "missing-tensor"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_bad_checkpoint_refused_run_untouched(capsys, copy, kind):
    home, run_id = copy
    path = checkpoint_path(RunStore(home), run_id)
    tensors, meta = _meta_damage(kind, *load_checkpoint(path))
    save_checkpoint(path, tensors, meta)  # written raw: the damage is the point
    before = _state(home, run_id)
    code, _, err = _cli(capsys, "resume", run_id)
    _one_line_error(code, err)
    assert "checkpoint" in err.lower()
    assert _state(home, run_id) == before


@pytest.mark.slow
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.floats(0, 0.999), garble=st.binary(min_size=1, max_size=16), at=st.integers(0, 200))
def test_truncated_or_garbled_checkpoint_never_tracebacks(
    capsys, monkeypatch, template, tmp_path, cut, garble, at
):
    home = tmp_path / f"h{os.urandom(4).hex()}"
    shutil.copytree(template[0], home)
    run_id = template[1]
    path = home / "runs" / run_id / "checkpoint.safetensors"
    data = bytearray(path.read_bytes())
    data[at : at + len(garble)] = garble  # inside the JSON header: structure, not weights
    path.write_bytes(bytes(data[: max(1, int(len(data) * cut))]) if cut > 0.5 else bytes(data))
    before = _state(home, run_id)
    monkeypatch.setenv("BSQ_HOME", str(home))
    code, _, err = _cli(capsys, "resume", run_id, "--json")
    assert code in (0, 1, 2)
    if code == 2:
        _one_line_error(code, err)
        assert _state(home, run_id) == before


@pytest.mark.slow
def test_app_resume_of_bad_checkpoint_raises_and_changes_nothing(copy, manager):
    home, run_id = copy
    path = checkpoint_path(manager.store, run_id)
    save_checkpoint(path, *_meta_damage("huge-n-bits", *load_checkpoint(path)))
    before = _state(home, run_id)
    with pytest.raises(ResumeError, match="n_bits 100000"):
        manager.resume(run_id)
    assert _state(home, run_id) == before


@pytest.mark.slow
def test_deleted_run_folder_keeps_metrics(capsys, copy):
    home, run_id = copy
    before = _state(home, run_id)
    shutil.rmtree(home / "runs" / run_id)
    code, _, err = _cli(capsys, "resume", run_id)
    _one_line_error(code, err)
    assert "folder" in err and _state(home, run_id) == before


# ---------------------------------------------------------------- damaged store rows
BAD_ROWS = {
    "config-garbled": ("config_json", "{"),
    "config-list": ("config_json", "[]"),
    "config-text": ("config_json", '"text"'),
    "config-no-model": ("config_json", '{"dataset": "digits", "method": "bsq"}'),
    "summary-garbled": ("summary_json", "{oops"),
    "summary-list": ("summary_json", "[1]"),
    "status-unknown": ("status", "zombie"),
}


def _raw(home: Path, sql: str, *args) -> None:
    with closing(sqlite3.connect(home / "runs.db")) as conn, conn:
        conn.execute(sql, args)


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_damaged_row_is_skipped_with_a_warning_and_repaired(capsys, bsq_home, kind):
    store = RunStore()
    good = store.create_run(make_config().to_dict())
    bad = store.create_run(make_config(alpha=0.1).to_dict(), status="stopped")
    column, value = BAD_ROWS[kind]
    _raw(bsq_home, f"UPDATE runs SET {column} = ? WHERE run_id = ?", value, bad)
    code, out, err = _cli(capsys, "runs", "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == [good]
    assert bad in err and "store check" in err and err.startswith("warning: ")
    code, _, err = _cli(capsys, "show", bad)
    _one_line_error(code, err)
    assert "store repair" in err
    code, out, _ = _cli(capsys, "store", "check")
    assert code == 1 and bad in out
    code, out, _ = _cli(capsys, "store", "repair", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"], report
    assert any(bad in a and "quarantine" in a for a in report["actions"])
    assert list((bsq_home / "backups").iterdir()), "a copy is kept before any repair"
    rows = sqlite3.connect(bsq_home / "runs.db").execute("SELECT run_id FROM quarantine")
    assert [r[0] for r in rows] == [bad]
    assert _cli(capsys, "runs")[2] == ""  # no warning left


@pytest.mark.slow
def test_repair_brings_back_an_index_deleted_from_under_the_app(capsys, copy):
    home, run_id = copy
    for suffix in ("", "-wal", "-shm"):
        (home / f"runs.db{suffix}").unlink(missing_ok=True)
    code, out, _ = _cli(capsys, "runs", "--json")
    assert code == 0 and json.loads(out) == []  # a fresh index: the folder is not in it
    code, out, _ = _cli(capsys, "store", "check")
    assert code == 1 and f"folder {run_id} is not in the index (recoverable)" in out
    code, out, _ = _cli(capsys, "store", "repair")
    assert code == 0 and f"run {run_id}: recovered" in out
    assert RunStore(home).get_run(run_id)["status"] == "interrupted"
    code, out, err = _cli(capsys, "resume", run_id, "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "finished"


@pytest.mark.slow
def test_truncated_index_is_repaired_keeping_a_copy(capsys, copy):
    home, run_id = copy
    db = home / "runs.db"
    damaged = db.read_bytes()[: db.stat().st_size // 3]
    db.write_bytes(damaged)
    code, _, err = _cli(capsys, "runs")
    _one_line_error(code, err)
    assert "store repair" in err and db.read_bytes() == damaged  # refused, untouched
    code, out, _ = _cli(capsys, "store", "repair", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"], report
    backups = sorted((home / "backups").iterdir())
    assert backups[0].read_bytes() == damaged
    assert RunStore(home).get_run(run_id)["status"] in ("interrupted", "stopped")


def test_zero_byte_index_is_refused_not_replaced(bsq_home):
    store = RunStore()
    store.create_run(make_config().to_dict())
    store.run_dir(store.list_runs()[0]["run_id"])
    store.close()
    for suffix in ("", "-wal", "-shm"):
        path = bsq_home / f"runs.db{suffix}"
        if path.exists():
            path.write_bytes(b"")
    with pytest.raises(StoreError, match="store repair"):
        RunStore()
    assert (bsq_home / "runs.db").stat().st_size == 0  # left as it was


def test_orphaned_queued_run_becomes_interrupted(bsq_home):
    store = RunStore()
    run_id = store.create_run(make_config().to_dict())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _raw(bsq_home, "UPDATE runs SET pid = ? WHERE run_id = ?", dead.pid, run_id)
    assert RunStore().get_run(run_id)["status"] == "interrupted"
    legacy = store.create_run(make_config().to_dict())
    _raw(bsq_home, "UPDATE runs SET pid = NULL WHERE run_id = ?", legacy)
    assert RunStore().get_run(legacy)["status"] == "interrupted"
    assert RunStore().get_run(store.create_run(make_config().to_dict()))["status"] == "queued"


def test_stale_tmp_files_removed_on_open_except_while_running(bsq_home):
    store = RunStore()
    stopped = store.create_run(make_config().to_dict(), status="stopped")
    running = store.create_run(make_config().to_dict(), status="running")
    stale = store.run_dir(stopped) / ".checkpoint.safetensors.abc.tmp"
    live = store.run_dir(running) / ".checkpoint.safetensors.def.tmp"
    stale.write_bytes(b"")
    live.write_bytes(b"")
    RunStore()
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------- export never destroys
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("finished")
    with RunStore(home) as store:
        run_id = store.create_run(make_config(**TINY).to_dict())
        assert execute_run(store, run_id)["status"] == "finished"
    return home, run_id


@pytest.mark.slow
def test_export_refuses_what_it_would_destroy(capsys, finished, tmp_path, monkeypatch):
    monkeypatch.setenv("BSQ_HOME", str(finished[0]))
    run_id = finished[1]
    afile = tmp_path / "afile"
    afile.write_text("mine")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "scheme.json").write_text("the user's own")
    for out in ("", "  ", str(afile), str(busy), str(afile / "sub"), "/proc/bsq-export"):
        code, _, err = _cli(capsys, "export", run_id, "--out", out)
        _one_line_error(code, err)
        assert "--out" in err or "cannot write" in err
    assert afile.read_text() == "mine" and (busy / "scheme.json").read_text() == "the user's own"
    assert not list(tmp_path.glob(".*.export"))  # no staging folder left behind
    code, _, err = _cli(capsys, "export", run_id, "--out", str(busy), "--force")
    assert code == 0, err
    assert json.loads((busy / "scheme.json").read_text())["run_id"] == run_id


@pytest.mark.slow
def test_output_into_a_closed_pipe_is_quiet(finished):
    env = {**os.environ, "BSQ_HOME": str(finished[0]), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsq_engine", "show", finished[1]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    proc.stdout.close()  # the reader (e.g. `head`) is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "Broken" not in err, err


def test_runs_stored_before_the_bounds_are_healthy(capsys, bsq_home):
    old = make_config().to_dict() | {"alpha": 50.0}  # allowed when it was stored
    run_id = RunStore().create_run(old, status="stopped")
    code, out, _ = _cli(capsys, "store", "check")
    assert code == 0 and "healthy" in out
    code, out, _ = _cli(capsys, "show", run_id, "--json")
    assert code == 0 and json.loads(out)["alpha"] == 50.0

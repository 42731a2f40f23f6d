"""RunStore against a real SQLite file: life cycle, upserts, resume, orphans, concurrency."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing

import pandas as pd
import pytest

from bsq_engine.runs.queries import downsample
from bsq_engine.runs.schema import MIGRATIONS, SCHEMA_VERSION
from bsq_engine.runs.status import TRANSITIONS
from bsq_engine.runs.store import RunNotFound, RunStatus, RunStore, StoreError, default_home

CONFIG = {"model": "lenet5", "dataset": "mnist", "method": "bsq", "alpha": 0.005, "seed": 0}
STAGES = ["pretrain", "bsq", "finetune"]


def epoch(stage: str, e: int, g: int, acc: float = 0.5, **extra) -> dict:
    bits = None if stage == "pretrain" else 8.0 - 0.1 * min(g, 50)
    return {"stage": stage, "epoch": e, "global_epoch": g, "train_loss": 1.0 / g,
            "test_acc": acc, "avg_bits": bits, "compression": bits and 32 / bits, "seconds": 2.0,
            **extra}  # fmt: skip


def layer(name: str, n_bits: int) -> dict:
    return {"name": name, "n_bits": n_bits, "n_weights": 100, "density": [0.5] * n_bits,
            "group_norm": [1.0] * n_bits, "msb_offset": 8 - n_bits, "kind": "conv",
            "shape": [4, 1, 3, 3]}  # fmt: skip


def event(stage: str, e: int, name: str, old: int, new: int) -> dict:
    return {"layer": name, "old_bits": old, "new_bits": new, "msb_dropped": old - new,
            "lsb_dropped": 0, "grown": False, "stage": stage, "epoch": e,
            "message": f"{name}: {old} -> {new} bits at epoch {e}"}  # fmt: skip


def raw_sql(path, sql: str, *args) -> list[tuple]:
    """Touch the file behind the store's back, as another program or an old release would."""
    with closing(sqlite3.connect(path)) as raw, raw:
        return raw.execute(sql, args).fetchall()


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path)
    yield s
    s.close()


def running_run(store: RunStore) -> str:
    run_id = store.create_run(CONFIG)
    store.set_status(run_id, "running")
    return run_id


def test_home_layout_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BSQ_HOME", str(tmp_path / "home"))
    assert default_home() == tmp_path / "home"
    with RunStore() as s:
        assert (tmp_path / "home" / "runs.db").is_file()
        run_id = s.create_run(CONFIG)
        assert s.run_dir(run_id) == tmp_path / "home" / "runs" / run_id
        assert s.run_dir(run_id).is_dir()
        with pytest.raises(ValueError, match="Invalid run id"):
            s.run_dir("../escape")


def test_create_get_list(store):
    a = store.create_run(CONFIG, name="first")
    b = store.create_run({**CONFIG, "model": "resnet20"}, run_id="20990101-000000-beef")
    assert len(a) == len("20261128-104501-a3f9") and a[8] == "-" and a[15] == "-"
    run = store.get_run(a)
    assert run["name"] == "first" and run["status"] == "queued"
    assert run["config"] == CONFIG and run["summary"] is None and run["alpha"] == 0.005
    assert (run["accuracy"], run["avg_bits"], run["seconds"]) == (None, None, None)
    assert [r["run_id"] for r in store.list_runs()] == [b, a]  # newest first
    assert [r["run_id"] for r in store.list_runs(model="resnet20")] == [b]
    assert [r["run_id"] for r in store.list_runs(status="queued", dataset="mnist")] == [b, a]
    assert store.list_runs(status=["running", "failed"]) == []
    with pytest.raises(ValueError, match="already exists"):
        store.create_run(CONFIG, run_id=b)
    with pytest.raises(ValueError, match="missing alpha"):
        store.create_run({"model": "m", "dataset": "d", "method": "bsq"})
    with pytest.raises(ValueError, match="Unknown run status 'runing'"):
        store.list_runs(status="runing")


def test_run_not_found_message(store):
    with pytest.raises(RunNotFound) as info:
        store.get_run("nope")
    assert str(info.value) == (
        f"No run 'nope' in {store.home}. List runs with `python -m bsq_engine runs`."
    )
    assert isinstance(info.value, KeyError)
    with pytest.raises(RunNotFound):
        store.add_epochs("nope", [epoch("pretrain", 1, 1)])


@pytest.mark.parametrize(
    "old,new", [(o.value, n.value) for o, targets in TRANSITIONS.items() for n in targets]
)
def test_every_legal_transition(store, old, new):
    run_id = store.create_run(CONFIG)
    path = {"queued": [], "running": ["running"], "finished": ["running", "finished"],
            "failed": ["failed"], "stopped": ["stopped"],
            "interrupted": ["running", "interrupted"]}[old]  # fmt: skip
    for status in path:
        store.set_status(run_id, status)
    assert store.get_run(run_id)["status"] == old
    store.set_status(run_id, new, error="boom" if new == "failed" else None)
    run = store.get_run(run_id)
    assert run["status"] == new
    if new == "running":
        assert run["pid"] == os.getpid() and run["started_at"] and run["finished_at"] is None
    if new in ("finished", "failed", "stopped", "interrupted"):
        assert run["finished_at"] >= run["created_at"]
    assert run["error"] == ("boom" if new == "failed" else None)


def test_illegal_transition(store):
    run_id = running_run(store)
    store.finish(run_id, {"accuracy": 0.9})
    with pytest.raises(ValueError, match="cannot go from finished to running"):
        store.set_status(run_id, "running")
    queued = store.create_run(CONFIG)
    with pytest.raises(ValueError, match="from queued it can go to: failed, running, stopped"):
        store.set_status(queued, RunStatus.FINISHED)
    assert store.get_run(queued)["status"] == "queued"


def test_finish_summary_and_convenience_keys(store):
    run_id = running_run(store)
    store.add_epochs(run_id, [epoch("pretrain", 1, 1, acc=0.97), epoch("bsq", 1, 2, acc=0.9)])
    live = store.get_run(run_id)  # no summary yet: values come from the epochs so far
    assert live["accuracy"] == 0.9 and live["float_accuracy"] == 0.97
    assert live["avg_bits"] == pytest.approx(7.8) and live["seconds"] == 4.0
    summary = {"accuracy": 0.95, "float_accuracy": 0.97, "avg_bits": 3.5,
               "compression": 32 / 3.5, "seconds": 12.5, "layers": [{"name": "fc"}]}  # fmt: skip
    store.finish(run_id, summary)
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["summary"] == summary
    assert (run["accuracy"], run["avg_bits"], run["seconds"]) == (0.95, 3.5, 12.5)
    assert run["compression"] == pytest.approx(32 / 3.5)


def test_upsert_never_duplicates(store):
    run_id = running_run(store)
    store.add_epochs(run_id, [epoch("bsq", 1, 1, acc=0.1, unknown_key="ignored")])
    store.add_epochs(run_id, [epoch("bsq", 1, 1, acc=0.2)])
    store.add_layers(run_id, "bsq", 1, 1, [layer("conv1", 8), layer("fc", 6)])
    store.add_layers(run_id, "bsq", 1, 1, [layer("conv1", 7), layer("fc", 6)])
    store.add_events(run_id, [event("bsq", 1, "conv1", 8, 7)] * 2)
    rows = store.epochs(run_id)
    assert len(rows) == 1 and rows[0]["test_acc"] == 0.2 and "unknown_key" not in rows[0]
    assert len(store.events(run_id)) == 1
    snap = store.layer_snapshots(run_id)
    assert [(r["name"], r["n_bits"]) for r in snap] == [("conv1", 7), ("fc", 6)]
    assert snap[0]["density"] == [0.5] * 7 and snap[0]["group_norm"] == [1.0] * 7
    with pytest.raises(ValueError, match="needs epoch"):
        store.add_epochs(run_id, [{"stage": "bsq"}])


def test_layers_and_events_order(store):
    run_id = running_run(store)
    for g, (stage, e) in enumerate([("bsq", 1), ("bsq", 2), ("finetune", 1)], start=1):
        store.add_layers(run_id, stage, e, g, [layer("conv1", 8 - g), layer("fc", 8)])
    store.add_events(run_id, [event("finetune", 1, "conv1", 6, 5), event("bsq", 2, "conv1", 7, 6)])
    assert [r["global_epoch"] for r in store.layer_snapshots(run_id)] == [1, 1, 2, 2, 3, 3]
    latest = store.latest_layers(run_id)
    assert [(r["name"], r["n_bits"], r["layer_index"]) for r in latest] == [
        ("conv1", 5, 0),
        ("fc", 8, 1),
    ]
    assert [e["stage"] for e in store.events(run_id)] == ["bsq", "finetune"]
    assert store.events(run_id)[0]["message"] == "conv1: 7 -> 6 bits at epoch 2"


def test_truncate_after(store):
    run_id = running_run(store)
    positions = [("pretrain", 1), ("pretrain", 2), ("bsq", 1), ("bsq", 2), ("bsq", 3),
                 ("finetune", 1)]  # fmt: skip
    for g, (stage, e) in enumerate(positions, start=1):
        store.add_epochs(run_id, [epoch(stage, e, g)])
        store.add_layers(run_id, stage, e, g, [layer("conv1", 4)])
        store.add_events(run_id, [event(stage, e, "conv1", 5, 4)])
    store.truncate_after(run_id, STAGES, "bsq", 2)
    kept = [(r["stage"], r["epoch"]) for r in store.epochs(run_id)]
    assert kept == positions[:4]
    assert [(r["stage"], r["epoch"]) for r in store.layer_snapshots(run_id)] == positions[:4]
    assert [(r["stage"], r["epoch"]) for r in store.events(run_id)] == positions[:4]
    store.truncate_after(run_id, STAGES, "finetune", 0)  # nothing after: a no-op
    assert len(store.epochs(run_id)) == 4
    with pytest.raises(ValueError, match="not in stage_order"):
        store.truncate_after(run_id, STAGES, "warmup", 1)


def test_downsample_keeps_ends_for_rows_and_frames():
    rows = [{"step": i} for i in range(101)]
    thin = downsample(rows, 11)
    assert len(thin) == 11 and thin[0] == rows[0] and thin[-1] == rows[-1]
    assert [r["step"] for r in thin] == list(range(0, 101, 10))
    assert downsample(rows, 1000) is rows and downsample(rows, 1) == rows[-1:]
    frame = pd.DataFrame({"v": range(1000)})
    out = downsample(frame, 50)
    assert len(out) == 50 and out["v"].iloc[0] == 0 and out["v"].iloc[-1] == 999
    with pytest.raises(ValueError, match="max_points"):
        downsample(rows, 0)


def test_v1_store_migrates_without_steps_and_with_null_uniform_alpha(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    conn = sqlite3.connect(home / "runs.db", isolation_level=None)
    MIGRATIONS[0](conn)  # exactly what release 1 created
    conn.execute("PRAGMA user_version = 1")
    for rid, method in (("b", "bsq"), ("u", "uniform")):
        conn.execute(
            "INSERT INTO runs (run_id, status, method, model, dataset, alpha, config_json,"
            " created_at) VALUES (?, 'finished', ?, 'mlp', 'digits', 0.2, ?, 1.0)",
            (rid, method, json.dumps({**CONFIG, "method": method, "alpha": 0.2})),
        )
    conn.execute("INSERT INTO steps (run_id, stage, step) VALUES ('b', 'bsq', 5)")
    conn.close()
    store = RunStore(home)
    assert store.get_run("b")["alpha"] == 0.2 and store.get_run("u")["alpha"] is None
    tables = {r[0] for r in sqlite3.connect(home / "runs.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}  # fmt: skip
    assert "steps" not in tables and {"runs", "epochs", "layers", "events"} <= tables
    uniform = store.create_run({**CONFIG, "method": "uniform"})
    assert store.get_run(uniform)["alpha"] is None


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphans_marked_interrupted_on_open(tmp_path, store):
    dead = running_run(store)
    mine = running_run(store)
    raw_sql(store.db_path, "UPDATE runs SET pid = ? WHERE run_id = ?", dead_pid(), dead)
    RunStore(tmp_path).close()  # the next reader to open the store fixes the statuses
    run = store.get_run(dead)
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    assert "ended without finishing" in run["error"]
    assert store.get_run(mine)["status"] == "running"  # owned by this very process
    store.set_status(dead, "running")  # resume is legal
    assert store.get_run(dead)["status"] == "running"


def test_orphan_by_stale_heartbeat_and_reused_pid(tmp_path, store):
    other_host, reused = running_run(store), store.create_run(CONFIG)
    old = time.time() - 1000
    host = store.get_run(other_host)["hostname"]
    update = (
        "UPDATE runs SET status = 'running', pid = ?, hostname = ?, heartbeat = ? WHERE run_id = ?"
    )
    raw_sql(store.db_path, update, os.getpid(), "elsewhere", old, other_host)
    # `running` with our pid, but never started by this process: a dead one's inherited pid
    raw_sql(store.db_path, update, os.getpid(), host, time.time(), reused)
    fresh = running_run(store)
    raw_sql(store.db_path, "UPDATE runs SET hostname = 'elsewhere' WHERE run_id = ?", fresh)
    assert sorted(store.mark_orphans()) == sorted([other_host, reused])
    assert "no heartbeat" in store.get_run(other_host)["error"]
    assert store.get_run(fresh)["status"] == "running"  # other host, but heartbeat is recent


def test_concurrent_readers_while_writing(tmp_path, store):
    run_id = running_run(store)
    seen: dict[int, list[int]] = {0: [], 1: []}
    errors: list[BaseException] = []
    done, ready = threading.Event(), threading.Barrier(3, timeout=30)

    def write():
        try:
            ready.wait()
            for g in range(1, 201):
                store.add_epochs(run_id, [epoch("bsq", g, g)])
                time.sleep(0.001)  # a (very) short training epoch
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read(slot: int):
        reader = RunStore(tmp_path)  # separate store object, like a page in another session
        try:
            ready.wait()
            while True:
                finished = done.is_set()  # checked first, so the last read sees all 200
                seen[slot].append(len(reader.epochs(run_id)))
                reader.get_run(run_id)
                if finished:
                    break
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader.close()

    threads = [threading.Thread(target=write)] + [
        threading.Thread(target=read, args=(i,)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for counts in seen.values():
        assert counts == sorted(counts) and counts[-1] == 200
        assert len(set(counts)) > 2  # the readers really ran while the writer wrote
    assert len(store.epochs(run_id)) == 200


@pytest.mark.parametrize("other_table", [False, True])
def test_migrates_version_zero_db(tmp_path, other_table):
    db = tmp_path / "runs.db"
    db.touch()  # an empty file is a valid SQLite database at user_version 0
    if other_table:
        raw_sql(db, "CREATE TABLE notes (x)")
    with RunStore(tmp_path) as s:
        assert s.get_run(s.create_run(CONFIG))["status"] == "queued"
    assert raw_sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw_sql(db, "PRAGMA journal_mode") == [("wal",)]
    tables = {r[0] for r in raw_sql(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "epochs", "layers", "events", "sweeps"} <= tables and "steps" not in tables
    with RunStore(tmp_path) as s:  # reopening an up-to-date store migrates nothing
        assert len(s.list_runs()) == 1


def test_too_new_schema_is_refused(tmp_path):
    raw_sql(tmp_path / "runs.db", f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this BSQ Explorer understands"):
        RunStore(tmp_path)


@pytest.mark.parametrize("content", [b"this is not a database at all" * 200, b"\x00" * 4096])
def test_corrupt_file_is_refused_and_kept(tmp_path, content):
    (tmp_path / "runs.db").write_bytes(content)
    with pytest.raises(StoreError, match="store repair` keeps a copy"):
        RunStore(tmp_path)
    assert (tmp_path / "runs.db").read_bytes() == content  # user data never touched


def test_foreign_database_is_refused(tmp_path):
    raw_sql(tmp_path / "runs.db", "CREATE TABLE runs (id INTEGER)")
    with pytest.raises(StoreError, match="not a usable BSQ Explorer run store"):
        RunStore(tmp_path)


def test_delete_removes_rows_and_folder(store):
    run_id = running_run(store)
    store.add_epochs(run_id, [epoch("bsq", 1, 1)])
    (store.run_dir(run_id) / "last.safetensors").write_bytes(b"x")
    keep = store.create_run(CONFIG)
    store.delete_run(run_id)
    assert not (store.home / "runs" / run_id).exists()
    assert store.epochs(run_id) == [] and [r["run_id"] for r in store.list_runs()] == [keep]
    with pytest.raises(RunNotFound):
        store.delete_run(run_id)


def test_sweeps(store):
    sweep_id = store.create_sweep("alpha sweep", "lenet5", "mnist", {"alphas": [0.001, 0.01]})
    runs = [store.create_run({**CONFIG, "alpha": a}, sweep_id=sweep_id) for a in (0.001, 0.01)]
    store.create_run(CONFIG)
    sweep = store.get_sweep(sweep_id)
    assert sweep["config"] == {"alphas": [0.001, 0.01]} and sweep["model"] == "lenet5"
    assert [s["sweep_id"] for s in store.list_sweeps()] == [sweep_id]
    assert sorted(r["run_id"] for r in store.list_runs(sweep_id=sweep_id)) == sorted(runs)
    with pytest.raises(KeyError, match="No sweep"):
        store.get_sweep("missing")


def test_connection_per_thread(store):
    run_id = store.create_run(CONFIG)
    result = []
    t = threading.Thread(target=lambda: (result.append(store.get_run(run_id)), store.close()))
    t.start()
    t.join()
    assert result[0]["run_id"] == run_id
    store.close()
    assert store.get_run(run_id)["run_id"] == run_id  # reopens lazily after close


def test_readers_notice_orphans_after_open(store):
    run_id = running_run(store)
    raw_sql(store.db_path, "UPDATE runs SET pid = ? WHERE run_id = ?", dead_pid(), run_id)
    assert store.get_run(run_id)["status"] == "interrupted"  # same store object, no reopen
    other = running_run(store)
    raw_sql(store.db_path, "UPDATE runs SET pid = ? WHERE run_id = ?", dead_pid(), other)
    assert store.list_runs(status="running") == []


def test_ownership_survives_another_spelling_of_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RunStore("home") as relative:
        run_id = running_run(relative)
    with RunStore(tmp_path / "home" / ".." / "home") as absolute:
        assert absolute.get_run(run_id)["status"] == "running"  # still ours, not an orphan

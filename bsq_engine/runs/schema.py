"""Schema of the run store: tables, statuses and the migration chain.

The on-disk version lives in ``PRAGMA user_version``. ``MIGRATIONS[v]`` upgrades a store from
version ``v`` to ``v + 1``, so a store written by any older release walks the chain up to
``SCHEMA_VERSION``; a store newer than this code is refused instead of being misread.
To change the schema: append a function to ``MIGRATIONS`` (never edit an old one).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_MS = 30_000


class StoreError(RuntimeError):
    """The store file cannot be used as it is; the message says what to do."""


class _NotFound(KeyError):
    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class RunNotFound(_NotFound):
    """No run with that id (a KeyError, so ``dict``-style callers can catch it)."""


class SweepNotFound(_NotFound):
    """No sweep with that id."""


_V1 = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, method TEXT, model TEXT,
    dataset TEXT, alpha REAL, config_json TEXT NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, error TEXT, summary_json TEXT, pid INTEGER,
    hostname TEXT, heartbeat REAL, sweep_id TEXT
);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_sweep ON runs (sweep_id);
CREATE TABLE epochs (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, epoch INTEGER NOT NULL, global_epoch INTEGER,
    train_loss REAL, train_acc REAL, test_loss REAL, test_acc REAL, reg REAL, alpha_reg REAL,
    lr REAL, avg_bits REAL, compression REAL, seconds REAL, step_ms REAL,
    PRIMARY KEY (run_id, stage, epoch)
);
CREATE TABLE steps (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER,
    loss REAL, reg REAL, lr REAL, batch_acc REAL, step_ms REAL,
    PRIMARY KEY (run_id, stage, step)
);
CREATE TABLE layers (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, epoch INTEGER NOT NULL, global_epoch INTEGER,
    layer_index INTEGER, name TEXT NOT NULL, n_bits INTEGER, n_weights INTEGER,
    density_json TEXT, group_norm_json TEXT, msb_offset INTEGER,
    PRIMARY KEY (run_id, stage, epoch, name)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT NOT NULL, epoch INTEGER NOT NULL,
    layer TEXT NOT NULL, old_bits INTEGER, new_bits INTEGER, msb_dropped INTEGER,
    lsb_dropped INTEGER, grown INTEGER, message TEXT,
    UNIQUE (run_id, stage, epoch, layer)
);
CREATE TABLE sweeps (
    sweep_id TEXT PRIMARY KEY, name TEXT, model TEXT, dataset TEXT, created_at REAL NOT NULL,
    config_json TEXT NOT NULL
)
"""


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """Create every table. Plain CREATE (no IF NOT EXISTS) so a foreign database is refused."""
    # executescript() would COMMIT the surrounding migration transaction, so run one by one.
    for statement in _V1.split(";"):
        conn.execute(statement)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Who may stop/resume/delete a run (``owner``: a session's name, "cli", NULL for runs
    made before owners existed) and a stop asked for by another process (``stop_requested``:
    when, NULL when none); the training process polls it (see ``runner``)."""
    conn.execute("ALTER TABLE runs ADD COLUMN owner TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN stop_requested REAL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v0_to_v1, _v1_to_v2]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(db_path: Path, *, wal: bool = True) -> sqlite3.Connection:
    """Open one connection in autocommit mode; transactions are explicit (BEGIN IMMEDIATE).

    ``wal=False`` is for the first connection, which validates and migrates the file before
    anything is written to it (a foreign or corrupt file is left exactly as it was).
    """
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if wal:
            enable_wal(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _unreadable(db_path, exc) from exc
    return conn


def enable_wal(conn: sqlite3.Connection) -> None:
    """WAL: readers (pages, CLI) never block the training thread's writes, nor it them."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL, much faster


def migrate(conn: sqlite3.Connection, db_path: Path) -> None:
    """Bring the store up to SCHEMA_VERSION in one transaction, or refuse it clearly."""
    if _version(conn, db_path) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn, db_path)  # re-read: another process may have migrated it
        for step in MIGRATIONS[version:]:
            step(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.execute("ROLLBACK")
        raise _unreadable(db_path, exc) from exc
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _version(conn: sqlite3.Connection, db_path: Path) -> int:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise _unreadable(db_path, exc) from exc
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path} has schema version {version}, newer than this BSQ Explorer understands "
            f"({SCHEMA_VERSION}). Upgrade BSQ Explorer, or set BSQ_HOME to another folder."
        )
    return version


def _unreadable(db_path: Path, exc: Exception) -> StoreError:
    return StoreError(
        f"{db_path} is not a usable BSQ Explorer run store ({exc}). Nothing was changed: move "
        f"the file away (e.g. rename it to runs.db.bad) and a fresh store will be created, or "
        f"set BSQ_HOME to another folder."
    )


# -- row codecs: records in, plain dicts out ----------------------------------------------

EPOCH_COLS = (
    "stage", "epoch", "global_epoch", "train_loss", "train_acc", "test_loss", "test_acc", "reg",
    "alpha_reg", "lr", "avg_bits", "compression", "seconds", "step_ms",
)  # fmt: skip
STEP_COLS = ("stage", "step", "epoch", "loss", "reg", "lr", "batch_acc", "step_ms")
LAYER_COLS = (
    "stage", "epoch", "global_epoch", "layer_index", "name", "n_bits", "n_weights",
    "density_json", "group_norm_json", "msb_offset",
)  # fmt: skip
EVENT_COLS = (
    "stage", "epoch", "layer", "old_bits", "new_bits", "msb_dropped", "lsb_dropped", "grown",
    "message",
)  # fmt: skip
_COLS = {"epochs": EPOCH_COLS, "steps": STEP_COLS, "layers": LAYER_COLS, "events": EVENT_COLS}
_KEYS = {"epochs": ("stage", "epoch"), "steps": ("stage", "step"), "layers": ("name",),
         "events": ("stage", "epoch", "layer")}  # fmt: skip
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Mirrors config.Stage without importing it (the store stays stdlib-only); unknown sorts last.
_STAGE_RANK = {"pretrain": 0, "bsq": 1, "qat": 1, "finetune": 2}  # qat: the uniform twin of bsq
_SUMMARY_KEYS = ("accuracy", "float_accuracy", "avg_bits", "compression", "seconds")


def stage_rank(stage: str) -> int:
    return _STAGE_RANK.get(stage, len(_STAGE_RANK))


def new_id() -> str:
    """Sortable by creation time, unique enough: ``20261128-104501-a3f9``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    """Tensors / numpy scalars and arrays, enums, paths: whatever a config may carry."""
    for attr in ("tolist", "item"):
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    return str(obj)


def _scalar(value: Any) -> Any:
    """sqlite3 cannot bind numpy/torch scalars; unwrap them."""
    return value.item() if hasattr(value, "item") else value


def upsert_sql(table: str) -> str:
    """Upsert: a resumed run re-writing a row replaces it instead of duplicating it."""
    cols = ("run_id", *_COLS[table])
    return (
        f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    )


def table_rows(run_id: str, records: list[dict], table: str) -> list[tuple]:
    """Bind tuples in column order; extra keys are ignored, missing key columns refused."""
    for record in records:
        absent = [k for k in _KEYS[table] if record.get(k) is None]
        if absent:
            raise ValueError(f"A {table} record needs {', '.join(absent)}; got {sorted(record)}.")
    return [(run_id, *(_scalar(r.get(c)) for c in _COLS[table])) for r in records]


def default_name(config: dict) -> str:
    """``lenet5-mnist-bsq-a0.005``; refuses a config without the columns the runs table keeps."""
    missing = [k for k in ("model", "dataset", "method", "alpha") if k not in config]
    if missing:
        raise ValueError(f"Run config is missing {', '.join(missing)}; pass RunConfig.to_dict().")
    return f"{config['model']}-{config['dataset']}-{config['method']}-a{float(config['alpha']):g}"


def check_id(run_id: str) -> None:
    """Ids become folder names, so nothing that could escape ``runs/``."""
    if not _SAFE_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"Invalid run id {run_id!r}; use letters, digits, '.', '_' or '-'.")


def decode_sweep(row: dict) -> dict:
    row["config"] = json.loads(row.pop("config_json"))
    return row


def decode_layer(row: dict) -> dict:
    row["density"] = json.loads(row.pop("density_json") or "null")
    row["group_norm"] = json.loads(row.pop("group_norm_json") or "null")
    return row


def downsample(rows: list, max_points: int) -> list:
    """Evenly spaced picks that always keep the first and the last row."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}.")
    n = len(rows)
    if n <= max_points:
        return rows
    if max_points == 1:
        return rows[-1:]
    return [rows[round(i * (n - 1) / (max_points - 1))] for i in range(max_points)]


def run_dict(conn: sqlite3.Connection, row: sqlite3.Row) -> dict:
    """A runs row as a plain dict, plus the convenience keys of the summary (or live)."""
    run = dict(row)
    run["config"] = json.loads(run.pop("config_json"))
    summary = run.pop("summary_json")
    run["summary"] = None if summary is None else json.loads(summary)
    source = run["summary"] if run["summary"] is not None else _live(conn, run["run_id"])
    run.update({k: source.get(k) for k in _SUMMARY_KEYS})
    return run


def _live(conn: sqlite3.Connection, run_id: str) -> dict:
    """Convenience keys of a run without summary, from its epoch rows so far."""
    last = conn.execute(
        "SELECT test_acc, avg_bits, compression FROM epochs WHERE run_id = ?"
        " ORDER BY global_epoch DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if last is None:
        return {}
    pre = conn.execute(
        "SELECT test_acc FROM epochs WHERE run_id = ? AND stage = 'pretrain'"
        " ORDER BY epoch DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    total = conn.execute("SELECT SUM(seconds) FROM epochs WHERE run_id = ?", (run_id,)).fetchone()
    return {"accuracy": last["test_acc"], "float_accuracy": pre and pre["test_acc"],
            "avg_bits": last["avg_bits"], "compression": last["compression"],
            "seconds": total[0]}  # fmt: skip


# -- orphans -------------------------------------------------------------------------------


def orphan_reason(row: sqlite3.Row, *, owned: bool, now: float, stale_after: float) -> str | None:
    """Why a `running` row's owner is presumed dead, or None while it may be alive.

    Same host: the pid decides (a run this process owns is never an orphan; our own pid on a
    run we do not own was inherited from a dead process). Another host, or a live pid that
    may have been reused by an unrelated process: a heartbeat older than ``stale_after``.
    """
    pid, host = row["pid"], row["hostname"]
    where = f"process {pid} on {host}"
    if host == socket.gethostname() and pid is not None:
        if pid == os.getpid():
            return None if owned else f"{where} ended (this new process reuses its pid)"
        if not _pid_alive(pid):
            return f"{where} ended without finishing the run"
    silent = now - (row["heartbeat"] or row["started_at"] or row["created_at"])
    if silent > stale_after:
        return f"{where} sent no heartbeat for {silent:.0f} s"
    return None


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True  # undecidable here; the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True

"""Schema of the run store: its tables (DDL) and the migration chain.

The on-disk version lives in ``PRAGMA user_version``. ``MIGRATIONS[v]`` upgrades a store from
version ``v`` to ``v + 1``, so a store written by any older release walks the chain up to
``SCHEMA_VERSION``; a store newer than this code is refused instead of being misread.
To change the schema: append a function to ``MIGRATIONS`` (never edit an old one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from bsq_engine.runs.connection import StoreError, unreadable

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

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
    """Drop ``steps`` (sampled every 5 steps, never shown: epochs carry the curves) and store
    NULL as the alpha of uniform runs, which have none (it used to hold a placeholder)."""
    conn.execute("DROP TABLE steps")
    conn.execute("UPDATE runs SET alpha = NULL WHERE method = 'uniform'")  # frozen literal


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """``quarantine``: rows ``store repair`` took out of ``runs`` because they could not be
    read or fixed, kept verbatim (``row_json``) with the reason, so nothing is lost."""
    conn.execute(
        "CREATE TABLE quarantine (id INTEGER PRIMARY KEY, run_id TEXT, row_json TEXT NOT NULL,"
        " reason TEXT, quarantined_at REAL NOT NULL)"
    )


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Where a run trains: ``device`` (cpu, cuda:1, mps), ``world_size`` (processes of a DDP
    run, 1 otherwise) and ``worker`` (local worker thread, torchrun, or Ray node), shown in
    the Runs table. Added for scale-out; old rows stay NULL (= unknown, shown blank)."""
    for column in ("device TEXT", "world_size INTEGER", "worker TEXT"):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column}")


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    """Runs can be tagged (a JSON list of strings) and carry a free-text note."""
    conn.execute("ALTER TABLE runs ADD COLUMN tags_json TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN note TEXT")


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    """Who may stop/resume/delete a run (``owner``: a session's name, "cli", NULL for runs
    made before owners existed) and a stop asked for by another process (``stop_requested``:
    when, NULL when none); the training process polls it (see ``runner``)."""
    conn.execute("ALTER TABLE runs ADD COLUMN owner TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN stop_requested REAL")


def _v6_to_v7(conn: sqlite3.Connection) -> None:
    """``step_points``: a bounded, evenly thinned per-step series of every run (loss,
    cross-entropy, regularizer R, batch accuracy, lr, fractional epoch, training seconds),
    written by the training process (``callbacks.StepSeriesCallback``), so finished runs
    keep per-step curves. Keyed by the global step: a resumed run re-writes, never
    duplicates. Runs trained before this version have none."""
    conn.execute(
        "CREATE TABLE step_points (run_id TEXT NOT NULL, stage TEXT NOT NULL, epoch INTEGER"
        " NOT NULL, step INTEGER NOT NULL, epoch_frac REAL, wall REAL, time REAL, loss REAL,"
        " ce REAL, reg REAL, batch_acc REAL, lr REAL, PRIMARY KEY (run_id, step))"
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v0_to_v1, _v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5, _v5_to_v6, _v6_to_v7,
]  # fmt: skip
SCHEMA_VERSION = len(MIGRATIONS)


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
        raise unreadable(db_path, exc) from exc
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _version(conn: sqlite3.Connection, db_path: Path) -> int:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from exc
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path} has schema version {version}, newer than this BSQ Explorer understands "
            f"({SCHEMA_VERSION}). Upgrade BSQ Explorer, or set BSQ_HOME to another folder."
        )
    return version

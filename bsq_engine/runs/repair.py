"""``store check`` / ``store repair``: find what is wrong with a run store, and heal it.

A run's folder holds its checkpoint, and every checkpoint carries the run's config, so the
index (``runs.db``) can be rebuilt from the folders. Repair never throws anything away:

1. a copy of ``runs.db`` (and its WAL files) goes to ``<home>/backups/`` first;
2. an unreadable or 0-byte ``runs.db`` is moved aside (into the backup) and replaced by a
   fresh store, into which every readable row of the old one is copied back;
3. a row that cannot be read is fixed from its checkpoint's config when it can be, else
   moved to the ``quarantine`` table (its raw text kept) so listings work again;
4. a run folder that the index does not know comes back as an ``interrupted`` run (resume
   it to finish; its metrics before the checkpoint are gone with the old index).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

from bsq_engine.runs.connection import connect
from bsq_engine.runs.health import TMP_GLOB, checked_run_dict, run_folders
from bsq_engine.runs.paths import CHECKPOINT_FILE, db_path, run_folder
from bsq_engine.runs.records import dumps
from bsq_engine.runs.schema import SCHEMA_VERSION
from bsq_engine.runs.status import RunStatus
from bsq_engine.training.checkpoint import CheckpointError, load_run_checkpoint
from bsq_engine.training.config import RunConfig

__all__ = ["check_store", "repair_store"]

_TABLES = ("runs", "epochs", "layers", "events", "sweeps")


def _db_state(db: Path) -> str | None:
    """None when ``runs.db`` is usable, else why not."""
    if not db.exists():
        return "runs.db is missing"
    if db.stat().st_size == 0:
        return "runs.db is empty (0 bytes)"
    try:
        conn = sqlite3.connect(db)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT run_id FROM runs LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"runs.db is unreadable ({exc})"
    if ok != "ok":
        return f"runs.db is damaged ({ok})"
    if version > SCHEMA_VERSION:
        return f"runs.db was written by a newer BSQ Explorer (schema {version})"
    return None


def _bad_rows(db: Path) -> list[tuple[str, str]]:
    conn = connect(db)
    bad = []
    try:
        for row in conn.execute("SELECT * FROM runs").fetchall():
            try:
                RunConfig.from_dict(checked_run_dict(conn, row)["config"])
            except ValueError as exc:
                bad.append((row["run_id"], str(exc)))
    finally:
        conn.close()
    return bad


def _indexed(db: Path) -> set[str]:
    conn = connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT run_id FROM runs")}
    finally:
        conn.close()


def _recover_config(folder: Path) -> tuple[dict | None, str]:
    """The run config kept in a folder's checkpoint, or None and why not."""
    try:
        _, meta = load_run_checkpoint(folder / CHECKPOINT_FILE)
        return RunConfig.from_dict(meta["config"]).to_dict(), ""
    except (CheckpointError, ValueError) as exc:
        return None, str(exc)


def check_store(home: Path) -> dict:
    """What is wrong, changing nothing. ``ok`` is true when nothing needs repair."""
    home, findings = Path(home), []
    db = db_path(home)
    problem = _db_state(db)
    folders = run_folders(home)
    indexed: set[str] = set()
    if problem and (folders or db.exists()):  # no file and no folder: nothing stored yet
        findings.append(f"{problem}; `store repair` rebuilds it from {len(folders)} folder(s)")
    elif not problem:
        findings += [f"run {rid}: {why}" for rid, why in _bad_rows(db)]
        indexed = _indexed(db)
    for folder in folders:
        if folder.name not in indexed:
            config, why = _recover_config(folder)
            state = "recoverable" if config else f"not recoverable: {why}"
            findings.append(f"folder {folder.name} is not in the index ({state})")
    stale = [str(p) for f in folders for p in f.glob(TMP_GLOB)]
    findings += [f"temp file of an unfinished checkpoint write: {p}" for p in stale]
    verdict = "healthy" if not findings else f"{len(findings)} problem(s)"
    return {"home": str(home), "ok": not findings, "verdict": verdict, "findings": findings}


def _backup(home: Path, stamp: str) -> Path | None:
    """Copy runs.db and its WAL/SHM files into ``backups/``; returns the copy of runs.db."""
    db = db_path(home)
    if not db.exists():
        return None
    folder = home / "backups"
    folder.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = home / f"runs.db{suffix}"
        if source.exists():
            shutil.copy2(source, folder / f"runs.db.{stamp}{suffix}")
    return folder / f"runs.db.{stamp}"


def _salvage(old: Path, new_conn: sqlite3.Connection, actions: list[str]) -> None:
    """Copy every readable row of a damaged store into the new one, table by table."""
    try:
        new_conn.execute("ATTACH DATABASE ? AS old", (str(old),))
    except sqlite3.DatabaseError:
        return
    for table in _TABLES:
        try:
            n = new_conn.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM old.{table}")
            actions.append(f"copied {n.rowcount} row(s) of {table} from the damaged store")
        except sqlite3.DatabaseError as exc:
            actions.append(f"could not read {table} from the damaged store ({exc})")
    new_conn.execute("DETACH DATABASE old")


def _replace_db(home: Path, backup: Path | None, actions: list[str]) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / f"runs.db{suffix}").unlink(missing_ok=True)
    from bsq_engine.runs.store import RunStore

    RunStore(home).close()  # a fresh, migrated store
    actions.append(f"started a fresh runs.db (the old one is kept as {backup})")
    if backup is not None and backup.stat().st_size > 0:
        conn = connect(db_path(home))
        try:
            _salvage(backup, conn, actions)
        finally:
            conn.close()


def _fix_rows(conn: sqlite3.Connection, home: Path, actions: list[str]) -> None:
    for row in conn.execute("SELECT * FROM runs").fetchall():
        rid = row["run_id"]
        try:
            RunConfig.from_dict(checked_run_dict(conn, row)["config"])
            continue
        except ValueError as exc:
            why = str(exc)
        config, _ = _recover_config(run_folder(home, rid))
        if config is not None:
            conn.execute(
                "UPDATE runs SET config_json = ?, summary_json = NULL, status = ? WHERE run_id = ?",
                (dumps(config), RunStatus.INTERRUPTED, rid),
            )
            actions.append(f"run {rid}: config restored from its checkpoint ({why})")
            continue
        conn.execute(
            "INSERT INTO quarantine (run_id, row_json, reason, quarantined_at) VALUES (?, ?, ?, ?)",
            (rid, json.dumps(dict(row), default=str), why, time.time()),
        )
        conn.execute("DELETE FROM runs WHERE run_id = ?", (rid,))
        actions.append(f"run {rid}: moved to the quarantine table ({why})")


def _reindex(conn: sqlite3.Connection, home: Path, actions: list[str]) -> None:
    indexed = {r[0] for r in conn.execute("SELECT run_id FROM runs")}
    for folder in run_folders(home):
        if folder.name in indexed:
            continue
        config, why = _recover_config(folder)
        if config is None:
            actions.append(f"folder {folder.name} left as it is: {why}")
            continue
        conn.execute(
            "INSERT INTO runs (run_id, name, status, method, model, dataset, alpha,"
            " config_json, created_at, error) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (folder.name, config.get("name") or folder.name, RunStatus.INTERRUPTED,
             config["method"], config["model"], config["dataset"], config["alpha"],
             dumps(config), folder.stat().st_mtime,
             "Recovered by `store repair` from its checkpoint; metrics written before the "
             "index was lost are gone. Resume it to continue."),
        )  # fmt: skip
        actions.append(f"run {folder.name}: recovered from its checkpoint (interrupted)")


def repair_store(home: Path) -> dict:
    """Back up, then heal the store under ``home`` (see the module docstring)."""
    home, actions = Path(home), []
    home.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = _backup(home, stamp)
    if backup:
        actions.append(f"kept a copy of runs.db as {backup}")
    problem = _db_state(db_path(home))
    if problem and "newer" in problem:  # not damaged: this release must not rewrite it
        return {
            "home": str(home),
            "ok": False,
            "verdict": "not repaired",
            "actions": actions,
            "findings": [f"{problem}; upgrade BSQ Explorer instead of repairing it"],
        }
    if problem:
        _replace_db(home, backup, actions)
    conn = connect(db_path(home))
    try:
        conn.execute("BEGIN IMMEDIATE")
        _fix_rows(conn, home, actions)
        _reindex(conn, home, actions)
        conn.execute("COMMIT")
    finally:
        conn.close()
    from bsq_engine.runs.store import RunStore

    RunStore(home).close()  # marks orphans, removes stale temp files
    report = check_store(home)
    report["actions"] = actions
    return report

"""Persistent run store: one SQLite file (WAL) plus one folder per run.

Layout under ``BSQ_HOME`` (default ``~/.bsq_explorer``)::

    runs.db             runs, epochs, layers, events, sweeps (see ``schema.py``)
    runs/<run_id>/      checkpoints and exports of one run

Every connection belongs to one thread, so the training thread and the pages each hold their
own; WAL lets them read and write at the same time. Metric writes are upserts keyed by
(run, stage, epoch), so a resumed run that re-writes an epoch never duplicates it.
Record shapes are documented in ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from bsq_engine.runs.connection import RunNotFound, StoreError, SweepNotFound, connect, enable_wal
from bsq_engine.runs.control import RunControl
from bsq_engine.runs.health import decode_run, decode_runs, refuse_lost_index, remove_stale_tmp
from bsq_engine.runs.metrics import METRIC_TABLES, RunMetrics
from bsq_engine.runs.orphans import orphan_reason, queued_orphan_reason
from bsq_engine.runs.paths import db_path, run_folder
from bsq_engine.runs.records import (
    check_id,
    clean_annotations,
    default_name,
    dumps,
    new_id,
    stored_alpha,
)
from bsq_engine.runs.schema import SCHEMA_VERSION, migrate
from bsq_engine.runs.status import ENDED, RunStatus, check_transition, parse_status

__all__ = [
    "ORPHAN_AFTER_S",
    "SCHEMA_VERSION",
    "RunNotFound",
    "RunStatus",
    "RunStore",
    "StoreError",
    "SweepNotFound",
    "default_home",
]

ORPHAN_AFTER_S = 120.0  # a running run silent this long (another host) is presumed dead
# Runs this process moved to `running`: the pid alone cannot tell us from a dead process whose
# pid we inherited (containers restart with the same small pids).
_OWNED: set[tuple[str, str]] = set()
_OWNED_LOCK = threading.Lock()


def default_home() -> Path:
    """``$BSQ_HOME`` if set, else ``~/.bsq_explorer``; tests and the app isolate stores with it."""
    return Path(os.environ.get("BSQ_HOME") or "~/.bsq_explorer").expanduser()


class RunStore(RunMetrics, RunControl):
    """Runs, their metrics (methods from :class:`RunMetrics`) and their folders. Safe to share
    between threads."""

    def __init__(self, home: Path | str | None = None, *, orphan_after: float = ORPHAN_AFTER_S):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path(self.home)
        self._key = str(self.db_path.resolve())  # one store, however its path was spelled
        self.orphan_after = orphan_after
        self._local = threading.local()
        refuse_lost_index(self.home, self.db_path)  # a 0-byte runs.db is never re-created
        conn = connect(self.db_path, wal=False)
        try:
            migrate(conn, self.db_path)
            enable_wal(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        # Opening the store is when readers look, so runs left `running` by a dead process
        # show up as `interrupted` instead of running forever.
        self.mark_orphans()
        remove_stale_tmp(self)

    # -- connections --------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.db_path)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction; IMMEDIATE takes the write lock up front (waits busy_timeout)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (other threads keep theirs)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self,
        config: dict,
        *,
        name: str | None = None,
        status: str = RunStatus.QUEUED,
        sweep_id: str | None = None,
        run_id: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Insert a run from its config dict (needs model, dataset, method, alpha).

        ``owner``: who may stop, resume and delete it (see ``runs.ownership``)."""
        new = parse_status(status)
        name = name or default_name(config)  # also checks the config has the required keys
        if run_id is not None:
            check_id(run_id)
        for _ in range(5):  # a generated id collides only within one second and 1/65536
            rid = run_id or new_id()
            try:
                self._insert_run(rid, config, name, new, sweep_id, owner)
                return rid
            except sqlite3.IntegrityError:
                if run_id is not None:
                    raise ValueError(f"Run {run_id!r} already exists in {self.home}.") from None
        raise StoreError("Could not generate a unique run id; try again.")

    def _insert_run(
        self, rid: str, config: dict, name: str, status: RunStatus, sweep_id, owner
    ) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, name, status, method, model, dataset, alpha,"
                " config_json, created_at, sweep_id, pid, hostname, owner)"  # pid: a queued run's
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",  # process; owner: who may control it
                (rid, name, status.value, config["method"], config["model"], config["dataset"],
                 stored_alpha(config), dumps(config), now, sweep_id, os.getpid(),
                 socket.gethostname(), owner),
            )  # fmt: skip
            if status is RunStatus.RUNNING:
                self._start(conn, rid, now)

    def get_run(self, run_id: str) -> dict:
        """The run as a plain dict, JSON decoded, with accuracy/avg_bits/... convenience keys."""
        sql = "SELECT * FROM runs WHERE run_id = ?"
        row = self._conn().execute(sql, (run_id,)).fetchone()
        if row is None:
            raise self._not_found(run_id)
        if row["status"] == RunStatus.RUNNING and self.mark_orphans():  # a page polling it
            row = self._conn().execute(sql, (run_id,)).fetchone()
        return decode_run(self._conn(), row, self.db_path)

    def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        model: str | None = None,
        dataset: str | None = None,
        sweep_id: str | None = None,
    ) -> list[dict]:
        """Runs matching every given filter, newest first; ``status`` may be several."""
        # Cheap (no running rows: one indexed query) and catches owners that died after open,
        # e.g. a container restarted under a new hostname once its heartbeat went stale.
        self.mark_orphans()
        where, args = [], []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(wanted))})")
            args += [parse_status(s).value for s in wanted]
        for col, value in (("model", model), ("dataset", dataset), ("sweep_id", sweep_id)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        conn = self._conn()
        rows = conn.execute(sql + " ORDER BY created_at DESC, run_id DESC", args).fetchall()
        runs, self._local.skipped = decode_runs(conn, rows)  # a damaged row hides no other
        return runs

    def skipped_rows(self) -> list[tuple[str, str]]:
        """``(run_id, why)`` of the damaged rows this thread's last ``list_runs`` left out."""
        return list(getattr(self._local, "skipped", []))

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """Move a run along its life cycle; an illegal step raises ValueError."""
        new = parse_status(status)
        now = time.time()
        with self._write() as conn:
            check_transition(run_id, self._status(conn, run_id), new)
            if new is RunStatus.RUNNING:
                self._start(conn, run_id, now)
            elif new in ENDED:
                conn.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE run_id = ?",
                    (new.value, now, error, run_id),
                )
            else:  # queued again, to be resumed
                conn.execute(
                    "UPDATE runs SET status = ?, finished_at = NULL, error = ?, pid = ?,"
                    " hostname = ? WHERE run_id = ?",
                    (new.value, error, os.getpid(), socket.gethostname(), run_id),
                )
        if new is not RunStatus.RUNNING:
            self._disown(run_id)

    def _start(self, conn: sqlite3.Connection, run_id: str, now: float) -> None:
        conn.execute(
            f"UPDATE runs SET status = '{RunStatus.RUNNING}', started_at = ?, finished_at = NULL,"
            " error = NULL, pid = ?, hostname = ?, heartbeat = ?, stop_requested = NULL"
            " WHERE run_id = ?",
            (now, os.getpid(), socket.gethostname(), now, run_id),
        )
        with _OWNED_LOCK:
            _OWNED.add((self._key, run_id))

    def _disown(self, run_id: str) -> None:
        with _OWNED_LOCK:
            _OWNED.discard((self._key, run_id))

    def finish(self, run_id: str, summary: dict) -> None:
        """Mark a running run finished and keep its summary, atomically."""
        with self._write() as conn:
            check_transition(run_id, self._status(conn, run_id), RunStatus.FINISHED)
            conn.execute(
                f"UPDATE runs SET status = '{RunStatus.FINISHED}', finished_at = ?, error = NULL,"
                " summary_json = ? WHERE run_id = ?",
                (time.time(), dumps(summary), run_id),
            )
        self._disown(run_id)

    def annotate(self, run_id: str, *, name=None, tags=None, note=None) -> None:
        """Rename a run, replace its tags or set its note; None leaves a field unchanged.
        Any status: annotations are the user's, never the trainer's."""
        values = clean_annotations(name, tags, note)
        if not values:
            return
        sets = ", ".join(f"{col} = ?" for col in values)
        with self._write() as conn:
            self._status(conn, run_id)
            conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*values.values(), run_id))

    def delete_run(self, run_id: str) -> None:
        """Delete the run's rows and its folder (checkpoints, exports)."""
        with self._write() as conn:
            self._status(conn, run_id)
            for table in ("runs", *METRIC_TABLES):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        self._disown(run_id)
        shutil.rmtree(run_folder(self.home, run_id), ignore_errors=True)

    def run_dir(self, run_id: str) -> Path:
        """``<home>/runs/<run_id>/``, created on demand."""
        check_id(run_id)
        path = run_folder(self.home, run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- orphans ------------------------------------------------------------------------

    def mark_orphans(self, *, stale_after: float | None = None) -> list[str]:
        """Mark `running` and `queued` runs whose process is gone as `interrupted` (they
        resume like any interrupted run); returns their ids."""
        stale_after = self.orphan_after if stale_after is None else stale_after
        sql = "SELECT * FROM runs WHERE status IN (?, ?)"
        rows = self._conn().execute(sql, (RunStatus.RUNNING, RunStatus.QUEUED)).fetchall()
        marked = []
        for row in rows:
            if row["status"] == RunStatus.QUEUED:
                reason = queued_orphan_reason(row)
            else:
                with _OWNED_LOCK:
                    owned = (self._key, row["run_id"]) in _OWNED
                reason = orphan_reason(row, owned=owned, now=time.time(), stale_after=stale_after)
            if reason and self._interrupt(row["run_id"], row["status"], row["heartbeat"], reason):
                marked.append(row["run_id"])
        return marked

    def _interrupt(self, run_id: str, status: str, beat: float | None, reason: str) -> bool:
        """Conditional update: a heartbeat, start or finish that raced us wins."""
        with self._write() as conn:
            error = f"Interrupted: {reason}. Resume it to continue."
            cur = conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ?"
                " WHERE run_id = ? AND status = ? AND heartbeat IS ?",
                (RunStatus.INTERRUPTED, time.time(), error, run_id, status, beat),
            )
        return cur.rowcount == 1

    # -- sweeps -------------------------------------------------------------------------

    # -- helpers ------------------------------------------------------------------------

    def _rows(self, sql: str, run_id: str) -> list[dict]:
        return [dict(r) for r in self._conn().execute(sql, (run_id,)).fetchall()]

    def _status(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._not_found(run_id)
        return row["status"]

    def _not_found(self, run_id: str) -> RunNotFound:
        return RunNotFound(
            f"No run {run_id!r} in {self.home}. List runs with `python -m bsq_engine runs`."
        )

"""What processes tell each other through the store, and the sweeps table (a part of RunStore).

:class:`RunControl` is mixed into :class:`~bsq_engine.runs.store.RunStore`, which provides
its connection and transaction helpers (``_write``, ``_conn``, ``_rows``, ``_status``,
``_not_found``). A run may train in another process (a CLI, the app's worker process, a
torchrun job, a Ray driver): heartbeats prove it alive, a stop request reaches it through
the row, and a change marker lets pages that watch it poll one cheap read.
"""

from __future__ import annotations

import time

from bsq_engine.runs.connection import SweepNotFound
from bsq_engine.runs.records import decode_sweep, dumps, new_id

__all__ = ["RunControl"]


class RunControl:
    """Cross-process signals and sweeps of ``RunStore``; see the module docstring."""

    def heartbeat(self, run_id: str) -> None:
        """Prove the owner is alive; call at least every few seconds while training."""
        cur = self._conn().execute(
            "UPDATE runs SET heartbeat = ? WHERE run_id = ?", (time.time(), run_id)
        )
        if cur.rowcount == 0:
            raise self._not_found(run_id)

    def request_stop(self, run_id: str) -> None:
        """Ask whichever process trains the run to stop it (it polls ``stop_requested``)."""
        with self._write() as conn:
            self._status(conn, run_id)
            conn.execute(
                "UPDATE runs SET stop_requested = ? WHERE run_id = ?", (time.time(), run_id)
            )

    def stop_requested(self, run_id: str) -> bool:
        """True once ``request_stop`` was called for the current attempt of the run."""
        sql = "SELECT stop_requested FROM runs WHERE run_id = ?"
        row = self._conn().execute(sql, (run_id,)).fetchone()
        if row is None:
            raise self._not_found(run_id)
        return row[0] is not None

    def change_marker(self, run_id: str) -> tuple:
        """Changes whenever the run's status, epochs, layers or events do: one indexed read,
        so pages watching a run another process trains can poll it cheaply."""
        row = (
            self._conn()
            .execute(
                "SELECT status, finished_at, stop_requested,"
                " (SELECT COUNT(*) FROM epochs WHERE run_id = ?1),"
                " (SELECT MAX(global_epoch) FROM layers WHERE run_id = ?1),"
                " (SELECT COUNT(*) FROM events WHERE run_id = ?1) FROM runs WHERE run_id = ?1",
                (run_id,),
            )
            .fetchone()
        )
        if row is None:
            raise self._not_found(run_id)
        return tuple(row)

    def set_placement(
        self, run_id: str, *, device: str, world_size: int = 1, worker: str | None = None
    ) -> None:
        """Record where the run trains (Runs table): device, DDP world size, worker."""
        with self._write() as conn:
            self._status(conn, run_id)
            conn.execute(
                "UPDATE runs SET device = ?, world_size = ?, worker = ? WHERE run_id = ?",
                (device, int(world_size), worker, run_id),
            )

    def create_sweep(self, name: str, model: str, dataset: str, config: dict) -> str:
        """Register a sweep; its runs point back to it through ``sweep_id``."""
        sweep_id = new_id()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO sweeps (sweep_id, name, model, dataset, created_at, config_json)"
                " VALUES (?,?,?,?,?,?)",
                (sweep_id, name, model, dataset, time.time(), dumps(config)),
            )
        return sweep_id

    def get_sweep(self, sweep_id: str) -> dict:
        rows = self._rows("SELECT * FROM sweeps WHERE sweep_id = ?", sweep_id)
        if not rows:
            raise SweepNotFound(f"No sweep {sweep_id!r} in {self.home}.")
        return decode_sweep(rows[0])

    def list_sweeps(self) -> list[dict]:
        """All sweeps, newest first."""
        rows = self._conn().execute("SELECT * FROM sweeps ORDER BY created_at DESC").fetchall()
        return [decode_sweep(dict(r)) for r in rows]

"""A run's metric rows: epochs, layer snapshots, precision events and the per-step series (a
part of RunStore).

:class:`RunMetrics` is mixed into :class:`~bsq_engine.runs.store.RunStore`, which provides
its connection and transaction helpers (``_write``, ``_conn``, ``_rows``, ``_status``).
Writes are upserts keyed by (run, stage, epoch), so a resumed run that re-writes an epoch
never duplicates it; every write by the owner also counts as a heartbeat.
"""

from __future__ import annotations

import time

from bsq_engine.runs.records import decode_layer, dumps, table_rows, upsert_sql
from bsq_engine.runs.status import RunStatus
from bsq_engine.training.config import stage_rank

__all__ = ["METRIC_TABLES", "RunMetrics"]

METRIC_TABLES = ("epochs", "layers", "events", "step_points")


class RunMetrics:
    """Metric methods of ``RunStore``; see the module docstring for what it relies on."""

    def add_epochs(self, run_id: str, records: list[dict]) -> None:
        """Upsert epoch records (one transaction); unknown keys are ignored."""
        self._upsert(run_id, "epochs", records)

    def add_layers(
        self, run_id: str, stage: str, epoch: int, global_epoch: int, layers: list[dict]
    ) -> None:
        """Upsert one layer snapshot; ``layer_index`` is the position in ``layers``."""
        records = [
            {
                **layer,
                "stage": stage,
                "epoch": epoch,
                "global_epoch": global_epoch,
                "layer_index": i,
                "density_json": dumps(layer.get("density")),
                "group_norm_json": dumps(layer.get("group_norm")),
            }
            for i, layer in enumerate(layers)
        ]
        self._upsert(run_id, "layers", records)

    def add_events(self, run_id: str, events: list[dict]) -> None:
        """Upsert precision-change events, unique per (stage, epoch, layer)."""
        self._upsert(run_id, "events", events)

    def add_step_points(self, run_id: str, points: list[dict]) -> None:
        """Upsert per-step points (``records.STEP_COLS``), unique per global step."""
        if points:
            self._upsert(run_id, "step_points", points)

    def _upsert(self, run_id: str, table: str, records: list[dict]) -> None:
        sql, rows = upsert_sql(table), table_rows(run_id, records, table)
        with self._write() as conn:
            self._status(conn, run_id)
            conn.executemany(sql, rows)
            # Any write by the owner proves it alive, even if it forgot to heartbeat.
            conn.execute(
                "UPDATE runs SET heartbeat = ? WHERE run_id = ? AND status = ?",
                (time.time(), run_id, RunStatus.RUNNING),
            )

    def epochs(self, run_id: str) -> list[dict]:
        """Epoch rows of every stage, ordered by global epoch."""
        return self._rows("SELECT * FROM epochs WHERE run_id = ? ORDER BY global_epoch", run_id)

    def layer_snapshots(self, run_id: str) -> list[dict]:
        """Every layer row of every snapshot, density/group_norm decoded."""
        sql = "SELECT * FROM layers WHERE run_id = ? ORDER BY global_epoch, layer_index"
        return [decode_layer(r) for r in self._rows(sql, run_id)]

    def latest_layers(self, run_id: str) -> list[dict]:
        """The last snapshot only (the current or final precision of each layer)."""
        sql = (
            "SELECT * FROM layers WHERE run_id = ?1 AND global_epoch ="
            " (SELECT MAX(global_epoch) FROM layers WHERE run_id = ?1) ORDER BY layer_index"
        )
        return [decode_layer(r) for r in self._rows(sql, run_id)]

    def events(self, run_id: str) -> list[dict]:
        """Precision-change events in training order."""
        rows = self._rows("SELECT * FROM events WHERE run_id = ? ORDER BY id", run_id)
        rows.sort(key=lambda r: (stage_rank(r["stage"]), r["epoch"]))  # stable: keeps id order
        for row in rows:
            del row["id"]
        return rows

    def step_points(self, run_id: str) -> list[dict]:
        """The run's per-step series in step order (empty for runs trained before it was
        recorded, schema version 7)."""
        rows = self._rows("SELECT * FROM step_points WHERE run_id = ? ORDER BY step", run_id)
        for row in rows:
            del row["run_id"]
        return rows

    def truncate_after(self, run_id: str, stage_order: list[str], stage: str, epoch: int) -> None:
        """Delete metric rows after (stage, epoch), so a resumed run re-writes them cleanly."""
        if stage not in stage_order:
            raise ValueError(f"Stage {stage!r} is not in stage_order {stage_order}.")
        later = list(stage_order[stage_order.index(stage) + 1 :])
        cond = f"stage = ? AND epoch > ? OR stage IN ({','.join('?' * len(later))})"
        with self._write() as conn:
            self._status(conn, run_id)
            for table in METRIC_TABLES:
                conn.execute(
                    f"DELETE FROM {table} WHERE run_id = ? AND ({cond})",
                    (run_id, stage, epoch, *later),
                )

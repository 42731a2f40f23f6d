"""The live state of one training run, kept in memory for pages that poll it.

The job manager adds a :class:`LiveBufferCallback` to every job it runs; pages read
``JobManager.snapshot()``, which copies this buffer instead of querying SQLite each tick, and
``JobManager.version()``, its change counter. A worker in a child process feeds the same
buffer through :meth:`LiveBufferCallback.apply` (``runs.worker_process``).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.config import Stage

__all__ = ["LiveBufferCallback", "trainer_state"]


class LiveBufferCallback(Callback):
    """In-memory state of one running run, written by the worker, read by ``snapshot()``.

    Pages poll several times a second; reading this instead of SQLite keeps ticks cheap.
    Records are copied once on the way in and the lists again on the way out, so a
    snapshot never changes under its reader. On (re)start it loads the epochs already in
    the store, so a resumed run's curves start where the checkpoint left them.

    ``version`` counts the changes a page draws (a stage, an epoch, a re-quantization, the
    end), not steps: a viewer whose version is unchanged has nothing to redraw. Every hook
    goes through :meth:`apply` with a plain state dict, so a worker in a child process can
    feed the same buffer from the messages it sends (see ``runs.worker_process``).
    """

    def __init__(self, store: RunStore | None = None, run_id: str = "", max_events: int = 200):
        self.store, self.run_id = store, run_id
        self._lock = threading.Lock()
        self._epochs: list[dict] = []
        self._events: deque[dict] = deque(maxlen=max_events)
        self._layers: list[dict] = []
        self._step: dict | None = None
        self._epoch_s: float | None = None  # moving average of real (not reused) epochs
        self._version = 0
        self._state = {"stage": None, "epoch": 0, "epochs_in_stage": 0, "global_epoch": 0,
                       "total_epochs": 0, "float_accuracy": None, "started_at": time.time(),
                       "updated_at": time.time()}  # fmt: skip

    @property
    def version(self) -> int:
        return self._version  # an int read is atomic; no lock needed

    def on_run_start(self, trainer) -> None:
        self.apply("start", trainer_state(trainer))

    def on_stage_start(self, trainer, stage) -> None:
        self.apply("stage", trainer_state(trainer))

    def on_step_end(self, trainer, step) -> None:
        self.apply("step", None, step=step)

    def on_epoch_end(self, trainer, record, layers) -> None:
        self.apply("epoch", trainer_state(trainer), record=record, layers=layers)

    def on_requantize(self, trainer, events) -> None:
        self.apply("requantize", None, events=events)

    def on_finish(self, trainer, summary) -> None:
        self.apply("finish", trainer_state(trainer))

    def apply(self, kind: str, state: dict | None, **payload) -> None:
        """Record one hook's data: ``kind`` is start|stage|step|epoch|requantize|finish."""
        if kind == "start":  # outside the lock: SQLite may wait
            done = self.store.epochs(self.run_id) if self.store is not None else []
            payload["done"] = [{k: v for k, v in r.items() if k != "run_id"} for r in done]
        with self._lock:
            if kind == "step":
                self._step = dict(payload["step"])
                self._state["updated_at"] = time.time()
                return  # not drawn: the version stays
            if kind == "start":
                self._epochs = payload["done"]
                self._state["started_at"] = time.time()
            elif kind == "epoch":
                self._add_epoch(payload["record"], payload["layers"])
            elif kind == "requantize":
                self._events.extend(dict(e) for e in payload["events"])
            if state is not None:
                self._state.update(state, updated_at=time.time())
            self._version += 1

    def _add_epoch(self, record: dict, layers: list[dict] | None) -> None:  # lock held
        record = dict(record)
        self._epochs.append(record)
        if layers is not None:
            self._layers = [_copy_layer(layer) for layer in layers]
        if not record.get("reused") and record.get("seconds") is not None:
            s, avg = record["seconds"], self._epoch_s  # recent epochs weigh most
            self._epoch_s = s if avg is None else 0.3 * s + 0.7 * avg

    def snapshot(self) -> dict:
        """A consistent copy: plain dicts and lists, safe to keep and mutate."""
        with self._lock:
            snap = dict(self._state)
            snap["epochs"] = [dict(r) for r in self._epochs]
            snap["layers"] = [_copy_layer(layer) for layer in self._layers]
            snap["events"] = [dict(e) for e in self._events]
            snap["step"] = None if self._step is None else dict(self._step)
            snap["version"] = self._version
            epoch_s = self._epoch_s
        total, done = snap["total_epochs"], snap["global_epoch"]
        snap["progress"] = min(done / total, 1.0) if total else 0.0
        left = max(total - done, 0)
        snap["epoch_s"] = epoch_s
        snap["eta_seconds"] = None if epoch_s is None else epoch_s * left
        return snap


def trainer_state(trainer) -> dict:
    """What the live view shows of a trainer, as plain values (picklable for a pipe)."""
    stage = trainer.stage
    return {
        "stage": getattr(stage, "value", stage), "epoch": trainer.epoch,
        "epochs_in_stage": trainer.config.epochs_of(stage) if stage != Stage.DONE else 0,
        "global_epoch": trainer.global_epoch, "total_epochs": trainer.config.total_epochs,
        "float_accuracy": trainer.float_accuracy,
    }  # fmt: skip


def _copy_layer(layer: dict) -> dict:
    return {k: list(v) if isinstance(v, list) else v for k, v in layer.items()}

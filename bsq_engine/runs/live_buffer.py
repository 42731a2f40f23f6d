"""The live state of one training run, kept in memory for pages that poll it.

The job manager adds a :class:`LiveBufferCallback` to every job it runs; pages read
``JobManager.snapshot()``, which copies this buffer instead of querying SQLite each tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.config import Stage

__all__ = ["LiveBufferCallback"]


class LiveBufferCallback(Callback):
    """In-memory state of one running run, written by the worker, read by ``snapshot()``.

    Pages poll several times a second; reading this instead of SQLite keeps ticks cheap.
    Records are copied once on the way in and the lists again on the way out, so a
    snapshot never changes under its reader. On (re)start it loads the epochs already in
    the store, so a resumed run's curves start where the checkpoint left them.
    """

    def __init__(self, store: RunStore | None = None, run_id: str = "", max_events: int = 200):
        self.store, self.run_id = store, run_id
        self._lock = threading.Lock()
        self._epochs: list[dict] = []
        self._events: deque[dict] = deque(maxlen=max_events)
        self._layers: list[dict] = []
        self._step: dict | None = None
        self._epoch_s: float | None = None  # moving average of real (not reused) epochs
        self._state = {"stage": None, "epoch": 0, "epochs_in_stage": 0, "global_epoch": 0,
                       "total_epochs": 0, "float_accuracy": None, "started_at": time.time(),
                       "updated_at": time.time()}  # fmt: skip

    def _update(self, trainer, **extra) -> None:  # caller holds the lock
        stage = trainer.stage
        self._state.update(
            stage=getattr(stage, "value", stage), epoch=trainer.epoch,
            epochs_in_stage=trainer.config.epochs_of(stage) if stage != Stage.DONE else 0,
            global_epoch=trainer.global_epoch, total_epochs=trainer.config.total_epochs,
            float_accuracy=trainer.float_accuracy, updated_at=time.time(), **extra,
        )  # fmt: skip

    def on_run_start(self, trainer) -> None:
        done = self.store.epochs(self.run_id) if self.store is not None else []
        with self._lock:
            self._epochs = [{k: v for k, v in r.items() if k != "run_id"} for r in done]
            self._update(trainer, started_at=time.time())

    def on_stage_start(self, trainer, stage) -> None:
        with self._lock:
            self._update(trainer)

    def on_step_end(self, trainer, step) -> None:
        with self._lock:
            self._step = dict(step)
            self._state["updated_at"] = time.time()

    def on_epoch_end(self, trainer, record, layers) -> None:
        record = dict(record)
        layers = None if layers is None else [_copy_layer(layer) for layer in layers]
        with self._lock:
            self._epochs.append(record)
            if layers is not None:
                self._layers = layers
            if not record.get("reused") and record.get("seconds") is not None:
                s, avg = record["seconds"], self._epoch_s  # recent epochs weigh most
                self._epoch_s = s if avg is None else 0.3 * s + 0.7 * avg
            self._update(trainer)

    def on_requantize(self, trainer, events) -> None:
        with self._lock:
            self._events.extend(dict(e) for e in events)

    def on_finish(self, trainer, summary) -> None:
        with self._lock:
            self._update(trainer)

    def snapshot(self) -> dict:
        """A consistent copy: plain dicts and lists, safe to keep and mutate."""
        with self._lock:
            snap = dict(self._state)
            snap["epochs"] = [dict(r) for r in self._epochs]
            snap["layers"] = [_copy_layer(layer) for layer in self._layers]
            snap["events"] = [dict(e) for e in self._events]
            snap["step"] = None if self._step is None else dict(self._step)
            epoch_s = self._epoch_s
        total, done = snap["total_epochs"], snap["global_epoch"]
        snap["progress"] = min(done / total, 1.0) if total else 0.0
        left = max(total - done, 0)
        snap["eta_seconds"] = None if epoch_s is None else epoch_s * left
        return snap


def _copy_layer(layer: dict) -> dict:
    return {k: list(v) if isinstance(v, list) else v for k, v in layer.items()}

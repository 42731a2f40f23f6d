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

_STEP_KEYS = ("step", "stage", "epoch", "loss", "reg", "batch_acc", "lr")


class LiveBufferCallback(Callback):
    """In-memory state of one running run, written by the worker, read by ``snapshot()``.

    Pages poll several times a second; reading this instead of SQLite keeps ticks cheap.
    Records are copied once on the way in and never changed afterwards; a snapshot gets new
    lists of those same records (copying every record of a long run at each view read was
    most of a snapshot's cost), so a snapshot never changes under its reader, and its
    readers must not change the records either. On (re)start it loads the epochs already in
    the store, so a resumed run's curves start where the checkpoint left them. ``steps`` is
    a thinned per-step curve of this attempt (memory only: the store keeps epochs), so a
    live chart has points long before the first epoch ends.

    ``version`` counts the changes a page draws (a stage, an epoch, a re-quantization, the
    end, and step progress at most once per ``STEP_VERSION_S``): a viewer whose version is
    unchanged has nothing to redraw. Every hook goes through :meth:`apply` with plain
    values, so a worker in a child process can feed the same buffer from the messages it
    sends (see ``runs.worker_process``).
    """

    STEP_POINTS = 256
    STEP_VERSION_S = 1.0  # step progress bumps the version at most this often

    def __init__(self, store: RunStore | None = None, run_id: str = "", max_events: int = 200):
        self.store, self.run_id = store, run_id
        self._lock = threading.Lock()
        self._epochs: list[dict] = []
        self._events: deque[dict] = deque(maxlen=max_events)
        self._layers: list[dict] = []
        self._step: dict | None = None
        # Per-step curve of this attempt, thinned to at most 2 * STEP_POINTS points: when full,
        # every other point goes and the stride doubles (evenly spaced, cheap to copy).
        self._steps: list[dict] = []
        self._stride = 1
        self._epoch_s: float | None = None  # moving average of real (not reused) epochs
        self._version = 0
        self._step_bumped = float("-inf")  # monotonic time of the last bump made by a step
        # Within-epoch progress from the last step: an epoch of a real dataset takes tens of
        # seconds on a CPU, so epoch-level progress alone would leave the bar still that long.
        self._frac, self._epoch_t0 = 0.0, time.monotonic()
        self._state = {"stage": None, "epoch": 0, "epochs_in_stage": 0, "global_epoch": 0,
                       "total_epochs": 0, "float_accuracy": None, "started_at": time.time(),
                       "updated_at": time.time(), "epoch_in_progress": None,
                       "step_in_epoch": None, "steps_in_epoch": None}  # fmt: skip

    @property
    def version(self) -> int:
        return self._version  # an int read is atomic; no lock needed

    def on_run_start(self, trainer) -> None:
        self.apply("start", trainer_state(trainer))

    def on_stage_start(self, trainer, stage) -> None:
        self.apply("stage", trainer_state(trainer))

    def on_step_end(self, trainer, step) -> None:
        self.apply("step", None, step=step, epoch=trainer.epoch)

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
                self._add_step(payload["step"], payload.get("epoch"))
                return
            if kind == "start":
                self._epochs = payload["done"]
                self._state["started_at"] = time.time()
            elif kind == "epoch":
                self._add_epoch(payload["record"], payload["layers"])
                self._frac = 0.0
                self._state.update(epoch_in_progress=None, step_in_epoch=None)
            elif kind == "requantize":
                self._events.extend(dict(e) for e in payload["events"])
            if state is not None:
                self._state.update(state, updated_at=time.time())
            self._version += 1

    def _add_step(self, step: dict, epoch: int | None) -> None:  # lock held
        """Keep the last step, thin the step curve, track progress within the epoch; bump
        the version at most once per ``STEP_VERSION_S`` so pages redraw progress, not
        every step."""
        self._step = dict(step)
        now = time.time()
        self._state["updated_at"] = now
        if step.get("step", 0) % self._stride == 0:
            point = {k: step.get(k) for k in _STEP_KEYS}
            point["time"] = now
            self._steps.append(point)
            if len(self._steps) >= 2 * self.STEP_POINTS:
                self._steps, self._stride = self._steps[1::2], self._stride * 2
        batch, batches = step.get("batch"), step.get("batches")
        if batch and batches:
            if batch == 1:  # the epoch began when this first step did
                self._epoch_t0 = time.monotonic() - (step.get("step_ms") or 0.0) / 1000
            self._frac = min(batch / batches, 1.0)
            self._state.update(epoch_in_progress=epoch, step_in_epoch=batch,
                               steps_in_epoch=batches)  # fmt: skip
        mono = time.monotonic()
        if mono - self._step_bumped >= self.STEP_VERSION_S:
            self._step_bumped = mono
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
        """A consistent copy: a new dict and new lists, safe to keep. The records in the
        lists (epochs, layers, events, steps) are the buffer's own, never changed after
        they were added: read them, do not change them."""
        with self._lock:
            snap = dict(self._state)
            snap["epochs"] = list(self._epochs)
            snap["layers"] = list(self._layers)  # replaced as a whole at each epoch
            snap["events"] = list(self._events)
            snap["step"] = self._step
            snap["version"] = self._version
            snap["steps"] = list(self._steps)
            epoch_s, frac, t0 = self._epoch_s, self._frac, self._epoch_t0
        total, done = snap["total_epochs"], snap["global_epoch"] + frac
        snap["progress"] = min(done / total, 1.0) if total else 0.0
        if epoch_s is None and frac > 0:  # first epoch: extrapolate from its steps so far
            epoch_s = (time.monotonic() - t0) / frac
        snap["epoch_s"] = epoch_s
        snap["eta_seconds"] = None if epoch_s is None else epoch_s * max(total - done, 0)
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

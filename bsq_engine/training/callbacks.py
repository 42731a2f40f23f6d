"""Callbacks: everything around the training loop that is not training.

A callback overrides any of the hooks below; the trainer calls them in order. Records
passed to hooks have the shapes documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from pathlib import Path

from bsq_engine.training.checkpoint import save_checkpoint

__all__ = [
    "Callback",
    "CallbackList",
    "CheckpointCallback",
    "ProgressBarCallback",
    "StepSeriesCallback",
    "StoreCallback",
]

log = logging.getLogger(__name__)


class Callback:
    """Base class: every hook is a no-op."""

    def on_run_start(self, trainer) -> None: ...

    def on_stage_start(self, trainer, stage) -> None: ...

    def on_step_end(self, trainer, step: dict) -> None: ...

    def on_epoch_end(self, trainer, record: dict, layers: list[dict] | None) -> None: ...

    def on_requantize(self, trainer, events: list[dict]) -> None: ...

    def on_stage_end(self, trainer, stage) -> None: ...

    def on_finish(self, trainer, summary: dict) -> None: ...

    def on_teardown(self, trainer) -> None:
        """Always last, whether the run finished, stopped or failed: release resources
        (close a progress bar, a file) here rather than in ``on_finish``."""


class CallbackList:
    """Fans a hook out to a list of callbacks, in order (minGPT's two-line trigger)."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def trigger(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


class ProgressBarCallback(Callback):
    """A tqdm bar over all planned epochs: stage, epoch, loss, accuracy, average bits."""

    def __init__(self, file=None, disable: bool = False):
        self.file, self.disable, self.bar = file or sys.stderr, disable, None

    def on_run_start(self, trainer) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.config.total_epochs, initial=trainer.global_epoch, unit="epoch",
            file=self.file, disable=self.disable, dynamic_ncols=True,
        )  # fmt: skip

    def on_epoch_end(self, trainer, record, layers) -> None:
        bits = record.get("avg_bits")
        self.bar.set_description(f"{record['stage']} {record['epoch']}")
        postfix = {"loss": f"{record['train_loss']:.3f}", "acc": f"{record['test_acc']:.3f}"}
        if bits is not None:
            postfix["bits"] = f"{bits:.2f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.n = record["global_epoch"]
        self.bar.refresh()

    def on_requantize(self, trainer, events) -> None:
        for event in events:
            self.bar.write(f"  {event['message']}", file=self.file)

    def on_teardown(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class CheckpointCallback(Callback):
    """Atomic checkpoints at every re-quantization, every stage end, and every few minutes.

    Written at epoch ends only, so a checkpoint always marks a clean resume position.
    """

    def __init__(self, path: str | Path, every_seconds: float = 180.0):
        self.path, self.every_seconds = Path(path), every_seconds
        self._last, self._requantized = time.monotonic(), False

    def on_requantize(self, trainer, events) -> None:
        self._requantized = True

    def on_epoch_end(self, trainer, record, layers) -> None:
        if record.get("reused"):
            return
        stage_done = record["epoch"] == trainer.config.epochs_of(trainer.stage)
        overdue = time.monotonic() - self._last >= self.every_seconds
        if self._requantized or stage_done or overdue:
            self.save(trainer)

    def on_finish(self, trainer, summary) -> None:
        self.save(trainer)  # the final model, in DONE stage: what export reads

    def save(self, trainer) -> None:
        save_checkpoint(self.path, *trainer.checkpoint_state())
        self._last, self._requantized = time.monotonic(), False


class StoreCallback(Callback):
    """Persists a run into a ``RunStore``: every epoch, layer snapshot and event, and a
    heartbeat every ``beat_seconds`` of training so a dead process is recognised."""

    def __init__(self, store, run_id: str, beat_seconds: float = 2.0):
        self.store, self.run_id, self.beat_seconds = store, run_id, beat_seconds
        self._last_beat = time.monotonic()

    def on_run_start(self, trainer) -> None:
        from bsq_engine.training.distributed import worker_label

        thread = threading.current_thread()  # the job manager names its threads bsq-worker-N
        local = "cli" if thread is threading.main_thread() else thread.name
        self.store.set_placement(
            self.run_id, device=str(trainer.device), world_size=trainer.dist.world_size,
            worker=worker_label(trainer.dist, trainer.device, local),
        )  # fmt: skip

    def on_step_end(self, trainer, step) -> None:
        if time.monotonic() - self._last_beat >= self.beat_seconds:
            self._beat()

    def _beat(self) -> None:
        self.store.heartbeat(self.run_id)
        self._last_beat = time.monotonic()

    def on_epoch_end(self, trainer, record, layers) -> None:
        self.store.add_epochs(self.run_id, [record])
        if layers is not None:
            self.store.add_layers(
                self.run_id, record["stage"], record["epoch"], record["global_epoch"], layers
            )

    def on_requantize(self, trainer, events) -> None:
        if events:
            self.store.add_events(self.run_id, events)

    def on_finish(self, trainer, summary) -> None:
        self._beat()


class StepSeriesCallback(Callback):
    """Persists a bounded per-step series (``RunStore.add_step_points``) so finished runs keep
    per-step curves (TensorBoard habits) without a row per step.

    Every ``stride``-th global step is kept, ``stride`` chosen at run start so the whole run
    gives at most about ``max_points`` points (plus each epoch's last step): a deterministic
    choice, so a resumed run re-writes the same steps (upserts by step: no duplicates).
    Points are buffered and written at most every ``flush_s`` seconds, at each epoch's end
    and when the run ends however it ends. ``wall`` is seconds of training so far: the
    stored epochs' ``seconds`` (as the epoch curves' wall-clock axis counts them) plus the
    time into the current epoch, so a resume continues the axis instead of counting the gap.
    """

    def __init__(self, store, run_id: str, max_points: int = 2000, flush_s: float = 2.0):
        self.store, self.run_id = store, run_id
        self.max_points, self.flush_s = max_points, flush_s
        self.stride, self._buffer, self._flushed = 1, [], time.monotonic()
        self._wall0, self._epoch_t0 = 0.0, time.monotonic()

    def on_run_start(self, trainer) -> None:
        total = trainer.steps_per_epoch * trainer.config.total_epochs
        self.stride = max(1, math.ceil(total / self.max_points))
        done = self.store.epochs(self.run_id)  # a resume: epochs the checkpoint covers
        self._wall0 = sum(r["seconds"] or 0.0 for r in done)

    def on_step_end(self, trainer, step) -> None:
        batch, batches = step.get("batch"), step.get("batches") or 1
        now = time.monotonic()
        if batch == 1:  # the epoch began when its first step did
            self._epoch_t0 = now - (step.get("step_ms") or 0.0) / 1000
        if step["step"] % self.stride and batch != batches:
            return
        point = {k: step.get(k) for k in ("stage", "epoch", "step", "loss", "ce", "reg", "lr")}
        point.update(batch_acc=step.get("batch_acc"), time=time.time(),
                     epoch_frac=trainer.global_epoch - 1 + (batch or 0) / batches,
                     wall=self._wall0 + now - self._epoch_t0)  # fmt: skip
        self._buffer.append(point)
        if now - self._flushed >= self.flush_s:
            self._flush()

    def on_epoch_end(self, trainer, record, layers) -> None:
        self._wall0 += record.get("seconds") or 0.0
        self._flush()

    def on_teardown(self, trainer) -> None:
        self._flush()  # stopped or failed: the steps so far (a resume re-writes its own)

    def _flush(self) -> None:
        points, self._buffer, self._flushed = self._buffer, [], time.monotonic()
        try:
            self.store.add_step_points(self.run_id, points)
        except Exception:  # a curve must never fail the run; epochs are stored anyway
            log.warning("could not store %d step points of run %s", len(points), self.run_id,
                        exc_info=True)  # fmt: skip

"""Callbacks: everything around the training loop that is not training.

A callback overrides any of the hooks below; the trainer calls them in order. Records
passed to hooks have the shapes documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

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
    "StoreCallback",
]


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

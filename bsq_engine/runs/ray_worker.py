"""Both ends of a Ray run's message stream, without importing Ray.

Worker side: :func:`train_task` (the body of the Ray generator task) trains one run in a
thread and yields its messages. Driver side: :func:`apply` writes one message into the
driver's store. Messages are plain tuples of JSON-like values:

    ("start", {"device", "worker"})     the task runs; where
    ("epoch", record, layers | None)    one epoch record and its layer snapshot
    ("events", [event, ...])            precision changes of one re-quantization
    ("stage_end", "pretrain" | ...)     a stage ended (the float model is now cached)
    ("end", status, summary | error)    finished / stopped / failed, the task's last message
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import traceback
from pathlib import Path

from bsq_engine.data import DatasetUnavailable
from bsq_engine.runs import paths
from bsq_engine.runs.status import RunStatus
from bsq_engine.training.callbacks import Callback, CheckpointCallback
from bsq_engine.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bsq_engine.training.config import RunConfig
from bsq_engine.training.trainer import DivergenceError, RunStopped, Trainer

__all__ = ["apply", "backfill", "checkpoint_in", "train_task"]


def checkpoint_in(storage: str | Path, run_id: str) -> Path:
    """The run's checkpoint under ``storage``: the layout of a store's run folders
    (``paths.checkpoint_path``, tested equal), so storage == BSQ_HOME needs no link."""
    return paths.run_folder(storage, run_id) / "checkpoint.safetensors"


class _Stream(Callback):
    """Turns trainer hooks into messages on a queue (the generator yields them). Steps are
    not sent: the store keeps epochs, and the driver's own heartbeat proves it alive."""

    def __init__(self, out: queue.Queue):
        self.out = out

    def on_epoch_end(self, trainer, record, layers) -> None:
        self.out.put(("epoch", dict(record), layers))

    def on_requantize(self, trainer, events) -> None:
        if events:
            self.out.put(("events", list(events)))

    def on_stage_end(self, trainer, stage) -> None:
        self.out.put(("stage_end", getattr(stage, "value", str(stage))))


class _Checkpoint(CheckpointCallback):
    """Checkpoints that also carry the messages streamed since the previous one.

    A worker killed right after a checkpoint may take the last epoch's message with it (it
    was still in flight to the driver); the driver then replays these from the checkpoint
    (:func:`backfill`), so the store always covers what a resume skips. Must run after
    ``_Stream`` in the callback list, so an epoch is queued before its checkpoint exists.
    """

    def __init__(self, path):
        super().__init__(path)
        self.since: list[tuple] = []

    def on_requantize(self, trainer, events) -> None:
        super().on_requantize(trainer, events)
        self.since.append(("events", list(events)))

    def on_epoch_end(self, trainer, record, layers) -> None:
        self.since.append(("epoch", dict(record), layers))
        super().on_epoch_end(trainer, record, layers)

    def save(self, trainer) -> None:
        tensors, meta = trainer.checkpoint_state()
        save_checkpoint(self.path, tensors, {**meta, "streamed": self.since})
        self._last, self._requantized, self.since = time.monotonic(), False, []


def backfill(store, run_id: str, checkpoint_file: Path) -> int:
    """Replay the messages a checkpoint carries (upserts: those already stored are
    rewritten unchanged); returns how many. A missing or unreadable file replays none."""
    try:
        messages = load_checkpoint(checkpoint_file)[1].get("streamed", [])
    except CheckpointError:
        return 0
    for message in messages:
        apply(store, run_id, tuple(message))
    return len(messages)


def _train(trainer: Trainer, out: queue.Queue) -> None:
    """Thread body: the whole pipeline, then exactly one ``end`` message."""
    try:
        out.put(("end", RunStatus.FINISHED.value, trainer.run()))
    except RunStopped:
        out.put(("end", RunStatus.STOPPED.value, None))
    except (DivergenceError, DatasetUnavailable, ValueError) as exc:  # written for users
        out.put(("end", RunStatus.FAILED.value, str(exc)))
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc))[-4000:]
        message = f"Unexpected error on the Ray worker: {exc!r}\n{detail}"
        out.put(("end", RunStatus.FAILED.value, message))


def train_task(run_id: str, config: dict, storage: str):
    """Ray generator task: train ``run_id`` here, yield its messages to the driver."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))  # the CPUs Ray granted this task, no more
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    trainer = Trainer(
        RunConfig.from_dict(config),
        [_Stream(out), _Checkpoint(checkpoint_in(storage, run_id))],
        run_id=run_id, stop_event=stop, cache_dir=paths.cache_dir(storage),
    )  # fmt: skip
    where = f"ray {socket.gethostname()} pid {os.getpid()}"
    yield ("start", {"device": str(trainer.device), "worker": where})
    thread = threading.Thread(target=_train, args=(trainer, out), daemon=True)
    thread.start()
    try:
        while True:
            message = out.get()
            yield message
            if message[0] == "end":
                return
    finally:  # cancelled (ray.cancel raises KeyboardInterrupt here): stop at the next step
        stop.set()
        thread.join(timeout=30)


def apply(store, run_id: str, message: tuple) -> None:
    """Write one streamed message into the driver's store (as ``StoreCallback`` would)."""
    kind = message[0]
    if kind == "start":
        store.set_status(run_id, RunStatus.RUNNING)  # the driver owns the row: its pid, heartbeat
        where = message[1]
        store.set_placement(run_id, device=where["device"], worker=where["worker"])
    elif kind == "epoch":
        record, layers = message[1], message[2]
        store.add_epochs(run_id, [record])
        if layers is not None:
            store.add_layers(
                run_id, record["stage"], record["epoch"], record["global_epoch"], layers
            )
    elif kind == "events":
        store.add_events(run_id, message[1])
    elif kind == "end":
        status, payload = message[1], message[2]
        if status == RunStatus.FINISHED:
            store.finish(run_id, payload)
            return
        if payload and "\n" in payload:  # a traceback: to a file, one line in the table
            path = paths.error_log_path(store, run_id)
            path.write_text(payload)
            payload = f"{payload.splitlines()[0]} Details in {path}"
        store.set_status(run_id, status, error=payload)

"""One run, end to end, persisted: the single place that turns a stored config into a result.

Both the job manager (a worker thread) and the CLI (the main thread) call
:func:`execute_run`, so a run behaves the same however it was started: same callbacks, same
checkpoint file, same float-model cache, same mapping of exceptions to a final status.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

from bsq_engine.data import DatasetUnavailable, get_dataset_info
from bsq_engine.runs.paths import cache_dir, checkpoint_path, error_log_path, run_folder
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import (
    Callback,
    CheckpointCallback,
    StepSeriesCallback,
    StoreCallback,
)
from bsq_engine.training.checkpoint import (
    CheckpointError,
    check_against_config,
    load_run_checkpoint,
)
from bsq_engine.training.config import RunConfig
from bsq_engine.training.run_model import model_from_checkpoint, model_shape
from bsq_engine.training.trainer import DivergenceError, RunStopped, Trainer

__all__ = ["ResumeError", "StopSignal", "execute_run", "load_resume_point"]

log = logging.getLogger(__name__)

# Errors whose message is already written for the user (what went wrong, what to do).
_USER_ERRORS = (DivergenceError, DatasetUnavailable, ValueError)


class StopSignal(threading.Event):
    """A stop request that remembers who asked: the user (Stop button, Ctrl+C) or the server
    shutting down. The run's final status and message differ: a user stop is ``stopped``, a
    shutdown is ``interrupted`` (nobody chose it; resume continues from the checkpoint)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_shutdown = False

    def request(self, *, shutdown: bool = False) -> None:
        self.by_shutdown = self.by_shutdown or shutdown
        self.set()


class ResumeError(ValueError):
    """A run cannot be resumed (unreadable checkpoint, bad config); nothing was changed."""


def load_resume_point(store: RunStore, run_id: str) -> tuple[RunConfig, tuple | None]:
    """``(config, checkpoint)`` to resume from; ``checkpoint`` is None when none exists yet.

    Raises :class:`ResumeError` (run untouched) when the config or the checkpoint cannot be
    read; the job manager calls this before queueing a resume so the user hears it at once.
    """
    try:
        config = RunConfig.from_dict(store.get_run(run_id)["config"])
    except ValueError as exc:
        raise ResumeError(f"cannot resume: the stored config is invalid ({exc})") from exc
    folder = run_folder(store.home, run_id)  # checkpoint_path() would re-create it
    if not folder.is_dir() and store.epochs(run_id):
        raise ResumeError(
            f"cannot resume: the run's folder {folder} is gone, and its checkpoint with it. "
            "Its stored metrics are kept; train a new run with the same settings (`show` "
            "lists them), or delete this one."
        )
    path = checkpoint_path(store, run_id)
    if not path.is_file():
        return config, None
    try:
        checkpoint = load_run_checkpoint(path)
        check_against_config(config, checkpoint[1])
        _check_shapes(config, checkpoint)
    except CheckpointError as exc:
        raise ResumeError(f"cannot resume: {exc}") from exc
    return config, checkpoint


def _check_shapes(config: RunConfig, checkpoint: tuple[dict, dict]) -> None:
    """Rebuild the model from the checkpoint once, before the run's status or metrics are
    touched, so wrong tensor shapes are refused instead of failing the run mid-way. A
    user's image folder only knows its classes once loaded; the trainer checks those."""
    info = get_dataset_info(config.dataset)
    if info.num_classes < 1:
        return
    try:
        model_from_checkpoint(config, model_shape(info), *checkpoint)
    except (RuntimeError, ValueError, KeyError) as exc:  # load_state_dict: size mismatch
        first = str(exc).strip().splitlines()[0][:300]
        raise CheckpointError(
            f"The checkpoint's tensors do not fit a {config.model} model ({first}). Nothing "
            "was changed; start the run again."
        ) from exc


class StopRequestCallback(Callback):
    """Stops the run when another process asked through the store (``RunStore.request_stop``:
    ``python -m bsq_engine stop``, or the app for a run this process trains). One indexed
    read per ``every_s`` seconds of steps, so a stop lands within about that time."""

    def __init__(self, store: RunStore, run_id: str, every_s: float = 1.0):
        self.store, self.run_id, self.every_s = store, run_id, every_s
        self._last = 0.0

    def on_step_end(self, trainer, step) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        try:
            asked = self.store.stop_requested(self.run_id)
        except Exception:  # a busy or briefly locked store must not fail the run
            return
        if asked:
            trainer.stop_event.set()


def _truncate_to(store: RunStore, run_id: str, config: RunConfig, checkpoint) -> None:
    """Drop metric rows the checkpoint does not cover, so the resumed run re-writes them."""
    stages = [s.value for s in config.stages]
    if checkpoint is None:  # nothing saved yet: start over, so forget everything
        store.truncate_after(run_id, stages, stages[0], 0)
        return
    meta = checkpoint[1]
    if meta["stage"] in stages:
        store.truncate_after(run_id, stages, meta["stage"], meta["epoch"])
    else:  # DONE: the whole pipeline is covered
        store.truncate_after(run_id, stages, stages[-1], config.epochs_of(config.stages[-1]))


def execute_run(
    store: RunStore, run_id: str, *, stop_event=None, callbacks=(), resume: bool = False
) -> dict:
    """Train the stored run ``run_id`` to its end and record the outcome; return the run dict.

    ``resume=True`` continues from the run's last checkpoint after dropping the metric rows
    written after it (no duplicates, no stale rows). A run stopped before its first
    checkpoint has none: it then starts over from scratch, its old rows all dropped.

    Outcomes: finished (summary kept), ``stopped`` (the stop event was set), ``failed``
    with a readable message. No training error escapes; only a run that cannot start
    raises: :class:`ResumeError` for an unreadable checkpoint, ValueError for a run that is
    finished or already running. In both cases the run is left exactly as it was.
    """
    checkpoint, trainer = None, None
    if resume:
        config, checkpoint = load_resume_point(store, run_id)
        store.set_status(run_id, RunStatus.RUNNING)
        _truncate_to(store, run_id, config, checkpoint)
    else:
        store.set_status(run_id, RunStatus.RUNNING)  # records pid, host and a first heartbeat
    try:
        config = RunConfig.from_dict(store.get_run(run_id)["config"])
        trainer = Trainer(
            config,
            [
                StoreCallback(store, run_id),
                StepSeriesCallback(store, run_id),
                CheckpointCallback(checkpoint_path(store, run_id)),
                StopRequestCallback(store, run_id),
                *callbacks,
            ],
            run_id=run_id,
            stop_event=stop_event,
            cache_dir=cache_dir(store.home),
        )
        summary = trainer.run(resume=checkpoint)
    except RunStopped:
        _settle(store, run_id, *_stop_outcome(stop_event, trainer))
    except _USER_ERRORS as exc:
        _settle(store, run_id, RunStatus.FAILED, str(exc))
    except Exception as exc:
        _settle(store, run_id, RunStatus.FAILED, _log_unexpected(store, run_id, exc))
    else:
        _settle(store, run_id, RunStatus.FINISHED, summary=summary)
    return store.get_run(run_id)


def _stop_outcome(stop_event, trainer) -> tuple[RunStatus, str]:
    """(status, message) of a run that stopped between two steps, saying who stopped it."""
    where = f" at {trainer.stage.value} epoch {trainer.epoch}" if trainer is not None else ""
    if getattr(stop_event, "by_shutdown", False):
        return RunStatus.INTERRUPTED, f"Interrupted by server shutdown{where}."
    return RunStatus.STOPPED, f"Stopped by the user{where}."


def _log_unexpected(store: RunStore, run_id: str, exc: Exception) -> str:
    """Write the traceback next to the run; return the one-line message users see."""
    path = error_log_path(store, run_id)
    try:
        path.write_text("".join(traceback.format_exception(exc)))
        where = f"Details in {path}"
    except OSError as write_error:  # a full disk must not hide the original error
        where = f"(could not write {path}: {write_error})"
    return f"Unexpected error: {type(exc).__name__}: {exc}. {where}"


def _settle(store: RunStore, run_id: str, status: str, error=None, summary=None) -> None:
    """Record the final status; a run already ended elsewhere (e.g. marked stopped by a
    shutdown that gave up waiting) keeps that status, and we only log the conflict."""
    try:
        if status == RunStatus.FINISHED:
            store.finish(run_id, summary)
        else:
            store.set_status(run_id, status, error=error)
    except Exception:
        log.warning("could not mark run %s %s", run_id, status, exc_info=True)

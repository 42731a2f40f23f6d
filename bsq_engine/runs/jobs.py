"""Process-wide job manager: runs train in daemon worker threads, pages only read.

A FIFO queue feeds ``max_concurrent`` long-lived worker threads; each job runs through
:func:`runner.execute_run`, so the store and checkpoints look the same as a CLI run. While a
job trains, a :class:`~bsq_engine.runs.live_buffer.LiveBufferCallback` keeps its state in
memory, and ``snapshot()`` hands pages a copy without touching SQLite. Never imports
Streamlit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bsq_engine.runs import runner
from bsq_engine.runs.live_buffer import LiveBufferCallback
from bsq_engine.runs.status import ACTIVE, RESUMABLE, RunStatus
from bsq_engine.runs.store import RunStore, default_home
from bsq_engine.training.config import RunConfig

__all__ = [
    "TORCH_THREADS_ENV",
    "JobManager",
    "LiveBufferCallback",
    "get_manager",
    "release_manager",
]

TORCH_THREADS_ENV = "BSQ_TORCH_THREADS"


def default_torch_threads() -> int | None:
    """Intra-op threads for training: ``$BSQ_TORCH_THREADS``, else one core left free on
    small machines, else None (keep torch's own choice).

    ``torch.set_num_threads`` is process-wide, and the Streamlit server shares the process
    with the workers: on a 2-core laptop, training on both cores starves the page's script
    runs and websocket (ticks arrive late, clicks feel dead). Leaving one core free costs
    little because small models barely scale past one thread
    (``benchmarks/snapshot_and_store.py --threads-compare`` measures both sides).
    """
    raw = os.environ.get(TORCH_THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{TORCH_THREADS_ENV} must be a whole number >= 1, got {raw!r}.")
        return int(raw)
    cores = os.cpu_count() or 1
    return max(1, cores - 1) if cores <= 4 else None


@dataclass
class _Job:
    run_id: str
    resume: bool
    live: LiveBufferCallback
    callbacks: tuple = ()
    stop_event: threading.Event = field(default_factory=threading.Event)
    running: bool = False


class JobManager:
    """Queue, run, stop and resume runs of one store; safe to call from any thread."""

    def __init__(self, home=None, max_concurrent: int | None = None, torch_threads=None):
        self.store = RunStore(home)
        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.max_concurrent = max_concurrent or max(1, cuda)  # one per GPU; CPU: one
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}.")
        threads = torch_threads or default_torch_threads()
        if threads:
            torch.set_num_threads(threads)
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._jobs: dict[str, _Job] = {}  # queued + running, owned by this manager
        self._workers: list[threading.Thread] = []
        self._closed = False

    # -- public API ---------------------------------------------------------------------

    def start(self, config, *, name=None, sweep_id=None, callbacks=()) -> str:
        """Queue a new run and return its id at once. ``callbacks`` run in the worker
        thread next to the store's (e.g. a progress bar for the CLI)."""
        # Round-trip through a dict: validates before anything is stored, and accepts a
        # RunConfig whose class was reloaded by Streamlit's file watcher (isinstance fails).
        config = RunConfig.from_dict(config if isinstance(config, dict) else config.to_dict())
        run_id = self.store.create_run(
            config.to_dict(), name=name or config.name, sweep_id=sweep_id
        )
        self._enqueue(run_id, False, callbacks)
        return run_id

    def stop(self, run_id: str) -> None:
        """Cooperative stop: the trainer raises ``RunStopped`` before its next step. A run
        still queued is marked stopped directly; an ended run is left alone."""
        with self._cond:
            job = self._jobs.get(run_id)
            if job is not None and job.running:
                job.stop_event.set()
                return
            if job is not None:
                self._queue.remove(job)
                del self._jobs[run_id]
                self._cond.notify_all()
        status = self.store.get_run(run_id)["status"]
        if status == RunStatus.QUEUED:  # ours, or left queued by a process that died
            self.store.set_status(run_id, RunStatus.STOPPED, error="Stopped before it started.")
        elif status == RunStatus.RUNNING:
            raise ValueError(
                f"Run {run_id!r} is training in another process; stop it there (Ctrl+C)."
            )

    def resume(self, run_id: str, *, callbacks=()) -> None:
        """Queue an interrupted, stopped or failed run to continue from its last checkpoint.

        The checkpoint is read now, so a corrupt one raises ``runner.ResumeError`` here and
        the run keeps its status.
        """
        with self._cond:
            if run_id in self._jobs:
                raise ValueError(f"Run {run_id!r} is already queued or running.")
        status = self.store.get_run(run_id)["status"]
        if status not in RESUMABLE:
            raise ValueError(
                f"Run {run_id!r} is {status}; only interrupted, stopped or failed runs resume."
            )
        runner.load_resume_point(self.store, run_id)
        self.store.set_status(run_id, RunStatus.QUEUED)
        self._enqueue(run_id, True, callbacks)

    def status(self, run_id: str) -> str:
        return self.store.get_run(run_id)["status"]

    def snapshot(self, run_id: str) -> dict | None:
        """Live state of a run queued or running here (plain python copies), else None."""
        with self._cond:
            job = self._jobs.get(run_id)
            if job is None:
                return None
            state, live = (RunStatus.RUNNING if job.running else RunStatus.QUEUED), job.live
        snap = live.snapshot()  # every job has its buffer from the moment it is queued
        snap.update(run_id=run_id, status=state)
        return snap

    def active_runs(self) -> list[str]:
        """Queued and running runs of this manager, running first, then in queue order."""
        with self._cond:
            running = [r for r, j in self._jobs.items() if j.running]
            return running + [j.run_id for j in self._queue]

    def wait(self, run_id: str, timeout: float | None = None) -> str:
        """Block until the run is neither queued nor running (or ``timeout``); its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while run_id in self._jobs:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        status = self.status(run_id)
        while status in ACTIVE and run_id not in self._jobs:  # owned by another process
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.2)
            status = self.status(run_id)
        return status

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job, join the workers, mark what is left ``stopped``. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            for job in queued:
                del self._jobs[job.run_id]
            for job in self._jobs.values():
                job.stop_event.set()
            self._cond.notify_all()
        for job in queued:
            self._end(
                job.run_id, RunStatus.STOPPED, "Stopped before it started: the app shut down."
            )
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            stuck = list(self._jobs)
        for run_id in stuck:  # a worker that did not reach its next step in time
            self._end(run_id, RunStatus.STOPPED, "Stopped: the app shut down.")

    # -- internals ----------------------------------------------------------------------

    def _enqueue(self, run_id: str, resume: bool, callbacks) -> None:
        job = _Job(run_id, resume, LiveBufferCallback(self.store, run_id), tuple(callbacks))
        with self._cond:
            if self._closed:
                self._end(run_id, RunStatus.STOPPED, "Not started: the job manager was shut down.")
                raise RuntimeError("This job manager was shut down; create a new one.")
            self._jobs[job.run_id] = job
            self._queue.append(job)
            while len(self._workers) < self.max_concurrent:  # started lazily, kept for life
                index = len(self._workers)
                worker = threading.Thread(
                    target=self._work, args=(index,), name=f"bsq-worker-{index}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
            self._cond.notify_all()

    def _take(self) -> _Job | None:
        """The next queued job, marked running under the lock (None once shut down)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = self._queue.popleft()
            job.running = True
            return job

    def _work(self, index: int) -> None:
        if torch.cuda.is_available():  # the current CUDA device is per thread
            torch.cuda.set_device(index % torch.cuda.device_count())
        while (job := self._take()) is not None:
            try:
                runner.execute_run(
                    self.store, job.run_id, stop_event=job.stop_event,
                    callbacks=(job.live, *job.callbacks), resume=job.resume,
                )  # fmt: skip
            except Exception as exc:  # could not even start (e.g. checkpoint broke since)
                self._end(job.run_id, RunStatus.FAILED, str(exc))
            finally:
                with self._cond:
                    self._jobs.pop(job.run_id, None)
                    self._cond.notify_all()

    def _end(self, run_id: str, status: str, message: str) -> None:
        """Best effort: at exit or after a worker error, one run must not block the others."""
        with contextlib.suppress(Exception):
            if self.store.get_run(run_id)["status"] in ACTIVE:
                self.store.set_status(run_id, status, error=message)


_MANAGERS: dict[str, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def get_manager(home=None) -> JobManager:
    """The one manager of ``home`` (default ``$BSQ_HOME``) in this process."""
    key = str(Path(home if home is not None else default_home()).expanduser().resolve())
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(key)
        if manager is None or manager._closed:
            if not _MANAGERS:
                atexit.register(_shutdown_all)
            manager = _MANAGERS[key] = JobManager(key)
        return manager


def release_manager(home, timeout: float = 10.0) -> None:
    """Shut down the manager of ``home`` if this process made one (tests, a closing app);
    the next :func:`get_manager` makes a fresh one."""
    key = str(Path(home).expanduser().resolve())
    with _MANAGERS_LOCK:
        manager = _MANAGERS.pop(key, None)
    if manager is not None:
        manager.shutdown(timeout)


def _shutdown_all() -> None:
    """At exit: stop and join every worker so runs end ``stopped``, not ``interrupted``."""
    with _MANAGERS_LOCK:
        managers = list(_MANAGERS.values())
    for manager in managers:
        manager.shutdown()

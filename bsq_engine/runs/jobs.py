"""Process-wide job manager: runs train in daemon worker threads, pages only read.

A FIFO queue feeds ``max_concurrent`` long-lived worker threads; each job runs through
:func:`runner.execute_run`, so the store and checkpoints look the same as a CLI run. With
``worker="process"`` (the app's default, see ``runs.settings``) a worker thread hands its
run to a child process instead (``runs.worker_process``) and only pumps its messages. While a
job trains, a :class:`~bsq_engine.runs.live_buffer.LiveBufferCallback` keeps its state in
memory: ``snapshot()`` hands pages a copy without touching SQLite, ``version()`` says cheaply
whether anything new arrived. Never imports Streamlit.
"""

from __future__ import annotations

import atexit
import contextlib
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bsq_engine.runs import runner, worker_process
from bsq_engine.runs.live_buffer import LiveBufferCallback
from bsq_engine.runs.queueing import QueueFull, check_room, estimate_queue
from bsq_engine.runs.settings import (
    TORCH_THREADS_ENV,
    WORKER_KINDS,
    ServerSettings,
    default_torch_threads,
)
from bsq_engine.runs.status import ACTIVE, RESUMABLE, RunStatus
from bsq_engine.runs.store import RunStore, StoreError, default_home
from bsq_engine.training.config import RunConfig

__all__ = ["TORCH_THREADS_ENV", "JobManager", "LiveBufferCallback", "QueueFull", "get_manager",
           "release_manager"]  # fmt: skip


@dataclass
class _Job:
    run_id: str
    resume: bool
    live: LiveBufferCallback
    callbacks: tuple = ()
    stop_event: runner.StopSignal = field(default_factory=runner.StopSignal)
    running: bool = False


class JobManager:
    """Queue, run, stop and resume runs of one store; safe to call from any thread.

    ``worker``: "thread" trains in this process; "process" in one child process per run.
    ``max_queued_per_owner``: how many not-yet-running runs one owner may queue (None: no
    cap); runs started without an owner (tests, the CLI's sweeps) are never capped.
    ``prestart``: with process workers, keep one child ready with torch imported (a
    ``worker_process.WarmChild``), so a Start does not wait seconds for the imports.
    """

    def __init__(self, home=None, max_concurrent: int | None = None, torch_threads=None, *,
                 worker: str = "thread", max_queued_per_owner: int | None = None,
                 prestart: bool = False):  # fmt: skip
        self.store = RunStore(home)
        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.max_concurrent = max_concurrent or max(1, cuda)  # one per GPU; CPU: one
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}.")
        if worker not in WORKER_KINDS:
            raise ValueError(f"worker must be one of {WORKER_KINDS}, got {worker!r}.")
        self.worker, self.max_queued_per_owner = worker, max_queued_per_owner
        self.torch_threads = threads = torch_threads or default_torch_threads()
        if threads and worker == "thread":  # a child process sets its own
            torch.set_num_threads(threads)
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._jobs: dict[str, _Job] = {}  # queued + running, owned by this manager
        self._workers: list[threading.Thread] = []
        self._closed = False
        self._prestart, self._warm = prestart and worker == "process", None  # a WarmChild
        self._keep_warm()

    # -- public API ---------------------------------------------------------------------

    def start(self, config, *, name=None, sweep_id=None, callbacks=(), owner=None) -> str:
        """Queue a new run and return its id at once. ``callbacks`` run in the worker
        thread next to the store's (e.g. a progress bar for the CLI; thread workers only).
        ``owner`` is recorded (see ``runs.ownership``); :class:`QueueFull` past the cap."""
        # Round-trip through a dict: validates before anything is stored, and accepts a
        # RunConfig whose class was reloaded by Streamlit's file watcher (isinstance fails).
        config = RunConfig.from_dict(config if isinstance(config, dict) else config.to_dict())
        if callbacks and self.worker == "process":
            raise ValueError("Callbacks run in the worker thread; use worker='thread' for them.")
        self.check_queue_room(owner, 1)
        run_id = self.store.create_run(config.to_dict(), name=name or config.name,
                                       sweep_id=sweep_id, owner=owner)  # fmt: skip
        self._enqueue(run_id, False, callbacks)
        return run_id

    def stop(self, run_id: str) -> None:
        """Cooperative stop: the trainer raises ``RunStopped`` before its next step. A run
        still queued is marked stopped directly; an ended run is left alone. A running
        job's request is also written to the store (``stop_requested``, a time): the
        record of when the stop was asked, and a second way to the trainer
        (``runner.StopRequestCallback``) should the signal to a child process be lost."""
        with self._cond:
            job = self._jobs.get(run_id)
            running = job is not None and job.running
            if running:
                job.stop_event.request()
            elif job is not None:
                self._queue.remove(job)
                del self._jobs[run_id]
                self._cond.notify_all()
        if running:
            # the signal is sent: a locked store or a deleted row only lose the record
            with contextlib.suppress(StoreError, KeyError, sqlite3.Error):
                self.store.request_stop(run_id)
            return
        status = self.store.get_run(run_id)["status"]
        if status == RunStatus.QUEUED:  # ours, or left queued by a process that died
            self.store.set_status(run_id, RunStatus.STOPPED, error="Stopped before it started.")
        elif status == RunStatus.RUNNING:  # another process trains it: it polls the store
            self.store.request_stop(run_id)

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
            raise ValueError(f"Run {run_id!r} is {status}; only interrupted, stopped or failed "
                             "runs resume.")  # fmt: skip
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

    def version(self, run_id: str) -> int | None:
        """A counter that changes only when the run has something new to draw; None when
        the run is not queued or running here. Costs one dict lookup: poll it freely."""
        with self._cond:
            job = self._jobs.get(run_id)
            if job is None:
                return None
            return job.live.version * 2 + job.running  # queued -> running is a change too

    def queue(self) -> list[dict]:
        """The queued runs in order: ``run_id``, ``place`` (1 = next), ``ahead`` (run ids
        before it, running ones excluded), ``start_s`` (estimated seconds until it starts,
        None while unknown). Estimates come from the running runs' time left and the
        median seconds per epoch of finished runs of the same model and dataset."""
        with self._cond:
            running = [(j.run_id, j.live.snapshot()) for j in self._jobs.values() if j.running]
            queued = [j.run_id for j in self._queue]
        return estimate_queue(self.store, running, queued, self.max_concurrent)

    def check_queue_room(self, owner: str | None, adding: int) -> None:
        """Raise :class:`QueueFull` when ``owner`` would exceed its queued-run cap with
        ``adding`` more runs (no cap for no owner, nor for the command line)."""
        with self._cond:
            queued = [j.run_id for j in self._queue]
        check_room(self.store, queued, owner, adding, self.max_queued_per_owner)

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
                job.stop_event.request(shutdown=True)  # interrupted, not "stopped by the user"
            warm, self._warm = self._warm, None
            self._cond.notify_all()
        if warm is not None:
            warm.close()
        for job in queued:
            self._end(job.run_id, RunStatus.STOPPED, "Stopped before it started: app shut down.")
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            stuck = list(self._jobs)
        for run_id in stuck:  # a worker that did not reach its next step in time
            self._end(run_id, RunStatus.INTERRUPTED, "Interrupted by server shutdown.")

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
                worker = threading.Thread(target=self._work, args=(index,), daemon=True,
                                          name=f"bsq-worker-{index}")  # fmt: skip
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
                if self._still_queued(job.run_id):  # not stopped or deleted meanwhile
                    self._execute(job, index)
            except Exception as exc:  # could not even start (e.g. checkpoint broke since)
                self._end(job.run_id, RunStatus.FAILED, str(exc))
            finally:
                self._release(job)
                self._keep_warm()  # after the run, not during: its imports would slow it

    def _still_queued(self, run_id: str) -> bool:
        """The CLI may stop (or delete) a run queued here; the store then says so."""
        try:
            return self.store.get_run(run_id)["status"] == RunStatus.QUEUED
        except KeyError:
            return False

    def _execute(self, job: _Job, index: int) -> None:
        if self.worker == "thread":
            runner.execute_run(
                self.store, job.run_id, stop_event=job.stop_event,
                callbacks=(job.live, *job.callbacks), resume=job.resume,
            )  # fmt: skip
            return
        cuda = index % torch.cuda.device_count() if torch.cuda.is_available() else None
        with self._cond:
            warm, self._warm = self._warm, None
        code = worker_process.run_in_child(
            self.store.home, job.run_id, resume=job.resume, live=job.live,
            stop_event=job.stop_event, torch_threads=self.torch_threads, cuda_index=cuda,
            warm=warm, on_run_end=lambda: self._release_if_recorded(job),
        )  # fmt: skip
        if code != 0:  # crashed before recording an outcome (killed, out of memory...)
            message = f"The training process exited with code {code}; see the server log."
            self._end(job.run_id, RunStatus.FAILED, message)

    def _release(self, job: _Job) -> None:
        """``job`` is over: out of the active runs, waiters woken. Only this job's entry (the
        run may have been resumed as a new job meanwhile)."""
        with self._cond:
            if self._jobs.get(job.run_id) is job:
                del self._jobs[job.run_id]
            self._cond.notify_all()

    def _release_if_recorded(self, job: _Job) -> None:
        """The child closed its pipe. If the run recorded its outcome, it is over for
        viewers and waiters now, though the process may take a second or more to exit
        (torch's teardown): a Stop's panel waited for that (1.5 s measured). A child that
        died without recording keeps the job until its exit code is read."""
        try:
            recorded = self.store.get_run(job.run_id)["status"] not in ACTIVE
        except (KeyError, StoreError, sqlite3.Error):
            return
        if recorded:
            self._release(job)

    def _keep_warm(self) -> None:
        """Spawn the next waiting child if none is ready (``prestart`` only)."""
        with self._cond:
            if self._prestart and not self._closed and self._warm is None:
                self._warm = worker_process.WarmChild()

    def _end(self, run_id: str, status: str, message: str) -> None:
        """Best effort: at exit or after a worker error, one run must not block the others."""
        with contextlib.suppress(Exception):
            current = self.store.get_run(run_id)["status"]
            if current == RunStatus.QUEUED and status == RunStatus.INTERRUPTED:
                status = RunStatus.STOPPED  # a queued run never started: nothing to interrupt
            if current in ACTIVE:
                self.store.set_status(run_id, status, error=message)


_MANAGERS: dict[str, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def get_manager(home=None, settings: ServerSettings | None = None) -> JobManager:
    """The one manager of ``home`` (default ``$BSQ_HOME``) in this process, configured by
    ``settings`` (default: ``ServerSettings.from_env()``) when it is first created."""
    key = str(Path(home if home is not None else default_home()).expanduser().resolve())
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(key)
        if manager is None or manager._closed:
            if not _MANAGERS:
                atexit.register(_shutdown_all)
            cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
            settings = settings or ServerSettings.from_env(cuda)
            manager = _MANAGERS[key] = JobManager(
                key, settings.max_concurrent, worker=settings.worker,
                max_queued_per_owner=settings.max_queued_per_user,
                prestart=settings.worker == "process",
            )  # fmt: skip
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
    """At exit: stop and join every worker. Running runs end ``interrupted`` with a message
    naming the server shutdown (the user did not stop them), at a step boundary after their
    last checkpoint, so they resume cleanly."""
    with _MANAGERS_LOCK:
        managers = list(_MANAGERS.values())
    for manager in managers:
        manager.shutdown()

"""Sweeps on Ray: one Ray task per run, metrics streamed back into the driver's own store.

:class:`RayExecutor` has the job manager's surface that sweeps use (``store``, ``start``,
``stop``, ``active_runs``, ``wait``, ``shutdown``, ``snapshot``), so
``sweep.start_sweep(RayExecutor(...), ...)`` queues a sweep on Ray exactly as on the local
queue. Ray is optional (``requirements-cluster.txt``) and imported only here, lazily.

- **Streaming.** Each task is a Ray generator: the trainer runs in a thread of the worker and
  every epoch, sampled steps, precision events and the outcome are yielded to the driver,
  whose thread writes them into its store. No database is shared between machines; the
  dashboard on the driver's machine shows the runs live, as if they were local.
- **One pretraining.** Runs whose float models are identical (same pretrain key) share one:
  the first is submitted alone; the others wait until its pretrain stage has ended and its
  float model sits in ``<storage>/float_cache``, then load it.
- **Storage.** Checkpoints go to ``<storage>/runs/<run_id>/checkpoint.safetensors``; every
  worker must reach ``storage`` (default: the store's folder, enough on one machine; a
  shared folder such as NFS on a cluster). When it is not the store's folder, the run's
  folder gets a link to it so ``resume`` and ``export`` find it.
- **Failures.** Tasks never retry (``max_retries=0``): a worker that dies leaves its run
  ``interrupted`` and resumable from its last checkpoint, anywhere the storage is visible.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bsq_engine.runs import paths, ray_worker
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import RunConfig
from bsq_engine.training.float_cache import pretrain_key

__all__ = ["RAY_MISSING", "RayExecutor", "ray_available"]

RAY_MISSING = (
    "Ray is not installed. Install it with `pip install -r requirements-cluster.txt`, or use "
    "the local job queue (the default, --executor local)."
)
_HEARTBEAT_S = 5.0
log = logging.getLogger(__name__)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _import_ray():
    if not ray_available():
        raise ValueError(RAY_MISSING)
    import ray

    return ray


def _check_reachable(address: str | None) -> None:
    """Fail fast on a ``host:port`` nobody listens on (``ray.init`` would retry for minutes).

    ``auto`` and ``ray://`` addresses are left to Ray, which reports those quickly.
    """
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {address}: {exc}") from None


@dataclass
class _Task:
    run_id: str
    config: RunConfig
    key: str | None  # pretrain key, None when the run shares no float model
    gen: object = None  # the Ray ObjectRefGenerator once submitted
    started: bool = False
    stopping: bool = False
    worker: str = ""
    settled: bool = False  # its "end" message arrived (the worker wrote the final status)


class RayExecutor:
    """Runs sweeps' runs as Ray tasks; the driver thread owns their rows in ``store``.

    ``address``: an existing cluster (``auto``, ``ray://host:10001``), else a local Ray is
    started with ``num_cpus`` (default: all) and no dashboard, bound to 127.0.0.1.
    """

    def __init__(self, store: RunStore | None = None, *, address=None, storage=None,
                 num_cpus: int | None = None):  # fmt: skip
        self.ray = _import_ray()
        self.store = store or RunStore()
        self.storage = Path(storage or self.store.home).expanduser().resolve()
        self._owns_ray = not self.ray.is_initialized()
        if self._owns_ray:
            kwargs = {"address": address, "log_to_driver": False}
            if address is None:  # a fresh local instance
                kwargs.update(num_cpus=num_cpus, include_dashboard=False,
                              _node_ip_address="127.0.0.1")  # fmt: skip
            try:
                _check_reachable(address)
                self.ray.init(**kwargs)
            except (ConnectionError, RuntimeError) as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray"
                raise ValueError(
                    f"Could not start or reach {where} ({exc}). Start a cluster with `ray start "
                    "--head`, or drop --ray-address for a local Ray, or use --executor local."
                ) from exc
        gpus = self.ray.cluster_resources().get("GPU", 0)
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        self._remote = self.ray.remote(max_retries=0, **resources)(ray_worker.train_task)
        self._lock = threading.Lock()
        self._waiting: list[_Task] = []
        self._running: dict[str, _Task] = {}
        self._pretrained: set[str] = set()  # keys whose float model is on the storage
        self._leaders: set[str] = set()  # keys being pretrained by a running task
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the job manager's surface --------------------------------------------------------

    def start(self, config, *, name=None, sweep_id=None, callbacks=(), owner=None) -> str:
        """Create the run (queued, recording its ``owner`` as the job manager does) and hand
        it to Ray; returns its id at once."""
        if callbacks:
            raise ValueError("Ray runs take no callbacks: they train on another process.")
        config = RunConfig.from_dict(config if isinstance(config, dict) else config.to_dict())
        if self._closed:
            raise RuntimeError("This Ray executor was shut down; create a new one.")
        run_id = self.store.create_run(
            config.to_dict(), name=name or config.name, sweep_id=sweep_id, owner=owner
        )
        self._link_checkpoint(run_id)
        shares = config.reuse_pretrained and config.pretrain_epochs > 0
        with self._lock:
            self._waiting.append(_Task(run_id, config, pretrain_key(config) if shares else None))
            if self._thread is None:  # the driver thread clears it, under the lock, on exit
                self._thread = threading.Thread(target=self._drive, name="bsq-ray-driver",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        return run_id

    def check_queue_room(self, owner: str | None, adding: int) -> None:
        """No per-person cap: a Ray cluster schedules what it is given (same call as
        ``JobManager.check_queue_room``, so ``start_sweep`` treats both alike)."""

    def stop(self, run_id: str) -> None:
        """A waiting run ends ``stopped`` at once; a running one is cancelled on Ray and
        ends ``stopped`` (its last checkpoint stays on the storage, resumable)."""
        with self._lock:
            task = next((t for t in self._waiting if t.run_id == run_id), None)
            if task is not None:
                self._waiting.remove(task)
            running = self._running.get(run_id)
            if running is not None:
                running.stopping = True
                self.ray.cancel(running.gen)
        if task is not None:
            self.store.set_status(run_id, RunStatus.STOPPED, error="Stopped before it started.")

    def active_runs(self) -> list[str]:
        with self._lock:
            return [*self._running, *(t.run_id for t in self._waiting)]

    def snapshot(self, run_id: str) -> None:
        """No in-memory live state: pages read these runs from the store."""
        return None

    def wait(self, run_id: str, timeout: float | None = None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while run_id in self.active_runs():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return self.store.get_run(run_id)["status"]

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every run, wait for the driver thread, stop the local Ray we started."""
        for run_id in self.active_runs():
            self.stop(run_id)
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

    # -- the driver thread ------------------------------------------------------------------

    def _drive(self) -> None:
        last_beat = time.monotonic()
        while True:
            with self._lock:
                self._submit_ready()
                if not self._running:  # nothing runs, nothing can be submitted: until start()
                    self._thread = None
                    return
                by_gen = {t.gen: t for t in self._running.values()}
            ready, _ = self.ray.wait(list(by_gen), num_returns=1, timeout=0.5)
            for gen in ready:
                try:
                    self._receive(by_gen[gen])
                except Exception:  # e.g. a full disk: keep serving the other runs
                    log.exception("could not record a message of run %s", by_gen[gen].run_id)
            if time.monotonic() - last_beat >= _HEARTBEAT_S:  # we own these rows
                for task in list(self._running.values()):
                    if task.started:
                        self.store.heartbeat(task.run_id)
                last_beat = time.monotonic()

    def _submit_ready(self) -> None:  # caller holds the lock
        """Submit every waiting run whose float model exists or that will pretrain it."""
        for task in list(self._waiting):
            if task.key is not None and task.key not in self._pretrained:
                if task.key in self._leaders:
                    continue  # another run is pretraining this float model right now
                self._leaders.add(task.key)
            self._waiting.remove(task)
            task.gen = self._remote.remote(task.run_id, task.config.to_dict(), str(self.storage))
            self._running[task.run_id] = task

    def _receive(self, task: _Task) -> None:
        try:
            message = self.ray.get(next(task.gen))
        except StopIteration:
            if task.settled:
                self._ended(task)
            else:  # a cancel can end the generator before its "end" message: settle it here
                self._lost(task, RuntimeError("the Ray task ended without its final status."))
            return
        except self.ray.exceptions.RayError as exc:
            self._lost(task, exc)
            return
        ray_worker.apply(self.store, task.run_id, message)
        kind = message[0]
        if kind == "start":
            task.started, task.worker = True, message[1]["worker"]
        elif kind == "end":
            task.settled = True
        elif kind == "stage_end" and message[1] == "pretrain" and task.key is not None:
            with self._lock:
                self._pretrained.add(task.key)
                self._leaders.discard(task.key)

    def _ended(self, task: _Task) -> None:
        with self._lock:
            self._running.pop(task.run_id, None)
            if task.key is not None and task.key not in self._pretrained:
                self._leaders.discard(task.key)  # it never pretrained: let another try

    def _lost(self, task: _Task, exc: Exception) -> None:
        """The task died (worker killed, node lost) or was cancelled by ``stop``. The status
        is written before the run leaves the active ones, so ``wait`` never returns a run
        still marked running (it did, under load)."""
        try:
            self._settle_lost(task, exc)
        finally:
            self._ended(task)

    def _settle_lost(self, task: _Task, exc: Exception) -> None:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if task.stopping:
            status, error = RunStatus.STOPPED, None
        elif task.started:
            # what the worker checkpointed but the driver never heard of (in flight at death)
            ray_worker.backfill(
                self.store, task.run_id, paths.checkpoint_path(self.store, task.run_id)
            )
            status = RunStatus.INTERRUPTED
            error = (f"Interrupted: the Ray worker ({task.worker}) died: {first_line} "
                     "Resume it to continue from its last checkpoint.")  # fmt: skip
        else:  # still queued, and queued -> interrupted is not a legal step
            status = RunStatus.FAILED
            error = f"The Ray task could not start: {first_line} Resume it to try again."
        self.store.set_status(task.run_id, status, error=error)

    def _link_checkpoint(self, run_id: str) -> None:
        """Point the run's folder at the checkpoint on the storage (resume/export read it)."""
        target = ray_worker.checkpoint_in(self.storage, run_id)
        local = paths.checkpoint_path(self.store, run_id)
        if target != local.resolve() and not local.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            local.symlink_to(target)

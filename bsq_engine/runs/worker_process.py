"""Train one run in a child process; its hooks come back over a pipe into the live buffer.

The app's job manager keeps its worker *threads* (queue, stop, wait, snapshot are
unchanged), but with ``worker="process"`` each thread hands its run to a child process
started here and pumps the child's messages into the run's ``LiveBufferCallback``. The
child writes the store itself, exactly as a CLI run does (``runner.execute_run``), so a
viewer's script runs never share a GIL with the training loop.

Stop: the parent sends ``"stop"`` (or ``"shutdown"`` when the server is shutting down); the
child requests a stop on its trainer's :class:`~runner.StopSignal`, so the run ends
``stopped`` (or ``interrupted``) at its next step. If the parent dies, the child reads
end-of-file and stops as for ``"stop"``. Steps are forwarded throttled (at most one per
``STEP_EVERY_S``, plus each epoch's first and last), enough for within-epoch progress.
``spawn`` (not ``fork``): forking a server with live threads and torch's
thread pools is unsafe. A spawned child imports torch and the trainer before it waits for
its run (:class:`WarmChild`), so a job manager can start one ahead of time and a Start
does not pay those seconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
import time
from pathlib import Path

from bsq_engine.training.callbacks import Callback

__all__ = ["WarmChild", "run_in_child"]

_POLL_S = 0.1
STEP_EVERY_S = 0.25  # the child forwards a step at most this often (plus epoch boundaries)


class WarmChild:
    """A spawned child that imports torch and the trainer at once, then waits for one run.

    Starting a Python process and importing torch takes seconds (most of Start -> first
    chart on a laptop CPU); a job manager keeps one of these ready so a Start only sends the
    run's id. Its environment is the parent's at the moment it was spawned. ``close()``
    (or the parent's exit: end-of-file on its pipe) ends a child that never got a run.
    """

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.from_child, child_out = ctx.Pipe(duplex=False)
        child_in, self.to_child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child_main, name="bsq-run-waiting", daemon=True,
                                args=(child_out, child_in))  # fmt: skip
        self.proc.start()
        child_out.close()  # ours are the other ends: EOF arrives when the child exits
        child_in.close()
        self.spawned_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """End a child that is still waiting (or training: it stops as for "stop")."""
        for conn in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):
                conn.close()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)


def run_in_child(
    home: Path | str, run_id: str, *, resume: bool, live, stop_event,
    torch_threads: int | None = None, cuda_index: int | None = None,
    warm: WarmChild | None = None, on_run_end=None,
) -> int | None:  # fmt: skip
    """Train ``run_id`` of the store at ``home`` in a child process; block until it exits.

    ``warm``: a :class:`WarmChild` to use (it has imported torch already); when None or
    dead, a new child is spawned. Messages go to ``live.apply``; ``stop_event`` (set by
    another thread) is forwarded. ``on_run_end()`` is called when the child closes its pipe
    (its run has returned, or it died), before waiting for the process to exit: torch's
    teardown can take a second or more. Returns the child's exit code (0: the run ended
    and recorded its own status).
    """
    job = ("run", str(home), run_id, resume, torch_threads, cuda_index)
    child = _hand_over(warm, job) if warm is not None else None
    if child is None:  # none ready, or it died: spawn one now (pays the imports)
        child = WarmChild()
        child.to_child.send(job)
    try:
        _pump(child.proc, child.from_child, child.to_child, live, stop_event)
        if on_run_end is not None:
            on_run_end()
    finally:
        child.proc.join(timeout=30)
        if child.proc.is_alive():  # did not reach its next step in time
            child.proc.terminate()
            child.proc.join(timeout=10)
        child.close(0.1)
    return child.proc.exitcode


def _hand_over(warm: WarmChild, job: tuple) -> WarmChild | None:
    """Send ``job`` to a waiting child; None (and the child closed) if it is gone."""
    try:
        if warm.alive():
            warm.to_child.send(job)
            return warm
    except OSError:
        pass
    warm.close(0.1)
    return None


def _pump(proc, from_child, to_child, live, stop_event) -> None:
    stop_sent = False
    while True:
        if stop_event.is_set() and not stop_sent:
            with contextlib.suppress(OSError):
                to_child.send("shutdown" if getattr(stop_event, "by_shutdown", False) else "stop")
            stop_sent = True
        try:
            if from_child.poll(_POLL_S):
                kind, state, payload = from_child.recv()
                live.apply(kind, state, **payload)
            elif not proc.is_alive() and not from_child.poll(0):
                return
        except (EOFError, OSError):  # the child exited and closed its end
            return


def _child_main(out, inbox) -> None:
    import torch

    from bsq_engine.data.sources import warm_imports
    from bsq_engine.runs import runner
    from bsq_engine.runs.store import RunStore

    warm_imports()
    if not torch.cuda.is_available():  # the CPU's plane kernels: built once per machine
        from bsq_engine.core import native  # (about 20 s), loaded in 0.05 s after that

        native.kernels()  # here, not in the run's first BSQ step (None: eager kernels)

    # Ctrl-C reaches the whole process group; the parent decides (it sends "stop").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # imports done: wait for the run (a WarmChild may wait minutes)
        message = inbox.recv()
    except (EOFError, OSError):  # closed without a run: nothing to do
        return
    _, home, run_id, resume, torch_threads, cuda_index = message
    if torch_threads:
        torch.set_num_threads(torch_threads)
    if cuda_index is not None and torch.cuda.is_available():
        torch.cuda.set_device(cuda_index)
    stop = runner.StopSignal()
    threading.Thread(target=_listen, args=(inbox, stop), daemon=True).start()
    store = RunStore(home)
    try:
        runner.execute_run(
            store, run_id, stop_event=stop, callbacks=(_Forward(out, stop),), resume=resume
        )
    finally:
        with contextlib.suppress(OSError):
            out.close()


def _listen(inbox, stop) -> None:
    """``"stop"``/``"shutdown"`` from the parent, or end-of-file (the parent died): stop the
    run (``stop`` is a ``runner.StopSignal``)."""
    shutdown = False
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            break
        if message in ("stop", "shutdown"):
            shutdown = message == "shutdown"
            break
    stop.request(shutdown=shutdown)


class _Forward(Callback):
    """Child side of the live buffer: sends each drawn hook as plain, picklable values."""

    def __init__(self, out, stop: threading.Event, step_every_s: float = STEP_EVERY_S):
        self.out, self.stop, self.step_every_s = out, stop, step_every_s
        self._step_sent = 0.0

    def _send(self, kind: str, trainer, **payload) -> None:
        from bsq_engine.runs.live_buffer import trainer_state

        state = None if trainer is None else trainer_state(trainer)
        try:
            self.out.send((kind, state, payload))
        except OSError:  # the parent is gone: finish the step, then stop
            self.stop.set()

    def on_run_start(self, trainer) -> None:
        self._send("start", trainer)

    def on_stage_start(self, trainer, stage) -> None:
        self._send("stage", trainer)

    def on_step_end(self, trainer, step) -> None:
        """Throttled: every step through a pipe would cost the training loop; the first and
        last of an epoch always go (they start and complete its progress bar)."""
        now = time.monotonic()
        batch, batches = step.get("batch"), step.get("batches")
        edge = batch == 1 or (batch is not None and batch == batches)
        if not edge and now - self._step_sent < self.step_every_s:
            return
        self._step_sent = now
        self._send("step", None, step=dict(step), epoch=trainer.epoch)

    def on_epoch_end(self, trainer, record, layers) -> None:
        self._send("epoch", trainer, record=dict(record), layers=layers)

    def on_requantize(self, trainer, events) -> None:
        self._send("requantize", None, events=[dict(e) for e in events])

    def on_finish(self, trainer, summary) -> None:
        self._send("finish", trainer)

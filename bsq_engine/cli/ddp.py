"""``train`` and ``resume`` when started by ``torchrun`` (``WORLD_SIZE > 1``).

Every rank parses the same command line and calls this; rank 0 owns the store, the progress
bar and the printed outcome, the other ranks print nothing. Rank 0 exits like a plain run
(0 finished, 1 failed or stopped), so torchrun reports the job's outcome; others exit 0.
"""

from __future__ import annotations

import sys
import threading

from bsq_engine.cli import format as fmt
from bsq_engine.runs.ddp import train_distributed
from bsq_engine.runs.status import RunStatus
from bsq_engine.training import distributed
from bsq_engine.training.callbacks import Callback, ProgressBarCallback

__all__ = ["is_torchrun", "run_ddp"]


def is_torchrun() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    return distributed.env_info().world_size > 1


class _Announce(Callback):
    """Prints the run id as soon as rank 0 has created it (before the first epoch)."""

    def __init__(self, out):
        self.out = out

    def on_run_start(self, trainer) -> None:
        print(f"run {trainer.run_id}", file=self.out, flush=True)


def run_ddp(*, config=None, run_id: str | None = None, as_json: bool = False) -> int:
    """Train a new run (``config``) or resume ``run_id`` across the torchrun job."""
    from bsq_engine.cli.train import _on_signals, _stop_handler  # it imports us lazily

    info = distributed.env_info()
    stop = threading.Event()
    bar = ProgressBarCallback(file=sys.stderr) if info.is_main else None
    rank0 = (_Announce(sys.stderr if as_json else sys.stdout), bar) if info.is_main else ()
    # torchrun forwards Ctrl-C / SIGTERM to every rank; the bar closes in its on_teardown.
    with _on_signals(_stop_handler(stop)):
        run = train_distributed(config, run_id=run_id, stop_event=stop, callbacks=rank0)
    if run is None:  # rank > 0: rank 0 reports; mirror its outcome in the exit code
        return 0
    from bsq_engine.runs.store import RunStore

    with RunStore() as store:
        summary = fmt.run_summary(store, run)
    if as_json:
        fmt.emit_json(summary)
    if not as_json or summary["status"] != RunStatus.FINISHED:
        fmt.print_outcome(summary)
    if summary["status"] == RunStatus.FINISHED and not as_json:
        fmt.print_layers(summary["layers"])
    print(f"world size {info.world_size}: only rank 0 wrote the store", file=sys.stderr)
    return 0 if summary["status"] == RunStatus.FINISHED else 1

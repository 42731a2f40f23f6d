"""``python -m bsq_engine stop RUN_ID``: stop a run, whichever process trains it.

A run queued or running in another process (the app's server, another terminal) is not
ours to interrupt with a signal, so the stop goes through the store: ``request_stop``
records it, and the training process polls it about once a second
(``runner.StopRequestCallback``) and ends the run ``stopped`` at its next step, resumable.
The command line is the machine's operator, so it may stop any run (``runs.ownership``).
"""

from __future__ import annotations

import sys
import time

from bsq_engine.runs.ownership import Actor, check_control
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunStore

__all__ = ["cmd_stop"]

_POLL_S = 0.2


def cmd_stop(args) -> int:
    with RunStore() as store:
        run = store.get_run(args.run_id)
        rid, status = run["run_id"], run["status"]
        check_control(run, Actor.command_line(), "stop")
        if status == RunStatus.QUEUED:  # a server that queued it skips it (it checks first)
            store.set_status(rid, RunStatus.STOPPED, error="Stopped before it started.")
            print(f"run {rid} stopped before it started")
            return 0
        if status != RunStatus.RUNNING:
            print(f"error: run {rid} is {status}; only queued or running runs can be stopped.",
                  file=sys.stderr)  # fmt: skip
            return 1
        store.request_stop(rid)
        where = f"process {run.get('pid')} on {run.get('hostname')}"
        print(f"asked {where} to stop run {rid}", file=sys.stderr, flush=True)
        if args.no_wait:
            return 0
        return _wait_stopped(store, rid, args.timeout)


def _wait_stopped(store: RunStore, rid: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = store.get_run(rid)["status"]  # also notices a dead owner (interrupted)
        if status != RunStatus.RUNNING:
            print(f"run {rid} {status}")
            return 0 if status in (RunStatus.STOPPED, RunStatus.INTERRUPTED) else 1
        time.sleep(_POLL_S)
    print(f"error: run {rid} still runs after {timeout:g} s; it stops at its next training "
          "step (an evaluation in progress finishes first). Check with "
          f"`python -m bsq_engine show {rid}`.", file=sys.stderr)  # fmt: skip
    return 1

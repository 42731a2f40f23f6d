"""``python -m bsq_engine <command>``: train, inspect, resume, export and sweep from a terminal.

Commands: ``train``, ``resume``, ``sweep`` (run in the foreground with a progress bar on
stderr; ``cli/train.py``), ``list``, ``runs``, ``show`` (``cli/info.py``), ``export``,
``delete`` (``cli/manage.py``), ``stop`` (``cli/control.py``), ``sensitivity``
(``cli/sensitivity.py``), ``store check|repair`` (``cli/maintenance.py``). Every command
but ``delete`` takes ``--json``: the last line of stdout is then one JSON document.

Exit codes: 0 done; 1 a run failed or was stopped, or an action was refused; 2 bad arguments
or a damaged file (one line on stderr, never a traceback); 130 interrupted outside a run.
Output into a pipe that closes early (``show ID | head``) is dropped quietly.
"""

from __future__ import annotations

import os
import sys

import torch

from bsq_engine.cli.format import one_line, safe_stdout
from bsq_engine.cli.parser import UsageError, build_parser
from bsq_engine.data import DatasetUnavailable
from bsq_engine.runs.jobs import TORCH_THREADS_ENV, default_torch_threads
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunNotFound, StoreError, SweepNotFound
from bsq_engine.training.checkpoint import CheckpointError

__all__ = ["BAD_INPUT", "build_parser", "main"]

# Errors whose message is written for the user: one line on stderr, exit 2.
BAD_INPUT = (ValueError, RunNotFound, SweepNotFound, DatasetUnavailable, CheckpointError,
             StoreError)  # fmt: skip


def _apply_thread_setting() -> None:
    """Honour ``$BSQ_TORCH_THREADS`` (as the app does). Unset, the CLI keeps torch's own
    choice, all cores: a foreground run owns the machine, unlike the app's worker."""
    if os.environ.get(TORCH_THREADS_ENV, "").strip():
        torch.set_num_threads(default_torch_threads())


def _run(args) -> int:
    try:
        _apply_thread_setting()
        return args.func(args)
    except BAD_INPUT as exc:
        print(one_line(f"error: {exc}"), file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave that cannot be written or read
        where = f" ({exc.filename})" if exc.filename else ""
        print(one_line(f"error: {exc.strerror or exc}{where}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(RunStatus.INTERRUPTED, file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit code."""
    with safe_stdout():
        try:
            args = build_parser().parse_args(argv)
        except UsageError as exc:
            print(one_line(f"error: {exc}"), file=sys.stderr)
            return 2
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        return _run(args)

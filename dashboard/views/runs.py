"""The Runs page's pure logic: the table's columns, the filters, and which actions the
selected runs allow.

No Streamlit here: the page's rules (a run may be resumed only from an ended, unfinished
status; deleting waits until nothing selected is active) are plain functions of statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bsq_engine.runs.status import ACTIVE, RESUMABLE, RunStatus

__all__ = ["ALL", "COLUMNS", "MAX_COMPARE", "STATUS_CHOICES", "Actions", "actions", "filters"]

ALL = "all"  # the select boxes' "no filter" choice
MAX_COMPARE = 4
STATUS_CHOICES = [s.value for s in RunStatus]
COLUMNS = ["name", "owner", "status", "model", "dataset", "method", "alpha", "accuracy_pct",
           "avg_bits", "compression", "bits", "duration_s", "device", "world_size", "worker",
           "created", "run_id"]  # fmt: skip


def filters(statuses: list[str], model: str, dataset: str) -> dict:
    """``RunStore.list_runs`` keyword filters from the widgets' values (``ALL`` = any).

    >>> filters([], "mlp", ALL)
    {'status': None, 'model': 'mlp', 'dataset': None}
    """
    return {"status": statuses or None, "model": None if model == ALL else model,
            "dataset": None if dataset == ALL else dataset}  # fmt: skip


@dataclass(frozen=True)
class Actions:
    """What the buttons offer for a selection, and which runs ``Stop`` would reach."""

    open: bool
    resume: bool
    stop: bool
    delete: bool
    compare: bool
    to_stop: list[str]


def actions(selected: Iterable[str], status: Mapping[str, str]) -> Actions:
    """The actions the ``selected`` runs allow, given every run's ``status``.

    >>> a = actions(["a", "b"], {"a": "running", "b": "failed"})
    >>> a.stop, a.resume, a.delete, a.compare, a.to_stop
    (True, False, False, True, ['a'])
    """
    selected = list(selected)
    statuses = [status[r] for r in selected]
    some_active = any(s in ACTIVE for s in statuses)
    return Actions(
        open=len(selected) == 1,
        resume=bool(selected) and all(s in RESUMABLE for s in statuses),
        stop=some_active,
        delete=not some_active,
        compare=2 <= len(selected) <= MAX_COMPARE,
        to_stop=[r for r in selected if status[r] in ACTIVE],
    )

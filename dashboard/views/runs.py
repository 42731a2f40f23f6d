"""The Runs page's pure logic: the table's columns, the filters, and which actions the
selected runs allow.

No Streamlit here: the page's rules (a run may be resumed only from an ended, unfinished
status; deleting waits until nothing selected is active) are plain functions of statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bsq_engine.runs.status import ACTIVE, RESUMABLE, RunStatus

__all__ = [
    "ALL", "COLUMNS", "DEFAULT_EXTRA", "EXTRA_COLUMNS", "MAX_COMPARE", "STATUS_CHOICES",
    "Actions", "actions", "extra_columns", "filters", "parse_tags",
]  # fmt: skip

ALL = "all"  # the select boxes' "no filter" choice
MAX_COMPARE = 4
STATUS_CHOICES = [s.value for s in RunStatus]
COLUMNS = ["name", "owner", "status", "model", "dataset", "method", "alpha", "accuracy_pct",
           "avg_bits", "compression", "bits", "duration_s", "device", "world_size", "worker",
           "created", "run_id"]  # fmt: skip


#: Optional columns from each run's config (and its annotations): column -> label.
EXTRA_COLUMNS = {
    "tags": "Tags", "note": "Note", "epochs": "Epochs (pre/BSQ/fine)", "lr": "BSQ lr",
    "requant_interval": "Re-quantize every", "act_bits": "Activation bits",
    "batch_size": "Batch", "n_bits": "Start bits", "seed": "Seed",
}  # fmt: skip
DEFAULT_EXTRA = ["tags"]


def extra_columns(runs: Iterable[Mapping]) -> list[dict]:
    """The optional columns of each run, keyed by ``run_id`` (plain text values).

    >>> row = extra_columns([{"run_id": "r", "tags": ["a", "b"], "config": {
    ...     "pretrain_epochs": 2, "bsq_epochs": 6, "finetune_epochs": 1, "act_bits": None}}])[0]
    >>> row["tags"], row["epochs"], row["act_bits"], row["lr"]
    ('a, b', '2/6/1', 'float', None)
    """
    rows = []
    for run in runs:
        cfg = run.get("config") or {}
        epochs = [cfg.get(k) for k in ("pretrain_epochs", "bsq_epochs", "finetune_epochs")]
        rows.append({
            "run_id": run["run_id"], "tags": ", ".join(run.get("tags") or []),
            "note": run.get("note") or "",
            "epochs": "/".join(str(e) for e in epochs) if None not in epochs else None,
            "lr": cfg.get("lr"), "requant_interval": cfg.get("requant_interval"),
            "act_bits": "float" if "act_bits" in cfg and cfg["act_bits"] is None
            else cfg.get("act_bits"),
            "batch_size": cfg.get("batch_size"), "n_bits": cfg.get("n_bits"),
            "seed": cfg.get("seed"),
        })  # fmt: skip
    return rows


def parse_tags(text: str) -> list[str]:
    """Tags typed comma-separated.

    >>> parse_tags(" baseline, paper ,, ")
    ['baseline', 'paper']
    """
    return [t.strip() for t in text.split(",") if t.strip()]


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

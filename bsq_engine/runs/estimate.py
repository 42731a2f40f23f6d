"""Measured time estimates: how long a run of a config takes *on this machine*, from the store.

Typed claims ("~5 s on a laptop CPU") are wrong the moment the machine, its load or the
settings differ. An estimate here is always a measurement: the median duration of finished
runs with the same settings on this host, or, when there are none, the median epoch time of
each stage in earlier runs of the same model, dataset and cost-relevant settings, times the
epochs the new config asks for. No measurement, no estimate (``None``): the first run is
what measures it.
"""

from __future__ import annotations

import socket
import statistics
from dataclasses import dataclass

from bsq_engine import units
from bsq_engine.runs.paths import cache_dir
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import RunConfig, Stage
from bsq_engine.training.float_cache import FloatCache

__all__ = ["COST_FIELDS", "Estimate", "estimate_run"]

#: Settings that change what one epoch costs (epoch counts are handled per stage).
COST_FIELDS = (
    "model", "dataset", "method", "batch_size", "max_train", "max_test", "act_bits", "device",
    "n_bits", "float_shortcuts",
)  # fmt: skip
_EPOCH_FIELDS = ("pretrain_epochs", "bsq_epochs", "finetune_epochs")


@dataclass(frozen=True)
class Estimate:
    """``seconds`` predicted, from ``runs`` past runs (``exact``: same settings, whole-run
    durations; else per-stage epoch medians over ``epochs`` measured epochs)."""

    seconds: float
    runs: int
    epochs: int
    exact: bool
    pretrain_cached: bool = False

    def describe(self) -> str:
        """One sentence for a caption: the figure and where it comes from."""
        head = f"about {units.format_duration(self.seconds)}"
        if self.exact:
            src = f"median of {self.runs} finished run(s) with these settings on this machine"
        else:
            src = f"{self.epochs} measured epochs of {self.runs} earlier run(s) on this machine"
        if self.pretrain_cached:
            src += "; pretraining skipped: a cached float model fits"
        return f"{head} ({src})"


def estimate_run(
    store: RunStore, config: RunConfig, *, host: str | None = None, max_runs: int = 20
) -> Estimate | None:
    """Predicted wall time of ``config`` on ``host`` (default: this machine), or None."""
    host = host or socket.gethostname()
    wanted = config.to_dict()
    same_cost = [
        run for run in store.list_runs(model=config.model, dataset=config.dataset)
        if run.get("hostname") == host and _same(run["config"], wanted, COST_FIELDS)
    ][:max_runs]  # fmt: skip
    cached = _pretrain_cached(store, config)
    exact = [
        run["seconds"] for run in same_cost
        if run["status"] == RunStatus.FINISHED and run.get("seconds")
        and _same(run["config"], wanted, _EPOCH_FIELDS)
    ]  # fmt: skip
    if exact and not cached:
        return Estimate(statistics.median(exact), len(exact), 0, exact=True)
    return _from_epochs(store, config, same_cost, cached)


def _from_epochs(store, config: RunConfig, runs: list[dict], cached: bool) -> Estimate | None:
    per_stage: dict[str, list[float]] = {}
    for run in runs:
        for row in store.epochs(run["run_id"]):
            if row.get("seconds") is not None:
                per_stage.setdefault(row["stage"], []).append(row["seconds"])
    total, measured = 0.0, 0
    for stage in config.stages:
        n = config.epochs_of(stage)
        if n == 0 or (stage is Stage.PRETRAIN and cached):
            continue
        seconds = per_stage.get(stage.value)
        if not seconds:
            return None  # a stage never measured: no honest figure yet
        total += n * statistics.median(seconds)
        measured += len(seconds)
    if not measured:
        return None
    return Estimate(total, len(runs), measured, exact=False, pretrain_cached=cached)


def _same(config: dict, wanted: dict, fields: tuple[str, ...]) -> bool:
    return all(config.get(f) == wanted.get(f) for f in fields)


def _pretrain_cached(store: RunStore, config: RunConfig) -> bool:
    if not (config.reuse_pretrained and config.pretrain_epochs):
        return False
    return FloatCache(cache_dir(store.home)).path(config).is_file()

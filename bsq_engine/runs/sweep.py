"""Alpha sweeps: several BSQ runs (and uniform baselines) that share one pretrained model.

Every run of a sweep comes from the same preset with the same pretraining settings, so they
share one float-cache key: the first run pretrains and saves the float model, the runs
queued behind it load it and go straight to quantization. With ``max_concurrent > 1`` two
runs may pretrain at the same time; the result is identical, only the time is spent twice.
"""

from __future__ import annotations

import math
import time
from collections import Counter

from bsq_engine.runs.status import ACTIVE, RunStatus
from bsq_engine.training.presets import make_config

__all__ = ["log_alphas", "run_sweep_blocking", "start_sweep", "sweep_progress"]


def log_alphas(lo: float, hi: float, n: int) -> list[float]:
    """``n`` log-spaced values from ``lo`` to ``hi``, rounded to 3 significant digits.

    Alpha acts multiplicatively (the bit count falls roughly with log alpha), so a sweep
    spaced evenly in log covers the trade-off curve evenly.

    >>> log_alphas(1e-3, 1e-1, 3)
    [0.001, 0.01, 0.1]
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a whole number >= 1, got {n!r}.")
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"Need 0 < lo <= hi for a log-spaced sweep, got lo={lo}, hi={hi}.")
    if n == 1:
        return [float(f"{lo:.3g}")]
    step = (math.log10(hi) - math.log10(lo)) / (n - 1)
    return [float(f"{10 ** (math.log10(lo) + i * step):.3g}") for i in range(n)]


def _points(alphas, uniform_bits, first_last_bits, hawq_avg_bits) -> list[tuple[str, dict]]:
    """``(name, method settings)`` of every point of a sweep, BSQ first."""
    points = [(f"α={a:g}", {"method": "bsq", "alpha": a}) for a in alphas]
    # a fixed-scheme run has no alpha: the store keeps NULL, whatever the config holds
    points += [(f"uniform {k}-bit", {"method": "uniform", "uniform_bits": k})
               for k in uniform_bits]  # fmt: skip
    points += [
        (f"uniform {k}-bit, first/last 8",
         {"method": "uniform", "uniform_bits": k, "first_last_bits": 8})
        for k in first_last_bits
    ]  # fmt: skip
    points += [(f"HAWQ {b:g} bits", {"method": "hawq", "avg_bits": b})
               for b in hawq_avg_bits]  # fmt: skip
    return points


def _sweep_configs(
    model, dataset, alphas, uniform_bits, overrides, first_last_bits=(), hawq_avg_bits=(),
    seeds=(None,),
) -> list[tuple[str, object]]:  # fmt: skip
    """``(name, RunConfig)`` per run (every point x every seed), all validated before
    anything is stored. A seed of ``None`` keeps the preset's (or the override's) seed."""
    points = _points(alphas, uniform_bits, first_last_bits, hawq_avg_bits)
    if not points:
        raise ValueError(
            "A sweep needs at least one alpha or one uniform bit-width (or a HAWQ budget)."
        )
    method_keys = ("alpha", "method", "uniform_bits", "first_last_bits", "avg_bits", "scheme")
    base = {k: v for k, v in (overrides or {}).items() if k not in method_keys}
    runs = []
    for seed in seeds:
        for name, settings in points:
            extra = {} if seed is None else {"seed": seed}
            label = name if seed is None or len(seeds) == 1 else f"{name}, seed {seed}"
            runs.append((label, make_config(model, dataset, **{**base, **settings, **extra})))
    return runs


def start_sweep(
    manager,
    *,
    model: str,
    dataset: str,
    alphas: list[float],
    uniform_bits: list[int] = (),
    name: str | None = None,
    overrides: dict | None = None,
    owner: str | None = None,
    first_last_bits: list[int] = (),
    hawq_avg_bits: list[float] = (),
    seeds: list[int] | None = None,
) -> str:
    """Register a sweep and queue its runs (alphas first, then uniform baselines, uniform
    with first/last layers at 8 bits, HAWQ-style budgets), each once per seed in ``seeds``
    (default: once, with the preset's seed). Runs of one seed share one float model.

    Every config is validated first (a negative alpha raises ValueError), and the owner's
    queue cap checked for all runs at once (``jobs.QueueFull``), so a refusal leaves no
    half-created sweep behind. Returns the sweep id.
    """
    alphas, uniform_bits = list(alphas), list(uniform_bits)
    seeds = list(seeds) if seeds else [None]
    runs = _sweep_configs(
        model, dataset, alphas, uniform_bits, overrides, list(first_last_bits),
        list(hawq_avg_bits), seeds,
    )  # fmt: skip
    if owner is not None:
        manager.check_queue_room(owner, len(runs))
    if name is None:
        span = f"α {min(alphas):g}..{max(alphas):g}" if alphas else "uniform baselines"
        name = f"{model}-{dataset} sweep, {span}"
    sweep_config = {
        "alphas": alphas, "uniform_bits": uniform_bits, "overrides": overrides or {},
        "first_last_bits": list(first_last_bits), "hawq_avg_bits": list(hawq_avg_bits),
        "seeds": seeds,
    }  # fmt: skip
    sweep_id = manager.store.create_sweep(name, model, dataset, sweep_config)
    for run_name, config in runs:
        mine = {"owner": owner} if owner is not None else {}
        manager.start(config, name=run_name, sweep_id=sweep_id, **mine)
    return sweep_id


def sweep_progress(store, sweep_id: str) -> dict:
    """Counts per status and a 0-1 fraction that includes the epochs of running runs."""
    sweep = store.get_sweep(sweep_id)
    runs = sorted(store.list_runs(sweep_id=sweep_id), key=lambda r: r["created_at"])
    counts = Counter(run["status"] for run in runs)
    done_units = 0.0
    for run in runs:
        if run["status"] not in ACTIVE:
            done_units += 1.0
        elif run["status"] == RunStatus.RUNNING:
            done_units += _run_fraction(store, run)
    total = len(runs)
    return {
        "sweep_id": sweep_id, "name": sweep["name"], "model": sweep["model"],
        "dataset": sweep["dataset"], "total": total, "counts": dict(counts),
        RunStatus.FINISHED: counts.get(RunStatus.FINISHED, 0),
        "done": total > 0 and not any(counts.get(s) for s in ACTIVE),
        "run_ids": [run["run_id"] for run in runs],
        "fraction": done_units / total if total else 0.0,
    }  # fmt: skip


def _run_fraction(store, run: dict) -> float:
    """Epochs stored so far over planned epochs (the config dict holds the plan)."""
    cfg = run["config"]
    planned = cfg.get("pretrain_epochs", 0) + cfg.get("bsq_epochs", 0)
    planned += cfg.get("finetune_epochs", 0)
    return min(len(store.epochs(run["run_id"])) / planned, 1.0) if planned else 0.0


def run_sweep_blocking(manager, sweep_id: str, *, poll: float = 0.5, on_progress=None) -> dict:
    """Wait until every run of the sweep has ended (for the CLI); returns the last progress.

    ``on_progress(progress)`` is called whenever the counts or the fraction change. The
    sweep's runs must be queued in this process (by ``manager``), or this waits for
    whichever process owns them.
    """
    last = None
    while True:
        progress = sweep_progress(manager.store, sweep_id)
        key = (progress["counts"], round(progress["fraction"], 3))
        if on_progress is not None and key != last:
            on_progress(progress)
        last = key
        if progress["done"]:
            return progress
        time.sleep(poll)

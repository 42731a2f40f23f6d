"""Where a queued run stands: its place, who is ahead, and when it should start.

``queue_places`` is a pure function over plain numbers, so the estimate is testable without
training; ``estimate_queue`` feeds it a job manager's running runs' time left and its queued
runs' expected durations (read from the store).
"""

from __future__ import annotations

import heapq
import statistics

from bsq_engine.runs.ownership import CLI_OWNER
from bsq_engine.runs.status import RunStatus

__all__ = ["QueueFull", "check_room", "estimate_queue", "queue_places", "seconds_per_epoch"]


class QueueFull(ValueError):
    """One owner already has the most queued runs a session may have; says what to do."""


def check_room(store, queued: list[str], owner: str | None, adding: int, cap: int | None):
    """Raise :class:`QueueFull` when ``owner`` would have more than ``cap`` runs waiting
    with ``adding`` more (no cap for no owner, nor for the command line)."""
    if owner in (None, CLI_OWNER) or cap is None:
        return
    mine = 0
    for run_id in queued:
        try:
            mine += store.get_run(run_id).get("owner") == owner
        except KeyError:  # deleted meanwhile
            continue
    if mine + adding > cap:
        raise QueueFull(
            f"{owner} already has {mine} runs waiting (at most {cap} per person). "
            "Wait for one to start, or stop one you no longer need."
        )


def queue_places(
    running_left: list[float | None], queued: list[tuple[str, float | None]], workers: int
) -> list[dict]:
    """Each queued run's ``place`` (1 = next), ``ahead`` (run ids before it) and
    ``start_s`` (seconds from now until a worker should take it; None when a run ahead has
    no estimate yet).

    ``running_left``: seconds left of each running run (None: unknown). ``queued``:
    ``(run_id, expected seconds)`` in queue order. ``workers`` run side by side; a worker
    not busy now is free at once.

    >>> [p["start_s"] for p in queue_places([30.0], [("a", 60.0), ("b", 60.0)], workers=1)]
    [30.0, 90.0]
    >>> [p["start_s"] for p in queue_places([30.0], [("a", 60.0), ("b", 60.0)], workers=2)]
    [0.0, 30.0]
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    inf = float("inf")  # "unknown" sorts last and poisons every start after it
    free = [inf if s is None else max(float(s), 0.0) for s in running_left]
    free = sorted(free)[:workers] + [0.0] * max(workers - len(free), 0)
    heapq.heapify(free)
    places, ahead = [], []
    for place, (run_id, duration) in enumerate(queued, start=1):
        start = heapq.heappop(free)
        places.append({"run_id": run_id, "place": place, "ahead": list(ahead),
                       "start_s": None if start == inf else start})  # fmt: skip
        heapq.heappush(free, inf if duration is None else start + max(float(duration), 0.0))
        ahead.append(run_id)
    return places


def estimate_queue(store, running: list[tuple[str, dict]], queued: list[str],
                   workers: int) -> list[dict]:  # fmt: skip
    """``queue_places`` of a job manager's queue: ``running`` as (run id, live snapshot),
    ``queued`` run ids in order; durations from finished runs of the same pair."""
    rates: dict[tuple, float | None] = {}
    left = []
    for run_id, snap in running:
        if snap["eta_seconds"] is not None:
            left.append(snap["eta_seconds"])
            continue
        expected = _expected_s(store, run_id, rates)
        left.append(None if expected is None else expected * (1.0 - snap["progress"]))
    durations = [(rid, _expected_s(store, rid, rates)) for rid in queued]
    return queue_places(left, durations, workers)


def _expected_s(store, run_id: str, rates: dict) -> float | None:
    try:
        run = store.get_run(run_id)
    except KeyError:  # deleted meanwhile: it will not take a worker
        return 0.0
    pair = (run["model"], run["dataset"])
    if pair not in rates:
        done = store.list_runs(status=RunStatus.FINISHED, model=pair[0], dataset=pair[1])
        rates[pair] = seconds_per_epoch(done[:10])
    epochs = _total_epochs(run["config"])
    return None if rates[pair] is None else rates[pair] * epochs


def seconds_per_epoch(finished: list[dict]) -> float | None:
    """Median seconds per epoch of finished runs (store run dicts): a queued run of the
    same model and dataset is expected to take this times its epochs. None without any."""
    rates = []
    for run in finished:
        total = _total_epochs(run.get("config") or {})
        if run.get("seconds") and total:
            rates.append(float(run["seconds"]) / total)
    return statistics.median(rates) if rates else None


def _total_epochs(config: dict) -> int:
    return sum(int(config.get(k) or 0) for k in ("pretrain_epochs", "bsq_epochs",
                                                 "finetune_epochs"))  # fmt: skip

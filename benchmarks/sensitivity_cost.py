"""What measuring a run's per-layer sensitivity costs, and what it says (issue 12).

Trains the preset BSQ runs of MLP and LeNet-5 on digits (with ``--fashion`` also LeNet-5 on
a 10k Fashion-MNIST subset, ~2 min) in a private ``BSQ_HOME`` under /tmp, then for each:
the CPU seconds of one measurement (``runs.sensitivity_cache.measure_run``, after a warm-up
one) on one torch thread, and the verdict "do BSQ's bits follow sensitivity?".

``--threads-compare`` also times the measurement with torch at 1 vs 2 intra-op threads,
interleaved pairs in one process (wall ratio: spinning threads on a loaded 2-core machine
are what the app's thread rule avoids). Run timing-sensitive modes under the shared lock.
``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.sensitivity_cache import measure_run
from bsq_engine.runs.store import RunStore
from bsq_engine.training.presets import make_config
from bsq_engine.training.sensitivity_report import agreement_sentence

WORKLOADS = [("mlp", "digits", {}), ("lenet5", "digits", {})]
FASHION = ("lenet5", "fashion_mnist", {"max_train": 10_000})


def _train(store: RunStore, model: str, dataset: str, overrides: dict) -> dict:
    config = make_config(model, dataset, name=f"{model}-{dataset}", **overrides)
    run_id = store.create_run(config.to_dict(), name=config.name)
    return execute_run(store, run_id)


def _threads_ratio(store: RunStore, run_id: str, pairs: int = 3) -> dict:
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(pairs):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            started = time.perf_counter()
            measure_run(store, run_id)
            walls[threads].append(time.perf_counter() - started)
    torch.set_num_threads(1)
    ratios = [two / one for one, two in zip(walls[1], walls[2])]
    return {"wall_1_thread": walls[1], "wall_2_threads": walls[2],
            "median_ratio_2_over_1": statistics.median(ratios),
            "load_avg": os.getloadavg()[0]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion", action="store_true", help="also LeNet-5 on Fashion-MNIST")
    parser.add_argument("--threads-compare", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bsq-sens-") as home, RunStore(home) as store:
        for model, dataset, overrides in WORKLOADS + ([FASHION] if args.fashion else []):
            run = _train(store, model, dataset, overrides)
            measure_run(store, run["run_id"])  # warm-up: data loading, first-call costs
            started = time.process_time()
            result = measure_run(store, run["run_id"])
            cpu = time.process_time() - started
            bits = [layer["n_bits"] for layer in run["summary"]["layers"]]
            row = {"model": model, "dataset": dataset, "cpu_seconds": round(cpu, 2),
                   "bits": bits, "verdict": agreement_sentence(result["layers"], bits, "BSQ's"),
                   "trace_per_weight": [round(x["trace_per_weight"], 6) for x in result["layers"]],
                   "accuracy_drop_1bit": [round(x["accuracy_drop_points"]["1"], 2)
                                          for x in result["layers"]]}  # fmt: skip
            if args.threads_compare:
                row["threads"] = _threads_ratio(store, run["run_id"])
            rows.append(row)
            print(f"{model}/{dataset}: {cpu:.1f} CPU s, bits {bits}\n  {row['verdict']}")
            if "threads" in row:
                print(f"  1 vs 2 torch threads, wall ratio (median of 3 interleaved pairs): "
                      f"{row['threads']['median_ratio_2_over_1']:.2f}x")  # fmt: skip
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

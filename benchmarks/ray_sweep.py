"""A 4-point digits alpha sweep on the local job queue vs on a local Ray cluster.

    python benchmarks/ray_sweep.py               # 1 round: local, then Ray
    python benchmarks/ray_sweep.py --rounds 2    # local, Ray, local, Ray (interleaved)
    python benchmarks/ray_sweep.py --json        # ... and one JSON line last

Both executors run the same sweep (``sweep.start_sweep``) into their own fresh store, in this
one process. Ray is started once, before the first round, and its start-up is reported on
its own line (a one-off cost per driver). Printed:

- ``ratio``: the Ray sweep's time over the local sweep's, per round (interleaved rounds,
  so a noisy machine hurts both alike), and ``overhead per run``: their difference over the
  number of runs. The local queue trains one run at a time on CPU; Ray runs as many tasks
  as it has CPUs (``--ray-cpus``), so on a multi-core machine the ratio includes that
  parallelism. Also the driver's CPU seconds (``/proc``-style ``getrusage(RUSAGE_SELF)``).
- the store's contents: rows per run in every table, and which columns are filled, for
  each alpha on both sides. They must match in shape (the values differ only by timing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsq_engine.runs.jobs import JobManager
from bsq_engine.runs.ray_executor import RAY_MISSING, RayExecutor, ray_available
from bsq_engine.runs.store import RunStore
from bsq_engine.runs.sweep import run_sweep_blocking, start_sweep

ALPHAS = [0.05, 0.1, 0.2, 0.4]
OVERRIDES = {"pretrain_epochs": 3, "bsq_epochs": 6, "finetune_epochs": 2, "requant_interval": 2}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _shape(store: RunStore, sweep_id: str) -> dict:
    """Per alpha: row counts per table and the filled columns of the epoch rows."""
    shape = {}
    for run in store.list_runs(sweep_id=sweep_id):
        rid = run["run_id"]
        epochs = store.epochs(rid)
        filled = sorted(k for k in epochs[0] if epochs[0][k] is not None) if epochs else []
        shape[run["alpha"]] = {
            "status": run["status"], "epochs": len(epochs),
            "layer_rows": len(store.layer_snapshots(rid)), "events": len(store.events(rid)),
            "epoch_columns": filled, "summary_keys": sorted(run["summary"] or {}),
        }  # fmt: skip
    return shape


def run_sweep(executor, store: RunStore) -> tuple[float, float, dict]:
    """(seconds, driver CPU seconds, store shape) of one whole sweep."""
    cpu, t0 = _cpu(), time.perf_counter()
    sweep_id = start_sweep(executor, model="mlp", dataset="digits", alphas=ALPHAS,
                           overrides=OVERRIDES)  # fmt: skip
    run_sweep_blocking(executor, sweep_id, poll=0.1)
    return time.perf_counter() - t0, _cpu() - cpu, _shape(store, sweep_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ray-cpus", type=int, default=None, help="default: all cores")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not ray_available():
        raise SystemExit(RAY_MISSING)
    os.environ.setdefault("BSQ_TORCH_THREADS", "1")
    os.environ.setdefault("RAY_GCS_SERVER_PORT", "8672")  # the project's port range
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    start_s = time.perf_counter() - t0
    print(f"Ray start-up (once per driver): {start_s:.1f} s, "
          f"{int(ray.cluster_resources().get('CPU', 0))} CPUs")  # fmt: skip
    rounds = []
    for i in range(1, args.rounds + 1):
        local = JobManager(tempfile.mkdtemp(prefix="bsq-local-"), max_concurrent=1)
        local_s, local_cpu, local_shape = run_sweep(local, local.store)
        local.shutdown()
        on_ray = RayExecutor(RunStore(tempfile.mkdtemp(prefix="bsq-ray-")))
        ray_s, ray_cpu, ray_shape = run_sweep(on_ray, on_ray.store)
        on_ray.shutdown()
        same = local_shape == ray_shape
        rounds.append({"local_s": local_s, "ray_s": ray_s, "ratio": ray_s / local_s,
                       "overhead_per_run_s": (ray_s - local_s) / len(ALPHAS),
                       "driver_cpu_s": {"local": local_cpu, "ray": ray_cpu},
                       "same_shape": same, "local": local_shape, "ray": ray_shape})  # fmt: skip
        r = rounds[-1]
        print(f"round {i}: Ray / local = {r['ratio']:.2f} ({len(ALPHAS)} runs), overhead per "
              f"run {r['overhead_per_run_s']:+.2f} s; driver CPU {ray_cpu:.1f} s (Ray) vs "
              f"{local_cpu:.1f} s (local, trains in-process); store shape "
              f"{'identical' if same else 'DIFFERENT'}")  # fmt: skip
        if not same:
            print(json.dumps({"local": local_shape, "ray": ray_shape}, indent=1))
    ray.shutdown()
    if args.json:
        print(json.dumps({"ray_start_s": start_s, "rounds": rounds}))


if __name__ == "__main__":
    main()

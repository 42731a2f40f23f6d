"""Data-parallel scaling: the same run with 1 process and with N processes (torchrun).

    python benchmarks/ddp_scaling.py                 # digits MLP, 1 vs 2 Gloo processes on CPU
    python benchmarks/ddp_scaling.py --device auto   # NCCL on a machine with >= 2 GPUs
    python benchmarks/ddp_scaling.py --json          # ... and one JSON line last

Each job runs ``python -m bsq_engine train`` (``torchrun --nproc_per_node=N`` for N > 1) in
a fresh store, so every job pretrains. Jobs alternate (1, N, 1, N, ...) so a noisy machine
hurts both sides alike. Printed per pair:

- ``speedup``: samples per second of the N-process job over the 1-process job, from the
  median epoch time each job recorded in its store (a ratio; no single wall-clock figure);
- ``cpu_s``: CPU seconds of the whole job (every process, from ``getrusage`` of children);
- whether the final scheme (bits per layer) matches, and the accuracy / average-bit
  differences. With global-batch semantics the gradients agree up to reduction order; the
  BatchNorm statistics are per rank (each sees 1/N of a batch), which is the real source
  of differences. Two 1-process jobs are compared too: the baseline of pure run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bsq_engine.runs.store import RunStore  # noqa: E402

TRAIN = ["train", "--model", "mlp", "--dataset", "digits", "--pretrain-epochs", "2",
         "--epochs", "6", "--finetune-epochs", "2", "--requant-interval", "2",
         "--alpha", "0.5", "--json"]  # fmt: skip


def _port() -> int:
    for port in range(8660, 8680):  # the project's port range for local rendezvous
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free port in 8660-8679 for torchrun's rendezvous")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_job(nproc: int, device: str) -> dict:
    """One training job in a fresh store; its records, scheme and CPU seconds."""
    home = tempfile.mkdtemp(prefix=f"bsq-ddp{nproc}-")
    env = {**os.environ, "BSQ_HOME": home, "BSQ_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m"]
    if nproc > 1:
        launcher += ["torch.distributed.run", f"--nproc_per_node={nproc}",
                     "--master_addr=127.0.0.1", f"--master_port={_port()}", "-m"]  # fmt: skip
    before = _children_cpu()
    done = subprocess.run([*launcher, "bsq_engine", *TRAIN, "--device", device], cwd=ROOT,
                          env=env, capture_output=True, text=True)  # fmt: skip
    cpu = _children_cpu() - before
    if done.returncode != 0:
        raise SystemExit(f"{nproc}-process job failed:\n{done.stderr[-2000:]}")
    with RunStore(home) as store:
        (run,) = store.list_runs()
        epochs = store.epochs(run["run_id"])
    trained = [e for e in epochs if e["stage"] != "pretrain"]
    return {
        "nproc": nproc, "cpu_s": cpu, "world_size": run["world_size"],
        "epoch_s": statistics.median(e["seconds"] for e in trained),
        "accuracy": run["accuracy"], "avg_bits": run["avg_bits"],
        "test_loss": epochs[-1]["test_loss"],
        "bits": [layer["n_bits"] for layer in run["summary"]["layers"]],
    }  # fmt: skip


def compare(base: dict, other: dict) -> dict:
    return {
        "speedup": base["epoch_s"] / other["epoch_s"],
        "cpu_ratio": other["cpu_s"] / base["cpu_s"],
        "same_scheme": base["bits"] == other["bits"],
        "d_accuracy_pts": 100 * (other["accuracy"] - base["accuracy"]),
        "d_avg_bits": other["avg_bits"] - base["avg_bits"],
        "d_test_loss": other["test_loss"] - base["test_loss"],  # finer than accuracy
    }


def _agreement(r: dict) -> str:
    scheme = "same scheme" if r["same_scheme"] else "DIFFERENT scheme"
    return (f"{scheme}, accuracy {r['d_accuracy_pts']:+.2f} pts, avg bits "
            f"{r['d_avg_bits']:+.3f}, final test loss {r['d_test_loss']:+.2e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=2, help="interleaved (1, N) pairs")
    parser.add_argument("--device", default="cpu", help="cpu (Gloo) or auto (NCCL on GPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    jobs = []
    for _ in range(args.pairs):
        jobs += [run_job(1, args.device), run_job(args.nproc, args.device)]
    singles, multis = jobs[0::2], jobs[1::2]
    rows = [compare(s, m) for s, m in zip(singles, multis)]
    noise = compare(singles[0], singles[1]) if len(singles) > 1 else None
    for i, (s, m, r) in enumerate(zip(singles, multis, rows), 1):
        print(f"pair {i}: {args.nproc} procs vs 1: speedup {r['speedup']:.2f}x, CPU "
              f"{m['cpu_s']:.1f} s vs {s['cpu_s']:.1f} s ({r['cpu_ratio']:.2f}x); "
              f"scheme {m['bits']} vs {s['bits']}, {_agreement(r)}")  # fmt: skip
    median = statistics.median(r["speedup"] for r in rows)
    print(f"median speedup {median:.2f}x ({args.nproc} {args.device} processes; "
          "samples/s ratio from the epoch times each job stored)")  # fmt: skip
    if noise is not None:
        print(f"1 vs 1 (run-to-run noise): {_agreement(noise)}")
    if args.json:
        print(json.dumps({"jobs": jobs, "pairs": rows, "noise": noise}))


if __name__ == "__main__":
    main()

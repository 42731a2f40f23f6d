"""What the job manager costs: live snapshots, persistence per step, and torch threads.

    python benchmarks/snapshot_and_store.py                    # snapshot + store overhead
    python benchmarks/snapshot_and_store.py --threads-compare  # also 1 vs 2 torch threads
    python benchmarks/snapshot_and_store.py --json             # ... and one JSON line last

1. ``snapshot``: microseconds per ``LiveBufferCallback.snapshot()`` with a realistic buffer
   (100 epochs, 20 layers x 8 planes, 200 events); pages call it several times a second.
2. ``store``: ms per digits BSQ step with and without ``StoreCallback`` +
   ``CheckpointCallback`` (epoch-end writes and checkpoints included), trials interleaved so
   a noisy machine hurts both sides alike; medians and their ratio.
3. ``threads`` (optional): ms per step of the default digits model with 1 vs 2 torch
   threads, and how long a main thread's page-like Python work takes meanwhile (median and
   p95, next to the same work on an idle process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsq_engine.runs.jobs import LiveBufferCallback, default_torch_threads
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback, CheckpointCallback, StoreCallback
from bsq_engine.training.presets import make_config
from bsq_engine.training.trainer import Trainer


def filled_buffer(n_epochs=100, n_layers=20, n_planes=8, n_events=200) -> LiveBufferCallback:
    """A live buffer as it looks late in a long run, filled through its own hooks."""
    config = make_config(pretrain_epochs=20, bsq_epochs=60, finetune_epochs=20)
    live = LiveBufferCallback(max_events=n_events)
    trainer = SimpleNamespace(config=config, stage="bsq", epoch=0, global_epoch=0,
                              float_accuracy=0.97)  # fmt: skip
    layers = [{"name": f"layer{i}", "n_bits": n_planes, "n_weights": 4096, "kind": "conv",
               "density": [0.3] * n_planes, "group_norm": [1.5] * n_planes, "msb_offset": 0,
               "shape": [64, 64, 3, 3]} for i in range(n_layers)]  # fmt: skip
    live.on_run_start(trainer)
    for g in range(1, n_epochs + 1):
        trainer.epoch = trainer.global_epoch = g
        record = {"stage": "bsq", "epoch": g, "global_epoch": g, "train_loss": 0.5,
                  "train_acc": 0.9, "test_loss": 0.6, "test_acc": 0.88, "reg": 12.0,
                  "alpha_reg": 0.1, "lr": 0.05, "avg_bits": 4.2, "compression": 7.6,
                  "seconds": 2.0, "step_ms": 8.0}  # fmt: skip
        live.on_step_end(trainer, {"stage": "bsq", "epoch": g, "step": g * 23, "loss": 0.5})
        live.on_epoch_end(trainer, record, layers)
    event = {"layer": "layer3", "old_bits": 8, "new_bits": 6, "stage": "bsq", "epoch": 10,
             "message": "layer3: 8 -> 6 bits (dropped 2 MSB, 0 LSB) at epoch 10"}  # fmt: skip
    live.on_requantize(trainer, [event] * n_events)
    return live


def bench_snapshot(repeats: int = 2000) -> dict:
    live = filled_buffer()
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        live.snapshot()
        per_call.append((time.perf_counter() - t0) * 1e6)
    return {"snapshot_us_median": statistics.median(per_call),
            "snapshot_us_p95": sorted(per_call)[int(0.95 * len(per_call))]}  # fmt: skip


class _Clock(Callback):
    """Training time only: from after data loading to after every other on_finish hook."""

    def on_run_start(self, trainer):
        self.start = time.perf_counter()

    def on_finish(self, trainer, summary):
        self.ms_per_step = (time.perf_counter() - self.start) * 1000 / trainer.global_step


def _time_bsq(config, store: RunStore | None) -> float:
    callbacks = []
    if store is not None:
        run_id = store.create_run(config.to_dict(), status="running")
        path = store.run_dir(run_id) / "checkpoint.safetensors"
        callbacks = [StoreCallback(store, run_id), CheckpointCallback(path)]
    clock = _Clock()
    Trainer(config, [*callbacks, clock]).run()
    return clock.ms_per_step


def bench_store(epochs: int, repeats: int) -> dict:
    """Digits BSQ epochs (default preset: batch 64, re-quantize every 10 epochs)."""
    config = make_config(pretrain_epochs=0, bsq_epochs=epochs, finetune_epochs=0)
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        _time_bsq(config, None)  # warm-up: imports, allocator, sklearn's data load
        bare, stored = [], []
        for _ in range(repeats):
            bare.append(_time_bsq(config, None))
            stored.append(_time_bsq(config, store))
        store.close()
    b, s = statistics.median(bare), statistics.median(stored)
    return {"step_ms_bare": b, "step_ms_store": s, "store_ratio": s / b,
            "store_epochs": epochs, "store_repeats": repeats}  # fmt: skip


def _page_latency(stop: threading.Event) -> list[float]:
    """ms per fixed chunk of pure-Python work (what a Streamlit rerun mostly is)."""
    out = []
    while not stop.is_set():
        t0 = time.perf_counter()
        sum(i * i for i in range(20_000))
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)
    return out


def _threads_trial(config, threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    result, stop = {}, threading.Event()

    def train():
        clock = _Clock()
        Trainer(config, [clock]).run()
        result["ms"] = clock.ms_per_step
        stop.set()

    worker = threading.Thread(target=train)
    worker.start()
    latency = _page_latency(stop)
    worker.join()
    return result["ms"], latency


def bench_threads(repeats: int) -> dict:
    """The default digits run, shortened (2 pretrain, 4 BSQ, 2 finetune epochs)."""
    config = make_config(pretrain_epochs=2, bsq_epochs=4, finetune_epochs=2, requant_interval=2)
    idle = _page_latency_for(0.5)
    _threads_trial(config, 1)  # warm-up
    rows = {1: ([], []), 2: ([], [])}
    for _ in range(repeats):
        for threads in (1, 2):
            ms, latency = _threads_trial(config, threads)
            rows[threads][0].append(ms)
            rows[threads][1].extend(latency)
    out = {"page_ms_idle": idle}
    for threads, (ms, latency) in rows.items():
        out[f"step_ms_{threads}t"] = statistics.median(ms)
        out[f"page_ms_{threads}t"] = statistics.median(latency)
        out[f"page_p95_{threads}t"] = sorted(latency)[int(0.95 * len(latency))]
    return out


def _page_latency_for(seconds: float) -> float:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return statistics.median(_page_latency(stop))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="BSQ epochs per store trial")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved trials per side")
    parser.add_argument("--threads-compare", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    threads_before = torch.get_num_threads()
    # The store side trains like a job does: with the job manager's thread count.
    torch.set_num_threads(default_torch_threads() or threads_before)
    results = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    results.update(bench_snapshot())
    snap, p95 = results["snapshot_us_median"], results["snapshot_us_p95"]
    print(f"snapshot: {snap:.1f} us median (p95 {p95:.1f} us), 100 epochs, 20 layers x 8 planes")
    results.update(bench_store(args.epochs, args.repeats))
    print(f"store: {results['step_ms_bare']:.2f} ms/step bare, {results['step_ms_store']:.2f} "
          f"ms/step with store+checkpoints, ratio {results['store_ratio']:.3f}")  # fmt: skip
    if args.threads_compare:
        results.update(bench_threads(args.repeats))
        idle = results["page_ms_idle"]
        for t in (1, 2):
            step, page, p95 = (results[f"{k}_{t}t"] for k in ("step_ms", "page_ms", "page_p95"))
            print(
                f"threads={t}: {step:.2f} ms/step; page work {page:.2f} ms median, "
                f"{p95:.2f} ms p95 (idle median {idle:.2f} ms)"
            )
    torch.set_num_threads(threads_before)
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()

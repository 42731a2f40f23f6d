"""What glibc's default allocator policy costs a training step, and what the trainer's
``training.allocator.keep_freed_memory`` saves: ResNet-20, batch 128, CPU, 1 thread.

    python benchmarks/allocator.py                    # 2 pairs of children per step kind
    python benchmarks/allocator.py --pairs 4 --json   # last line: one JSON object

The trainer trains ONE model per process, so each measurement is a fresh child process with
one step of ``benchmarks/step_overhead.py`` (``float-cl`` or ``bsq-fast``): 3 warm-up steps,
then ``--steps`` timed ones, under glibc's default policy or inside ``keep_freed_memory``.
Children run one at a time, a ``default`` and a ``kept`` child per pair, the order flipped
every pair (ABBA) so that a steady drift of the machine's speed hits both alike. Per step,
from ``getrusage``: minor page faults, system (kernel) CPU ms (the kernel maps and zeroes
the pages each fault asks for) and user CPU ms; and the child's peak resident memory
(``VmHWM``: model, optimizer state, batch and the steps' tensors). Faults and system
time are the direct measure; user time on a shared machine is noisy, so the report pairs
each ``kept`` child with its pair's ``default`` child and gives the median ratio of their
CPU time per step (user + system) with a bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_overhead  # the benchmark's steps (model, batch, optimizer, fast path)

from bsq_engine.training.allocator import keep_freed_memory

STEPS = ("float-cl", "bsq-fast")
POLICIES = ("default", "kept")


def _child(step_kind: str, policy: str, steps: int, batch: int) -> dict:
    torch.set_num_threads(1)
    args = step_overhead.parse_args(["--batch", str(batch), "--no-memory"])
    step = step_overhead.make_step(step_kind, args)
    rows = []
    with keep_freed_memory() if policy == "kept" else nullcontext():
        for _ in range(3):  # the first steps allocate the optimizer state and the heap
            step()
        for _ in range(steps):
            before = resource.getrusage(resource.RUSAGE_SELF)
            step()
            after = resource.getrusage(resource.RUSAGE_SELF)
            rows.append((
                after.ru_minflt - before.ru_minflt,
                (after.ru_stime - before.ru_stime) * 1000,
                (after.ru_utime - before.ru_utime) * 1000,
            ))  # fmt: skip
    med = lambda i: statistics.median(r[i] for r in rows)  # noqa: E731
    return {"faults": med(0), "sys_ms": med(1), "user_ms": med(2),
            "cpu_ms": statistics.median(r[1] + r[2] for r in rows),
            "peak_rss_mb": step_overhead._peak_rss_kb() / 1024}  # fmt: skip


def run_child(step_kind: str, policy: str, steps: int, batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, f"--_child={step_kind},{policy}", f"--steps={steps}",
         f"--batch={batch}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(children: dict) -> dict:
    """``children[step][policy]``: the children's results in run order (pairs aligned)."""
    result = {}
    for step_kind, by_policy in children.items():
        entry = {}
        for policy, runs in by_policy.items():
            entry[policy] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        twins = zip(by_policy["kept"], by_policy["default"])
        ratios = [k["cpu_ms"] / d["cpu_ms"] for k, d in twins]
        entry["kept_over_default_cpu"] = statistics.median(ratios)
        entry["ci95"] = list(step_overhead.median_interval(ratios))
        result[step_kind] = entry
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="default/kept pairs per step")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per child")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        step_kind, policy = args._child.split(",")
        print(json.dumps(_child(step_kind, policy, args.steps, args.batch)))
        return {}
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    children = {s: {p: [] for p in POLICIES} for s in STEPS}
    for pair in range(args.pairs):
        for step_kind in STEPS:  # ABBA: the order flips each pair, so drift cancels
            for policy in POLICIES if pair % 2 == 0 else POLICIES[::-1]:
                children[step_kind][policy].append(
                    run_child(step_kind, policy, args.steps, args.batch)
                )
    result = summarize(children)
    after = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    result |= {"pairs": args.pairs, "steps": args.steps, "batch": args.batch,
               "load_avg": f"{load} -> {after}"}  # fmt: skip
    print(
        f"ResNet-20, batch {args.batch}, 1 thread, one step kind per child process, "
        f"{args.pairs} pairs x {args.steps} steps, load {result['load_avg']}"
    )
    print(f"  {'step':<10}{'policy':<9}{'faults':>9}{'sys ms':>9}{'user ms':>9}{'cpu ms':>9}"
          f"{'peak MB':>9}")  # fmt: skip
    for step_kind in STEPS:
        for policy in POLICIES:
            r = result[step_kind][policy]
            print(f"  {step_kind:<10}{policy:<9}{r['faults']:>9.0f}{r['sys_ms']:>9.1f}"
                  f"{r['user_ms']:>9.1f}{r['cpu_ms']:>9.1f}{r['peak_rss_mb']:>9.0f}")  # fmt: skip
        ratio, (low, high) = result[step_kind]["kept_over_default_cpu"], result[step_kind]["ci95"]
        print(f"  {step_kind}: kept / default CPU per step {ratio:.3f} (median of pairs, "
              f"95% CI {low:.3f}-{high:.3f})")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

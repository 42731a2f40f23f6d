"""The honest bench: BSQ against the field's baselines on one workload, with intervals.

Runs, in this process and one after another, every point of a sweep (BSQ alphas, uniform
k-bit, uniform k-bit with first/last layers at 8 bits, HAWQ-style allocation at average-bit
budgets) over k seeds; runs of one seed share one pretrained float model. Prints one row per
setting (mean accuracy over seeds, seed spread, Wilson 95% half-width from the test-set
size, compression, BOPs, collapsed flags, CPU seconds) and the verdict at equal
compression: does any mixed-precision setting beat the best uniform baseline that is at
least as compressed, by more than the noise?

    python benchmarks/frontier.py                       # the teaching workload, k = 3
    python benchmarks/frontier.py --seeds 0 --max-train 2000 --max-test 1000   # smaller
    python benchmarks/frontier.py --json                # last line: one JSON object
    # seeds in parallel processes, then one table (same workload but the seeds):
    python benchmarks/frontier.py --seeds 0 --save s0.json &   # ... --seeds 1, --seeds 2
    python benchmarks/frontier.py --combine s0.json s1.json s2.json --save all.json

Nothing is stored in the run store; float models are cached in ``--cache`` (default: a
temporary folder), so a second invocation with the same cache skips pretraining.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from bsq_engine.runs.stats import collapse_reason, method_verdicts, wilson_interval  # noqa: E402
from bsq_engine.runs.sweep import _sweep_configs  # noqa: E402
from bsq_engine.training.config import describe_method  # noqa: E402
from bsq_engine.training.trainer import Trainer  # noqa: E402

# The bench's workload, chosen by measurement (README, "An honest bench"; every workload
# tried is in assets/bench_screens/): the depthwise-separable dsnet on a 10k Fashion-MNIST
# subset with 4-bit activations, where layer sensitivity differs (the depthwise layers and
# conv1 are fragile) and a run costs ~90 CPU s. HAWQ budgets sit exactly at the compression
# of uniform 2-bit (16x) and of uniform 1-bit with first/last at 8 bits (1.756 bits = 18.2x).
WORKLOAD = dict(
    model="dsnet", dataset="fashion_mnist", max_train=10000, max_test=10000,
    pretrain_epochs=4, bsq_epochs=8, finetune_epochs=4, requant_interval=2, act_bits=4,
    alphas=[0.1, 0.3], uniform_bits=[1, 2, 4], first_last_bits=[1, 2],
    hawq_avg_bits=[2.0, 1.756], seeds=[0, 1, 2],
)  # fmt: skip
MIXED = ("bsq", "hawq")


def _act_bits(text: str) -> int | None:
    return None if text.lower() == "float" else int(text)


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    w = WORKLOAD
    p.add_argument("--model", default=w["model"])
    p.add_argument("--dataset", default=w["dataset"])
    for name in ("max_train", "max_test", "pretrain_epochs", "bsq_epochs", "finetune_epochs",
                 "requant_interval"):  # fmt: skip
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=w[name])
    p.add_argument("--act-bits", type=_act_bits, default=w["act_bits"], help="bits or 'float'")
    p.add_argument("--alphas", type=float, nargs="*", default=w["alphas"])
    p.add_argument("--uniform-bits", type=int, nargs="*", default=w["uniform_bits"])
    p.add_argument("--first-last-bits", type=int, nargs="*", default=w["first_last_bits"])
    p.add_argument("--hawq-avg-bits", type=float, nargs="*", default=w["hawq_avg_bits"])
    p.add_argument("--seeds", type=int, nargs="+", default=w["seeds"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--cache", help="float-model cache folder (default: temporary)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.add_argument("--save", help="also write the table as JSON here (the Pareto page shows "
                   "assets/bench_frontier.json)")  # fmt: skip
    p.add_argument("--combine", nargs="+", metavar="JSON", help="train nothing: one table from "
                   "the runs of --save documents (same workload, other seeds)")  # fmt: skip
    return p.parse_args(argv)


def _configs(args) -> list:
    overrides = {
        k: getattr(args, k) for k in ("max_train", "max_test", "pretrain_epochs", "bsq_epochs",
                                      "finetune_epochs", "requant_interval", "act_bits")
    }  # fmt: skip
    runs = _sweep_configs(
        args.model, args.dataset, args.alphas, args.uniform_bits, overrides,
        args.first_last_bits, args.hawq_avg_bits, args.seeds,
    )  # fmt: skip
    return [config for _, config in runs]


def _run_all(configs, cache: Path) -> list[dict]:
    results = []
    for i, config in enumerate(configs, 1):
        cpu0 = time.process_time()
        summary = Trainer(config, cache_dir=cache).run()
        bits = [layer["n_bits"] for layer in summary["layers"]]
        row = {
            "label": describe_method(config.to_dict()), "method": config.method,
            "seed": config.seed, "accuracy": summary["accuracy"],
            "float_accuracy": summary["float_accuracy"], "test_size": summary["test_size"],
            "compression": summary["compression"], "avg_bits": summary["avg_bits"],
            "bops": summary["bops"], "bits": bits, "cpu_s": time.process_time() - cpu0,
            "quant_stage_accuracy": summary["quant_stage_accuracy"],
            "collapsed": collapse_reason(summary["accuracy"], summary["num_classes"], bits),
        }  # fmt: skip
        results.append(row)
        print(f"[{i}/{len(configs)}] {row['label']}, seed {row['seed']}: "
              f"{100 * row['accuracy']:.2f}% at {row['compression'] or 0:.1f}x "
              f"(bits {'/'.join(map(str, bits))}, {row['cpu_s']:.0f} CPU s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return results


def _aggregate(results: list[dict]) -> list[dict]:
    """One row per setting: means over seeds, spread, Wilson half-width at the mean."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in results):
        group = [r for r in results if r["label"] == label]
        accs = [r["accuracy"] for r in group]
        mean, n = statistics.fmean(accs), group[0]["test_size"]
        low, high = wilson_interval(mean, n)
        comps = [r["compression"] for r in group if r["compression"]]
        rows.append({
            "label": label, "method": group[0]["method"], "seeds": len(group),
            "accuracy": mean, "spread": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "half_width": (high - low) / 2, "test_size": n,
            "compression": statistics.fmean(comps) if comps else None,
            "bops": statistics.fmean(r["bops"] for r in group),
            "collapsed": sum(r["collapsed"] is not None for r in group),
            "float_accuracy": statistics.fmean(r["float_accuracy"] for r in group),
            "cpu_s": statistics.fmean(r["cpu_s"] for r in group),
        })  # fmt: skip
    return rows


def _print(rows, verdicts) -> None:
    print(f"{'setting':<40} {'acc %':>7} {'±95%':>5} {'seed sd':>7} {'x':>6} "
          f"{'MBOPs':>8} {'collapsed':>9} {'CPU s':>6}")  # fmt: skip
    for r in rows:
        comp = f"{r['compression']:.1f}" if r["compression"] else "-"
        print(f"{r['label']:<40} {100 * r['accuracy']:>7.2f} {100 * r['half_width']:>5.2f} "
              f"{100 * r['spread']:>7.2f} {comp:>6} {r['bops'] / 1e6:>8.2f} "
              f"{r['collapsed']:>6}/{r['seeds']:<2} {r['cpu_s']:>6.0f}")  # fmt: skip
    print(f"float model: {100 * rows[0]['float_accuracy']:.2f}% (test set {rows[0]['test_size']})")
    for v in verdicts:
        if v["uniform"] is None:
            print(f"  {v['mixed']}: no uniform baseline to compare with")
        else:
            print(f"  {v['mixed']} vs {v['uniform']}: {v['diff_points']:+.2f} points -> "
                  f"{v['verdict']}")  # fmt: skip
    wins = [v for v in verdicts if v["verdict"] == "wins"]
    print("verdict: mixed precision "
          + ("wins at equal compression: " + ", ".join(v["mixed"] for v in wins) if wins
             else "does not beat the best uniform baseline by more than the noise"))  # fmt: skip


def _combined(paths: list[str]) -> tuple[list[dict], dict]:
    """The runs of several ``--save`` documents and their common workload (seeds joined).

    Refuses documents of different workloads (anything but the seeds and the cache differs)
    and a seed measured twice, since either would make the mean a mixture."""
    runs, workload, seen = [], None, set()
    for path in paths:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        this = {k: v for k, v in doc["workload"].items() if k not in ("seeds", "cache")}
        if workload is not None and this != workload:
            raise ValueError(f"{path} measured another workload than {paths[0]}")
        workload = this
        for run in doc["runs"]:
            key = (run["label"], run["seed"])
            if key in seen:
                raise ValueError(f"{run['label']} seed {run['seed']} appears twice")
            seen.add(key)
            runs.append(run)
    return runs, {**workload, "seeds": sorted({r["seed"] for r in runs})}


def main(argv=None) -> int:
    args = _parse(argv)
    if args.combine:
        try:
            results, workload = _combined(args.combine)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"frontier.py: cannot combine: {exc}", file=sys.stderr)
            return 2
    else:
        import candidates  # noqa: F401  (registers benchmark-only models; here, not at import)

        torch.set_num_threads(max(args.threads, 1))
        configs = _configs(args)
        print(f"{len(configs)} runs of {args.model}/{args.dataset} "
              f"(train {args.max_train}, test {args.max_test})", file=sys.stderr)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            results = _run_all(configs, Path(args.cache or tmp))
        skip = ("json", "save", "combine")
        workload = {k: v for k, v in vars(args).items() if k not in skip}
    rows = _aggregate(results)
    verdicts = method_verdicts(rows, MIXED)
    _print(rows, verdicts)
    document = {"rows": rows, "verdicts": verdicts, "runs": results, "workload": workload,
                "torch": torch.__version__}  # fmt: skip
    if args.save:
        Path(args.save).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())

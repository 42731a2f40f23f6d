"""``python -m bsq_engine reproduce resnet20-cifar10 --data-root DIR``: the paper's headline.

Runs the paper's recipe (the ``resnet20``/``cifar10`` preset: pretrain 200 epochs, BSQ 350
epochs at alpha 5e-3 with 4-bit activations and float shortcuts, re-quantizing every 100,
finetune 300 epochs) as an ordinary stored run, then prints the published figures next to
the run's. Two reporting rules, both labelled:

- **last epoch** (default): the accuracy of the final model, what this app reports everywhere;
- **best epoch**: the highest test accuracy of any finetune epoch, what the authors' code
  reports (it selects on the test set, so it reads optimistic).

Schedule flags (``--epochs``, ``--max-train``...) override the recipe, for smoke tests; the
output then says the recipe was changed.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from bsq_engine.cli.format import emit_json
from bsq_engine.cli.settings import check_runnable, config_from, overrides_of
from bsq_engine.runs.store import RunStore
from bsq_engine.training.presets import preset_for

__all__ = ["RECIPES", "cmd_reproduce", "paper_figures"]

# recipe name -> (model, dataset, label of the published BSQ row in paper_reference.csv)
RECIPES = {"resnet20-cifar10": ("resnet20", "cifar10", "BSQ α=5e-3")}
REFERENCE_CSV = Path(__file__).resolve().parents[2] / "assets" / "paper_reference.csv"


def paper_figures(model: str, dataset: str, path: Path = REFERENCE_CSV) -> dict[str, dict]:
    """Published rows of one pair from ``assets/paper_reference.csv``, keyed by method."""
    if not path.is_file():
        raise ValueError(f"The published figures ({path}) are missing; reinstall BSQ Explorer.")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if (r["model"], r["dataset"]) == (model, dataset)]
    return {r["method"]: r for r in rows}


def _changed(config, model: str, dataset: str) -> list[str]:
    recipe = preset_for(model, dataset)
    changed = [k for k, v in recipe.items() if getattr(config, k) != v]
    return changed + [k for k in ("max_train", "max_test") if getattr(config, k) is not None]


def _accuracies(store: RunStore, run_id: str) -> tuple[float | None, float | None]:
    """(last-epoch accuracy, best finetune-epoch accuracy) of a finished run."""
    run = store.get_run(run_id)
    finetune = [e["test_acc"] for e in store.epochs(run_id) if e["stage"] == "finetune"]
    best = max(finetune) if finetune else None
    return run.get("accuracy"), best


def _num(value, fmt: str) -> str:
    return "—" if value in (None, "") else format(float(value), fmt)


def _report(store: RunStore, run_id: str, model: str, dataset: str, rule: str) -> dict:
    figures = paper_figures(model, dataset)
    bsq, flt = figures.get("bsq", {}), figures.get("float", {})
    run = store.get_run(run_id)
    last, best = _accuracies(store, run_id)
    pct = lambda v: None if v is None else 100 * v  # noqa: E731
    rows = [
        ("compression (x)", bsq.get("compression"), run.get("compression"), ".2f"),
        ("average bits", bsq.get("avg_bits"), run.get("avg_bits"), ".3f"),
        ("float accuracy (%)", flt.get("accuracy"), pct(run.get("float_accuracy")), ".2f"),
        ("accuracy, last epoch (%)", bsq.get("accuracy"), pct(last), ".2f"),
        ("accuracy, best epoch (%)", bsq.get("accuracy"), pct(best), ".2f"),
    ]
    print(f"{'':<28}{'paper':>10}{'this run':>12}")
    for label, paper, ours, fmt in rows:
        mark = "  <- reported" if label.endswith(f"{rule} epoch (%)") else ""
        print(f"{label:<28}{_num(paper, fmt):>10}{_num(ours, fmt):>12}{mark}")
    print(f"source: {bsq.get('source', '—')}; the paper's accuracy at alpha 5e-3 is not "
          "in our spec (shown as —). Best epoch = the authors' rule (chosen on the test "
          "set).")  # fmt: skip
    chosen = last if rule == "last" else best
    return {"run_id": run_id, "rule": rule, "accuracy": chosen, "last_epoch_accuracy": last,
            "best_epoch_accuracy": best, "paper": {"bsq": bsq, "float": flt}}  # fmt: skip


def cmd_reproduce(args) -> int:
    from bsq_engine.cli.train import run_foreground

    if args.recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {args.recipe!r}; choose one of: {', '.join(RECIPES)}.")
    model, dataset, _ = RECIPES[args.recipe]
    config = config_from(model, dataset, overrides_of(args))
    check_runnable(config)
    out = sys.stderr if args.json else sys.stdout
    changed = _changed(config, model, dataset)
    if changed:
        print(f"note: the paper's recipe was changed ({', '.join(changed)}): not a reproduction.",
              file=out)  # fmt: skip
    with RunStore() as store:
        name = config.name or f"reproduce {args.recipe}"
        run_id = store.create_run(config.to_dict(), name=name)
        print(f"run {run_id}", file=out, flush=True)
        code = run_foreground(store, run_id, resume=False, as_json=False)
        if code != 0:
            return code
        report = _report(store, run_id, model, dataset, args.report)
    if args.json:
        emit_json({**report, "recipe_changed": changed})
    return 0

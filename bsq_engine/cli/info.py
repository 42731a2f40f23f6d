"""The read-only commands: ``list`` (models, datasets, presets), ``runs`` and ``show``."""

from __future__ import annotations

import sys

from bsq_engine.cli import format as fmt
from bsq_engine.data import get_dataset_info, list_datasets
from bsq_engine.models import get_model_info, list_models
from bsq_engine.runs import paths
from bsq_engine.runs.store import RunStore
from bsq_engine.training.presets import list_presets

__all__ = ["cmd_list", "cmd_runs", "cmd_show"]


def cmd_list(args) -> int:
    models = [{"name": name, "description": info.description, "cost_hint": info.cost_hint,
               "datasets_hint": list(info.datasets_hint)}
              for name, info in ((n, get_model_info(n)) for n in list_models())]  # fmt: skip
    datasets = []
    for name in list_datasets():
        info = get_dataset_info(name)
        ok, where = info.available(args.data_root)
        datasets.append({"name": name, "description": info.description,
                         "cost_hint": info.cost_hint, "available": ok, "where": where})  # fmt: skip
    presets = list_presets()
    if args.json:
        fmt.emit_json({"models": models, "datasets": datasets, "presets": presets})
        return 0
    print("models:")
    print(fmt.table([[m["name"], m["description"], m["cost_hint"]] for m in models],
                    ["name", "description", "cost"], "  "))  # fmt: skip
    print("\ndatasets:")
    rows = [[d["name"], "yes" if d["available"] else "no", d["description"]] for d in datasets]
    print(fmt.table(rows, ["name", "available", "description"], "  "))
    for d in datasets:
        if not d["available"]:
            print(f"  {d['name']}: {d['where']}")
    print("\npresets (model/dataset: alpha, epochs pretrain+bsq+finetune, requant interval):")
    for p in presets:
        epochs = f"{p['pretrain_epochs']}+{p['bsq_epochs']}+{p['finetune_epochs']}"
        print(f"  {p['model']}/{p['dataset']}: alpha {p['alpha']:g}, epochs {epochs}, "
              f"requant every {p['requant_interval']}")  # fmt: skip
    return 0


def _warn_skipped(store: RunStore) -> None:
    """Rows the listing had to leave out (damaged), said once on stderr with the way out."""
    for run_id, why in store.skipped_rows():
        print(
            f"warning: run {fmt.one_line(run_id)} is damaged and was left out ({why}); "
            "`python -m bsq_engine store check` says more.",
            file=sys.stderr,
        )


def cmd_runs(args) -> int:
    with RunStore() as store:
        runs = store.list_runs(status=args.status, model=args.model, dataset=args.dataset)
        summaries = [fmt.run_summary(store, run) for run in runs]
        _warn_skipped(store)
    if args.json:
        for s in summaries:
            del s["layers"]
        fmt.emit_json(summaries)
        return 0
    if not summaries:
        print("no runs yet; start one with `python -m bsq_engine train`")
        return 0
    rows = [[s["run_id"], s["status"], s["model"], s["dataset"], s["method"],
             fmt.num(s["alpha"], "g") if s["method"] == "bsq" else s["method_label"],
             fmt.pct(s["accuracy"]), fmt.num(s["avg_bits"]),
             fmt.num(s["compression"], ".1f", "x"), fmt.duration(s["seconds"])]
            for s in summaries]  # fmt: skip
    header = ["id", "status", "model", "dataset", "method", "alpha", "accuracy", "avg bits",
              "compression", "duration"]  # fmt: skip
    print(fmt.table(rows, header))
    return 0


def cmd_show(args) -> int:
    with RunStore() as store:
        run = store.get_run(args.run_id)
        summary = fmt.run_summary(store, run)
        layers, events = fmt.layers_of(store, run), store.events(run["run_id"])
        n_epochs = len(store.epochs(run["run_id"]))
        checkpoint = paths.checkpoint_path(store, run["run_id"])
    detail = {**summary, "layers": layers, "config": run["config"], "events": events,
              "epochs": n_epochs, "created_at": run.get("created_at"),
              "checkpoint": str(checkpoint) if checkpoint.is_file() else None}  # fmt: skip
    if args.json:
        fmt.emit_json(detail)
        return 0
    print(f"run {summary['run_id']} ({fmt.one_line(summary['name'])}): {summary['status']}")
    print(f"  {summary['model']} on {summary['dataset']}, {fmt.method_label(summary)}")
    print(f"  accuracy {fmt.pct(summary['accuracy'])} (float "
          f"{fmt.pct(summary['float_accuracy'])}), {fmt.num(summary['avg_bits'])} avg bits, "
          f"{fmt.num(summary['compression'], '.2f', 'x')} compression, "
          f"{n_epochs} epochs in {fmt.duration(summary['seconds'])}")  # fmt: skip
    if summary["error"]:
        print(f"  error: {fmt.one_line(summary['error'])}")
    print("config:")
    for key, value in run["config"].items():
        print(f"  {key} = {fmt.one_line(value)}")
    print("bits per layer (32 / avg bits = compression; sign not counted):")
    fmt.print_layers(layers)
    print("precision changes:" if events else "precision changes: none")
    for event in events:
        print(f"  [{event['stage']}] {event['message']}")
    return 0

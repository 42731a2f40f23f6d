"""The quick commands of ``python -m bsq_engine`` (``list``, ``runs``, ``show``, ``export``,
``delete``) and the helpers every command shares: config from flags, summaries, formatting.

Each ``cmd_*`` takes the parsed arguments and returns the exit code. Bad input raises one of
``BAD_INPUT`` (``cli.main`` prints it as one line and exits 2); human output goes to stdout,
progress and warnings to stderr, and ``--json`` makes the last stdout line one JSON document.
The long-running commands (``train``, ``resume``, ``sweep``) live in ``cli``.
"""

from __future__ import annotations

import json
import math
import sys
import time

from bsq_engine.data import DatasetUnavailable, get_dataset_info, list_datasets
from bsq_engine.models import get_model_info, list_models
from bsq_engine.runs import paths
from bsq_engine.runs.export import export_run
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunNotFound, RunStore, StoreError, SweepNotFound
from bsq_engine.training.checkpoint import CheckpointError
from bsq_engine.training.config import RunConfig, describe_method
from bsq_engine.training.presets import list_presets, make_config
from bsq_engine.training.trainer import resolve_device
from bsq_engine.units import format_duration

__all__ = [
    "BAD_INPUT",
    "FLOAT_ACTS",
    "check_runnable",
    "cmd_delete",
    "cmd_export",
    "cmd_list",
    "cmd_runs",
    "cmd_show",
    "config_from",
    "overrides_of",
    "run_summary",
]

FLOAT_ACTS = "float"  # --act-bits float: unquantized activations (act_bits=None)
BAD_INPUT = (ValueError, RunNotFound, SweepNotFound, DatasetUnavailable, CheckpointError,
             StoreError)  # fmt: skip

# Config fields whose CLI flag has another name: named by their flag in error messages.
_FLAG_OF = {"bsq_epochs": "--epochs", "uniform_bits": "--bits"}
# CLI flag (argparse dest) -> RunConfig field
_OVERRIDES = {
    "method": "method", "alpha": "alpha", "bits": "uniform_bits", "n_bits": "n_bits",
    "act_bits": "act_bits", "epochs": "bsq_epochs", "pretrain_epochs": "pretrain_epochs",
    "finetune_epochs": "finetune_epochs", "requant_interval": "requant_interval", "lr": "lr",
    "batch_size": "batch_size", "seed": "seed", "device": "device", "data_root": "data_root",
    "max_train": "max_train", "max_test": "max_test", "name": "name",
    "max_bits": "max_bits", "float_shortcuts": "float_shortcuts",
    "first_last_bits": "first_last_bits", "scheme": "scheme", "avg_bits": "avg_bits",
    "sensitivity": "sensitivity",
}  # fmt: skip


# ---------------------------------------------------------------- shared helpers
def overrides_of(args, exclude: tuple[str, ...] = ()) -> dict:
    """The RunConfig settings given on the command line (unset flags are left out)."""
    return {
        field: getattr(args, flag)
        for flag, field in _OVERRIDES.items()
        if field not in exclude and getattr(args, flag, None) is not None
    }


def config_from(model: str, dataset: str, overrides: dict) -> RunConfig:
    """``make_config`` plus ``act_bits="float"``, which make_config cannot express (it
    treats None as "not given", so a preset's 4-bit activations would stay)."""
    overrides = dict(overrides)
    float_acts = overrides.get("act_bits") == FLOAT_ACTS
    if float_acts:
        del overrides["act_bits"]
    try:
        config = make_config(model, dataset, **overrides)
        return config.replace(act_bits=None) if float_acts else config
    except ValueError as exc:
        message = str(exc)
        for field, flag in _FLAG_OF.items():
            message = message.replace(f"{field} ", f"{flag} ({field}) ", 1)
        raise ValueError(message) from None


def check_runnable(config: RunConfig) -> None:
    """Refuse before anything is stored: missing data or an absent GPU are bad arguments."""
    ok, how = get_dataset_info(config.dataset).available(config.data_root)
    if not ok:
        raise DatasetUnavailable(f"Dataset {config.dataset!r} is not available. {how}")
    resolve_device(config.device)


def finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def emit_json(payload) -> None:
    print(json.dumps(payload, default=str, allow_nan=False))


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def num(value, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def duration(seconds) -> str:
    return format_duration(seconds, compact=True)


def elapsed(run: dict):
    if run.get("seconds") is not None:
        return run["seconds"]
    start, end = run.get("started_at"), run.get("finished_at")
    if start is None:
        return None
    return (end or time.time()) - start


def table(rows: list[list], header: list[str], indent: str = "") -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines)


def layers_of(store: RunStore, run: dict) -> list[dict]:
    """Bits per layer: the final summary's, else the latest layer snapshot (a live run)."""
    summary = run.get("summary") or {}
    if summary.get("layers"):
        return [dict(layer) for layer in summary["layers"]]
    keys = ("name", "n_bits", "n_weights", "density")
    return [{k: r.get(k) for k in keys} for r in store.latest_layers(run["run_id"])]


def run_summary(store: RunStore, run: dict) -> dict:
    """The summary shape (docs/ARCHITECTURE.md) of any run, finished or not."""
    config = run["config"]
    bsq = config.get("method") == "bsq"
    return {
        "run_id": run["run_id"], "name": run.get("name"), "status": run["status"],
        "model": run["model"], "dataset": run["dataset"], "method": run["method"],
        "alpha": config.get("alpha") if bsq else None,
        "uniform_bits": None if bsq else config.get("uniform_bits"),
        "float_accuracy": run.get("float_accuracy"), "accuracy": run.get("accuracy"),
        "avg_bits": run.get("avg_bits"), "compression": finite(run.get("compression")),
        "seconds": elapsed(run), "sweep_id": run.get("sweep_id"),
        "layers": [{k: layer.get(k) for k in ("name", "n_bits", "n_weights")}
                   for layer in layers_of(store, run)],
        "error": run.get("error"), "method_label": describe_method(config),
        "quant_stage_accuracy": (run.get("summary") or {}).get("quant_stage_accuracy"),
        "warnings": (run.get("summary") or {}).get("warnings") or [],
    }  # fmt: skip


def method_label(summary: dict) -> str:
    return summary["method_label"]


def print_outcome(summary: dict) -> None:
    """One human line on stdout; why it did not finish, and what to do, on stderr."""
    rid, status = summary["run_id"], summary["status"]
    if status == RunStatus.FINISHED:
        print(
            f"finished run {rid} ({summary['model']}/{summary['dataset']}, "
            f"{method_label(summary)}): accuracy {pct(summary['accuracy'])} "
            f"(float {pct(summary['float_accuracy'])}), {num(summary['avg_bits'])} avg bits, "
            f"{num(summary['compression'], '.2f', 'x')} compression, "
            f"{duration(summary['seconds'])}"
        )
        for warning in summary.get("warnings") or []:
            print(f"warning: {warning}", file=sys.stderr)
        return
    hint = f"continue it with `python -m bsq_engine resume {rid}`"
    if status == RunStatus.STOPPED:
        print(f"run {rid} stopped; {hint}.", file=sys.stderr)
    else:
        print(f"run {rid} {status}: {summary.get('error') or 'no reason recorded'}",
              file=sys.stderr)  # fmt: skip


def print_layers(layers: list[dict]) -> None:
    rows = [[layer["name"], layer["n_bits"], layer["n_weights"], "#" * (layer["n_bits"] or 0)]
            for layer in layers]  # fmt: skip
    if rows:
        print(table(rows, ["layer", "bits", "weights", ""]))


# ---------------------------------------------------------------- inspection
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
        emit_json({"models": models, "datasets": datasets, "presets": presets})
        return 0
    print("models:")
    print(table([[m["name"], m["description"], m["cost_hint"]] for m in models],
                 ["name", "description", "cost"], "  "))  # fmt: skip
    print("\ndatasets:")
    rows = [[d["name"], "yes" if d["available"] else "no", d["description"]] for d in datasets]
    print(table(rows, ["name", "available", "description"], "  "))
    for d in datasets:
        if not d["available"]:
            print(f"  {d['name']}: {d['where']}")
    print("\npresets (model/dataset: alpha, epochs pretrain+bsq+finetune, requant interval):")
    for p in presets:
        epochs = f"{p['pretrain_epochs']}+{p['bsq_epochs']}+{p['finetune_epochs']}"
        print(f"  {p['model']}/{p['dataset']}: alpha {p['alpha']:g}, epochs {epochs}, "
              f"requant every {p['requant_interval']}")  # fmt: skip
    return 0


def cmd_runs(args) -> int:
    with RunStore() as store:
        runs = store.list_runs(status=args.status, model=args.model, dataset=args.dataset)
        summaries = [run_summary(store, run) for run in runs]
    if args.json:
        for s in summaries:
            del s["layers"]
        emit_json(summaries)
        return 0
    if not summaries:
        print("no runs yet; start one with `python -m bsq_engine train`")
        return 0
    rows = [[s["run_id"], s["status"], s["model"], s["dataset"], s["method"],
             num(s["alpha"], "g") if s["method"] == "bsq" else s["method_label"],
             pct(s["accuracy"]), num(s["avg_bits"]), num(s["compression"], ".1f", "x"),
             duration(s["seconds"])] for s in summaries]  # fmt: skip
    header = ["id", "status", "model", "dataset", "method", "alpha", "accuracy", "avg bits",
              "compression", "duration"]  # fmt: skip
    print(table(rows, header))
    return 0


def cmd_show(args) -> int:
    with RunStore() as store:
        run = store.get_run(args.run_id)
        summary = run_summary(store, run)
        layers, events = layers_of(store, run), store.events(run["run_id"])
        n_epochs = len(store.epochs(run["run_id"]))
        checkpoint = paths.checkpoint_path(store, run["run_id"])
    detail = {**summary, "layers": layers, "config": run["config"], "events": events,
              "epochs": n_epochs, "created_at": run.get("created_at"),
              "checkpoint": str(checkpoint) if checkpoint.is_file() else None}  # fmt: skip
    if args.json:
        emit_json(detail)
        return 0
    print(f"run {summary['run_id']} ({summary['name']}): {summary['status']}")
    print(f"  {summary['model']} on {summary['dataset']}, {method_label(summary)}")
    print(f"  accuracy {pct(summary['accuracy'])} (float {pct(summary['float_accuracy'])}), "
          f"{num(summary['avg_bits'])} avg bits, "
          f"{num(summary['compression'], '.2f', 'x')} compression, "
          f"{n_epochs} epochs in {duration(summary['seconds'])}")  # fmt: skip
    if summary["error"]:
        print(f"  error: {summary['error']}")
    print("config:")
    for key, value in run["config"].items():
        print(f"  {key} = {value}")
    print("bits per layer (32 / avg bits = compression; sign not counted):")
    print_layers(layers)
    print("precision changes:" if events else "precision changes: none")
    for event in events:
        print(f"  [{event['stage']}] {event['message']}")
    return 0


# ---------------------------------------------------------------- export, delete
def cmd_export(args) -> int:
    with RunStore() as store:
        result = export_run(store, args.run_id, args.out)
    if args.json:
        emit_json(result)
        return 0
    print(f"exported run {args.run_id} to {result['out_dir']}:")
    for kind, path in result["files"].items():
        print(f"  {kind:<10} {path}")
    print(f"quantized weights {result['quantized_bytes'] / 1024:.1f} KiB vs float32 "
          f"{result['float_bytes'] / 1024:.1f} KiB: {result['size_ratio']:.2f}x smaller "
          "(measured file sizes)")  # fmt: skip
    return 0


def cmd_delete(args) -> int:
    with RunStore() as store:
        run = store.get_run(args.run_id)
        rid = run["run_id"]
        if run["status"] == RunStatus.RUNNING:
            print(f"error: run {rid} is running (process {run.get('pid')} on "
                  f"{run.get('hostname')}); stop it first: python -m bsq_engine stop {rid}",
                  file=sys.stderr)  # fmt: skip
            return 1
        if not args.yes:
            if not sys.stdin.isatty():
                print(f"error: not a terminal; pass --yes to delete run {rid}.", file=sys.stderr)
                return 1
            try:
                answer = input(f"delete run {rid} ({run.get('name')}, {run['status']})? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("kept.")
                return 1
        store.delete_run(rid)
    print(f"deleted run {rid}")
    return 0

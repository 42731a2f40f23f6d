"""The commands that write outside the run or remove it: ``export`` and ``delete``."""

from __future__ import annotations

import sys

from bsq_engine.cli import format as fmt
from bsq_engine.runs.export import export_run
from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunStore

__all__ = ["cmd_delete", "cmd_export"]


def cmd_export(args) -> int:
    with RunStore() as store:
        result = export_run(store, args.run_id, args.out, force=args.force)
    if args.json:
        fmt.emit_json(result)
        return 0
    print(f"exported run {args.run_id} to {result['out_dir']}:")
    for kind, path in result["files"].items():
        print(f"  {kind:<10} {path}")
    print(f"quantized weights {result['quantized_bytes'] / 1024:.1f} KiB vs float32 "
          f"{result['float_bytes'] / 1024:.1f} KiB: {result['size_ratio']:.2f}x smaller "
          "(measured file sizes)")  # fmt: skip
    return 0


def _confirmed(run: dict, assume_yes: bool) -> bool:
    rid = run["run_id"]
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"error: not a terminal; pass --yes to delete run {rid}.", file=sys.stderr)
        return False
    name = fmt.one_line(run.get("name"))
    try:
        answer = input(f"delete run {rid} ({name}, {run['status']})? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        print("kept.")
        return False
    return True


def cmd_delete(args) -> int:
    with RunStore() as store:
        run = store.get_run(args.run_id)
        rid = run["run_id"]
        if run["status"] == RunStatus.RUNNING:
            print(f"error: run {rid} is running (process {run.get('pid')} on "
                  f"{run.get('hostname')}); stop it first: python -m bsq_engine stop {rid}",
                  file=sys.stderr)  # fmt: skip
            return 1
        if not _confirmed(run, args.yes):
            return 1
        store.delete_run(rid)
    print(f"deleted run {rid}")
    return 0

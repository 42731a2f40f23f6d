"""``store check`` and ``store repair``: look after the run index (see ``runs/repair.py``)."""

from __future__ import annotations

from bsq_engine.cli import format as fmt
from bsq_engine.runs.repair import check_store, repair_store
from bsq_engine.runs.store import default_home

__all__ = ["cmd_store"]


def _print_report(report: dict) -> None:
    print(f"store {report['home']}: {report['verdict']}")
    for line in report["findings"]:
        print(f"  - {fmt.one_line(line)}")
    for line in report.get("actions", []):
        print(f"  * {fmt.one_line(line)}")


def cmd_store(args) -> int:
    home = default_home()
    report = check_store(home) if args.action == "check" else repair_store(home)
    if args.json:
        fmt.emit_json(report)
    else:
        _print_report(report)
    return 0 if report["ok"] else 1

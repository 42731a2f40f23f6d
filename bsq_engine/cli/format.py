"""How the CLI prints: tables, numbers, run summaries, JSON, and a stdout that survives
``| head``.

Human output goes to stdout, progress and warnings to stderr; ``--json`` makes the last
stdout line one JSON document.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import contextmanager

from bsq_engine.runs.status import RunStatus
from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import describe_method
from bsq_engine.units import format_duration

__all__ = [
    "emit_json",
    "layers_of",
    "method_label",
    "num",
    "pct",
    "print_layers",
    "print_outcome",
    "run_summary",
    "safe_stdout",
    "table",
]


class _PipeSafe:
    """A stdout whose reader may go away (``show ID | head``): the first broken pipe points
    file descriptor 1 at /dev/null and later writes are dropped, so the command (a training
    run, say) goes on to its end instead of dying with a BrokenPipeError half-way."""

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.broken = True
        try:  # the interpreter flushes fd 1 again at exit: give it somewhere to go
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # not a real file (tests capture it)
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def safe_stdout():
    """``sys.stdout`` is pipe-safe inside the block."""
    previous = sys.stdout
    sys.stdout = _PipeSafe(previous)
    try:
        yield sys.stdout
    finally:
        sys.stdout.flush()
        sys.stdout = previous


def emit_json(payload) -> None:
    print(json.dumps(payload, default=str, allow_nan=False))


def finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def num(value, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def duration(seconds) -> str:
    return format_duration(seconds, compact=True)


def one_line(text) -> str:
    """User text (run names, error messages) on one line, whatever it contains."""
    return " ".join(str(text).split())


def _elapsed(run: dict):
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
        "seconds": _elapsed(run), "sweep_id": run.get("sweep_id"),
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
            print(f"warning: {one_line(warning)}", file=sys.stderr)
        return
    hint = f"continue it with `python -m bsq_engine resume {rid}`"
    if status == RunStatus.STOPPED:
        print(f"run {rid} stopped; {hint}.", file=sys.stderr)
    else:
        reason = one_line(summary.get("error") or "no reason recorded")
        print(f"run {rid} {status}: {reason}", file=sys.stderr)


def print_layers(layers: list[dict]) -> None:
    rows = [[layer["name"], layer["n_bits"], layer["n_weights"], "#" * (layer["n_bits"] or 0)]
            for layer in layers]  # fmt: skip
    if rows:
        print(table(rows, ["layer", "bits", "weights", ""]))

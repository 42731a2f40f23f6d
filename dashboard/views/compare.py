"""Pure helpers of the Compare page: labels, the summary frame, a run's scheme JSON.

No Streamlit, no store, no files here, so the rules (what a uniform run's alpha shows, what
a scheme holds when a run cannot be exported) are unit-testable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bsq_engine.runs.export import COUNTING_CONVENTION
from dashboard.views.compare_charts import MISSING, summary_table

__all__ = ["option_label", "run_labels", "scheme_json", "summary_frame"]

_SCHEME_KEYS = ("run_id", "name", "status", "model", "dataset", "method", "alpha", "accuracy",
                "float_accuracy", "avg_bits", "compression")  # fmt: skip


def option_label(row: Any) -> str:
    """'name · model/dataset · method · acc' for a ``runs_frame`` row (a namedtuple)."""
    acc = "—" if pd.isna(row.accuracy_pct) else f"{row.accuracy_pct:.1f}%"
    method = "BSQ" if row.method == "bsq" else str(row.method)
    return f"{row.name} · {row.model}/{row.dataset} · {method} · {acc}"


def run_labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Run names as chart labels; a duplicated name gets its id (as in the summary table)."""
    names = [str(r.get("name") or r.get("run_id")) for r in runs]
    return [f"{n} ({r.get('run_id')})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def _without_placeholder_alpha(run: Mapping[str, Any]) -> Mapping[str, Any]:
    """A uniform run's stored alpha is an unused placeholder: treat it as missing."""
    return run if run.get("method") == "bsq" else {**run, "alpha": None}


def summary_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``compare_charts.summary_table`` with status, model and dataset rows on top."""
    table = summary_table([_without_placeholder_alpha(r) for r in runs])
    head = pd.DataFrame(
        [[r.get(k) for r in runs] for k in ("status", "model", "dataset")],
        index=["status", "model", "dataset"], columns=table.columns, dtype=object,
    )  # fmt: skip
    return pd.concat([head, table]).fillna(MISSING)


def scheme_json(run: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]) -> bytes:
    """The scheme as JSON from what the store keeps (no checkpoint needed)."""
    scheme: dict[str, Any] = {k: _without_placeholder_alpha(run).get(k) for k in _SCHEME_KEYS}
    for key, value in scheme.items():
        if isinstance(value, float) and not math.isfinite(value):
            scheme[key] = None
    scheme["counting_convention"] = COUNTING_CONVENTION
    scheme["layers"] = [{k: layer.get(k) for k in ("name", "n_bits", "n_weights")}
                        for layer in layers]  # fmt: skip
    scheme["config"] = run.get("config") or {}
    return json.dumps(scheme, indent=2).encode()

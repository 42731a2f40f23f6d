"""The honest bench on the Pareto page: intervals, ties, collapsed runs, best per method.

Pure pandas over ``runs_frame`` rows plus the stored run dicts (their summaries carry the
test-set size, classes, BOPs and the method's settings). No Streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from bsq_engine.runs.stats import (
    collapse_reason,
    differs,
    frontier_marks,
    method_verdicts,
    wilson_interval,
)
from bsq_engine.runs.status import RunStatus
from bsq_engine.training.config import describe_method

__all__ = [
    "BEST_COLUMNS",
    "COLLAPSED_STYLE",
    "FAMILY_STYLE",
    "add_float_line",
    "bench_frame",
    "bench_hover",
    "bench_summary",
    "best_alpha_within",
    "best_at",
    "best_sentence",
    "decorate_run_trace",
    "family_of",
    "retrain_config",
    "sensitivity_table",
    "staircase_trace",
]

# Families of the bench (``family_of``); BSQ and uniform keep the chart's historic styles.
FAMILY_STYLE = {
    "BSQ": {"name": "BSQ", "symbol": "circle", "color": "#4C78A8"},
    "uniform": {"name": "uniform", "symbol": "square", "color": "#F58518"},
    "uniform, first/last 8": {"name": "uniform, first/last 8", "symbol": "triangle-up",
                              "color": "#E8A33D"},
    "scheme QAT": {"name": "scheme QAT", "symbol": "cross", "color": "#72B7B2"},
    "HAWQ-style": {"name": "HAWQ-style", "symbol": "hexagon", "color": "#54A24B"},
}  # fmt: skip
COLLAPSED_STYLE = {"name": "collapsed", "symbol": "x", "color": "#9D9D9D"}
BEST_COLUMNS = ["method", "run", "accuracy (%)", "± (95%)", "compression (x)", "seeds", "tied"]


def family_of(config: Mapping[str, Any]) -> str:
    """The method family a run belongs to (one trace, one row of the best-of table)."""
    method = config.get("method", "bsq")
    if method == "uniform":
        return "uniform, first/last 8" if config.get("first_last_bits") else "uniform"
    return {"bsq": "BSQ", "scheme": "scheme QAT", "hawq": "HAWQ-style"}.get(method, method)


def _bench_row(run: Mapping[str, Any]) -> dict[str, Any]:
    summary, config = run.get("summary") or {}, dict(run.get("config") or {})
    config.setdefault("method", run.get("method"))
    acc, n = run.get("accuracy"), summary.get("test_size")
    low = high = np.nan
    if acc is not None and isinstance(n, int) and n > 0:
        low, high = (100 * v for v in wilson_interval(float(acc), n))
    layers = summary.get("layers")
    bits = [layer.get("n_bits", 0) for layer in layers] if layers else None
    reason = collapse_reason(acc, summary.get("num_classes"), bits) if summary else None
    return {
        "run_id": run.get("run_id"), "family": family_of(config),
        "label": describe_method(config), "seed": config.get("seed"),
        "test_size": n if isinstance(n, int) else np.nan, "acc_low": low, "acc_high": high,
        "bops": summary.get("bops", np.nan), "collapsed": reason or "",
        "quant_stage_pct": np.nan if summary.get("quant_stage_accuracy") is None
        else 100 * summary["quant_stage_accuracy"],
        "warnings": " ".join(summary.get("warnings") or []),
    }  # fmt: skip


def bench_frame(runs_df: pd.DataFrame, runs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``runs_df`` plus bench columns: family, label, seed, Wilson interval (acc_low,
    acc_high in %), bops, collapsed (the reason, "" if not) and mark (frontier, tied,
    dominated, collapsed) on the compression axis among finished runs."""
    extra = pd.DataFrame([_bench_row(r) for r in runs])
    if extra.empty:
        extra = pd.DataFrame(columns=["run_id", "family", "label", "collapsed"])
    df = runs_df.merge(extra, on="run_id", how="left")
    df["collapsed"] = df["collapsed"].fillna("")
    # Stores written before compression became None hold "inf" for a fully pruned model.
    df["compression"] = df["compression"].replace([np.inf, -np.inf], np.nan)
    finished = df["status"] == RunStatus.FINISHED
    unsized = df["compression"].isna() & finished & (df["collapsed"] == "")
    df.loc[unsized, "collapsed"] = "no compression: every layer is pruned"
    df["family"] = df["family"].fillna(df["method"])
    df["mark"] = ""
    if finished.any():
        sub = df[finished]
        ns = sub["test_size"].fillna(1).astype(int).tolist()
        df.loc[finished, "mark"] = frontier_marks(
            sub["compression"].tolist(), (sub["accuracy_pct"] / 100).tolist(), ns,
            (sub["collapsed"] != "").tolist(),
        )  # fmt: skip
    return df


def _seed_groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, label): mean over seeds of accuracy and compression."""
    grouped = df.groupby(["family", "label"], as_index=False).agg(
        accuracy_pct=("accuracy_pct", "mean"), spread=("accuracy_pct", "std"),
        compression=("compression", "mean"), test_size=("test_size", "min"),
        seeds=("run_id", "count"), run=("name", "first"),
    )  # fmt: skip
    return grouped


def best_at(df: pd.DataFrame, compression: float, tolerance: float = 0.02) -> pd.DataFrame:
    """Per family, the most accurate finished, non-collapsed setting whose (seed-mean)
    compression is at least ``compression`` (minus a 2% tolerance), with its 95% interval;
    ``tied`` says whether it is within noise of the best row."""
    ok = df[(df["status"] == RunStatus.FINISHED) & (df["collapsed"] == "")]
    groups = _seed_groups(ok)
    groups = groups[groups["compression"] >= compression * (1 - tolerance)]
    if groups.empty:
        return pd.DataFrame(columns=BEST_COLUMNS)
    best = groups.sort_values("accuracy_pct", ascending=False).groupby("family").head(1)
    best = best.sort_values("accuracy_pct", ascending=False).reset_index(drop=True)
    top, top_n = best.iloc[0]["accuracy_pct"] / 100, _size(best.iloc[0]["test_size"])
    rows = []
    for r in best.itertuples():
        acc, n = r.accuracy_pct / 100, _size(r.test_size)
        known = n is not None and top_n is not None  # runs made before sizes were stored
        half = np.nan
        if n is not None:
            low, high = wilson_interval(acc, n)
            half = 100 * (high - low) / 2
        rows.append({
            "method": r.family, "run": r.label if r.seeds > 1 else r.run,
            "accuracy (%)": r.accuracy_pct, "± (95%)": half,
            "compression (x)": r.compression, "seeds": int(r.seeds),
            "tied": (not differs(top, top_n, acc, n)) if known else None,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=BEST_COLUMNS)


def _size(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def best_sentence(best: pd.DataFrame, compression: float) -> str:
    """'At 16x or more: uniform 2-bit 91.0 ± 0.6 (14.2x), BSQ ... (tied within noise).'"""
    if best.empty:
        return f"No finished run reaches {compression:g}x."
    parts = [
        f"{r['method']} ({r['run']}) {r['accuracy (%)']:.1f}"
        + (" (no test-set size recorded)" if pd.isna(r["± (95%)"]) else f" ± {r['± (95%)']:.1f}")
        + f"% at {r['compression (x)']:.1f}x"
        for _, r in best.iterrows()
    ]
    if best["tied"].isna().any():
        verdict = "unknown: runs made before test-set sizes were recorded carry no interval"
        return f"At {compression:g}x or more: " + "; ".join(parts) + f". Verdict: {verdict}."
    tied = int(best["tied"].sum())
    verdict = (
        "one method only, nothing to compare" if len(best) == 1
        else "all within noise of each other" if tied == len(best)
        else f"{best.iloc[0]['method']} is best by more than the noise" if tied == 1
        else f"the top {tied} are within noise of each other"
    )  # fmt: skip
    return f"At {compression:g}x or more: " + "; ".join(parts) + f". Verdict: {verdict}."


def best_alpha_within(df: pd.DataFrame, points: float) -> pd.Series | None:
    """The most compressed finished, non-collapsed BSQ run within ``points`` of float."""
    ok = (df["status"] == RunStatus.FINISHED) & (df["collapsed"] == "")
    bsq = df[ok & (df["method"] == "bsq")]
    bsq = bsq[bsq["accuracy_pct"] >= bsq["float_accuracy_pct"] - points]
    if bsq.empty:
        return None
    return bsq.sort_values(["compression", "accuracy_pct"], ascending=False).iloc[0]


def retrain_config(run: Mapping[str, Any]) -> dict | None:
    """Config of "retrain this scheme": the run's bits per layer as a fixed scheme, trained
    from the float model with the same schedule (the BSQ paper's Table-1 control). ``None``
    when the run has no final scheme yet."""
    layers = (run.get("summary") or {}).get("layers")
    if run.get("status") != RunStatus.FINISHED or not layers:
        return None
    config = dict(run.get("config") or {})
    config.update(method="scheme", scheme=[int(layer["n_bits"]) for layer in layers],
                  alpha=0.0, first_last_bits=None, avg_bits=None, name=None)  # fmt: skip
    return config


def sensitivity_table(plan: Mapping[str, Any] | None) -> pd.DataFrame:
    """Why each layer got its bits in a HAWQ-style run: chosen bits, Hessian trace (when
    measured) and the estimated loss increase at each candidate bit-width."""
    if not plan or not plan.get("costs"):
        return pd.DataFrame()
    rows = []
    for i, name in enumerate(plan["layers"]):
        row = {"layer": name, "bits": plan["bits"][i]}
        if plan.get("traces"):
            row["Hessian trace"] = plan["traces"][name]
        row.update({f"cost @{b}": c for b, c in zip(plan["candidates"], plan["costs"][i])})
        rows.append(row)
    return pd.DataFrame(rows)


def bench_summary(doc: Mapping[str, Any] | None) -> tuple[pd.DataFrame, list[str], dict] | None:
    """The measured bench of ``benchmarks/frontier.py --save`` (its parsed JSON document):
    (table, verdict lines, workload), or ``None`` when the document is missing or malformed.
    The verdicts are recomputed from the rows with today's rule (``method_verdicts``), not
    read from the file, so a document saved by an older script says what the page says.
    """
    try:
        rows = doc["rows"]
        verdicts = method_verdicts(rows)
        table = pd.DataFrame([{
            "setting": r["label"], "accuracy (%)": 100 * r["accuracy"],
            "± (95%)": 100 * r["half_width"], "seed sd": 100 * r["spread"], "seeds": r["seeds"],
            "compression (x)": r["compression"], "collapsed": r["collapsed"],
        } for r in rows])  # fmt: skip
        lines = [
            f"{v['mixed']} vs {v['uniform']}: {v['diff_points']:+.2f} points, {v['verdict']}"
            if v.get("uniform") else f"{v['mixed']}: no uniform baseline to compare with"
            for v in verdicts
        ]  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    return table, lines, doc.get("workload") or {}


# ---------------------------------------------------------------- chart pieces
def bench_hover(r: Any) -> str:
    """Interval, accuracy before finetune, tie and collapse lines of one hover (a row of
    ``bench_frame``; empty for rows without the bench columns)."""
    text = ""
    if not pd.isna(getattr(r, "acc_low", np.nan)):
        text += f" (95%: {r.acc_low:.2f}-{r.acc_high:.2f})"
    if not pd.isna(getattr(r, "quant_stage_pct", np.nan)):
        text += f"<br>before finetune: {r.quant_stage_pct:.2f}%"
    if getattr(r, "mark", "") == "tied":
        text += "<br>tied: a smaller model is within noise of this accuracy"
    if getattr(r, "collapsed", ""):
        text += f"<br><b>collapsed</b>: {r.collapsed}"
    return text


def decorate_run_trace(trace: go.Scatter, df: pd.DataFrame, style: dict) -> go.Scatter:
    """With the bench columns: tied points drawn hollow, and 95% error bars."""
    if "mark" in df:
        trace.marker.symbol = [
            f"{style['symbol']}-open" if m == "tied" else style["symbol"] for m in df["mark"]
        ]
    if "acc_low" in df and df["acc_low"].notna().any():
        trace.update(error_y={
            "type": "data", "array": (df["acc_high"] - df["accuracy_pct"]).tolist(),
            "arrayminus": (df["accuracy_pct"] - df["acc_low"]).tolist(),
            "color": style["color"], "thickness": 1, "width": 3,
        })  # fmt: skip
    return trace


def staircase_trace(group: pd.DataFrame, x_mode: str, style: dict) -> go.Scatter:
    """A uniform family's points joined as a staircase, the way the field draws them."""
    steps = group.sort_values(x_mode)
    return go.Scatter(
        x=steps[x_mode], y=steps["accuracy_pct"], mode="lines", line_shape="vh",
        line={"color": style["color"], "width": 1}, hoverinfo="skip",
        name=f"{style['name']} staircase", showlegend=False,
    )  # fmt: skip


def add_float_line(fig: go.Figure, runs_df: pd.DataFrame) -> None:
    """The float model's accuracy (median over runs: sweeps share one float model)."""
    if "float_accuracy_pct" not in runs_df or runs_df["float_accuracy_pct"].isna().all():
        return
    level = float(runs_df["float_accuracy_pct"].median())
    fig.add_hline(
        y=level, line={"color": "#444", "dash": "dash", "width": 1},
        annotation={"text": f"float model {level:.2f}%"}, annotation_position="top left",
    )  # fmt: skip

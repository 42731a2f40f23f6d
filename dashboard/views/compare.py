"""The Compare page's pure logic: side-by-side charts, the summary table, labels, schemes.

Inputs are keyed by a run label (``run_labels``: the run name, with its id when two runs
share a name), so the same label appears in every legend, subplot title and table column.
No Streamlit, no store, no files here, so the rules (what a uniform run's alpha shows, what
a scheme holds when a run cannot be exported) are unit-testable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from pandas.io.formats.style import Styler
from plotly.subplots import make_subplots

from bsq_engine.runs.export import COUNTING_CONVENTION
from bsq_engine.units import MISSING
from dashboard.views import plain
from dashboard.views.charts import (
    DENSITY_SCALE,
    GAP_COLOR,
    METRIC_LABELS,
    PERCENT_METRICS,
    bit_text,
    density_trace,
    style_figure,
)
from dashboard.views.frames import shown_alpha, stage_epochs

__all__ = [
    "density_heatmaps",
    "differing_rows",
    "grouped_bits_chart",
    "highlight_differences",
    "option_label",
    "overlay_curves",
    "run_labels",
    "scheme_json",
    "summary_frame",
    "summary_table",
]

DIFF_STYLE = "background-color: #FFF3C4; font-weight: 600"


def run_labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Run names as labels of legends, subplots and summary columns; a duplicated name gets
    its run id appended."""
    names = [str(r.get("name") or r.get("run_id")) for r in runs]
    return [f"{n} ({r.get('run_id')})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def _layer_order(runs_layers: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Union of layer names in first-seen order, so runs of one model line up by name."""
    order: list[str] = []
    for layers in runs_layers.values():
        order += [layer["name"] for layer in layers if layer["name"] not in order]
    return order


def grouped_bits_chart(
    runs_layers: Mapping[str, Sequence[Mapping[str, Any]]],
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Per-layer bits, one bar group per layer and one colour per run (``colors``: the
    run's colour on every page, see ``views.colors``)."""
    colors = colors or {}
    fig = style_figure(go.Figure(), "Bits per layer by run", "Layer", "Bits")
    order = _layer_order(runs_layers)
    for label, layers in runs_layers.items():
        by_name = {layer["name"]: layer for layer in layers}
        bits = [by_name[n]["n_bits"] if n in by_name else None for n in order]
        weights = [by_name[n].get("n_weights") if n in by_name else None for n in order]
        name = plain.template(label)  # run names are user text; Plotly renders HTML
        fig.add_bar(
            x=order, y=bits, name=name, customdata=weights, marker_color=colors.get(label),
            text=[bit_text(b) if b is not None else "" for b in bits], textposition="outside",
            hovertemplate=f"{name}<br>%{{x}}: %{{text}} bits<br>%{{customdata:,}} weights"
            "<extra></extra>",
        )  # fmt: skip
    if not order:
        fig.add_annotation(text="No finished runs selected", showarrow=False)
    fig.update_layout(barmode="group", xaxis={"type": "category", "tickangle": -45})
    fig.update_yaxes(dtick=1, rangemode="tozero")
    return fig


def density_heatmaps(snapshots: Mapping[str, pd.DataFrame], max_bits: int) -> go.Figure:
    """One density heatmap per run, side by side, on one shared 0..1 colour scale."""
    labels = list(snapshots)
    fig = make_subplots(
        rows=1, cols=max(len(labels), 1), shared_yaxes=True, horizontal_spacing=0.03,
        subplot_titles=[str(label) for label in labels],
    )  # fmt: skip
    for col, label in enumerate(labels, start=1):
        snap = snapshots[label]
        if not snap.empty:
            fig.add_trace(density_trace(snap, max_bits, coloraxis="coloraxis"), row=1, col=col)
    style_figure(fig, "Bit-plane density by run", "", "Layer")
    fig.update_layout(
        coloraxis={"colorscale": DENSITY_SCALE, "cmin": 0.0, "cmax": 1.0,
                   "colorbar": {"title": "density"}},
        plot_bgcolor=GAP_COLOR,
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(showgrid=False, tickangle=-45, title_text="Bit position")
    return fig


def overlay_curves(
    epochs: Mapping[str, pd.DataFrame], metric: str, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """One metric of several runs on one axis (accuracy in %), one colour per run."""
    colors = colors or {}
    percent = metric in PERCENT_METRICS
    label = METRIC_LABELS.get(metric, metric)
    y_title = f"{label} (%)" if percent else label
    fig = style_figure(go.Figure(), f"{label.capitalize()} by run", "Epoch (all stages)", y_title)
    for run_label, df in epochs.items():
        data = df[["global_epoch", "stage", metric]].dropna(subset=[metric])
        y = data[metric] * 100.0 if percent else data[metric]
        name = plain.template(run_label)
        fig.add_scatter(
            x=data["global_epoch"], y=y, mode="lines", name=name,
            customdata=data["stage"].tolist(), line_color=colors.get(run_label),
            hovertemplate=f"{name}<br>epoch %{{x}} (%{{customdata}})<br>{label}: "
            + ("%{y:.2f}%" if percent else "%{y:.4g}") + "<extra></extra>",
        )  # fmt: skip
    longest = max((int(df["global_epoch"].max()) for df in epochs.values() if len(df)), default=0)
    fig.update_xaxes(tickformat="d", dtick=1 if longest <= 12 else None)  # whole epochs
    return fig


def _num(value: Any, spec: str, suffix: str = "") -> str:
    """Display string for the summary table; missing values become a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):  # inf: pruned
        return MISSING
    return f"{format(float(value), spec)}{suffix}"


def _epochs_per_stage(config: Mapping[str, Any]) -> str:
    """'pretrain 20 / bsq 350 / finetune 300' from the run config."""
    parts = [f"{stage} {n}" for stage, n in stage_epochs(config).items()]
    return " / ".join(parts) or MISSING


def _summary_column(run: Mapping[str, Any]) -> dict[str, str]:
    """Field -> display string for one run (strings keep mixed rows Arrow-friendly)."""
    pct = {k: None if run.get(k) is None else run[k] * 100 for k in ("accuracy", "float_accuracy")}
    column = {
        "method": run.get("method") or MISSING,
        "alpha": _num(shown_alpha(run), ".3g"),
        "accuracy": _num(pct["accuracy"], ".2f", "%"),
        "float accuracy": _num(pct["float_accuracy"], ".2f", "%"),
        "avg bits": _num(run.get("avg_bits"), ".3f"),
        "compression": _num(run.get("compression"), ".2f", "x"),
        "epochs per stage": _epochs_per_stage(run.get("config") or {}),
    }
    for layer in (run.get("summary") or {}).get("layers") or []:
        column[f"bits: {layer['name']}"] = bit_text(layer["n_bits"])
    return column


def summary_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows = fields (method, alpha, accuracy, ..., bits of each layer); columns = runs."""
    columns = {label: _summary_column(r) for label, r in zip(run_labels(runs), runs)}
    fields: list[str] = []
    for column in columns.values():
        fields += [f for f in column if f not in fields]
    df = pd.DataFrame(columns, index=fields, dtype=object)
    return df.fillna(MISSING)


def differing_rows(df: pd.DataFrame) -> pd.Series:
    """True for rows whose values are not all the same across runs."""
    return df.astype(str).nunique(axis=1) > 1


def highlight_differences(df: pd.DataFrame) -> Styler:
    """Styler marking the rows where runs differ: what changed is what to look at."""
    diff = differing_rows(df)

    def _row_style(row: pd.Series) -> list[str]:
        return [DIFF_STYLE if diff[row.name] else ""] * len(row)

    return df.style.apply(_row_style, axis=1)


# ---------------------------------------------------------------- labels, summary, scheme
_SCHEME_KEYS = ("run_id", "name", "status", "model", "dataset", "method", "alpha", "accuracy",
                "float_accuracy", "avg_bits", "compression")  # fmt: skip


def option_label(row: Any) -> str:
    """'name · model/dataset · method · acc' for a ``runs_frame`` row (a namedtuple)."""
    acc = "—" if pd.isna(row.accuracy_pct) else f"{row.accuracy_pct:.1f}%"
    method = "BSQ" if row.method == "bsq" else str(row.method)
    return f"{row.name} · {row.model}/{row.dataset} · {method} · {acc}"


def summary_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``summary_table`` with status, model and dataset rows on top."""
    table = summary_table(runs)
    head = pd.DataFrame(
        [[r.get(k) for r in runs] for k in ("status", "model", "dataset")],
        index=["status", "model", "dataset"], columns=table.columns, dtype=object,
    )  # fmt: skip
    return pd.concat([head, table]).fillna(MISSING)


def scheme_json(run: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]) -> bytes:
    """The scheme as JSON from what the store keeps (no checkpoint needed)."""
    scheme: dict[str, Any] = {k: run.get(k) for k in _SCHEME_KEYS} | {"alpha": shown_alpha(run)}
    for key, value in scheme.items():
        if isinstance(value, float) and not math.isfinite(value):
            scheme[key] = None
    scheme["counting_convention"] = COUNTING_CONVENTION
    scheme["layers"] = [{k: layer.get(k) for k in ("name", "n_bits", "n_weights")}
                        for layer in layers]  # fmt: skip
    scheme["config"] = run.get("config") or {}
    return json.dumps(scheme, indent=2).encode()

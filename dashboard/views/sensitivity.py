"""Per-layer sensitivity of a run (pure): its table, its chart, and what it teaches.

Input: the dict of ``bsq_engine.runs.sensitivity_cache.sensitivity_of`` (layers with their
Hessian trace and one-layer-at-a-time costs, the run's bits). The verdict sentence comes
from the engine (``agreement_sentence``), shared with the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bsq_engine.training.sensitivity_report import agreement_sentence
from dashboard.views.charts import BAR_COLOR, style_figure

__all__ = [
    "measured_caption",
    "sensitivity_figure",
    "sensitivity_frame",
    "teaching_sentence",
    "verdict",
]

_BIT_COLORS = ("#D62728", "#FF7F0E", "#2CA02C", "#9467BD")  # 1, 2, 4 (, 8) bits


def sensitivity_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per layer: weights, the run's bits, trace, trace per weight, and the accuracy
    drop (points) and loss increase (nats) when only that layer is quantized to b bits."""
    bits = result.get("bits") or [None] * len(result["layers"])
    rows = []
    for layer, b in zip(result["layers"], bits):
        row = {
            "layer": layer["name"],
            "weights": layer["n_weights"],
            "bits": b,
            "Hessian trace": layer["trace"],
            "trace per weight": layer["trace_per_weight"],
        }
        for w in result["bit_widths"]:
            row[f"accuracy drop at {w} bit (points)"] = layer["accuracy_drop_points"][str(w)]
        for w in result["bit_widths"]:
            row[f"loss increase at {w} bit"] = layer["loss_increase"][str(w)]
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(result: Mapping[str, Any]) -> str:
    """Do the run's bits follow sensitivity? One sentence, from the numbers."""
    return agreement_sentence(result["layers"], result.get("bits"), result["bits_whose"])


def measured_caption(result: Mapping[str, Any]) -> str:
    """Where the numbers come from and what they cost."""
    base = result["base"]
    return (
        f"Measured in {result['seconds']:.1f} s on {result['device']}, on "
        f"{result['source_note']}. Float model: {100 * base['accuracy']:.2f}% on "
        f"{result['test_images']} test images. Hessian trace: Hutchinson's estimate "
        f"({result['hutchinson_samples']} random probes per batch, "
        f"{result['train_images']} training images). Accuracy drop: only that layer "
        "quantized (s = max|W|), every other layer float."
    )


def teaching_sentence(result: Mapping[str, Any]) -> str:
    """The lesson's example, from the run's own numbers: its most and least sensitive layer
    (trace per weight) and the bits each kept."""
    layers = result["layers"]
    if len(layers) < 2:
        return ""
    order = sorted(range(len(layers)), key=lambda i: layers[i]["trace_per_weight"])
    lo, hi = order[0], order[-1]
    w = str(min(result["bit_widths"]))
    text = (
        f"In this run, {layers[hi]['name']} is the most sensitive layer (trace per weight "
        f"{layers[hi]['trace_per_weight']:.3g}; at {w} bit alone it costs "
        f"{layers[hi]['accuracy_drop_points'][w]:+.1f} points) and {layers[lo]['name']} the "
        f"least ({layers[lo]['trace_per_weight']:.3g}; "
        f"{layers[lo]['accuracy_drop_points'][w]:+.1f} points)."
    )
    bits = result.get("bits")
    if bits:
        text += f" The run kept {bits[hi]} and {bits[lo]} bits in them."
    return text


def sensitivity_figure(result: Mapping[str, Any]) -> go.Figure:
    """Left: Hessian trace per weight per layer (log scale); right: accuracy drop when only
    that layer is quantized, one bar per bit width. Negative trace estimates (noise on a
    nearly flat layer) cannot be drawn on a log axis and are named in the title."""
    frame = sensitivity_frame(result)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=(
            "Hessian trace per weight (log)",
            "Accuracy drop, only this layer quantized",
        ),
    )
    positive = frame[frame["trace per weight"] > 0]
    fig.add_bar(
        x=positive["layer"],
        y=positive["trace per weight"],
        name="trace / weight",
        marker_color=BAR_COLOR,
        row=1,
        col=1,
        showlegend=False,
        customdata=positive["bits"],
        text=[f"{b} bits" if b is not None else "" for b in positive["bits"]],
        textposition="outside",
        hovertemplate="%{x}: %{y:.3g}<br>bits %{customdata}<extra></extra>",
    )
    for i, w in enumerate(result["bit_widths"]):
        column = f"accuracy drop at {w} bit (points)"
        fig.add_bar(
            x=frame["layer"],
            y=frame[column],
            name=f"{w} bit",
            marker_color=_BIT_COLORS[i % len(_BIT_COLORS)],
            row=1,
            col=2,
            hovertemplate=f"%{{x}}, {w} bit: %{{y:+.2f}} points<extra></extra>",
        )
    hidden = len(frame) - len(positive)
    title = "Per-layer sensitivity"
    if hidden:
        title += f" ({hidden} negative trace estimate(s) not drawn on the log axis)"
    style_figure(fig, title, "", "")
    fig.update_yaxes(type="log", title_text="Tr(H) / N (label: the run's bits)", row=1, col=1)
    fig.update_yaxes(title_text="points lost", row=1, col=2)
    fig.update_layout(barmode="group", margin={"t": 90}, legend={"y": 1.12})
    return fig

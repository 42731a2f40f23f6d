"""Pure helpers of the Learn page: one value in bits, a layer's planes, penalties, replay.

No Streamlit here: every number the lesson shows is computed by ``bsq_engine`` functions
(``to_bit_planes``, ``plane_group_norm``...) and returned as plain data or a figure, so the
lesson is unit-testable and never re-implements the method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from bsq_engine.core.functional import (
    from_bit_planes,
    int_to_planes,
    place_values,
    plane_density,
    plane_group_norm,
    planes_to_int,
    requantized_ints,
    to_bit_planes,
)
from bsq_engine.core.layers import BitLayer
from bsq_engine.core.quantize import memory_weights, quantized_layers
from dashboard.views.charts import TEMPLATE, style_figure

__all__ = [
    "LayerPlanes",
    "ValueBits",
    "bits_figure",
    "epoch_events",
    "layer_planes",
    "penalty_figure",
    "penalty_table",
    "plane_label",
    "planes_figure",
    "replay_frames",
    "reweigh_table",
    "value_bits",
]


def plane_label(b: int, n_bits: int) -> str:
    """'b2 (MSB)', 'b1', 'b0 (LSB)' for plane index ``b`` (MSB first) of ``n_bits``."""
    label = f"b{n_bits - 1 - b}"
    if b == 0:
        label += " (MSB)"
    elif b == n_bits - 1:
        label += " (LSB)"
    return label


@dataclass(frozen=True)
class ValueBits:
    """One weight ``value`` in [-1, 1] written with ``n_bits`` sign-magnitude bits."""

    value: float
    n_bits: int
    q: int  # magnitude integer round(|v| * (2^n - 1))
    pos: list[int]  # MSB first
    neg: list[int]  # MSB first
    place: list[float]  # 2^(n-1-b) / (2^n - 1), MSB first
    reconstruction: float  # Q_n(v)
    error: float  # v - Q_n(v)
    step: float  # one quantization step 1 / (2^n - 1)

    @property
    def binary(self) -> str:
        """The magnitude bits as a string, MSB first: '100'."""
        bits = self.pos if self.value > 0 else self.neg
        return "".join(str(b) for b in bits)


def value_bits(value: float, n_bits: int) -> ValueBits:
    """Convert one value with the engine's own conversion.

    A unit companion (1.0) pins the scale ``s = max|w|`` to 1, so the bits shown are those of
    ``v`` itself rather than of ``v / |v|``.

    >>> vb = value_bits(0.6, 3)  # round(0.6 * 7) = 4 = 0b100
    >>> vb.q, vb.binary, round(vb.reconstruction, 4)
    (4, '100', 0.5714)
    """
    if n_bits < 1:
        raise ValueError(f"n_bits must be >= 1, got {n_bits}.")
    v = float(min(max(value, -1.0), 1.0))
    w = torch.tensor([v, 1.0], dtype=torch.float64)  # (2,): the value and the unit companion
    pos, neg, scale = to_bit_planes(w, n_bits)  # (2, n) each, scale = 1
    recon = float(from_bit_planes(pos, neg, scale)[0])
    return ValueBits(
        value=v, n_bits=n_bits, q=int(planes_to_int(pos[0] + neg[0])),
        pos=[int(b) for b in pos[0].tolist()], neg=[int(b) for b in neg[0].tolist()],
        place=place_values(n_bits, dtype=torch.float64).tolist(), reconstruction=recon,
        error=v - recon, step=1.0 / (2**n_bits - 1),
    )  # fmt: skip


@dataclass(frozen=True)
class LayerPlanes:
    """Exact 0/1 planes of one layer as 2-D images (rows = output units), MSB first."""

    name: str
    n_bits: int
    shape: tuple[int, ...]
    pos: np.ndarray  # (n_bits, rows, cols), cropped
    neg: np.ndarray  # (n_bits, rows, cols), cropped
    density: list[float]  # whole layer, per plane
    group_norm: list[float]  # whole layer, per plane (what the regularizer sees)
    n_weights: int


def _signed_ints(layer: nn.Module) -> tuple[torch.Tensor, int]:
    """Signed integers of the re-quantized view, and the layer's plane count."""
    if isinstance(layer, BitLayer):
        n_bits = layer.reported_bits  # 0 when pruned (one all-zero plane is kept)
        if n_bits == 0:
            return torch.zeros(layer.weight_shape, dtype=torch.long), 0
        levels = 2**n_bits - 1
        rp, rn = requantized_ints(layer.pos_planes, layer.neg_planes)  # S, S
        # An overflowing weight would need one more plane; for the picture clip it.
        return rp.clamp(max=levels) - rn.clamp(max=levels), n_bits
    return layer.integer_weight(), int(layer.n_bits)


def layer_planes(name: str, layer: nn.Module, max_side: int = 64) -> LayerPlanes:
    """The layer's planes as images: a conv weight (out, in, kh, kw) becomes (out, in*kh*kw);
    images are cropped to ``max_side`` x ``max_side`` so single bits stay visible."""
    q, n_bits = _signed_ints(layer)
    shape = tuple(q.shape)
    if n_bits == 0:
        empty = np.zeros((0, 0, 0))
        return LayerPlanes(name, 0, shape, empty, empty, [], [], q.numel())
    pos = int_to_planes(q.clamp(min=0), n_bits)  # (*S, n)
    neg = int_to_planes((-q).clamp(min=0), n_bits)  # (*S, n)
    if isinstance(layer, BitLayer):  # the continuous planes are what the regularizer sees
        norm = layer.plane_stats(n_bits)[1]
    else:
        norm = plane_group_norm(pos, neg).tolist()
    density = plane_density(pos, neg).tolist()
    rows = shape[0]

    def _images(planes: torch.Tensor) -> np.ndarray:
        flat = planes.reshape(rows, -1, n_bits)  # (out, in*kh*kw, n)
        return flat.permute(2, 0, 1)[:, :max_side, :max_side].numpy()  # (n, rows, cols)

    return LayerPlanes(name, n_bits, shape, _images(pos), _images(neg), density, norm, q.numel())


def reweigh_table(model: nn.Module) -> pd.DataFrame:
    """Memory-aware reweighing: each layer's ``N_l * n_l / N`` (the regularizer's own
    ``memory_weights``) and its share of the memory."""
    layers = quantized_layers(model)
    counts = [{"n_weights": layer.n_weights, "n_bits": layer.reported_bits} for _, layer in layers]
    df = pd.DataFrame({
        "layer": [name for name, _ in layers], "kind": [layer.kind for _, layer in layers],
        "N_l": [c["n_weights"] for c in counts], "n_l": [c["n_bits"] for c in counts],
        "factor": memory_weights(counts),
    })  # fmt: skip
    bits = df["N_l"] * df["n_l"]
    df["memory share"] = bits / bits.sum() if bits.sum() else 0.0
    return df


def penalty_table(planes: LayerPlanes, alpha: float, factor: float) -> pd.DataFrame:
    """Per plane: density, group norm, its penalty ``alpha * factor * norm`` and the push
    ``alpha * factor * x / norm`` on one element whose bit is 1 (x = 1).

    A plane with few ones has a small norm, so each of its ones is pushed harder: the
    group Lasso empties sparse planes first, then the whole plane can be dropped.
    """
    rows = []
    for b, (dens, norm) in enumerate(zip(planes.density, planes.group_norm)):
        ones = round(dens * planes.n_weights)
        rows.append({
            "plane": plane_label(b, planes.n_bits), "ones": ones, "density": dens,
            "group norm": norm, "alpha * factor * norm": alpha * factor * norm,
            "push per one": alpha * factor / norm if ones else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def replay_frames(snapshots: pd.DataFrame) -> list[int]:
    """The global epochs that have a layer snapshot, in order (the replay's frames)."""
    if snapshots.empty:
        return []
    return sorted(int(e) for e in snapshots["global_epoch"].unique())


def epoch_events(
    events: Iterable[Mapping[str, Any]], snapshot: pd.DataFrame
) -> list[Mapping[str, Any]]:
    """Precision-change events that happened at the (stage, epoch) of ``snapshot``."""
    if snapshot.empty:
        return []
    stage, epoch = snapshot["stage"].iloc[0], int(snapshot["epoch"].iloc[0])
    return [e for e in events if e.get("stage") == stage and int(e.get("epoch", -1)) == epoch]


# ---------------------------------------------------------------- figures
BIT_ONE, BIT_ZERO = "#1F3A93", "#F2F2F2"


def bits_figure(vb: ValueBits) -> go.Figure:
    """Two rows (pos, neg) x n columns of bits, MSB left; each column shows its place value."""
    n = vb.n_bits
    z = np.array([vb.pos, vb.neg], dtype=float)  # (2, n)
    cols = [f"{plane_label(b, n)}<br>{2 ** (n - 1 - b)}/{2**n - 1}" for b in range(n)]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=cols, y=["pos", "neg"], zmin=0, zmax=1, showscale=False, xgap=4, ygap=4,
            colorscale=[[0, BIT_ZERO], [1, BIT_ONE]], text=z.astype(int).astype(str),
            texttemplate="%{text}", textfont={"size": 22},
            hovertemplate="%{y} plane, %{x}: bit %{text}<extra></extra>",
        )
    )  # fmt: skip
    style_figure(fig, f"{vb.value:+.4g} at {n} bits", "bit (place value)", "")
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(showgrid=False, side="top", title_text="")
    fig.update_layout(height=220, margin={"t": 70, "b": 20})
    return fig


def planes_figure(planes: LayerPlanes) -> go.Figure:
    """One black/white image per plane (black = 1), MSB left: pos planes on top, neg below;
    a pos title carries the plane's density (pos or neg bit set) over the whole layer."""
    n = planes.n_bits
    titles = [f"b{n - 1 - b} · {planes.density[b]:.0%}" for b in range(n)]  # MSB left
    titles += [f"b{n - 1 - b}" for b in range(n)]
    fig = make_subplots(
        rows=2, cols=max(n, 1), subplot_titles=titles, horizontal_spacing=0.01,
        vertical_spacing=0.12, row_titles=["pos", "neg"],
    )  # fmt: skip
    for row, stack in ((1, planes.pos), (2, planes.neg)):
        for b in range(n):
            fig.add_trace(
                go.Heatmap(
                    z=stack[b], zmin=0, zmax=1, showscale=False,
                    colorscale=[[0, "white"], [1, "black"]],
                    hovertemplate="row %{y}, col %{x}: %{z}<extra></extra>",
                ),
                row=row, col=b + 1,
            )  # fmt: skip
    frame = {"showline": True, "mirror": True, "linecolor": "#B0B0B0", "showgrid": False,
             "showticklabels": False, "zeroline": False}  # fmt: skip
    fig.update_xaxes(constrain="domain", **frame)
    fig.update_yaxes(autorange="reversed", constrain="domain", **frame)
    for i in range(1, 2 * n + 1):  # square pixels in every subplot, each against its own x
        fig.layout[f"yaxis{i if i > 1 else ''}"].update(scaleanchor=f"x{i if i > 1 else ''}")
    fig.update_annotations(font_size=13)
    side = min(900 / max(n, 1), 240)  # pixels per plane image: wide when few planes
    fig.update_layout(template=TEMPLATE, height=int(2 * side + 90),
                      margin={"l": 30, "r": 40, "t": 40, "b": 10})  # fmt: skip
    return fig


def penalty_figure(table: pd.DataFrame) -> go.Figure:
    """Group norm (bars, left axis) next to density (line, right axis), plane by plane."""
    fig = style_figure(go.Figure(), "Group norm and density per plane", "Plane", "Group norm")
    fig.add_bar(x=table["plane"], y=table["group norm"], name="group norm",
                marker_color="#4C78A8")  # fmt: skip
    fig.add_scatter(
        x=table["plane"], y=table["density"], name="density", yaxis="y2",
        mode="lines+markers", line={"color": "#E45756"},
    )  # fmt: skip
    fig.update_layout(
        yaxis2={"title": "density", "overlaying": "y", "side": "right", "range": [0, 1],
                "tickformat": ".0%", "dtick": 0.25, "showgrid": False},
    )  # fmt: skip
    return fig

"""Turn store records (plain dicts) into tidy DataFrames for the chart builders.

Every function is pure: records in, DataFrame (or arrays) out. Charts never see raw dicts,
so the shapes documented in docs/ARCHITECTURE.md are interpreted in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from bsq_engine.training.config import RunConfig, Stage
from bsq_engine.units import is_number

EPOCH_COLUMNS = [
    "stage", "epoch", "global_epoch", "train_loss", "train_acc", "test_loss", "test_acc",
    "reg", "alpha_reg", "lr", "avg_bits", "compression", "seconds", "step_ms",
]  # fmt: skip

LAYER_COLUMNS = [
    "stage", "epoch", "global_epoch", "layer_index", "name", "n_bits", "n_weights",
    "density", "group_norm", "msb_offset",
]  # fmt: skip

RUN_COLUMNS = [
    "run_id", "name", "status", "method", "model", "dataset", "alpha", "accuracy_pct",
    "float_accuracy_pct", "avg_bits", "compression", "bits", "duration_s", "created",
    "device", "world_size", "worker", "owner",
]  # fmt: skip


def epochs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per epoch, sorted by global_epoch, None turned into NaN.

    Pretrain epochs carry avg_bits=None; NaN lets charts drop them instead of failing.
    """
    records = list(records)
    # column by column (a frame from a list of dicts costs twice as much: a live run's view
    # is read about once a second, all its epochs each time)
    columns = {c: [r.get(c, np.nan) for r in records] for c in EPOCH_COLUMNS}
    df = pd.DataFrame({c: v if c == "stage" else _numeric(v) for c, v in columns.items()})
    df["stage"] = df["stage"].astype(object)
    return df.sort_values("global_epoch", kind="stable").reset_index(drop=True)


def extend_epochs_frame(
    frame: pd.DataFrame, records: list[Mapping[str, Any]]
) -> pd.DataFrame | None:
    """``epochs_frame(old + records)`` from ``frame = epochs_frame(old)``, converting only
    the new ``records`` (a live run's frames are rebuilt every few seconds while it trains,
    and its epochs only grow). ``None`` when that is not the same frame: a new epoch sorts
    before an old one, or a ``global_epoch`` is missing (then build the whole frame).

    Equal to the whole build (``tests/test_charts.py``): numbers are int64 only when every
    value of the column is an integer, as ``pd.to_numeric`` of the whole column gives.
    """
    if not records:
        return frame
    new = epochs_frame(records)
    old_epochs, new_epochs = frame["global_epoch"], new["global_epoch"]
    if old_epochs.isna().any() or new_epochs.isna().any():
        return None
    if len(frame) and new_epochs.iloc[0] < old_epochs.iloc[-1]:
        return None  # the stable sort of the whole list would interleave them
    if frame.empty:
        return new
    both = pd.concat([frame, new], ignore_index=True)  # int64 + float64 columns: float64
    both["stage"] = both["stage"].astype(object)
    return both


def last_epoch(records: Sequence[Mapping[str, Any]]) -> dict | None:
    """``epochs_frame(records).iloc[-1]`` as a dict, without building the frame (a live
    panel's progress and tiles need only the last epoch, about once a second): the record
    with the largest ``global_epoch`` (the last of equals, as the stable sort keeps them;
    one without a number sorts last), numbers as numbers and anything else as NaN.
    ``tests/test_charts.py`` checks it against the frame. None for no records."""
    if not records:
        return None
    last, last_g = None, None
    for record in records:
        g = _number(record.get("global_epoch"))
        if last is None or g != g or (last_g == last_g and g >= last_g):  # NaN: sorts last
            last, last_g = record, g
    row = {c: _number(last.get(c)) for c in EPOCH_COLUMNS if c != "stage"}
    return {**row, "stage": last.get("stage", np.nan)}


def _number(value: Any) -> float | int:
    """One value as ``pd.to_numeric(..., errors="coerce")`` reads it: a number stays one,
    a numeric string is parsed, anything else is NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return np.nan
    return np.nan


def _numeric(values: list) -> pd.Series:
    """``values`` as numbers: None and anything that is not a number become NaN."""
    if not values:
        return pd.Series(values, dtype=float)
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")


def layers_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (snapshot, layer); density/group_norm stay as lists (MSB first).

    Rows without a layer_index get their order of appearance inside their snapshot, so
    layer order (the model's order) survives even if the store did not record it.
    """
    df = pd.DataFrame(list(rows)).reindex(columns=LAYER_COLUMNS)
    if df.empty:
        return df
    if df["layer_index"].isna().any():
        df["layer_index"] = df.groupby("global_epoch", dropna=False).cumcount()
    for col in ("epoch", "global_epoch", "layer_index", "n_bits", "n_weights", "msb_offset"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype(int)
    for col in ("density", "group_norm"):
        df[col] = [list(v) if isinstance(v, (list, tuple)) else [] for v in df[col]]
    df = df.sort_values(["global_epoch", "layer_index"], kind="stable")
    return df.reset_index(drop=True)


def snapshot_at(snapshots: pd.DataFrame, global_epoch: int) -> pd.DataFrame:
    """The layer rows of one snapshot (``global_epoch``), in layer order."""
    rows = snapshots[snapshots["global_epoch"] == global_epoch]
    return rows.sort_values("layer_index", kind="stable").reset_index(drop=True)


def stage_epochs(config: Mapping[str, Any]) -> dict[Stage, int]:
    """Epochs of each training stage of a stored config (``RunConfig.epochs_of``, so the
    uniform baseline's QAT stage counts its ``bsq_epochs``); empty if it does not parse.

    >>> stage_epochs({"method": "uniform", "bsq_epochs": 7})[Stage.QAT]
    7
    """
    try:
        cfg = RunConfig.from_dict(dict(config))
    except (TypeError, ValueError):
        return {}
    return {stage: cfg.epochs_of(stage) for stage in cfg.stages}


def bit_labels(max_bits: int) -> list[str]:
    """Column labels of the bit grid, MSB on the left: 'b7 (MSB)', ..., 'b0 (LSB)'."""
    labels = [f"b{max_bits - 1 - j}" for j in range(max_bits)]
    labels[0] += " (MSB)"
    if max_bits > 1:
        labels[-1] += " (LSB)"
    return labels


def plane_matrix(snapshot_df: pd.DataFrame, max_bits: int, field: str = "density") -> np.ndarray:
    """Place each layer's per-plane values in a (layers, max_bits) grid at its msb_offset.

    Dropped MSB planes become NaN columns on the left and dropped LSB planes NaN columns on
    the right, so layers with different widths line up by bit significance.
    """
    matrix = np.full((len(snapshot_df), max_bits), np.nan)
    for i, (name, offset, values) in enumerate(
        zip(snapshot_df["name"], snapshot_df["msb_offset"], snapshot_df[field])
    ):
        values = list(values or [])
        start = int(offset)
        if start < 0 or start + len(values) > max_bits:
            raise ValueError(
                f"layer {name!r} has {len(values)} planes at msb_offset {start}, which does not "
                f"fit a {max_bits}-bit grid; pass the run's config max_bits (or larger)."
            )
        matrix[i, start : start + len(values)] = values
    return matrix


def density_matrix(
    snapshot_df: pd.DataFrame, max_bits: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """(matrix layers x max_bits with NaN for absent planes, layer names, column labels)."""
    matrix = plane_matrix(snapshot_df, max_bits, "density")
    return matrix, [str(n) for n in snapshot_df["name"]], bit_labels(max_bits)


def compact_bits(layers: Iterable[Mapping[str, Any]] | None) -> str:
    """'8/5/3/0' from summary layers: a scheme readable in one hover line."""
    return "/".join(str(int(layer.get("n_bits", 0))) for layer in layers or [])


def _percent(value: Any) -> float:
    """Accuracy fraction (0-1) as a number of percent for a table column; missing is NaN
    (the text form is ``bsq_engine.units.format_pct``)."""
    return 100.0 * float(value) if is_number(value) else np.nan


def _timestamp(value: Any) -> pd.Timestamp | None:
    """Store timestamps may be epoch seconds or ISO strings; show them the same way."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return pd.Timestamp(datetime.fromtimestamp(value, tz=UTC)).tz_localize(None)
    return pd.Timestamp(value)


def _duration(run: Mapping[str, Any]) -> float:
    """Run duration in seconds from the summary, or from start/finish timestamps."""
    summary = run.get("summary") or {}
    for value in (run.get("seconds"), summary.get("seconds")):
        if value is not None:
            return float(value)
    start = _timestamp(run.get("started_at") or run.get("created_at"))
    end = _timestamp(run.get("finished_at") or run.get("updated_at"))
    if start is None or end is None:
        return np.nan
    return (end - start).total_seconds()


def shown_alpha(run: Mapping[str, Any]) -> float | None:
    """A run's alpha as shown: None (blank) for a uniform baseline, which has none. The
    store keeps NULL for it; runs stored before that kept an unused placeholder.

    >>> [shown_alpha({"method": m, "alpha": 0.2}) for m in ("uniform", "bsq")]
    [None, 0.2]
    """
    return run.get("alpha") if run.get("method") == "bsq" else None


def run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one run dict into a table row (accuracy in %, scheme as '8/5/3')."""
    summary = run.get("summary") or {}
    return {
        "run_id": run.get("run_id"),
        "name": run.get("name") or run.get("run_id"),
        "status": run.get("status"),
        "method": run.get("method"),
        "model": run.get("model"),
        "dataset": run.get("dataset"),
        "alpha": shown_alpha(run),
        "accuracy_pct": _percent(run.get("accuracy")),
        "float_accuracy_pct": _percent(run.get("float_accuracy")),
        "avg_bits": run.get("avg_bits"),
        "compression": run.get("compression"),
        "bits": compact_bits(summary.get("layers")),
        "duration_s": _duration(run),
        "created": _timestamp(run.get("created_at") or run.get("created")),
        # where it trains: cuda:1 / bsq-worker-1, torchrun x2 (gloo), ray <host> pid <n>
        "device": run.get("device"),
        "world_size": run.get("world_size"),
        "worker": run.get("worker"),
        "owner": run.get("owner"),
    }


def runs_frame(runs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Runs flattened for tables and the Pareto chart; numbers as floats (NaN if missing)."""
    df = pd.DataFrame([run_row(r) for r in runs]).reindex(columns=RUN_COLUMNS)
    for col in ("alpha", "accuracy_pct", "float_accuracy_pct", "avg_bits", "compression"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    # Older stores hold "inf" for a fully pruned model: undefined, never shown as infinity.
    df["compression"] = df["compression"].replace([np.inf, -np.inf], np.nan)
    for col in ("duration_s", "world_size"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["created"] = pd.to_datetime(df["created"])
    return df


def planes_long(layers_df: pd.DataFrame, max_bits: int) -> pd.DataFrame:
    """One row per (layer, bit plane) of a layer snapshot: what the density heatmap draws,
    with the heatmap's column names (a plane's place in the ``max_bits`` grid)."""
    rows = []
    for layer in layers_df.itertuples():
        density = list(layer.density) if isinstance(layer.density, list | tuple) else []
        norms = list(layer.group_norm) if isinstance(layer.group_norm, list | tuple) else []
        for i, value in enumerate(density):
            column = max_bits - 1 - int(layer.msb_offset) - i
            rows.append(
                {
                    "layer": layer.name,
                    "n_bits": int(layer.n_bits),
                    "plane": f"b{column}",
                    "density": value,
                    "group_norm": norms[i] if i < len(norms) else None,
                }
            )
    return pd.DataFrame(rows, columns=["layer", "n_bits", "plane", "density", "group_norm"])

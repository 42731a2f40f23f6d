"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is one ``.safetensors`` file whose metadata holds a JSON document (stage,
epoch, per-layer bits, config). Writes go to a temp file that is renamed into place, so a
crash mid-write leaves the previous checkpoint intact. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "check_against_config",
    "load_checkpoint",
    "load_run_checkpoint",
    "meta_problems",
    "optimizer_tensors",
    "save_checkpoint",
    "tensor_problems",
]

_META_KEY = "bsq_explorer"
_STAGES = ("pretrain", "bsq", "qat", "finetune", "done")  # config.Stage's values
_MAX_BITS = 16  # BSQConfig's cap: a checkpoint never holds more planes per weight
_MAX_COUNT = 10**12  # epochs, steps and seconds beyond any real run


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or from an incompatible version."""


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` + ``meta`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(cpu, tmp, metadata={_META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Return ``(tensors, meta)``; raise :class:`CheckpointError` with advice on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. The run may not have reached one yet.")
    try:
        tensors = load_file(str(path), device=str(device))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw_meta = (handle.metadata() or {}).get(_META_KEY)
        meta = json.loads(raw_meta) if raw_meta else None
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"Checkpoint {path} is corrupt or truncated ({exc}). Resume from an earlier "
            "checkpoint, or start the run again; the run's metrics are kept."
        ) from exc
    if meta is None:
        raise CheckpointError(f"{path} is a safetensors file but not a BSQ Explorer checkpoint.")
    return tensors, meta


def load_run_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """:func:`load_checkpoint` of a run's checkpoint, its metadata and tensors checked
    (:func:`meta_problems`) before anything is built from them."""
    tensors, meta = load_checkpoint(path, device)
    problems = meta_problems(meta) + tensor_problems(tensors)
    if problems:
        raise CheckpointError(
            f"Checkpoint {path} is damaged: {'; '.join(problems[:5])}. Nothing was changed; "
            "start the run again (its stored metrics are kept until then)."
        )
    return tensors, meta


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict) -> dict[str, torch.Tensor]:
    """Momentum buffers keyed by parameter name (``names``: param -> name)."""
    out = {}
    for param, state in optimizer.state.items():
        buf = state.get("momentum_buffer")
        if buf is not None and param in names:
            out[f"optim.{names[param]}"] = buf
    return out


# ---------------------------------------------------------------- validation before use
def _int_in(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _real_in(value, lo: float, hi: float) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and lo <= value <= hi  # NaN fails both comparisons


def _layer_problems(layers) -> list[str]:
    if not isinstance(layers, dict):
        return [f"'layers' is a {type(layers).__name__}, not an object"]
    out = []
    for name, info in layers.items():
        if not isinstance(info, dict):
            out.append(f"layer {name!r} is not an object")
            continue
        if not _int_in(info.get("n_bits"), 0, _MAX_BITS):
            out.append(f"layer {name!r} has n_bits {info.get('n_bits')!r}, not 0..{_MAX_BITS}")
        if not _int_in(info.get("msb_offset"), 0, _MAX_BITS):
            out.append(f"layer {name!r} has msb_offset {info.get('msb_offset')!r}")
        if not all(isinstance(info.get(k), bool) for k in ("pruned", "fixed")):
            out.append(f"layer {name!r} lacks its pruned/fixed flags")
    return out


def meta_problems(meta) -> list[str]:
    """What is wrong with a checkpoint's metadata document (empty: usable). Checked before
    anything is allocated from it: ``n_bits`` sizes the plane tensors."""
    if not isinstance(meta, dict):
        return [f"its metadata is a {type(meta).__name__}, not an object"]
    out = []
    if meta.get("stage") not in _STAGES:
        out.append(f"stage {meta.get('stage')!r} is not one of {', '.join(_STAGES)}")
    for key in ("epoch", "global_epoch", "global_step"):
        if not _int_in(meta.get(key), 0, _MAX_COUNT):
            out.append(f"{key} {meta.get(key)!r} is not a count >= 0")
    if meta.get("float_accuracy") is not None and not _real_in(meta["float_accuracy"], 0, 1):
        out.append(f"float_accuracy {meta['float_accuracy']!r} is not in 0..1")
    if not _real_in(meta.get("elapsed"), 0, _MAX_COUNT):
        out.append(f"elapsed {meta.get('elapsed')!r} is not a number of seconds >= 0")
    if not isinstance(meta.get("config"), dict):
        out.append("its config is missing")
    return out + _layer_problems(meta.get("layers"))


def tensor_problems(tensors: dict) -> list[str]:
    """Model and optimizer tensors must be floating point (indices would be integers)."""
    bad = [
        k
        for k, v in tensors.items()
        if not (v.is_floating_point() or k.endswith("num_batches_tracked"))
    ]
    return [f"tensor {k!r} has dtype {tensors[k].dtype}" for k in bad[:3]]


def check_against_config(config, meta: dict) -> None:
    """Raise :class:`CheckpointError` unless ``meta`` fits the run's ``config``: stage and
    epoch inside its pipeline, bit widths inside its cap. (Shapes are checked by loading.)"""
    stages = [s.value for s in config.stages]
    problems = []
    stage, epoch = meta["stage"], meta["epoch"]
    if stage != "done" and stage not in stages:
        problems.append(f"stage {stage!r} is not a stage of a {config.method} run")
    elif stage != "done" and epoch > config.epochs_of(stage):
        problems.append(f"{stage} epoch {epoch} is past the stage's {config.epochs_of(stage)}")
    too_wide = [n for n, info in meta["layers"].items() if info["n_bits"] > config.max_bits]
    if too_wide:
        problems.append(f"layers {too_wide[:3]} have more than max_bits ({config.max_bits})")
    if problems:
        raise CheckpointError(
            f"The checkpoint does not belong to this run's settings: {'; '.join(problems)}. "
            "Nothing was changed; start the run again."
        )

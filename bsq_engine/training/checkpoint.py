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

__all__ = ["CheckpointError", "load_checkpoint", "optimizer_tensors", "save_checkpoint"]

_META_KEY = "bsq_explorer"


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


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict) -> dict[str, torch.Tensor]:
    """Momentum buffers keyed by parameter name (``names``: param -> name)."""
    out = {}
    for param, state in optimizer.state.items():
        buf = state.get("momentum_buffer")
        if buf is not None and param in names:
            out[f"optim.{names[param]}"] = buf
    return out

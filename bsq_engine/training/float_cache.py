"""A cache of pretrained float models, so runs that differ only after pretraining (an alpha
sweep, a uniform baseline, a re-run with another alpha) pretrain once.

The key covers every setting that shapes the float model; the entry keeps its test accuracy
and its pretraining curve so every run still shows the whole pipeline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from bsq_engine.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bsq_engine.training.config import RunConfig

__all__ = ["FloatCache", "pretrain_key"]

_KEY_FIELDS = (
    "model", "dataset", "pretrain_epochs", "pretrain_lr", "lr_milestones", "momentum",
    "weight_decay", "batch_size", "seed", "max_train", "max_test", "data_root",
)  # fmt: skip


def pretrain_key(config: RunConfig) -> str:
    """Stable hash of the settings that determine the pretrained float model."""
    fields = {name: getattr(config, name) for name in _KEY_FIELDS}
    blob = json.dumps(fields, sort_keys=True, default=list)
    return f"{config.model}-{config.dataset}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


class FloatCache:
    """Folder of ``<key>.safetensors`` float models with their accuracy and curve."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, config: RunConfig) -> Path:
        return self.folder / f"{pretrain_key(config)}.safetensors"

    def save(self, config: RunConfig, model: nn.Module, accuracy: float, records: list) -> None:
        meta = {"key": pretrain_key(config), "float_accuracy": accuracy, "records": records}
        save_checkpoint(self.path(config), dict(model.state_dict()), meta)

    def load(self, config: RunConfig, model: nn.Module) -> tuple[float, list[dict]] | None:
        """Load into ``model``; ``None`` when absent or unreadable (then we pretrain again)."""
        path = self.path(config)
        if not path.is_file():
            return None
        try:
            tensors, meta = load_checkpoint(path)
            if len(meta.get("records", [])) != config.pretrain_epochs:
                return None  # an incomplete entry: pretrain again (and overwrite it)
            model.load_state_dict(tensors)
        except (CheckpointError, RuntimeError, KeyError):
            return None
        return meta["float_accuracy"], meta.get("records", [])

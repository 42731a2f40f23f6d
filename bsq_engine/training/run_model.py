"""The one place a run's model is built: fresh for pretraining, or from a checkpoint.

Like timm's ``create_model``, every caller that needs "the model of this run" comes here:
the trainer (a fresh model, or a resumed one), export (the final checkpoint), the float
cache's users and the dashboard's Learn page. The steps are always the same: the
architecture from the model registry (seeded, so a fresh model is reproducible), the
quantized layers of the stage the checkpoint was written in, their recorded bit-widths,
then the saved tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bsq_engine.core.quantize import (
    apply_layer_meta_,
    prepare_bsq,
    prepare_uniform,
    selected_layers,
    to_fixed_,
)
from bsq_engine.data import get_dataset_info, load_dataset
from bsq_engine.models import create_model
from bsq_engine.training.config import RunConfig, Stage
from bsq_engine.training.float_cache import FloatCache

__all__ = [
    "build_model", "model_from_checkpoint", "model_shape", "planned_layers", "pretrained_model",
    "shape_of",
]  # fmt: skip


def model_shape(info) -> dict:
    """The shape arguments of ``create_model`` from a ``DatasetInfo`` (exports keep them)."""
    return {
        "in_channels": info.in_channels,
        "num_classes": info.num_classes,
        "image_size": info.image_size,
    }


def shape_of(config: RunConfig) -> dict:
    """:func:`model_shape` of the run's dataset, without loading the data when the registry
    knows its shapes (a user's image folder is only known once loaded)."""
    if config.dataset == "imagefolder":
        info = load_dataset(
            config.dataset, config.data_root, download=False, max_train=1, max_test=1
        ).info
    else:
        info = get_dataset_info(config.dataset)
    return model_shape(info)


def build_model(
    config: RunConfig,
    shape: dict,
    stage: Stage | str = Stage.PRETRAIN,
    layers: dict[str, dict] | None = None,
) -> nn.Module:
    """The run's model as it is in ``stage``: float for pretraining; BSQ bit planes during
    BSQ; fixed precision in finetuning and when done; uniform layers for a uniform run.
    ``layers`` (a checkpoint's ``layer_meta``) sizes each quantized layer. Weights are the
    seeded initialisation; load a state dict to get a trained model."""
    stage = Stage(stage)
    torch.manual_seed(config.seed)
    model = create_model(config.model, **shape)
    if stage is Stage.PRETRAIN:
        return model
    if config.method == "bsq":
        model = prepare_bsq(model, config.bsq_config())
        if stage in (Stage.FINETUNE, Stage.DONE):
            model = to_fixed_(model)
    else:
        model = prepare_uniform(model, config.uniform_bits, config.bsq_config())
    if layers is not None:
        apply_layer_meta_(model, layers)
    return model


def model_from_checkpoint(config: RunConfig, shape: dict, tensors: dict, meta: dict) -> nn.Module:
    """Rebuild a run's model from a checkpoint ``(tensors, meta)``: right layer classes,
    right number of planes per layer, then the saved weights (``model.*`` tensors)."""
    model = build_model(config, shape, meta["stage"], meta.get("layers"))
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model


def pretrained_model(
    config: RunConfig, shape: dict, cache_folder: str | Path
) -> tuple[nn.Module, float | None]:
    """The float model of ``config`` from the store's float cache (``runs.paths.cache_dir``)
    with its test accuracy, or the seeded initialisation and ``None`` when none is cached."""
    model = build_model(config, shape)
    hit = FloatCache(cache_folder).load(config, model)
    return model, None if hit is None else hit[0]


def planned_layers(config: RunConfig) -> list[dict]:
    """The quantized layers a BSQ or uniform run starts its quantized stage with: ``name``,
    ``n_bits`` (the starting precision), ``n_weights``, ``msb_offset``, ``kind``, from
    the model's shapes (as ``bit_report`` names them). Known before the first step, so a
    page can draw a run's layers while it starts and pretrains; plane densities are left
    out (they depend on training).
    """
    if config.method not in ("bsq", "uniform"):
        raise ValueError(f"Only bsq and uniform runs have a planned start; got {config.method}.")
    bits = config.n_bits if config.method == "bsq" else config.uniform_bits
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(config.model, **shape_of(config))
    return [{"name": name, "n_bits": bits, "n_weights": layer.weight.numel(), "msb_offset": 0,
             "kind": "conv" if isinstance(layer, nn.Conv2d) else "linear"}
            for name, layer in selected_layers(model, config.bsq_config())]  # fmt: skip

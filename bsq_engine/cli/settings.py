"""Run settings from the command line: flags -> a validated ``RunConfig``.

Errors name the flag the user typed (``--epochs``, not ``bsq_epochs``) and list every
problem at once (see ``bsq_engine.training.validation``). A flag that does not apply to the
chosen method (``--alpha`` with ``--method uniform``) is an error, never silently ignored.
"""

from __future__ import annotations

from pathlib import Path

from bsq_engine.data import DatasetUnavailable, get_dataset_info
from bsq_engine.data.imagefolder import check_image_folder
from bsq_engine.training.config import RunConfig
from bsq_engine.training.presets import make_config
from bsq_engine.training.trainer import resolve_device
from bsq_engine.training.validation import ConfigError, Problem

__all__ = [
    "FLOAT_ACTS",
    "SWEEP_FLAGS",
    "TRAIN_FLAGS",
    "check_runnable",
    "config_from",
    "overrides_of",
]

FLOAT_ACTS = "float"  # --act-bits float: unquantized activations (act_bits=None)

# CLI flag (argparse dest) -> RunConfig field
_OVERRIDES = {
    "method": "method", "alpha": "alpha", "bits": "uniform_bits", "n_bits": "n_bits",
    "act_bits": "act_bits", "epochs": "bsq_epochs", "pretrain_epochs": "pretrain_epochs",
    "finetune_epochs": "finetune_epochs", "requant_interval": "requant_interval", "lr": "lr",
    "batch_size": "batch_size", "seed": "seed", "device": "device", "data_root": "data_root",
    "max_train": "max_train", "max_test": "max_test", "name": "name",
    "max_bits": "max_bits", "float_shortcuts": "float_shortcuts",
    "first_last_bits": "first_last_bits", "scheme": "scheme", "avg_bits": "avg_bits",
    "sensitivity": "sensitivity", "fixed_bn_scales": "fixed_bn_scales",
    "max_msb_drop": "max_msb_drop",
}  # fmt: skip
# RunConfig field -> what the user typed, for messages. Fields without a flag come from the
# preset, and are named so.
TRAIN_FLAGS = {field: "--" + dest.replace("_", "-") for dest, field in _OVERRIDES.items()} | {
    "model": "--model",
    "dataset": "--dataset",
}
for _field in ("pretrain_lr", "finetune_lr", "lr_milestones", "finetune_milestones",
               "momentum", "weight_decay"):  # fmt: skip
    TRAIN_FLAGS[_field] = f"{_field} (a preset setting)"
SWEEP_FLAGS = TRAIN_FLAGS | {"alpha": "--alphas", "uniform_bits": "--uniform-bits"}
# Flags that only mean something for one method.
_ONLY_FOR = {"alpha": ("bsq",), "n_bits": ("bsq",), "requant_interval": ("bsq",),
             "uniform_bits": ("uniform",), "first_last_bits": ("uniform",),
             "scheme": ("scheme",), "avg_bits": ("hawq",), "sensitivity": ("hawq",),
             "fixed_bn_scales": ("bsq",), "max_msb_drop": ("bsq",)}  # fmt: skip


def overrides_of(args, exclude: tuple[str, ...] = ()) -> dict:
    """The RunConfig settings given on the command line (unset flags are left out)."""
    return {
        field: getattr(args, flag)
        for flag, field in _OVERRIDES.items()
        if field not in exclude and getattr(args, flag, None) is not None
    }


def _inapplicable(method: str, overrides: dict) -> list[Problem]:
    """Flags given for the other method: refused, so nobody believes they had an effect."""
    out = []
    for field, only in _ONLY_FOR.items():
        if field in overrides and method not in only:
            out.append(Problem(field, f"applies only to --method {' or '.join(only)} (leave "
                               f"it out with --method {method})"))  # fmt: skip
    return out


def config_from(
    model: str, dataset: str, overrides: dict, flags: dict = TRAIN_FLAGS, *, one_method=True
) -> RunConfig:
    """The preset of ``(model, dataset)`` with the given flags on top, validated; raises a
    ValueError whose message names the flags (``flags``: field -> flag). ``one_method``:
    the flags are for this run's method only (a sweep's shared flags serve both)."""
    overrides = dict(overrides)
    float_acts = overrides.get("act_bits") == FLOAT_ACTS
    if float_acts:  # make_config reads None as "the preset's", so apply it afterwards
        overrides["act_bits"] = None
    method = overrides.get("method") or "bsq"
    problems = _inapplicable(method, overrides) if one_method else []
    try:
        config = make_config(model, dataset, **overrides)
        config = config.replace(act_bits=None) if float_acts else config
    except ConfigError as exc:
        problems += list(exc.problems)
    if problems:
        raise ValueError(ConfigError(problems).render(flags))
    return config


def check_runnable(config: RunConfig) -> None:
    """Refuse before anything is stored: missing data or an absent GPU are bad arguments."""
    ok, how = get_dataset_info(config.dataset).available(config.data_root)
    if not ok:
        raise DatasetUnavailable(f"Dataset {config.dataset!r} is not available. {how}")
    if config.dataset == "imagefolder":  # the user's files: every one checked up front
        check_image_folder(Path(config.data_root).expanduser())
    resolve_device(config.device)

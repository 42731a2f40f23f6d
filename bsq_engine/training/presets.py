"""Presets: sensible epochs, learning rates and a default alpha per (model, dataset).

Values were chosen by measurement on a 2-core CPU (see README, "Presets"). Alpha's useful
range depends on how many optimizer steps a run takes (the paper's 350 CIFAR epochs are
~137k steps; a digits run is ~2k), so small, short runs need a larger alpha.
"""

from __future__ import annotations

from bsq_engine.training.config import RunConfig

__all__ = ["PRESETS", "list_presets", "make_config", "preset_for"]

# MLP on digits, measured (float 97.50%, 20/60/20 epochs): alpha 0.15 -> 11.6x at -0.00 pts,
# 0.2 -> 18.0x at -0.83, 0.25 -> 22.4x at -1.39, 0.3 -> 29.1x at -0.83.
_SMALL_DIGITS = dict(
    pretrain_epochs=20, bsq_epochs=60, finetune_epochs=20, requant_interval=10,
    pretrain_lr=0.05, lr=0.05, finetune_lr=0.005, batch_size=64, alpha=0.2,
)  # fmt: skip
# LeNet-5 on Fashion-MNIST, measured (float 90.87%): alpha 0.02 -> 7.1x at -0.27 pts,
# 0.03 -> 9.1x at -0.59, 0.04 -> 11.7x at -0.77, 0.05 -> 17.9x at -1.29 (finetune 3).
_MNIST_LIKE = dict(
    pretrain_epochs=4, bsq_epochs=8, finetune_epochs=4, requant_interval=2,
    pretrain_lr=0.05, lr=0.05, finetune_lr=0.005, batch_size=128, alpha=0.04,
)  # fmt: skip
# dsnet on Fashion-MNIST, the workload with headroom (README, "An honest bench"; measured,
# 3 seeds, 10k test images): HAWQ-style at 2 avg bits 84.27% vs uniform 2-bit 81.84% at 16x
# (float 81.65%); 4-bit activations, a 10k training subset (~90 CPU s a run).
_DSNET_FMNIST = dict(_MNIST_LIKE, act_bits=4, max_train=10000, alpha=0.3)
_CIFAR_PAPER = dict(
    pretrain_epochs=200, bsq_epochs=350, finetune_epochs=300, requant_interval=100,
    pretrain_lr=0.1, lr=0.1, finetune_lr=0.01, lr_milestones=(0.714,),
    finetune_milestones=(0.5, 0.833), batch_size=128, alpha=5e-3, act_bits=4,
    float_shortcuts=True,
)  # fmt: skip

PRESETS: dict[tuple[str, str], dict] = {
    ("mlp", "digits"): _SMALL_DIGITS,
    ("lenet5", "digits"): dict(_SMALL_DIGITS, alpha=0.1),
    ("mlp", "fashion_mnist"): _MNIST_LIKE,
    ("lenet5", "fashion_mnist"): _MNIST_LIKE,
    ("dsnet", "fashion_mnist"): _DSNET_FMNIST,
    ("mlp", "mnist"): _MNIST_LIKE,
    ("lenet5", "mnist"): _MNIST_LIKE,
    **{(m, "cifar10"): _CIFAR_PAPER for m in ("resnet20", "resnet32", "resnet56")},
}

_BY_DATASET = {
    "digits": _SMALL_DIGITS,
    "fashion_mnist": _MNIST_LIKE,
    "mnist": _MNIST_LIKE,
    "cifar10": _CIFAR_PAPER,
    "cifar100": _CIFAR_PAPER,
    "imagefolder": dict(_MNIST_LIKE, alpha=0.02),
}


def preset_for(model: str, dataset: str) -> dict:
    """The preset settings of a pair (falling back to the dataset's family)."""
    return dict(PRESETS.get((model, dataset)) or _BY_DATASET.get(dataset, {}))


def make_config(model: str = "mlp", dataset: str = "digits", **overrides) -> RunConfig:
    """A validated ``RunConfig``: the preset of ``(model, dataset)``, then ``overrides``.

    An override of ``None`` means "keep the preset's value" (so CLI flags left unset pass
    through); to set a field to ``None`` (float activations), use ``config.replace(...)``.
    """
    settings = preset_for(model, dataset)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig(model=model, dataset=dataset, **settings)


def list_presets() -> list[dict]:
    """Every explicit preset as ``{"model", "dataset", **settings}`` (for ``list``)."""
    return [{"model": m, "dataset": d, **s} for (m, d), s in PRESETS.items()]

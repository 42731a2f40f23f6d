"""Candidate workloads tried by the benchmarks but not offered in the app (issue 12).

Importing this module registers them in the model registry of this process only:

- ``lenet5_nobn``: LeNet-5 without any BatchNorm (the classic network). Without a
  normalization after a quantized layer the loss depends on BSQ's scale, which is the
  setting where mixed precision is said to matter most, and where plain SGD on the
  (scale x planes) product was unstable for the MLP (README, "Where we chose").
"""

from __future__ import annotations

from torch import nn

from bsq_engine.models import list_models, register_model
from bsq_engine.models.registry import init_weights_
from bsq_engine.models.small import LeNet5


def _lenet5_nobn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    model = LeNet5(in_channels, num_classes, image_size)
    for name in ("bn1", "bn2", "bn3", "bn4"):
        setattr(model, name, nn.Identity())
    return init_weights_(model)


if "lenet5_nobn" not in list_models():
    register_model(
        "lenet5_nobn", description="LeNet-5 without BatchNorm (benchmark candidate)",
        cost_hint="as lenet5", datasets_hint=("fashion_mnist", "mnist"),
    )(_lenet5_nobn)  # fmt: skip

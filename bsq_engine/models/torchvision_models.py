"""torchvision ResNet-18 and MobileNetV2, built with `weights=None` (never downloads).

Both are adapted to the dataset: the stem conv takes `in_channels`, and for small images
(image_size <= 64) the stem stops downsampling (3x3 stride-1 conv and no max-pool for
ResNet-18, stride-1 first conv for MobileNetV2), the usual CIFAR adaptation, so 32x32 inputs
do not shrink to 1x1 before the last stage.

Known quirks the quantizer must live with:
- torchvision's ResNet BasicBlock applies one `relu` module twice per block, so an
  activation quantizer swapped in there is shared by both activations of the block.
- MobileNetV2 uses `nn.ReLU6` modules (one instance each), not `nn.ReLU`.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tv_models

from .registry import init_weights_, register_model

__all__ = ["mobilenet_v2", "resnet18"]

_SMALL_IMAGE = 64  # at or below this side length the stem keeps full resolution
_DATASETS = ("cifar10", "cifar100", "imagefolder")


@register_model(
    "resnet18",
    description="torchvision ResNet-18 (11M params), CIFAR-style stem for small images.",
    cost_hint="~2 min per CIFAR-10 epoch on a GPU; too slow for a laptop CPU",
    datasets_hint=_DATASETS,
)
def resnet18(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    model = tv_models.resnet18(weights=None, num_classes=num_classes)
    if image_size <= _SMALL_IMAGE:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return init_weights_(model)


@register_model(
    "mobilenet_v2",
    description="torchvision MobileNetV2 (2.2M params, depthwise convs, ReLU6).",
    cost_hint="~2 min per CIFAR-10 epoch on a GPU; too slow for a laptop CPU",
    datasets_hint=_DATASETS,
)
def mobilenet_v2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    model = tv_models.mobilenet_v2(weights=None, num_classes=num_classes)
    stem = model.features[0][0]  # Conv2d(3, 32, 3, stride=2, padding=1)
    stride = 1 if image_size <= _SMALL_IMAGE else 2
    model.features[0][0] = nn.Conv2d(
        in_channels, stem.out_channels, 3, stride=stride, padding=1, bias=False
    )
    return _init_mobilenet_(model)


def _init_mobilenet_(model: nn.Module) -> nn.Module:
    """torchvision's own MobileNetV2 scheme: He convs, then small-normal classifier weights."""
    init_weights_(model)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
    return model

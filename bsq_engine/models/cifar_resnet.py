"""CIFAR ResNets of He et al. 2016 (Sec. 4.2): ResNet-20/32/56.

Three stages of 16/32/64 channels with n BasicBlocks each (depth = 6n + 2). When a block
changes shape, the shortcut is a 1x1 stride-2 conv + BN ("option B"), as in the BSQ
reference code. That conv lives at `layerK.0.shortcut.0` so the quantizer can recognise
shortcut convs by name and keep them in float if asked.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import init_weights_, register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet56"]

_STAGE_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU; each ReLU is its own module."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3(16) -> 3 stages -> global average pool -> fc; works for any image_size."""

    def __init__(self, blocks_per_stage: int, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, _STAGE_WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STAGE_WIDTHS[0])
        self.relu = nn.ReLU()
        in_planes = _STAGE_WIDTHS[0]
        for index, planes in enumerate(_STAGE_WIDTHS, start=1):
            stride = 1 if index == 1 else 2
            self.add_module(f"layer{index}", _stage(in_planes, planes, blocks_per_stage, stride))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, H/4, W/4)
        x = self.flatten(self.avgpool(x))  # (B, 64)
        return self.fc(x)  # (B, num_classes)


def _stage(in_planes: int, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_planes, planes, stride)]
    blocks += [BasicBlock(planes, planes, 1) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


def _build(n_blocks: int, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if image_size < 4:
        raise ValueError(f"CIFAR ResNets need image_size >= 4, got {image_size}.")
    return init_weights_(CifarResNet(n_blocks, in_channels, num_classes))


_DATASETS = ("cifar10", "cifar100")


@register_model(
    "resnet20",
    description="CIFAR ResNet-20 (He et al.), 0.27M params, the BSQ paper's main CIFAR model.",
    cost_hint="~1 min per CIFAR-10 epoch on a GPU, ~10 min on a laptop CPU",
    datasets_hint=_DATASETS,
)
def resnet20(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _build(3, in_channels, num_classes, image_size)


@register_model(
    "resnet32",
    description="CIFAR ResNet-32 (He et al.), 0.46M params.",
    cost_hint="~1.5 min per CIFAR-10 epoch on a GPU, ~17 min on a laptop CPU",
    datasets_hint=_DATASETS,
)
def resnet32(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _build(5, in_channels, num_classes, image_size)


@register_model(
    "resnet56",
    description="CIFAR ResNet-56 (He et al.), 0.85M params.",
    cost_hint="~3 min per CIFAR-10 epoch on a GPU, ~30 min on a laptop CPU",
    datasets_hint=_DATASETS,
)
def resnet56(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _build(9, in_channels, num_classes, image_size)

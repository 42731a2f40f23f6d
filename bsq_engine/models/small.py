"""Small models for the 8x8 / 28x28 grey datasets: an MLP and LeNet-5.

Every activation is its own `nn.ReLU` module (never `F.relu`) so activation quantization can
swap each one independently, and layers carry readable names (`fc1`, `conv2`) because those
names label the bit-width heatmap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .registry import init_weights_, register_model

__all__ = ["LeNet5", "lenet5", "mlp"]


@register_model(
    "mlp",
    description="Multi-layer perceptron: flatten -> 256 -> 128 -> classes, BatchNorm + ReLU.",
    cost_hint="the smallest model; fine on any CPU",
    datasets_hint=("digits", "mnist", "fashion_mnist"),
)
def mlp(
    in_channels: int, num_classes: int, image_size: int, hidden: Sequence[int] = (256, 128)
) -> nn.Module:
    """Named `nn.Sequential` (`fc1`, `bn1`, `relu1`, ..., `fc{k}`); `hidden` sets the widths.

    BatchNorm after each hidden layer makes the network invariant to a layer's weight scale,
    as in the paper's CIFAR ResNets. Without it, SGD on BSQ's (scale x planes) product is
    unstable once re-quantization has dropped MSBs (measured: accuracy collapses to chance).
    """
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {hidden!r}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = in_channels * image_size * image_size
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, int(h))
        layers[f"bn{i}"] = nn.BatchNorm1d(int(h))
        layers[f"relu{i}"] = nn.ReLU()
        width = int(h)
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
    return init_weights_(nn.Sequential(layers))


def _lenet_paddings(image_size: int) -> tuple[int, int]:
    """Classic LeNet pads nothing on 32x32; smaller inputs need padding to survive two 5x5s."""
    pad1 = 0 if image_size >= 32 else 2
    after_pool1 = (image_size + 2 * pad1 - 4) // 2
    pad2 = 0 if after_pool1 >= 10 else 2
    return pad1, pad2


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU, max-pooling and BatchNorm, for image_size >= 8.

    BatchNorm after each hidden layer (our addition) keeps BSQ's scale x planes product
    stable, see `mlp`.

    28x28 -> conv(pad 2) 28 -> pool 14 -> conv 10 -> pool 5 -> 16*5*5 = 400 features;
    8x8 pads both convs and ends at 16*2*2 = 64. The flatten size comes from a dummy forward
    so no table of sizes has to be maintained.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"lenet5 needs image_size >= 8, got {image_size}; use mlp instead.")
        pad1, pad2 = _lenet_paddings(image_size)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=pad2)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        with torch.no_grad():
            dummy = torch.zeros(1, in_channels, image_size, image_size)  # (1, C, H, W)
            n_features = self._features(dummy).shape[1]
        self.fc1 = nn.Linear(n_features, 120)
        self.bn3 = nn.BatchNorm1d(120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.bn4 = nn.BatchNorm1d(84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))  # (B, 6, H1, W1)
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))  # (B, 16, H2, W2)
        return self.flatten(x)  # (B, 16*H2*W2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._features(x)
        x = self.relu3(self.bn3(self.fc1(x)))  # (B, 120)
        x = self.relu4(self.bn4(self.fc2(x)))  # (B, 84)
        return self.fc3(x)  # (B, num_classes)


@register_model(
    "lenet5",
    description="LeNet-5 (+BatchNorm): two 5x5 convs with max-pooling, then 120 -> 84 -> classes.",
    cost_hint="a small CNN for 28x28 images; fine on a CPU",
    datasets_hint=("digits", "mnist", "fashion_mnist"),
)
def lenet5(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return init_weights_(LeNet5(in_channels, num_classes, image_size))

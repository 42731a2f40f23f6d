"""A depthwise-separable CNN for 28x28 grey images (MobileNet-V1 blocks, tiny).

Added as a candidate workload with headroom for mixed precision (issue 12): depthwise
convolutions have 9 weights per filter and are known to be fragile at low precision, while
the 1x1 pointwise convolutions hold most of the weights, so per-layer sensitivity differs
by construction. Every layer is followed by BatchNorm + ReLU, as in MobileNet.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .registry import init_weights_, register_model

__all__ = ["dsnet"]


def _conv_bn_relu(layers: OrderedDict, name: str, conv: nn.Conv2d) -> None:
    layers[name] = conv
    layers[f"{name}_bn"] = nn.BatchNorm2d(conv.out_channels)
    layers[f"{name}_relu"] = nn.ReLU()


@register_model(
    "dsnet",
    description="Depthwise-separable CNN: 3x3 conv, three (depthwise 3x3 + pointwise 1x1) "
    "blocks, global pooling, linear.",
    cost_hint="a small CNN for 28x28 images (~13k weights); fine on a CPU",
    datasets_hint=("fashion_mnist", "mnist", "digits"),
)
def dsnet(in_channels: int, num_classes: int, image_size: int, width: int = 16) -> nn.Module:
    """Named ``nn.Sequential``: ``conv1``, then ``dw{i}`` / ``pw{i}`` for i = 1..3, ``fc``.

    Channels ``width -> 2w -> 4w -> 8w``; the first two depthwise convs stride 2 (28 -> 14
    -> 7; 8 -> 4 -> 2), so any ``image_size >= 4`` works.
    """
    if image_size < 4:
        raise ValueError(f"dsnet needs image_size >= 4, got {image_size}; use mlp instead.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    _conv_bn_relu(layers, "conv1", nn.Conv2d(in_channels, width, 3, padding=1, bias=False))
    channels = width
    for i, stride in enumerate((2, 2, 1), start=1):
        dw = nn.Conv2d(channels, channels, 3, stride, padding=1, groups=channels, bias=False)
        _conv_bn_relu(layers, f"dw{i}", dw)
        _conv_bn_relu(layers, f"pw{i}", nn.Conv2d(channels, 2 * channels, 1, bias=False))
        channels *= 2
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(channels, num_classes)
    return init_weights_(nn.Sequential(layers))

"""The float op under every quantized layer: geometry, ``F.conv2d`` / ``F.linear`` on a
computed weight, and the way back to a plain float module (``to_float``).

``_WeightOp`` is the base of ``BitLayer`` and ``QuantLayer`` (``layers``); ``_ConvOp`` and
``_LinearOp`` give them their float twin's arguments, so every layer class has the same
constructor as ``nn.Conv2d`` / ``nn.Linear`` plus ``n_bits``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__: list[str] = []  # internals of ``layers``


class _WeightOp(nn.Module):
    """Shared shape of every quantized layer: a float op applied to a computed weight."""

    kind = "layer"

    def effective_weight(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self.effective_weight())

    def _adopt_bias(self, bias: torch.Tensor | None) -> None:
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def to_float(self) -> nn.Module:
        """A plain float module computing exactly this layer's current forward."""
        weight = self.effective_weight().detach()
        module = self._float_cls(**self.float_args(self), device="meta")
        module = module.to_empty(device=weight.device)
        with torch.no_grad():
            module.weight.copy_(weight)
            if self.bias is not None:
                module.bias.copy_(self.bias)
        return module


_CONV_GEOMETRY = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "padding_mode",
)  # fmt: skip


class _ConvOp:
    kind = "conv"
    _float_cls = nn.Conv2d

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
        dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
        n_bits: int = 8, device=None, dtype=None,
    ):  # fmt: skip
        super().__init__()  # the layer class's nn.Module
        template = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device=device, dtype=dtype,
        )  # fmt: skip
        self._init_from(template, n_bits)

    @staticmethod
    def float_args(module: nn.Module) -> dict:
        """The constructor arguments of ``module`` (a Conv2d or one of ours) but its bits."""
        return dict(
            in_channels=module.in_channels, out_channels=module.out_channels,
            kernel_size=module.kernel_size, stride=module.stride, padding=module.padding,
            dilation=module.dilation, groups=module.groups, bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )  # fmt: skip

    def _adopt_geometry(self, conv: nn.Conv2d) -> None:
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding"):
            setattr(self, name, getattr(conv, name))
        self.dilation, self.groups, self.padding_mode = (
            conv.dilation,
            conv.groups,
            conv.padding_mode,
        )
        self._pad = conv._reversed_padding_repeated_twice

    @staticmethod
    def _format(x: torch.Tensor) -> torch.memory_format | None:
        """``channels_last`` when the input is in it (the fast format follows the
        activations), else ``None``: the weight keeps its natural layout."""
        channels_last = torch.channels_last
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=channels_last):
            return channels_last
        return None

    def _op(self, x, weight):
        if self._format(x) is torch.channels_last:  # a no-op for a weight built in it
            weight = weight.contiguous(memory_format=torch.channels_last)
        if self.padding_mode != "zeros":  # reflect / replicate / circular, as nn.Conv2d does
            x = F.pad(x, self._pad, mode=self.padding_mode)
            return F.conv2d(x, weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _LinearOp:
    kind = "linear"
    _float_cls = nn.Linear

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, n_bits: int = 8,
        device=None, dtype=None,
    ):  # fmt: skip
        super().__init__()
        template = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_from(template, n_bits)

    @staticmethod
    def float_args(module: nn.Module) -> dict:
        return dict(
            in_features=module.in_features, out_features=module.out_features,
            bias=module.bias is not None,
        )  # fmt: skip

    def _adopt_geometry(self, linear: nn.Linear) -> None:
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @staticmethod
    def _format(x: torch.Tensor) -> None:
        return None  # a linear weight has one layout

    def _op(self, x, weight):
        return F.linear(x, weight, self.bias)

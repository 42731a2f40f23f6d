"""Quantized layers.

- ``BitConv2d`` / ``BitLinear``: the BSQ stage. The weight is not stored; it is rebuilt each
  forward from continuous bit planes (layout: see ``functional``; ``(*weight.shape, n_bits)``,
  MSB first) and a trainable scale.
- ``QuantConv2d`` / ``QuantLinear``: fixed precision, used for the finetune stage and for
  uniform k-bit baselines: ``W = s * Q_n(clamp(w, -1, 1))`` with a float ``w`` in [-1, 1].
- ``ActQuant``: activation quantization that replaces a ReLU (ReLU6 + max-abs, or PACT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bsq_engine.core.functional import (
    from_bit_planes,
    int_to_planes,
    plane_density,
    plane_group_norm,
    planes_to_value,
    quantize_unit,
    to_bit_planes,
)

__all__ = [
    "QUANT_LAYER_TYPES",
    "ActQuant",
    "BitConv2d",
    "BitLayer",
    "BitLinear",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
]


class _WeightOp(nn.Module):
    """Shared shape of every quantized layer: a float op applied to a computed weight."""

    kind = "layer"

    def _copy_op_from(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d | _ConvMixin):
            self.stride, self.padding = module.stride, module.padding
            self.dilation, self.groups = module.dilation, module.groups
            self.padding_mode = getattr(module, "padding_mode", "zeros")
            self._pad = getattr(module, "_pad", None) or module._reversed_padding_repeated_twice
        bias = module.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def effective_weight(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self.effective_weight())


class _ConvMixin:
    kind = "conv"

    def _op(self, x, weight):
        if self.padding_mode != "zeros":  # reflect / replicate / circular, as nn.Conv2d does
            x = F.pad(x, self._pad, mode=self.padding_mode)
            return F.conv2d(x, weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _float_module(self, weight: torch.Tensor) -> nn.Conv2d:
        out_ch, in_per_group, kh, kw = weight.shape
        conv = nn.Conv2d(
            in_per_group * self.groups, out_ch, (kh, kw), self.stride, self.padding,
            self.dilation, self.groups, bias=self.bias is not None, padding_mode=self.padding_mode,
        )  # fmt: skip
        return conv


class _LinearMixin:
    kind = "linear"

    def _op(self, x, weight):
        return F.linear(x, weight, self.bias)

    def _float_module(self, weight: torch.Tensor) -> nn.Linear:
        return nn.Linear(weight.shape[1], weight.shape[0], bias=self.bias is not None)


class BitLayer(_WeightOp):
    """A layer whose weight lives in ``pos_planes`` / ``neg_planes`` (``(*S, n_bits)``)."""

    def _init_planes(self, weight: torch.Tensor, n_bits: int) -> None:
        pos, neg, scale = to_bit_planes(weight.float(), n_bits)
        self.weight_shape = tuple(weight.shape)
        self.pos_planes = nn.Parameter(pos)  # (*S, n_bits)
        self.neg_planes = nn.Parameter(neg)  # (*S, n_bits)
        self.scale = nn.Parameter(scale.reshape(()))
        self.pruned = False  # all planes zero after re-quantization: reported as 0 bits
        self.msb_offset = 0  # where the MSB plane sits in a max_bits-wide grid (display only)

    @classmethod
    def from_float(cls, module: nn.Module, n_bits: int = 8) -> BitLayer:
        """Convert a float ``Conv2d`` / ``Linear`` (its weight, bias and hyper-parameters)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._copy_op_from(module)
        layer._init_planes(module.weight, n_bits)
        return layer.to(module.weight.device)

    @property
    def n_bits(self) -> int:
        """Number of planes held (the reported precision is 0 when ``pruned``)."""
        return self.pos_planes.shape[-1]

    @property
    def reported_bits(self) -> int:
        return 0 if self.pruned else self.n_bits

    @property
    def n_weights(self) -> int:
        return self.pos_planes[..., 0].numel()

    def value(self) -> torch.Tensor:
        """The continuous value ``v`` encoded by the planes (shape of the weight)."""
        return planes_to_value(self.pos_planes, self.neg_planes)

    def effective_weight(self) -> torch.Tensor:
        return from_bit_planes(self.pos_planes, self.neg_planes, self.scale)

    def set_planes_(self, pos: torch.Tensor, neg: torch.Tensor, scale: float) -> None:
        """Replace the planes (their number may change); optimizer state must be rebuilt."""
        device = self.pos_planes.device
        self.pos_planes = nn.Parameter(pos.to(device, torch.float32).contiguous())
        self.neg_planes = nn.Parameter(neg.to(device, torch.float32).contiguous())
        self.scale = nn.Parameter(torch.tensor(float(scale), device=device))

    def clip_(self) -> None:
        """Keep planes in [0, 2] (the method) and the scale positive (our guard)."""
        self.pos_planes.data.clamp_(0.0, 2.0)
        self.neg_planes.data.clamp_(0.0, 2.0)
        self.scale.data.clamp_(min=1e-12)

    @torch.no_grad()
    def plane_stats(self, max_bits: int | None = None) -> tuple[list[float], list[float]]:
        """Density (re-quantized view) and group norm of each plane, MSB first."""
        density = plane_density(self.pos_planes, self.neg_planes, max_bits)
        norm = plane_group_norm(self.pos_planes, self.neg_planes)
        return density.tolist(), norm.tolist()

    def to_float(self) -> nn.Module:
        """A plain float module computing exactly this layer's current forward."""
        weight = self.effective_weight().detach()
        module = self._float_module(weight).to(weight.device)
        module.weight.data.copy_(weight)
        if self.bias is not None:
            module.bias.data.copy_(self.bias.detach())
        return module

    def extra_repr(self) -> str:
        return f"weight_shape={self.weight_shape}, n_bits={self.reported_bits}"


class BitConv2d(_ConvMixin, BitLayer):
    """``Conv2d`` whose weight is ``s * Q_n(v(pos_planes, neg_planes))``."""


class BitLinear(_LinearMixin, BitLayer):
    """``Linear`` whose weight is ``s * Q_n(v(pos_planes, neg_planes))``."""


class QuantLayer(_WeightOp):
    """Fixed precision: ``W = s * Q_n(clamp(w, -1, 1))`` with straight-through gradients."""

    @classmethod
    def _build(cls, module: nn.Module, unit_weight: torch.Tensor, scale: float, n_bits: int):
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._copy_op_from(module)
        layer.weight = nn.Parameter(unit_weight.detach().clone().float())  # S, in [-1, 1]
        layer.scale = nn.Parameter(torch.tensor(float(scale), device=unit_weight.device))
        layer.n_bits = int(n_bits)
        layer.msb_offset = getattr(module, "msb_offset", 0)
        return layer

    @classmethod
    def from_float(cls, module: nn.Module, n_bits: int) -> QuantLayer:
        """Uniform baseline: ``s = max|w|``, ``w / s`` quantized to ``n_bits``."""
        w = module.weight.detach()
        scale = float(w.abs().max()) or 1.0
        return cls._build(module, w / scale, scale, n_bits)

    @classmethod
    def from_bit_layer(cls, layer: BitLayer) -> QuantLayer:
        """Freeze a re-quantized BSQ layer's scheme for finetuning (same effective weight)."""
        unit = layer.value().detach().clamp(-1.0, 1.0)
        return cls._build(layer, unit, float(layer.scale.detach()), layer.reported_bits)

    @property
    def reported_bits(self) -> int:
        return self.n_bits

    @property
    def pruned(self) -> bool:
        return self.n_bits == 0

    @property
    def n_weights(self) -> int:
        return self.weight.numel()

    def effective_weight(self) -> torch.Tensor:
        return self.scale * quantize_unit(self.weight, self.n_bits)

    def integer_weight(self) -> torch.Tensor:
        """Signed integers ``sign(w) * round(|w| * (2^n - 1))`` of the current weight."""
        if self.n_bits == 0:
            return torch.zeros_like(self.weight, dtype=torch.long)
        unit = self.weight.detach().clamp(-1.0, 1.0)
        return (torch.sign(unit) * torch.round(unit.abs() * (2**self.n_bits - 1))).long()

    def clip_(self) -> None:
        self.weight.data.clamp_(-1.0, 1.0)
        self.scale.data.clamp_(min=1e-12)

    @torch.no_grad()
    def plane_stats(self, max_bits: int | None = None) -> tuple[list[float], list[float]]:
        """Density and group norm of the exact 0/1 planes of the fixed-precision weight."""
        if self.n_bits == 0:
            return [], []
        q = self.integer_weight()  # S, signed
        pos = int_to_planes(q.clamp(min=0), self.n_bits)  # (*S, n_bits)
        neg = int_to_planes((-q).clamp(min=0), self.n_bits)  # (*S, n_bits)
        return plane_density(pos, neg, max_bits).tolist(), plane_group_norm(pos, neg).tolist()

    def to_float(self) -> nn.Module:
        return BitLayer.to_float(self)

    def extra_repr(self) -> str:
        return f"weight_shape={tuple(self.weight.shape)}, n_bits={self.n_bits}"


class QuantConv2d(_ConvMixin, QuantLayer):
    """``Conv2d`` with a fixed ``n_bits`` weight quantizer."""


class QuantLinear(_LinearMixin, QuantLayer):
    """``Linear`` with a fixed ``n_bits`` weight quantizer."""


QUANT_LAYER_TYPES = (BitLayer, QuantLayer)


class ActQuant(nn.Module):
    """Quantized ReLU: ReLU6 + per-batch max-abs scale, or PACT for ``bits <= 3``.

    ``bits=None`` is a plain ReLU (float activations).
    """

    def __init__(self, bits: int | None, pact_init: float = 6.0):
        super().__init__()
        self.bits = bits
        self.use_pact = bits is not None and bits <= 3
        # PACT's learnable clipping level; initialised at ReLU6's level (our choice).
        self.clip_level = nn.Parameter(torch.tensor(pact_init)) if self.use_pact else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits is None:
            return F.relu(x)
        levels = 2**self.bits - 1
        if self.use_pact:
            # clamp(x, 0, a) written so that d/da = 1 where x >= a and 0 elsewhere (PACT).
            y = F.relu(x) - F.relu(x - self.clip_level)
            scale = self.clip_level.detach()
        else:
            y = F.relu6(x)
            scale = y.detach().amax().clamp(min=1e-8)  # per-batch max-abs
        # Straight-through: the rounding's gradient is the identity w.r.t. y.
        return y + (torch.round(y / scale * levels) / levels * scale - y).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, pact={self.use_pact}"

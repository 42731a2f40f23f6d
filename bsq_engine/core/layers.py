"""Quantized layers.

- ``BitConv2d`` / ``BitLinear``: the BSQ stage. The weight is not stored; it is rebuilt each
  forward from continuous bit planes (layout: see ``functional``; ``(*weight.shape, n_bits)``,
  MSB first) and a trainable scale.
- ``QuantConv2d`` / ``QuantLinear``: fixed precision, used for the finetune stage and for
  uniform k-bit baselines: ``W = s * Q_n(clamp(w, -1, 1))`` with a float ``w`` in [-1, 1].
- ``ActQuant``: activation quantization that replaces a ReLU (ReLU6 + max-abs, or PACT).

Every layer has a real ``__init__`` taking its float twin's arguments plus ``n_bits``, a
``from_float(module, n_bits)`` classmethod and a ``to_float()`` method (as torchao's
``FakeQuantizedLinear.from_linear`` / ``to_linear``). Parameter names (``pos_planes``,
``neg_planes``, ``scale``, ``weight``, ``bias``) are those of stored checkpoints.

Memory format: ``model.to(memory_format=torch.channels_last)`` works on BSQ models. The
planes keep their dense ``(*S, n_bits)`` layout (only device and dtype apply to them); a
conv computes its effective weight in the memory format of its input (the fused node writes
it there directly), so activations and weights are both ``channels_last`` once the input is.

Fused path: in a training forward (gradients enabled) a ``BitLayer`` computes its weight and
its regularizer group norms in one autograd node (``functional.PlanesToWeight``) and keeps
the norms for :func:`bsq_engine.core.regularizer.bit_group_lasso`, so the planes are read in
one place and their gradient is written once. ``fused = False`` selects the plain path
(separate weight and regularizer graphs); both give the same values and gradients.
``fused_norms = False`` (set by ``training.fast_path.step_forward`` when alpha is 0) skips
the norms in that node; the regularizer then computes them if it is called anyway.
During a training epoch ``plane_sgd`` (``functional.InBackwardSGD``) lets that node's
backward apply the optimizer's update to the planes in the same pass (C++ kernels only).
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from bsq_engine.core.activations import ActQuant
from bsq_engine.core.functional import (
    EPS,
    from_bit_planes,
    int_to_planes,
    plane_density,
    plane_group_norm,
    planes_to_value,
    quantize_unit,
    to_bit_planes,
    weight_and_group_norms,
)
from bsq_engine.core.weight_ops import _ConvOp, _LinearOp, _WeightOp

__all__ = [
    "ActQuant",
    "BitConv2d",
    "BitLayer",
    "BitLinear",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
]

# Group norms computed by a layer's last training forward, with the planes (and their
# versions) they were computed from. Outside the modules so copies and pickles of a model
# never carry an autograd graph; weak so a dropped model leaves nothing behind.
_FORWARD_NORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BitLayer(_WeightOp):
    """A layer whose weight lives in ``pos_planes`` / ``neg_planes`` (``(*S, n_bits)``)."""

    fused = True  # class default; set False on an instance for the plain path
    # False: a fused training forward skips the group norms (a step without the
    # regularizer, alpha = 0); training.fast_path.step_forward sets it per epoch
    fused_norms = True
    # the fused node's C++ kernels on the CPU (core.native) when they build; False: eager
    native = True
    # an InBackwardSGD while a training epoch lets the fused node's backward update the
    # planes (training.fast_path.planes_sgd_in_backward); None: the optimizer does it
    plane_sgd = None

    def _init_from(self, template: nn.Module, n_bits: int) -> None:
        self._adopt_geometry(template)
        self._adopt_bias(template.bias)
        self.load_float_weight_(template.weight, n_bits)
        self.pruned = False  # all planes zero after re-quantization: reported as 0 bits
        self.msb_offset = 0  # where the MSB plane sits in a max_bits-wide grid (display only)

    @classmethod
    def from_float(cls, module: nn.Module, n_bits: int = 8) -> BitLayer:
        """Convert a float ``Conv2d`` / ``Linear`` (its weight, bias and hyper-parameters).

        Built on the meta device first, so conversion draws no random numbers."""
        layer = cls(**cls.float_args(module), n_bits=n_bits, device="meta")
        layer._adopt_bias(module.bias)
        layer.load_float_weight_(module.weight, n_bits)
        return layer

    def load_float_weight_(self, weight: torch.Tensor, n_bits: int) -> None:
        """Planes and scale of a float ``weight`` (BSQ_METHOD.md section 1, conversion)."""
        pos, neg, scale = to_bit_planes(weight.float(), n_bits)
        self.weight_shape = tuple(weight.shape)
        self.set_planes_(pos, neg, scale.reshape(()), device=weight.device)

    def set_planes_(self, pos, neg, scale, device=None) -> None:
        """Replace the planes (their number may change); optimizer state must be rebuilt.

        Stored dense: a strided view (a slice of wider planes) is updated wrongly by the
        fused SGD kernel (see ``training.trainer.make_sgd``)."""
        device = self.pos_planes.device if device is None else device
        self.pos_planes = nn.Parameter(pos.to(device, torch.float32).contiguous())
        self.neg_planes = nn.Parameter(neg.to(device, torch.float32).contiguous())
        self.scale = nn.Parameter(torch.as_tensor(scale, dtype=torch.float32, device=device))

    @property
    def n_bits(self) -> int:
        """Number of planes held (the reported precision is 0 when ``pruned``)."""
        return self.pos_planes.shape[-1]

    @property
    def reported_bits(self) -> int:
        return 0 if self.pruned else self.n_bits

    @property
    def n_weights(self) -> int:
        return math.prod(self.pos_planes.shape[:-1])

    def value(self) -> torch.Tensor:
        """The continuous value ``v`` encoded by the planes (shape of the weight)."""
        return planes_to_value(self.pos_planes, self.neg_planes)

    def effective_weight(self) -> torch.Tensor:
        return from_bit_planes(self.pos_planes, self.neg_planes, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.fused and torch.is_grad_enabled() and self.pos_planes.requires_grad):
            return self._op(x, self.effective_weight())
        pos, neg = self.pos_planes, self.neg_planes
        weight, norms = weight_and_group_norms(
            pos, neg, self.scale, with_norms=self.fused_norms,
            memory_format=self._format(x), native=self.native, sgd=self.plane_sgd,
        )  # fmt: skip
        if norms is not None:
            _FORWARD_NORMS[self] = (pos, neg, pos._version, neg._version, norms)
        else:  # never hand the regularizer an older forward's norms
            _FORWARD_NORMS.pop(self, None)
        return self._op(x, weight)

    def group_norms(self, eps: float = EPS) -> torch.Tensor:
        """Per-plane group norms ``(n_bits,)``, differentiable.

        Taken from the last training forward when the planes have not changed since (the
        fused path: the regularizer then shares the weight's autograd node), else computed.
        """
        cached = _FORWARD_NORMS.pop(self, None)
        pos, neg = self.pos_planes, self.neg_planes
        fresh = cached is not None and cached[0] is pos and cached[1] is neg
        if fresh and eps == EPS and cached[2:4] == _versions(pos, neg):  # no in-place change
            return cached[4]
        n_bits = self.n_bits
        pos2, neg2 = pos.reshape(-1, n_bits), neg.reshape(-1, n_bits)  # (N_l, n_bits)
        return torch.sqrt(eps + pos2.square().sum(0) + neg2.square().sum(0))  # (n_bits,)

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

    def _apply(self, fn, recurse=True):
        # Module.to(memory_format=channels_last) converts every 4-D and 5-D tensor and
        # raises on the 5-D conv planes: hand it a 3-D view of them, so device and dtype
        # still apply and the planes keep their documented layout.
        def keep_plane_layout(t):
            return fn(t.flatten(2)).view(t.shape) if t.dim() == 5 else fn(t)

        return super()._apply(keep_plane_layout, recurse)

    def extra_repr(self) -> str:
        return f"weight_shape={self.weight_shape}, n_bits={self.reported_bits}"


def _versions(*tensors: torch.Tensor) -> tuple[int, ...]:
    return tuple(t._version for t in tensors)


class BitConv2d(_ConvOp, BitLayer):
    """``Conv2d`` whose weight is ``s * Q_n(v(pos_planes, neg_planes))``."""


class BitLinear(_LinearOp, BitLayer):
    """``Linear`` whose weight is ``s * Q_n(v(pos_planes, neg_planes))``."""


class QuantLayer(_WeightOp):
    """Fixed precision: ``W = s * Q_n(clamp(w, -1, 1))`` with straight-through gradients."""

    def _init_from(self, template: nn.Module, n_bits: int) -> None:
        self._adopt_geometry(template)
        self._adopt_bias(template.bias)
        self.load_float_weight_(template.weight, n_bits)
        self.msb_offset = 0

    @classmethod
    def from_float(cls, module: nn.Module, n_bits: int) -> QuantLayer:
        """Uniform baseline: ``s = max|w|``, ``w / s`` quantized to ``n_bits``."""
        layer = cls(**cls.float_args(module), n_bits=n_bits, device="meta")
        layer._adopt_bias(module.bias)
        layer.load_float_weight_(module.weight, n_bits)
        layer.msb_offset = getattr(module, "msb_offset", 0)
        return layer

    @classmethod
    def from_bit_layer(cls, layer: BitLayer) -> QuantLayer:
        """Freeze a re-quantized BSQ layer's scheme for finetuning (same effective weight)."""
        fixed = cls(**cls.float_args(layer), n_bits=layer.reported_bits, device="meta")
        fixed._adopt_bias(layer.bias)
        unit = layer.value().detach().clamp(-1.0, 1.0)
        fixed._set_unit_weight_(unit, layer.scale.detach(), layer.reported_bits)
        fixed.msb_offset = layer.msb_offset
        return fixed

    def load_float_weight_(self, weight: torch.Tensor, n_bits: int) -> None:
        """``s = max|w|`` (1 for an all-zero weight) and ``w / s`` as the unit weight."""
        w = weight.detach().float()
        scale = w.abs().amax()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self._set_unit_weight_(w / scale, scale, n_bits)

    def _set_unit_weight_(self, unit: torch.Tensor, scale: torch.Tensor, n_bits: int) -> None:
        self.weight = nn.Parameter(unit.detach().clone().float())  # S, in [-1, 1]
        self.scale = nn.Parameter(scale.detach().clone().float().reshape(()))
        self.n_bits = int(n_bits)

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

    def extra_repr(self) -> str:
        return f"weight_shape={tuple(self.weight.shape)}, n_bits={self.n_bits}"


class QuantConv2d(_ConvOp, QuantLayer):
    """``Conv2d`` with a fixed ``n_bits`` weight quantizer."""


class QuantLinear(_LinearOp, QuantLayer):
    """``Linear`` with a fixed ``n_bits`` weight quantizer."""

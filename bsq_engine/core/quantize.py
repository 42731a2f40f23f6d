"""Swapping layers in, re-quantization with precision adjustment, and reporting.

``prepare_bsq`` is the one verb that turns a float model into a BSQ model; ``requantize_``
(BSQ_METHOD.md section 3) returns the precision changes as explicit ``PrecisionEvent``s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bsq_engine.core.functional import int_to_planes, requantized_ints
from bsq_engine.core.layers import (
    ActQuant,
    BitConv2d,
    BitLayer,
    BitLinear,
    QuantConv2d,
    QuantLayer,
    QuantLinear,
)

__all__ = [
    "BSQConfig",
    "PrecisionEvent",
    "apply_layer_meta_",
    "bit_report",
    "layer_meta",
    "memory_weights",
    "prepare_bsq",
    "prepare_uniform",
    "quantized_layers",
    "requantize_",
    "scheme_summary",
    "selected_layers",
    "to_fixed_",
]

BSQ_LAYER_MAP: dict[type, type] = {nn.Conv2d: BitConv2d, nn.Linear: BitLinear}
FIXED_LAYER_MAP: dict[type, type] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
_SHORTCUT_WORDS = ("shortcut", "downsample")


@dataclass(frozen=True)
class BSQConfig:
    """Which layers to quantize, and how.

    ``float_shortcuts`` keeps ResNets' 1x1 shortcut convolutions in float and out of the
    count, as the reference does, so CIFAR ResNet numbers are comparable with the paper.
    """

    n_bits: int = 8
    max_bits: int = 8
    act_bits: int | None = None
    float_shortcuts: bool = False
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self):
        if not 1 <= self.n_bits <= self.max_bits:
            raise ValueError(
                f"n_bits must be between 1 and max_bits ({self.max_bits}), got {self.n_bits}."
            )
        if not 1 <= self.max_bits <= 16:
            raise ValueError(f"max_bits must be between 1 and 16, got {self.max_bits}.")
        if self.act_bits is not None and not 2 <= self.act_bits <= 16:
            raise ValueError(
                f"act_bits must be None (float activations) or 2..16, got {self.act_bits}."
            )


@dataclass
class PrecisionEvent:
    """One layer's precision change at one re-quantization."""

    layer: str
    old_bits: int
    new_bits: int
    msb_dropped: int = 0
    lsb_dropped: int = 0
    grown: int = 0
    stage: str = ""
    epoch: int = 0
    message: str = field(default="")

    def __post_init__(self):
        if not self.message:
            self.message = self._describe()

    def _describe(self) -> str:
        parts = []
        if self.grown:
            parts.append(f"grew {self.grown} MSB on overflow")
        if self.msb_dropped or self.lsb_dropped:
            parts.append(f"dropped {self.msb_dropped} MSB, {self.lsb_dropped} LSB")
        if self.new_bits == 0:
            parts.append("pruned: every plane is zero")
        detail = f" ({'; '.join(parts)})" if parts else ""
        when = f" at epoch {self.epoch}" if self.epoch else ""
        return f"{self.layer}: {self.old_bits} -> {self.new_bits} bits{detail}{when}"

    def to_dict(self) -> dict:
        return asdict(self)


def _is_selected(name: str, config: BSQConfig) -> bool:
    leaf_path = name.lower()
    return not (config.float_shortcuts and any(w in leaf_path for w in _SHORTCUT_WORDS))


def _candidates(
    model: nn.Module, layer_map: dict, config: BSQConfig
) -> list[tuple[str, nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if type(m) in layer_map]
    if config.skip_first and found:
        found = found[1:]
    if config.skip_last and found:
        found = found[:-1]
    return [(n, m) for n, m in found if _is_selected(n, config)]


def selected_layers(model: nn.Module, config: BSQConfig) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of the float ``Conv2d`` / ``Linear`` layers ``prepare_bsq`` and
    ``prepare_uniform`` would swap (after ``skip_first`` / ``skip_last`` and the filter)."""
    return _candidates(model, BSQ_LAYER_MAP, config)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``name``; returns the (possibly new) root, for a bare-layer model."""
    if not name:
        return new
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)
    return model


def _swap_activations_(model: nn.Module, act_bits: int | None) -> None:
    if act_bits is None:
        return
    for name, module in list(model.named_modules()):
        if type(module) in (nn.ReLU, nn.ReLU6):
            _set_module(model, name, ActQuant(act_bits))


def prepare_bsq(model: nn.Module, config: BSQConfig | None = None) -> nn.Module:
    """Swap every selected ``Conv2d`` / ``Linear`` for its bit-plane twin, in place.

    Returns the model (a new module only when the model itself is a bare layer).
    """
    config = config or BSQConfig()
    for name, module in _candidates(model, BSQ_LAYER_MAP, config):
        new = BSQ_LAYER_MAP[type(module)].from_float(module, config.n_bits)
        model = _set_module(model, name, new)
    _swap_activations_(model, config.act_bits)
    return model


def prepare_uniform(model: nn.Module, bits: int, config: BSQConfig | None = None) -> nn.Module:
    """Uniform k-bit baseline: every selected layer at ``bits`` with the same quantizer."""
    config = config or BSQConfig()
    for name, module in _candidates(model, FIXED_LAYER_MAP, config):
        model = _set_module(model, name, FIXED_LAYER_MAP[type(module)].from_float(module, bits))
    _swap_activations_(model, config.act_bits)
    return model


def to_fixed_(model: nn.Module) -> nn.Module:
    """Freeze the scheme for finetuning: every ``BitLayer`` becomes a ``QuantLayer``."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BitLayer):
            fixed_cls = QuantConv2d if isinstance(module, BitConv2d) else QuantLinear
            model = _set_module(model, name, fixed_cls.from_bit_layer(module))
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, BitLayer | QuantLayer]]:
    """Every quantized layer in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BitLayer | QuantLayer)]


@torch.no_grad()
def _requantize_layer_(
    layer: BitLayer, max_bits: int, max_msb_drop: int | None = None
) -> tuple[int, int, int]:
    """Steps 1-5 of section 3 on one layer; returns ``(msb_dropped, lsb_dropped, grown)``.

    ``max_msb_drop`` (our option, off = the paper): drop at most that many all-zero MSB
    planes at once; the others stay as zero planes the layer can grow back into."""
    n_bits, scale = layer.n_bits, float(layer.scale.double())
    rp, rn = requantized_ints(layer.pos_planes, layer.neg_planes)  # S, S
    levels, grown = 2**n_bits - 1, 0
    if int(torch.maximum(rp, rn).max()) > levels:
        if n_bits < max_bits:
            # Same integers, one more bit: rescale so every weight keeps its value.
            grown, n_bits = 1, n_bits + 1
            scale *= (2**n_bits - 1) / levels
        else:
            rp, rn = rp.clamp(max=levels), rn.clamp(max=levels)
    pos, neg = int_to_planes(rp, n_bits), int_to_planes(rn, n_bits)  # (*S, n_bits) each
    used = ((pos - neg) != 0).reshape(-1, n_bits).any(0)  # (n_bits,)
    if not bool(used.any()):
        layer.set_planes_(pos[..., :1], neg[..., :1], scale)
        layer.pruned = True
        return 0, 0, grown
    first, last = int(used.nonzero().min()), int(used.nonzero().max())
    if max_msb_drop is not None:
        first = min(first, max_msb_drop)
    kept = last - first + 1
    lsb = n_bits - 1 - last
    # Dropped LSBs double the remaining place values; the denominator changes from
    # (2^n - 1) to (2^kept - 1). Folding both into s keeps W = s * R / (2^n - 1) exact.
    scale *= 2**lsb * (2**kept - 1) / (2**n_bits - 1)
    layer.set_planes_(pos[..., first : last + 1], neg[..., first : last + 1], scale)
    layer.pruned = False
    layer.msb_offset = min(max(layer.msb_offset + first - grown, 0), max_bits - kept)
    return first, lsb, grown


def requantize_(
    model: nn.Module,
    max_bits: int = 8,
    *,
    stage: str = "",
    epoch: int = 0,
    max_msb_drop: int | None = None,
) -> list[PrecisionEvent]:
    """Re-quantize every ``BitLayer`` in place and return the precision changes.

    Effective weights are unchanged except for rounding continuous planes to exact bits
    (and clipping at ``max_bits`` on overflow). Parameters are replaced: rebuild the
    optimizer afterwards (the reference does; momentum of resized tensors starts fresh).
    ``max_msb_drop`` caps the MSB planes dropped per layer at once (None: no cap, the paper).
    """
    events = []
    for name, layer in quantized_layers(model):
        if not isinstance(layer, BitLayer):
            continue
        old = layer.reported_bits
        msb, lsb, grown = _requantize_layer_(layer, max_bits, max_msb_drop)
        if layer.reported_bits != old or msb or lsb or grown:
            events.append(
                PrecisionEvent(name, old, layer.reported_bits, msb, lsb, grown, stage, epoch)
            )
    return events


def bit_report(model: nn.Module, max_bits: int | None = None) -> list[dict]:
    """Per-layer records (see docs/ARCHITECTURE.md), computed without modifying the model."""
    records = []
    for name, layer in quantized_layers(model):
        density, norm = layer.plane_stats(max_bits)
        shape = getattr(layer, "weight_shape", None) or tuple(layer.weight.shape)
        records.append(
            {
                "name": name,
                "n_bits": layer.reported_bits,
                "n_weights": layer.n_weights,
                "density": density,
                "group_norm": norm,
                "msb_offset": layer.msb_offset,
                "kind": layer.kind,
                "shape": list(shape),
            }
        )
    return records


def memory_weights(layers: list[dict]) -> list[float]:
    """The regularizer's memory weight ``N_l * n_l / N`` of each layer (BSQ_METHOD.md 2).

    ``layers``: ``[{"n_weights": N_l, "n_bits": n_l}, ...]``; ``N`` is their total weights.

    >>> memory_weights([{"n_weights": 2, "n_bits": 8}, {"n_weights": 6, "n_bits": 4}])
    [2.0, 3.0]
    """
    total = sum(layer["n_weights"] for layer in layers)
    if not total:
        return [0.0] * len(layers)
    return [layer["n_weights"] * layer["n_bits"] / total for layer in layers]


def scheme_summary(model: nn.Module) -> dict:
    """Average bits ``sum N_l n_l / N`` and compression ``32 / avg`` over quantized layers.

    When every layer is pruned (0 average bits) compression is ``None``, never infinity:
    such a model has lost its task (a collapsed run), not won the frontier.
    """
    layers = [
        {"name": n, "n_bits": m.reported_bits, "n_weights": m.n_weights}
        for n, m in quantized_layers(model)
    ]
    total = sum(r["n_weights"] for r in layers)
    avg_bits = sum(r["n_weights"] * r["n_bits"] for r in layers) / total if total else 0.0
    compression = 32.0 / avg_bits if avg_bits > 0 else None
    return {"avg_bits": avg_bits, "compression": compression, "layers": layers}


def layer_meta(model: nn.Module) -> dict[str, dict]:
    """What a checkpoint needs to rebuild layer shapes before ``load_state_dict``."""
    return {
        name: {
            "n_bits": layer.n_bits,
            "pruned": bool(layer.pruned),
            "msb_offset": int(layer.msb_offset),
            "fixed": isinstance(layer, QuantLayer),
        }
        for name, layer in quantized_layers(model)
    }


def apply_layer_meta_(model: nn.Module, meta: dict[str, dict]) -> nn.Module:
    """Resize quantized layers to the shapes recorded by :func:`layer_meta`."""
    layers = dict(quantized_layers(model))
    missing = sorted(set(meta) - set(layers))
    if missing:
        raise ValueError(
            f"Checkpoint layers {missing[:3]} do not exist in this model: it was saved for a "
            "different model or quantization setting."
        )
    for name, info in meta.items():
        layer = layers[name]
        if isinstance(layer, BitLayer):
            shape = (*layer.weight_shape, info["n_bits"])
            layer.set_planes_(torch.zeros(shape), torch.zeros(shape), 1.0)
            layer.pruned = info["pruned"]
        else:
            layer.n_bits = info["n_bits"]
        layer.msb_offset = info["msb_offset"]
    return model

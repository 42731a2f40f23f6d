"""Bit operations (BOPs): a compute cost beside compression's memory cost.

``BOPs = sum_l MACs_l * weight_bits_l * activation_bits_l`` (the convention of HAWQ-V3 and
of most mixed-precision papers). Our choices, stated where the number is shown:

- MACs are counted once per image by forward hooks (``Conv2d``: output elements x
  ``in_channels / groups`` x kernel area; ``Linear``: ``in x out``).
- Weight bits are the layer's ``n_bits`` (0 for a pruned layer: it costs nothing);
  float layers (kept out of quantization) count 32.
- Activation bits are the run's ``act_bits`` for every layer's input, 32 when activations
  are float; the network's input image is counted like any activation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["bops", "layer_macs"]


def _macs(module: nn.Module, weight_shape, out: torch.Tensor) -> int:
    if getattr(module, "kind", None) == "conv" or isinstance(module, nn.Conv2d):
        _, in_per_group, kh, kw = weight_shape
        return int(out[0].numel()) * in_per_group * kh * kw
    out_f, in_f = weight_shape[0], weight_shape[-1]
    rows = out[0].numel() // out_f  # Linear on (batch, ..., in): every leading position
    return int(rows) * in_f * out_f


def _weight_shape(module: nn.Module):
    shape = getattr(module, "weight_shape", None)
    return tuple(shape) if shape is not None else tuple(module.weight.shape)


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d | nn.Linear) or hasattr(module, "effective_weight")


@torch.no_grad()
def layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per image of every weight layer, from one forward pass.

    >>> layer_macs(nn.Sequential(nn.Linear(4, 3)), torch.zeros(2, 4))
    {'0': 12}
    """
    macs: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if _is_weight_layer(module):

            def hook(mod, _inputs, out, name=name):
                macs[name] = _macs(mod, _weight_shape(mod), out)

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return macs


def bops(macs: dict[str, int], weight_bits: dict[str, int], act_bits: int | None) -> float:
    """``sum_l MACs_l * weight_bits_l * act_bits`` (layers missing from ``weight_bits``
    are float: 32 bits).

    >>> bops({"a": 10, "b": 5}, {"a": 2}, act_bits=4)
    720.0
    """
    a = 32 if act_bits is None else act_bits
    return float(sum(m * weight_bits.get(name, 32) * a for name, m in macs.items()))

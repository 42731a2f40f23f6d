"""Our optional changes to the BSQ stage (issue 12), each off by default (= the paper).

- ``fixed_bn_scales``: a quantized layer whose output goes straight into a BatchNorm
  computes a loss that does not depend on its scale ``s`` (BatchNorm divides it out), so
  nothing holds ``s``: each dropped MSB shrinks it (the fold of the denominator), and once
  the layer's outputs are as small as BatchNorm's ``eps`` the gradient throws it to 1e5-1e6
  within a few steps (measured, ``benchmarks/bsq_stage.py trace``). The option keeps such
  scales out of the optimizer during the BSQ stage; re-quantization still folds exact
  rescalings into them, so effective weights stay what the method says.
- ``max_msb_drop``: at most that many all-zero MSB planes dropped per layer and
  re-quantization (see ``core.quantize.requantize_``).
"""

from __future__ import annotations

import itertools

from torch import nn

from bsq_engine.core.layers import BitLayer
from bsq_engine.core.quantize import PrecisionEvent, requantize_

__all__ = ["bn_followed", "freeze_bn_scales_", "requantize_stage_"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_followed(model: nn.Module) -> list[str]:
    """Names of the ``BitLayer``s whose next registered module is a BatchNorm.

    Registration order is the forward order in every model of the registry (``conv1`` then
    ``bn1``, as in torchvision's ResNets); a model that registers its modules in another
    order simply gets fewer layers frozen, never a wrong scale frozen by a shape mismatch,
    because the BatchNorm must also have as many features as the layer has outputs."""
    modules = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    found = []
    for (name, layer), (_, after) in itertools.pairwise(modules):
        if isinstance(layer, BitLayer) and isinstance(after, _NORMS):
            outputs = getattr(layer, "out_features", None) or getattr(layer, "out_channels", 0)
            if after.num_features == outputs:
                found.append(name)
    return found


def freeze_bn_scales_(model: nn.Module, enabled: bool = True) -> list[str]:
    """Take the scale of every BatchNorm-followed ``BitLayer`` out of training (call again
    after each re-quantization: it replaces the parameters). Returns the layers' names;
    does nothing when not ``enabled`` (the trainer calls it whenever it builds an optimizer)."""
    names = bn_followed(model) if enabled else []
    modules = dict(model.named_modules())
    for name in names:
        modules[name].scale.requires_grad_(False)
    return names


def requantize_stage_(model: nn.Module, config, stage: str, epoch: int) -> list[PrecisionEvent]:
    """The trainer's re-quantization: ``requantize_`` with the run's ``max_bits`` and its
    ``max_msb_drop`` option (``config``: a ``RunConfig``)."""
    return requantize_(model, config.max_bits, stage=stage, epoch=epoch,
                       max_msb_drop=config.max_msb_drop)  # fmt: skip

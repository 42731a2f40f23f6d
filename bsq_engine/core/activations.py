"""Activation quantization (BSQ_METHOD.md section 4): the quantized ReLU of BSQ runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bsq_engine.core.functional import round_ste

__all__ = ["ActQuant"]


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
        if self.use_pact:
            # clamp(x, 0, a) written so that d/da = 1 where x >= a and 0 elsewhere (PACT).
            y = F.relu(x) - F.relu(x - self.clip_level)
            scale = self.clip_level.detach()
        else:
            y = F.relu6(x)
            scale = y.detach().amax().clamp(min=1e-8)  # per-batch max-abs
        return round_ste(y, scale / (2**self.bits - 1))  # identity gradient w.r.t. y

    def extra_repr(self) -> str:
        return f"bits={self.bits}, pact={self.use_pact}"

"""In-memory batch iteration and the CIFAR augmentation, without DataLoader workers.

Every dataset here fits in memory as one tensor, so slicing it is faster on CPU than a
worker pool, deterministic given a seed, and safe inside the app's daemon threads (no
forked processes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

__all__ = ["BatchLoader", "random_crop_flip"]


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4
) -> torch.Tensor:
    """Random `padding`-padded crop back to HxW plus random horizontal flip, per sample.

    The standard CIFAR recipe (He et al. 2016), vectorised over the batch. Padding is zero,
    which on normalized inputs is the mean colour rather than black: close enough for
    augmentation and it keeps this independent of the normalization constants.
    Randomness is drawn on CPU from `generator`, so results do not depend on the device.
    """
    b, _, h, w = x.shape  # (B, C, H, W)
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B,H,W,C)
    crops = crops.permute(0, 3, 1, 2)  # (B, C, H, W)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)  # (B,)
    return torch.where(flip[:, None, None, None], crops.flip(3), crops).contiguous()


class BatchLoader:
    """Iterate `(x_batch, y_batch)` over in-memory tensors, reshuffled each epoch.

    One `torch.Generator` seeded once drives shuffling and augmentation, so two loaders
    built with the same seed yield identical epochs, and successive epochs differ.
    `len()` is the number of batches per epoch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}; pass matching tensors.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if augment and x.ndim != 4:
            raise ValueError(f"augment needs images (N, C, H, W), got shape {tuple(x.shape)}.")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.device = torch.device(device) if device is not None else None
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.generator.manual_seed(seed)

    @property
    def n_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_samples // self.batch_size
        return math.ceil(self.n_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.n_samples
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]  # (B,)
            xb, yb = self.x[index.to(self.x.device)], self.y[index.to(self.y.device)]
            if self.device is not None:
                xb = xb.to(self.device, non_blocking=True)  # (B, C, H, W)
                yb = yb.to(self.device, non_blocking=True)  # (B,)
            if self.augment:
                xb = random_crop_flip(xb, self.generator)
            yield xb, yb

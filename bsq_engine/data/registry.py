"""Dataset registry by name: `load_dataset("digits")` -> `DataBundle` of normalized tensors.

Each source registers a `DatasetInfo` (what the app shows before loading anything, including
how to get the data) and a loader returning raw `[0, 1]` or uint8 tensors. This module does
what is common to all of them: subsetting, conversion to float, per-channel normalization.
Missing data raises `DatasetUnavailable` whose message tells the user how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from .loaders import BatchLoader

__all__ = [
    "DataBundle",
    "DatasetInfo",
    "DatasetUnavailable",
    "RawSplits",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

_SUBSET_SEED = 0  # max_train/max_test subsets are the same on every call


class DatasetUnavailable(RuntimeError):
    """The data is not on disk (or is corrupt); the message says how to get it."""


def _always_available(root: Path | None) -> tuple[bool, str]:
    return True, "available"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known without loading it.

    `mean`/`std` are per-channel normalization constants of the train split; empty tuples
    mean "compute from the train split at load time" (user folders). `num_classes` and
    `image_size` of `imagefolder` are defaults until the folder is loaded.
    """

    name: str
    description: str
    in_channels: int
    image_size: int
    num_classes: int
    cost_hint: str
    how_to_get: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augment: bool = False  # random crop + flip during training (natural images only)
    probe: Callable[[Path | None], tuple[bool, str]] = field(
        default=_always_available, repr=False, compare=False
    )

    def available(self, root: str | Path | None = None) -> tuple[bool, str]:
        """Cheap check (file existence only, nothing loaded): (ok, where-or-how-to-get)."""
        return self.probe(Path(root).expanduser() if root is not None else None)


class RawSplits(NamedTuple):
    """What a source loader returns: images uint8 (0..255) or float in [0, 1]."""

    train_x: torch.Tensor  # (N, C, H, W)
    train_y: torch.Tensor  # (N,)
    test_x: torch.Tensor  # (M, C, H, W)
    test_y: torch.Tensor  # (M,)
    class_names: tuple[str, ...] = ()


SourceLoader = Callable[..., RawSplits]  # fn(root: Path | None, download: bool, image_size)


@dataclass
class DataBundle:
    """Normalized float32 images and int64 labels of both splits, ready for training."""

    train_x: torch.Tensor  # (N, C, H, W) float32, normalized
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor  # (M, C, H, W) float32, normalized
    test_y: torch.Tensor  # (M,) int64
    info: DatasetInfo
    augment: bool = False
    class_names: tuple[str, ...] = ()

    def train_loader(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
        drop_last: bool = False,
    ) -> BatchLoader:
        """Shuffled, augmented (if `self.augment`) loader over the train split."""
        return BatchLoader(
            self.train_x,
            self.train_y,
            batch_size,
            shuffle=True,
            seed=seed,
            augment=self.augment,
            drop_last=drop_last,
            device=device,
        )

    def test_loader(
        self, batch_size: int, *, device: torch.device | str | None = None
    ) -> BatchLoader:
        return BatchLoader(self.test_x, self.test_y, batch_size, device=device)


_DATASETS: dict[str, tuple[DatasetInfo, SourceLoader]] = {}


def register_dataset(info: DatasetInfo, loader: SourceLoader) -> None:
    if info.name in _DATASETS:
        raise ValueError(f"Dataset '{info.name}' is already registered; pick another name.")
    _DATASETS[info.name] = (info, loader)


def _lookup(name: str) -> tuple[DatasetInfo, SourceLoader]:
    if name not in _DATASETS:
        raise ValueError(f"Unknown dataset '{name}'. Available: {', '.join(_DATASETS)}")
    return _DATASETS[name]


def list_datasets() -> list[str]:
    """Registered names in registration order; the first one is the default."""
    return list(_DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    return _lookup(name)[0]


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, ...]:
    """A fixed random subset (not the first rows, which may be sorted by class)."""
    if limit is None or limit >= len(x):
        return x, y
    if limit < 1:
        raise ValueError(f"max_train/max_test must be >= 1 or None, got {limit}.")
    gen = torch.Generator().manual_seed(_SUBSET_SEED)
    index = torch.randperm(len(x), generator=gen)[:limit].sort().values  # (limit,)
    return x[index], y[index]


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)  # (N, C, H, W) in [0, 1]
    return x.to(torch.float32, copy=True)  # a copy: normalization below is in place


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))  # (C,)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)  # (C,)
    return tuple(mean.tolist()), tuple(std.tolist())


def _normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))


def load_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
    *,
    image_size: int | None = None,
) -> DataBundle:
    """Load both splits as normalized tensors.

    `root` is searched first (then $BSQ_DATA_DIR and system folders, per dataset);
    `download=True` lets torchvision fetch public datasets into ~/.bsq_explorer/data.
    `image_size` only applies to `imagefolder` (resize target, default 32).
    Raises ValueError for an unknown name, DatasetUnavailable when the data is missing.
    """
    info, loader = _lookup(name)
    if image_size is not None and name != "imagefolder" and image_size != info.image_size:
        raise ValueError(
            f"'{name}' images are {info.image_size}x{info.image_size}; image_size only "
            "applies to imagefolder. Leave it as None."
        )
    path = Path(root).expanduser() if root is not None else None
    raw = loader(path, download=download, image_size=image_size)
    train_x, train_y = _subset(raw.train_x, raw.train_y, max_train)
    test_x, test_y = _subset(raw.test_x, raw.test_y, max_test)
    train_x, test_x = _to_unit_float(train_x), _to_unit_float(test_x)
    mean, std = (info.mean, info.std) if info.mean else _channel_stats(train_x)
    _normalize_(train_x, mean, std)
    _normalize_(test_x, mean, std)
    info = replace(
        info,
        mean=mean,
        std=std,
        image_size=int(train_x.shape[-1]),
        num_classes=len(raw.class_names) or info.num_classes,
    )
    return DataBundle(
        train_x.contiguous(),
        train_y.to(torch.int64),
        test_x.contiguous(),
        test_y.to(torch.int64),
        info,
        augment=info.augment,
        class_names=raw.class_names,
    )

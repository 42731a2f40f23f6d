"""A user's own images: one subfolder per class, any format PIL reads.

Images are converted to RGB and resized to a square `image_size` (default 32) at load time,
then split 80/20 per class with a fixed seed, so a run is reproducible and every class with
at least two images appears in both splits. Normalization statistics come from the train
split (DatasetInfo.mean is left empty for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .registry import DatasetInfo, DatasetUnavailable, RawSplits, register_dataset

__all__ = ["DEFAULT_IMAGE_SIZE", "split_per_class"]

DEFAULT_IMAGE_SIZE = 32
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0

_HOW_TO_GET = (
    "imagefolder reads your own images: make a folder with one subfolder per class (at least "
    "two), e.g. photos/cat/*.png and photos/dog/*.jpg, and pass the folder as root "
    "(load_dataset('imagefolder', root='photos')). Images are converted to RGB and resized "
    "to image_size (default 32); 20% of each class is held out for testing."
)


def split_per_class(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Stratified index split: each class with n >= 2 images gives max(1, round(f*n)) to test.

    Example: labels [0,0,0,0,0,1,1] with f=0.2 -> 1 test image of class 0, 1 of class 1.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == cls))
        n_test = max(1, round(test_fraction * len(index))) if len(index) >= 2 else 0
        test.append(index[:n_test])
        train.append(index[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _check_root(root: Path | None) -> Path:
    if root is None:
        raise DatasetUnavailable(f"imagefolder needs a folder (root=...). {_HOW_TO_GET}")
    if not root.is_dir():
        raise DatasetUnavailable(f"imagefolder: {root} is not a folder. {_HOW_TO_GET}")
    return root


def _read_images(root: Path, size: int) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(root))
    except (FileNotFoundError, OSError) as exc:
        raise DatasetUnavailable(f"imagefolder: {exc}. {_HOW_TO_GET}") from exc
    if len(folder.classes) < 2:
        raise DatasetUnavailable(
            f"imagefolder: {root} has {len(folder.classes)} class subfolder(s); a classifier "
            f"needs at least two. {_HOW_TO_GET}"
        )
    images = np.empty((len(folder.samples), size, size, 3), dtype=np.uint8)  # (N, H, W, 3)
    for i, (path, _) in enumerate(folder.samples):
        try:
            image = folder.loader(path).resize((size, size), Image.Resampling.BILINEAR)
        except OSError as exc:
            raise DatasetUnavailable(f"imagefolder: cannot read {path} ({exc}).") from exc
        images[i] = np.asarray(image, dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return x, np.asarray(folder.targets, dtype=np.int64), tuple(folder.classes)


def _load(root: Path | None, download: bool, image_size: int | None) -> RawSplits:
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size < 4:
        raise ValueError(f"image_size must be >= 4 for imagefolder, got {size}.")
    x, labels, classes = _read_images(_check_root(root), size)
    train_idx, test_idx = split_per_class(labels, _TEST_FRACTION, _SPLIT_SEED)
    if len(test_idx) == 0:
        raise DatasetUnavailable(
            f"imagefolder: {root} has too few images to hold any out for testing; put at "
            f"least two images in each class folder. {_HOW_TO_GET}"
        )
    y = torch.from_numpy(labels)  # (N,)
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return RawSplits(x[train_t], y[train_t], x[test_t], y[test_t], classes)


def _probe(root: Path | None) -> tuple[bool, str]:
    if root is None or not root.is_dir():
        return False, _HOW_TO_GET
    n_classes = sum(1 for child in root.iterdir() if child.is_dir())
    if n_classes < 2:
        return False, f"{root} has {n_classes} class subfolder(s), needs 2+. {_HOW_TO_GET}"
    return True, f"{n_classes} class folders in {root}"


register_dataset(
    DatasetInfo(
        name="imagefolder",
        description="Your own images: one subfolder per class, RGB, resized to image_size.",
        in_channels=3,
        image_size=DEFAULT_IMAGE_SIZE,
        num_classes=0,  # set by the folder
        cost_hint="depends on the folder; loading reads every image once",
        how_to_get=_HOW_TO_GET,
        probe=_probe,
    ),
    _load,
)

"""A user's own images: one subfolder per class, any format PIL reads.

Images are converted to RGB and resized to a square `image_size` (default 32) at load time,
then split 80/20 per class with a fixed seed, so a run is reproducible and every class with
at least two images appears in both splits. Normalization statistics come from the train
split (DatasetInfo.mean is left empty for that).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .registry import DatasetInfo, DatasetUnavailable, RawSplits, register_dataset

__all__ = ["DEFAULT_IMAGE_SIZE", "MAX_PIXELS", "check_image_folder", "scan_image_folder",
           "split_per_class"]  # fmt: skip

DEFAULT_IMAGE_SIZE = 32
# Images are shrunk to 32x32, so a huge one only costs memory: decoding 40 Mpx takes ~120 MB.
MAX_PIXELS = 40_000_000
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


def _image_problem(path: Path, root: Path) -> str | None:
    """Why one file cannot be used as an image, or None. Reads the header (and verifies the
    data), never decodes the pixels, so a hostile size claim costs nothing."""
    from PIL import Image

    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        return f"{path.relative_to(root)} is a link out of the folder"
    try:
        if path.stat().st_size == 0:
            return f"{path.relative_to(root)} is empty (0 bytes)"
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we say it below
            width, height = image.size
            if width * height > MAX_PIXELS:
                return (f"{path.relative_to(root)} claims {width}x{height} pixels, more than "
                        f"the {MAX_PIXELS:,} allowed")  # fmt: skip
            image.verify()
    except Image.DecompressionBombError:
        return f"{path.relative_to(root)} claims more pixels than the {MAX_PIXELS:,} allowed"
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises SyntaxError for bad PNGs
        return f"{path.relative_to(root)} is not a readable image ({type(exc).__name__})"
    return None


def scan_image_folder(root: Path) -> list[str]:
    """Every problem of an image folder, found before a run is stored: links leaving the
    folder, unreadable or oversized images, classes without images, fewer than two classes.
    Files whose extension is not an image's are ignored (as torchvision's ImageFolder does).
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = Path(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    problems = [] if len(classes) >= 2 else [f"{len(classes)} class folder(s); need 2+"]
    for folder in classes:
        if folder.is_symlink() and not folder.resolve().is_relative_to(root.resolve()):
            problems.append(f"class folder {folder.name} is a link out of the folder")
            continue
        images = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMG_EXTENSIONS]
        if not images:
            problems.append(f"class folder {folder.name} has no images")
        problems += filter(None, (_image_problem(p, root) for p in images))
    return problems


def check_image_folder(root: Path | None) -> None:
    """Raise :class:`DatasetUnavailable` listing every problem of the folder (at most 10)."""
    root = _check_root(root)
    problems = scan_image_folder(root)
    layout_wrong = any("class folder" in p for p in problems)
    if problems:
        shown = "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
        raise DatasetUnavailable(
            f"imagefolder: {root} has {len(problems)} problem(s): {shown}. Fix or remove "
            "those files, then try again." + (f" {_HOW_TO_GET}" if layout_wrong else "")
        )


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
    check_image_folder(root)
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

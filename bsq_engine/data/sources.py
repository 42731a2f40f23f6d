"""Offline-first sources: scikit-learn digits and the IDX datasets (MNIST, Fashion-MNIST).

Folders are searched in a fixed order: the `root` argument, then $BSQ_DATA_DIR, then system
folders (Debian's dataset-fashion-mnist package), then the download folder
~/.bsq_explorer/data. Only with `download=True` is torchvision asked to fetch anything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .idx import IdxFormatError, read_idx
from .registry import DatasetInfo, DatasetUnavailable, RawSplits, register_dataset

__all__ = ["DATA_DIR_ENV", "SYSTEM_DIRS", "download_dir", "search_dirs"]

DATA_DIR_ENV = "BSQ_DATA_DIR"
# Module-level so tests can point it elsewhere; keyed by dataset name.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
}


def download_dir() -> Path:
    """Where `download=True` puts data (read at call time so HOME can be redirected)."""
    return Path.home() / ".bsq_explorer" / "data"


def search_dirs(root: Path | None, system: tuple[Path, ...] = ()) -> list[Path]:
    """Candidate base folders in priority order, duplicates removed."""
    env = os.environ.get(DATA_DIR_ENV)
    candidates = [root, Path(env).expanduser() if env else None, *system, download_dir()]
    unique: list[Path] = []
    for path in candidates:
        if path is not None and path not in unique:
            unique.append(path)
    return unique


# ---------------------------------------------------------------- digits (the default)

_DIGITS_TEST_SIZE = 360  # 1797 images -> 1437 train / 360 test


def _load_digits(root: Path | None, download: bool, image_size: int | None) -> RawSplits:
    """Bundled with scikit-learn, so always offline; values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797,1,8,8)
    y = torch.from_numpy(digits.target.astype(np.int64))  # (1797,)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=_DIGITS_TEST_SIZE, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    names = tuple(str(i) for i in range(10))
    return RawSplits(x[train_idx], y[train_idx], x[test_idx], y[test_idx], names)


def warm_imports() -> None:
    """Import the default dataset's loader dependencies now (scikit-learn takes seconds):
    a process that waits for a run (``runs.worker_process.WarmChild``) calls this first, so
    the run's data load does not pay the import."""
    with contextlib.suppress(ImportError):
        import sklearn.datasets
        import sklearn.model_selection  # noqa: F401


def _probe_digits(root: Path | None) -> tuple[bool, str]:
    if importlib.util.find_spec("sklearn") is None:
        return False, "scikit-learn is not installed: pip install scikit-learn"
    return True, "bundled with scikit-learn"


# ---------------------------------------------------------------- IDX datasets

_IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_SUBFOLDERS = {
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", ""),
    "mnist": ("mnist", "MNIST/raw", ""),
}
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The file for `stem`, plain or gzipped, dash or dot spelling (train-images.idx3-ubyte)."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _find_idx_folder(name: str, root: Path | None) -> tuple[Path | None, list[Path]]:
    """First folder holding all four IDX files, and every base folder that was searched."""
    bases = search_dirs(root, SYSTEM_DIRS.get(name, ()))
    for base in bases:
        for sub in _IDX_SUBFOLDERS[name]:
            folder = base / sub if sub else base
            if all(_idx_file(folder, stem) for stem in _IDX_STEMS.values()):
                return folder, bases
    return None, bases


def _read_idx_splits(name: str, folder: Path, names: tuple[str, ...]) -> RawSplits:
    try:
        arrays = {key: read_idx(_idx_file(folder, stem)) for key, stem in _IDX_STEMS.items()}
    except IdxFormatError as exc:
        raise DatasetUnavailable(f"{name}: {exc} {get_how_to_get(name)}") from exc
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        shapes_ok = images.ndim == 3 and labels.ndim == 1 and len(images) == len(labels)
        if not shapes_ok or (labels.size and int(labels.max()) >= len(names)):
            raise DatasetUnavailable(
                f"{name}: the {split} IDX files in {folder} are inconsistent (images "
                f"{images.shape}, labels {labels.shape}, expected labels 0..{len(names) - 1}); "
                f"replace them. {get_how_to_get(name)}"
            )
    tensor = {key: torch.from_numpy(arr) for key, arr in arrays.items()}
    return RawSplits(
        tensor["train_x"].unsqueeze(1),
        tensor["train_y"].long(),  # (N, 1, 28, 28), (N,)
        tensor["test_x"].unsqueeze(1),
        tensor["test_y"].long(),
        names,
    )


def _torchvision_download(name: str) -> None:
    """Fetch with torchvision into download_dir(); any failure becomes DatasetUnavailable."""
    import torchvision.datasets as tvd

    cls = {"fashion_mnist": tvd.FashionMNIST, "mnist": tvd.MNIST}[name]
    try:
        cls(root=str(download_dir()), train=False, download=True)
    except Exception as exc:  # network errors come in many types; all mean the same here
        raise DatasetUnavailable(
            f"Downloading {name} failed ({type(exc).__name__}: {exc}). {get_how_to_get(name)}"
        ) from exc


def _idx_loader(name: str, names: tuple[str, ...]) -> Callable[..., RawSplits]:
    def load(root: Path | None, download: bool, image_size: int | None) -> RawSplits:
        folder, searched = _find_idx_folder(name, root)
        if folder is None and download:
            _torchvision_download(name)
            folder, searched = _find_idx_folder(name, root)
        if folder is None:
            where = ", ".join(str(p) for p in searched)
            raise DatasetUnavailable(
                f"{name} not found (looked in: {where}). {get_how_to_get(name)}"
            )
        return _read_idx_splits(name, folder, names)

    return load


def _idx_probe(name: str) -> Callable[[Path | None], tuple[bool, str]]:
    def probe(root: Path | None) -> tuple[bool, str]:
        folder, _ = _find_idx_folder(name, root)
        return (True, f"found in {folder}") if folder else (False, get_how_to_get(name))

    return probe


_IDX_FILES_TEXT = (
    "the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; plain or .gz)"
)
_HOW_TO_GET = {
    "fashion_mnist": (
        "To get Fashion-MNIST offline on Debian/Ubuntu run `sudo apt-get install "
        "dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist). Otherwise put "
        f"{_IDX_FILES_TEXT} in a folder and pass it as root, or set {DATA_DIR_ENV} to it (or "
        "to its parent holding a fashion-mnist/ subfolder); or load with download=True "
        "(needs internet) to fetch it with torchvision into ~/.bsq_explorer/data."
    ),
    "mnist": (
        f"To get MNIST, put {_IDX_FILES_TEXT} in a folder and pass it as root, or set "
        f"{DATA_DIR_ENV} to it (or to its parent holding mnist/ or torchvision's MNIST/raw/); "
        "or load with download=True (needs internet) to fetch it with torchvision into "
        "~/.bsq_explorer/data."
    ),
}


def get_how_to_get(name: str) -> str:
    return _HOW_TO_GET[name]


register_dataset(
    DatasetInfo(
        name="digits",
        description="scikit-learn handwritten digits: 1797 grey 8x8 images, 10 classes.",
        in_channels=1,
        image_size=8,
        num_classes=10,
        cost_hint="seconds on a laptop CPU; bundled, nothing to download",
        how_to_get="Bundled with scikit-learn (pip install scikit-learn); nothing to download.",
        mean=(0.3053,),
        std=(0.3760,),
        probe=_probe_digits,
    ),
    _load_digits,
)
register_dataset(
    DatasetInfo(
        name="fashion_mnist",
        description="Fashion-MNIST (Zalando): 70k grey 28x28 clothing images, 10 classes.",
        in_channels=1,
        image_size=28,
        num_classes=10,
        cost_hint="~1 min per epoch for lenet5 on a laptop CPU; seconds on a GPU",
        how_to_get=_HOW_TO_GET["fashion_mnist"],
        mean=(0.2860,),
        std=(0.3530,),
        probe=_idx_probe("fashion_mnist"),
    ),
    _idx_loader("fashion_mnist", _FASHION_CLASSES),
)
register_dataset(
    DatasetInfo(
        name="mnist",
        description="MNIST handwritten digits: 70k grey 28x28 images, 10 classes.",
        in_channels=1,
        image_size=28,
        num_classes=10,
        cost_hint="~1 min per epoch for lenet5 on a laptop CPU; seconds on a GPU",
        how_to_get=_HOW_TO_GET["mnist"],
        mean=(0.1307,),
        std=(0.3081,),
        probe=_idx_probe("mnist"),
    ),
    _idx_loader("mnist", tuple(str(i) for i in range(10))),
)

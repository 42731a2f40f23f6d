"""CIFAR-10 / CIFAR-100 in the official "python version" format.

The official distribution is a set of pickle files (`cifar-10-batches-py/data_batch_1`...,
`cifar-100-python/train`...). They are read only from a folder the user points to (root,
$BSQ_DATA_DIR, or our own download folder), and through a restricted unpickler that can
build nothing but dicts, lists, strings, numbers and numpy arrays, so a tampered file cannot
run code. torchvision's CIFAR classes are not used for reading because they verify the md5
of every file on load (slow, and it rejects the tiny fixtures the tests write).
"""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .registry import DatasetInfo, DatasetUnavailable, RawSplits, register_dataset
from .sources import DATA_DIR_ENV, download_dir, search_dirs

__all__ = ["read_cifar_pickle"]

# The only globals a CIFAR pickle needs: numpy's array rebuilders (protocol <= 4 and 5),
# ndarray, dtype, scalar and a bytes decoder. The numpy ones are taken from live objects so
# that numpy 1.x (numpy.core) and 2.x (numpy._core) pickles both load.
_NP_GLOBALS = {
    ("multiarray", "_reconstruct"): np.zeros(1).__reduce_ex__(2)[0],
    ("numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
    ("multiarray", "scalar"): np.int64(0).__reduce__()[0],
}
_ALLOWED = {
    (f"{package}.{module}", attr): obj
    for package in ("numpy.core", "numpy._core")
    for (module, attr), obj in _NP_GLOBALS.items()
} | {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 protocol-2 pickles store bytes
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return _ALLOWED[(module, name)]


def read_cifar_pickle(path: Path) -> dict[str, object]:
    """Load one CIFAR batch/meta file; keys normalized to str (files use b'data' or 'data')."""
    with open(path, "rb") as handle:
        entry = _CifarUnpickler(handle, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in entry.items()}


_LAYOUT = {  # folder, train files, test files, meta file, label key, class-names key
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}


def _find_folder(name: str, root: Path | None) -> tuple[Path | None, list[Path]]:
    folder_name, train, test, *_ = _LAYOUT[name]
    bases = search_dirs(root)
    for base in bases:
        for folder in (base / folder_name, base):
            if all((folder / f).is_file() for f in train + test):
                return folder, bases
    return None, bases


def _read_split(name: str, folder: Path, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    label_key = _LAYOUT[name][4]
    images, labels = [], []
    for file in files:
        entry = read_cifar_pickle(folder / file)
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # (n,3,32,32)
        images.append(data)
        labels.append(np.asarray(entry[label_key], dtype=np.int64).reshape(-1))  # (n,)
        if len(images[-1]) != len(labels[-1]):
            raise ValueError(f"{file} has {len(data)} images but {len(labels[-1])} labels")
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _class_names(name: str, folder: Path) -> tuple[str, ...]:
    _, _, _, meta_file, _, names_key = _LAYOUT[name]
    n_classes = get_num_classes(name)
    if not (folder / meta_file).is_file():
        return tuple(str(i) for i in range(n_classes))
    names = read_cifar_pickle(folder / meta_file)[names_key]
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _download(name: str) -> None:
    """Fetch the official archive (md5-checked by torchvision) into download_dir()."""
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        download_and_extract_archive(cls.url, str(download_dir()), cls.filename, cls.tgz_md5)
    except Exception as exc:  # network errors come in many types; all mean the same here
        raise DatasetUnavailable(
            f"Downloading {name} failed ({type(exc).__name__}: {exc}). {_how_to_get(name)}"
        ) from exc


def _loader(name: str) -> Callable[..., RawSplits]:
    def load(root: Path | None, download: bool, image_size: int | None) -> RawSplits:
        folder, searched = _find_folder(name, root)
        if folder is None and download:
            _download(name)
            folder, searched = _find_folder(name, root)
        if folder is None:
            where = ", ".join(str(p) for p in searched)
            raise DatasetUnavailable(f"{name} not found (looked in: {where}). {_how_to_get(name)}")
        _, train, test, *_ = _LAYOUT[name]
        try:
            train_x, train_y = _read_split(name, folder, train)
            test_x, test_y = _read_split(name, folder, test)
            names = _class_names(name, folder)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DatasetUnavailable(
                f"{name}: files in {folder} are corrupt or not CIFAR batches "
                f"({type(exc).__name__}: {exc}). {_how_to_get(name)}"
            ) from exc
        return RawSplits(train_x, train_y, test_x, test_y, names)

    return load


def _probe(name: str) -> Callable[[Path | None], tuple[bool, str]]:
    def probe(root: Path | None) -> tuple[bool, str]:
        folder, _ = _find_folder(name, root)
        return (True, f"found in {folder}") if folder else (False, _how_to_get(name))

    return probe


def get_num_classes(name: str) -> int:
    return 10 if name == "cifar10" else 100


_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _how_to_get(name: str) -> str:
    folder = _LAYOUT[name][0]
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    return (
        f"To get {_TITLES[name]}, download {archive} (python version) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it so that a folder "
        f"{folder}/ exists, and pass its parent as root or set {DATA_DIR_ENV} to it; or load "
        "with download=True (needs internet) to fetch it with torchvision into "
        "~/.bsq_explorer/data."
    )


for _name, _description, _mean, _std in (
    (
        "cifar10",
        "CIFAR-10: 60k colour 32x32 images, 10 classes.",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    (
        "cifar100",
        "CIFAR-100: 60k colour 32x32 images, 100 fine classes.",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
):
    register_dataset(
        DatasetInfo(
            name=_name,
            description=_description,
            in_channels=3,
            image_size=32,
            num_classes=get_num_classes(_name),
            cost_hint="~1 min per resnet20 epoch on a GPU, ~10 min on a laptop CPU",
            how_to_get=_how_to_get(_name),
            mean=_mean,
            std=_std,
            augment=True,
            probe=_probe(_name),
        ),
        _loader(_name),
    )

"""Dataset registry, IDX/CIFAR/imagefolder readers and the in-memory batch loader.

Every source is exercised on tiny files written to tmp_path in the real on-disk format; the
home folder, $BSQ_DATA_DIR and the system folders are isolated per test so nothing on this
machine (or the network) leaks in.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bsq_engine.data import (
    BatchLoader,
    DatasetUnavailable,
    IdxFormatError,
    get_dataset_info,
    list_datasets,
    load_dataset,
    random_crop_flip,
    read_idx,
    sources,
    write_idx,
)
from bsq_engine.data.imagefolder import split_per_class

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """No real data: empty HOME (download folder), no BSQ_DATA_DIR, no system folders."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (), "mnist": ()})


def write_idx_dataset(folder: Path, n_train=12, n_test=5, gz=False, seed=0) -> dict:
    """Four IDX files with random 28x28 images and labels 0..9; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


# ------------------------------------------------------------------ IDX reader / writer

_IDX_DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])


@settings(max_examples=40, deadline=None)
@given(
    array=_IDX_DTYPES.flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5))
    ),
    gz=st.booleans(),
)
def test_idx_round_trip(array, gz):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_idx(Path(tmp) / ("a.idx.gz" if gz else "a.idx"), array)
        assert path.read_bytes().startswith(b"\x1f\x8b") == gz
        back = read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_mnist_layout(tmp_path):
    path = write_idx(tmp_path / "l", np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw: raw[:-3], "truncated: shape"),
        (lambda raw: raw + b"\x00", "trailing bytes"),
        (lambda raw: b"\x12\x34" + raw[2:], "bad magic"),
        (lambda raw: raw[:6], "truncated header"),
        (lambda raw: b"", "bad magic"),
        (lambda raw: gzip.compress(raw)[:-10], "gzip stream is truncated"),
    ],
)
def test_idx_corrupt_files_raise_clear_errors(tmp_path, mangle, message):
    good = write_idx(tmp_path / "good", np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    bad = tmp_path / "bad"
    bad.write_bytes(mangle(good.read_bytes()))
    with pytest.raises(IdxFormatError, match=message) as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="cannot store dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


# ------------------------------------------------------------------ registry


def test_list_datasets_default_first_and_info():
    assert list_datasets() == [
        "digits",
        "fashion_mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "imagefolder",
    ]
    info = get_dataset_info("cifar10")
    assert (info.in_channels, info.image_size, info.num_classes, info.augment) == (3, 32, 10, True)
    assert len(info.mean) == len(info.std) == 3 and info.how_to_get and info.cost_hint
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "x"  # type: ignore[misc]


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown dataset 'svhn'\. Available: digits, "):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="Unknown dataset"):
        get_dataset_info("svhn")


def test_image_size_only_for_imagefolder():
    with pytest.raises(ValueError, match="only applies to imagefolder"):
        load_dataset("digits", image_size=16)


# ------------------------------------------------------------------ digits


def test_digits_shapes_split_and_normalization():
    data = load_dataset("digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    test_share = data.test_y.bincount() / (data.train_y.bincount() + data.test_y.bincount())
    assert ((test_share - 0.2).abs() < 0.01).all()  # stratified split
    assert abs(data.train_x.mean().item()) < 0.02 and abs(data.train_x.std().item() - 1) < 0.02
    assert data.augment is False and data.info.num_classes == 10 and len(data.class_names) == 10
    assert get_dataset_info("digits").available() == (True, "bundled with scikit-learn")


def test_digits_deterministic_and_subsets():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    small = load_dataset("digits", max_train=100, max_test=30)
    assert len(small.train_x) == 100 and len(small.test_y) == 30
    again = load_dataset("digits", max_train=100, max_test=30)
    assert torch.equal(small.train_x, again.train_x)
    assert len(small.train_y.unique()) == 10  # a random subset, not the first rows
    rows = (a.train_x.flatten(1)[:, None] == small.train_x.flatten(1)[None]).all(-1)
    assert rows.any(0).all()  # every subset image is a train image


# ------------------------------------------------------------------ fashion_mnist / mnist


@pytest.mark.parametrize(("layout", "gz"), [("", False), ("fashion-mnist", True)])
def test_fashion_mnist_from_bsq_data_dir(tmp_path, monkeypatch, layout, gz):
    base = tmp_path / "data"
    arrays = write_idx_dataset(base / layout if layout else base, gz=gz)
    monkeypatch.setenv("BSQ_DATA_DIR", str(base))
    assert get_dataset_info("fashion_mnist").available()[0]
    data = load_dataset("fashion_mnist")
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_x.shape == (5, 1, 28, 28)
    expected = (arrays[IDX_NAMES[0]][3, 4, 5] / 255 - 0.2860) / 0.3530
    assert data.train_x[3, 0, 4, 5].item() == pytest.approx(expected, abs=1e-5)
    assert data.train_y.tolist() == arrays[IDX_NAMES[1]].tolist()
    assert data.test_y.tolist() == arrays[IDX_NAMES[3]].tolist()
    assert data.class_names[9] == "Ankle boot"


def test_fashion_mnist_missing_says_how_to_get(monkeypatch, tmp_path):
    monkeypatch.setenv("BSQ_DATA_DIR", str(tmp_path / "nothing-here"))
    ok, how = get_dataset_info("fashion_mnist").available()
    assert not ok and "apt-get install dataset-fashion-mnist" in how
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fashion_mnist")
    message = str(err.value)
    assert "nothing-here" in message and "apt-get install dataset-fashion-mnist" in message
    assert "BSQ_DATA_DIR" in message and "download=True" in message and "\n" not in message


def test_fashion_mnist_corrupt_file_is_unavailable(tmp_path):
    write_idx_dataset(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DatasetUnavailable, match=r"t10k-images-idx3-ubyte\.gz: gzip stream"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_idx_labels_out_of_range_rejected(tmp_path):
    write_idx_dataset(tmp_path)
    write_idx(tmp_path / IDX_NAMES[1], np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DatasetUnavailable, match="inconsistent"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="needs apt-get install dataset-fashion-mnist"
)
def test_fashion_mnist_real_debian_files(monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (DEBIAN_FASHION,), "mnist": ()})
    data = load_dataset("fashion_mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_y.unique().tolist() == list(range(10))
    assert data.test_y.bincount().tolist() == [1000] * 10
    assert abs(data.train_x.mean().item()) < 0.01 and abs(data.train_x.std().item() - 1) < 0.01


def test_mnist_from_root_torchvision_layout_wins_over_env(tmp_path, monkeypatch):
    root_arrays = write_idx_dataset(tmp_path / "root" / "MNIST" / "raw", n_train=7, seed=1)
    write_idx_dataset(tmp_path / "env", n_train=9, seed=2)
    monkeypatch.setenv("BSQ_DATA_DIR", str(tmp_path / "env"))
    data = load_dataset("mnist", root=tmp_path / "root")
    assert len(data.train_y) == 7 and data.train_y.tolist() == root_arrays[IDX_NAMES[1]].tolist()
    assert len(load_dataset("mnist").train_y) == 9  # without root the env folder is used


def test_mnist_download_falls_back_to_torchvision(tmp_path, monkeypatch):
    def fake_download(name):  # what torchvision leaves behind: <download dir>/MNIST/raw
        write_idx_dataset(sources.download_dir() / "MNIST" / "raw", n_train=4)

    monkeypatch.setattr(sources, "_torchvision_download", fake_download)
    with pytest.raises(DatasetUnavailable, match="not found"):
        load_dataset("mnist")
    assert len(load_dataset("mnist", download=True).train_x) == 4
    assert str(tmp_path / "home") in get_dataset_info("mnist").available()[1]


def test_download_failure_becomes_unavailable(monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DatasetUnavailable, match=r"Downloading mnist failed.*unreachable.*root"):
        load_dataset("mnist", download=True)


# ------------------------------------------------------------------ cifar


_FAKE_CIFAR = {  # folder, batch files, label key, meta file, class-names key, n_classes
    "cifar10": (
        "cifar-10-batches-py",
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"],
        b"labels",
        "batches.meta",
        b"label_names",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        ["train", "test"],
        b"fine_labels",
        "meta",
        b"fine_label_names",
        100,
    ),
}


def write_cifar(base: Path, name: str, n_per_file=4, seed=0) -> dict:
    """Tiny batches in the official pickle format (bytes keys, (n, 3072) uint8 rows)."""
    folder_name, files, label_key, meta, names_key, n_classes = _FAKE_CIFAR[name]
    rng = np.random.default_rng(seed)
    folder = base / folder_name
    folder.mkdir(parents=True)
    written = {}
    for file in files:
        entry = {
            b"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
            label_key: rng.integers(0, n_classes, n_per_file).tolist(),
        }
        # Both pickle protocols that real-world copies use: 2 (Python 2 era) and 5 (default).
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2 if file == "test" else 5))
        written[file] = entry
    class_names = [f"class{i}".encode() for i in range(n_classes)]
    (folder / meta).write_bytes(pickle.dumps({names_key: class_names}))
    return written


def test_cifar10_from_fake_batches(tmp_path, monkeypatch):
    written = write_cifar(tmp_path, "cifar10")
    monkeypatch.setenv("BSQ_DATA_DIR", str(tmp_path))
    assert get_dataset_info("cifar10").available()[0]
    data = load_dataset("cifar10")
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.augment is True and data.class_names[3] == "class3"
    raw = written["data_batch_2"][b"data"][1].reshape(3, 32, 32)  # sample 5 of the train split
    expected = (raw[2, 7, 9] / 255 - 0.4465) / 0.2616
    assert data.train_x[5, 2, 7, 9].item() == pytest.approx(expected, abs=1e-5)
    assert data.test_y.tolist() == written["test_batch"][b"labels"]


def test_cifar100_from_fake_batches(tmp_path):
    written = write_cifar(tmp_path, "cifar100", n_per_file=6)
    data = load_dataset("cifar100", root=tmp_path, max_train=4)
    assert data.train_x.shape == (4, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.test_y.tolist() == written["test"][b"fine_labels"]
    assert data.info.num_classes == 100 and len(data.class_names) == 100


def test_cifar_refuses_code_in_pickles(tmp_path):
    write_cifar(tmp_path, "cifar100")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DatasetUnavailable, match=r"refusing to load global .*open"):
        load_dataset("cifar100", root=tmp_path)
    assert not marker.exists()


def test_cifar_missing_says_how_to_get(tmp_path):
    ok, _ = get_dataset_info("cifar10").available(tmp_path)
    assert not ok
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message
    assert "download=True" in message and "BSQ_DATA_DIR" in message


# ------------------------------------------------------------------ imagefolder


def write_images(root: Path, counts: dict[str, int]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, count in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (10 + i, 7 + 2 * i, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if i % 2 else image).save(root / cls / f"{i}.png")


def test_imagefolder_from_tiny_pngs(tmp_path):
    write_images(tmp_path / "photos", {"cat": 5, "dog": 6})
    assert get_dataset_info("imagefolder").available(tmp_path / "photos")[0]
    data = load_dataset("imagefolder", root=tmp_path / "photos", image_size=16)
    # 20% per class held out: max(1, round(0.2 * 5)) + max(1, round(0.2 * 6)) = 2 test images
    assert data.train_x.shape == (9, 3, 16, 16) and data.test_x.shape == (2, 3, 16, 16)
    assert data.class_names == ("cat", "dog") and data.info.num_classes == 2
    assert data.info.image_size == 16 and len(data.info.mean) == 3
    per_channel = data.train_x.transpose(0, 1).flatten(1)  # (3, N*H*W)
    assert per_channel.mean(1).abs().max() < 1e-4 and (per_channel.std(1) - 1).abs().max() < 1e-3
    again = load_dataset("imagefolder", root=tmp_path / "photos", image_size=16)
    assert torch.equal(data.test_x, again.test_x)
    assert load_dataset("imagefolder", root=tmp_path / "photos").train_x.shape[-1] == 32


@pytest.mark.parametrize("case", ["no-root", "missing", "one-class", "empty-class"])
def test_imagefolder_unusable_folders(tmp_path, case):
    root = {"no-root": None, "missing": tmp_path / "nope"}.get(case, tmp_path / "photos")
    if case == "one-class":
        write_images(root, {"cat": 3})
    if case == "empty-class":
        write_images(root, {"cat": 3})
        (root / "dog").mkdir()
    with pytest.raises(DatasetUnavailable, match="one subfolder per class"):
        load_dataset("imagefolder", root=root)
    assert not get_dataset_info("imagefolder").available(root)[0] or case == "empty-class"


def test_split_per_class_is_stratified_and_disjoint():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    train, test = split_per_class(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(16))
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert np.array_equal(test, split_per_class(labels, 0.2, seed=0)[1])


# ------------------------------------------------------------------ BatchLoader


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "n_batches"),
    [(10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (2, 5, False, 1)],
)
def test_batch_loader_covers_every_sample_once(n, batch_size, drop_last, n_batches):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    loader = BatchLoader(x, torch.arange(n), batch_size, shuffle=True, drop_last=drop_last)
    assert len(loader) == n_batches
    for _ in range(2):  # two epochs
        batches = list(loader)
        assert len(batches) == n_batches
        seen = torch.cat([yb for _, yb in batches])
        assert all(torch.equal(xb[:, 0, 0, 0].long(), yb) for xb, yb in batches)
        if drop_last:
            assert len(seen) == n_batches * batch_size and len(seen.unique()) == len(seen)
        else:
            assert sorted(seen.tolist()) == list(range(n))


def test_batch_loader_deterministic_and_reshuffles():
    y = torch.arange(50)

    def epochs(seed):
        loader = BatchLoader(y.float()[:, None], y, 8, shuffle=True, seed=seed)
        return [torch.cat([yb for _, yb in loader]).tolist() for _ in range(2)]

    first = epochs(seed=3)
    assert first == epochs(seed=3) and first != epochs(seed=4)
    assert first[0] != first[1]  # a new order every epoch
    assert torch.cat([yb for _, yb in BatchLoader(y, y, 8)]).tolist() == y.tolist()


def test_batch_loader_validates_and_moves_to_device():
    with pytest.raises(ValueError, match="x has 3 samples but y has 2"):
        BatchLoader(torch.zeros(3, 1), torch.zeros(2), 2)
    with pytest.raises(ValueError, match="augment needs images"):
        BatchLoader(torch.zeros(3, 4), torch.zeros(3), 2, augment=True)
    xb, _ = next(iter(BatchLoader(torch.zeros(3, 1), torch.zeros(3), 2, device="cpu")))
    assert xb.device.type == "cpu" and xb.shape == (2, 1)


def test_random_crop_flip_is_a_shifted_maybe_flipped_copy():
    x = torch.randn(6, 3, 8, 8)  # (B, C, H, W)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(6):
        candidates = [padded[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(out[b], c) for c in candidates)
    assert not torch.equal(out, x)


def test_augmenting_loader_keeps_shapes_and_labels(tmp_path):
    write_cifar(tmp_path, "cifar10", n_per_file=2)
    data = load_dataset("cifar10", root=tmp_path)
    loader = data.train_loader(4, seed=1)
    assert loader.augment
    batches = list(loader)
    assert [xb.shape for xb, _ in batches] == [(4, 3, 32, 32)] * 2 + [(2, 3, 32, 32)]
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == sorted(data.train_y.tolist())
    assert not data.test_loader(4).augment

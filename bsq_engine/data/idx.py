"""Reader and writer for the IDX format of (Fashion-)MNIST, plain or gzipped.

Layout (big-endian): two zero bytes, a dtype code byte, a byte with the number of dimensions
n, then n uint32 sizes, then the values in C order. Written here rather than borrowed from
torchvision so reading needs no torchvision dataset class and every failure names the file
and what is wrong with it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IdxFormatError", "read_idx", "write_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_CODE_TO_DTYPE = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_TO_CODE = {dtype.newbyteorder("="): code for code, dtype in _CODE_TO_DTYPE.items()}


class IdxFormatError(ValueError):
    """A file is not valid IDX: wrong magic, truncated, or followed by extra bytes."""


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IdxFormatError(
            f"{path}: gzip stream is truncated or corrupt ({exc}); download the file again."
        ) from exc


def _parse_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _CODE_TO_DTYPE:
        raise IdxFormatError(
            f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
            "expected 0000 followed by a type code such as 08 (uint8)."
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(f"{path}: truncated header ({len(data)} of {header_len} bytes).")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    return _CODE_TO_DTYPE[data[2]], shape, header_len


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip detected by its magic bytes) into a native-endian array.

    Example: `read_idx("train-labels-idx1-ubyte.gz")` -> uint8 array of shape (60000,).
    Raises IdxFormatError naming the file when it is corrupt or truncated.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, shape, offset = _parse_header(data, path)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - offset
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{path}: {what}: shape {shape} needs {expected} data bytes, found {found}; "
            "download the file again."
        )
    array = np.frombuffer(data, dtype, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # copies: writable, native byte order


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as IDX (gzipped when the name ends in .gz); used by tests and exports."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    code = _DTYPE_TO_CODE.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 "
            "or float64."
        )
    if array.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {array.ndim}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = array.astype(_CODE_TO_DTYPE[code]).tobytes()
    payload = header + body
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path

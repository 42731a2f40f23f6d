"""Bit packing of signed integer weights, as written into ``quantized.safetensors``.

Each weight of a layer with ``n`` bits takes ``n + 1`` bits: the sign first (1 = negative),
then the magnitude MSB first. Weights follow each other in row-major order and the bit
stream fills bytes MSB first, exactly ``numpy.packbits``'s order; the last byte is padded
with zeros. ``n = 0`` (a pruned layer) stores no bytes. numpy does the bit shuffling; this
module only adds the sign-magnitude code and the checks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["pack_bits", "unpack_bits"]

# Weights per chunk: a multiple of 8, so every chunk ends on a byte boundary and chunks
# concatenate into the same bytes as one pass; bounds the (weights, n + 1) bit matrix.
_CHUNK = 1 << 20


def pack_bits(q: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Signed integers (``|q| <= 2^n - 1``) -> uint8 bytes, ``n_bits + 1`` bits per weight.

    >>> pack_bits(torch.tensor([3, -1]), 2).tolist()  # 0 11, 1 01 -> 0111 0100
    [116]
    """
    if n_bits == 0:
        return torch.zeros(0, dtype=torch.uint8)
    if not 1 <= n_bits <= 62:
        raise ValueError(f"n_bits must be 0..62, got {n_bits}.")
    flat = q.detach().reshape(-1).long().cpu().numpy()
    if flat.size and int(np.abs(flat).max()) > 2**n_bits - 1:
        raise ValueError(
            f"|q| must be <= 2^{n_bits} - 1 = {2**n_bits - 1} to pack in {n_bits} bits."
        )
    code = np.abs(flat) | ((flat < 0).astype(np.int64) << n_bits)  # sign above magnitude
    shifts = np.arange(n_bits, -1, -1)  # (n + 1,) sign first, then MSB .. LSB
    chunks = [
        np.packbits(((code[start : start + _CHUNK, None] >> shifts) & 1).astype(np.uint8))
        for start in range(0, flat.size, _CHUNK)
    ]
    packed = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    return torch.from_numpy(packed)


def unpack_bits(packed: torch.Tensor, n_bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``numel`` signed int64 values.

    >>> unpack_bits(torch.tensor([116], dtype=torch.uint8), 2, 2).tolist()
    [3, -1]
    """
    if n_bits == 0:
        return torch.zeros(numel, dtype=torch.long)
    width = n_bits + 1
    needed = math.ceil(numel * width / 8)
    if packed.numel() < needed:
        raise ValueError(
            f"{numel} weights of {n_bits} bits need {needed} bytes, got {packed.numel()}."
        )
    data = packed.reshape(-1).cpu().numpy().astype(np.uint8, copy=False)
    place = 2 ** np.arange(n_bits - 1, -1, -1, dtype=np.int64)  # magnitude place values
    chunk_bytes = _CHUNK * width // 8
    out = []
    for i, start in enumerate(range(0, needed, chunk_bytes)):
        count = min(_CHUNK, numel - i * _CHUNK)
        bits = np.unpackbits(data[start : start + chunk_bytes], count=count * width)
        bits = bits.reshape(count, width).astype(np.int64)  # (count, n + 1)
        magnitude = bits[:, 1:] @ place
        out.append(np.where(bits[:, 0] == 1, -magnitude, magnitude))
    values = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(values)

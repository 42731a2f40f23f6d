"""Bit packing (core.packing): round trips, the documented layout, and byte-identical output
to the hand-written packer that wrote export format 1, so exported files still load."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bsq_engine.core.packing import pack_bits, unpack_bits

_OLD_CHUNK = 1 << 20


def _old_pack_bits(q: torch.Tensor, n_bits: int) -> torch.Tensor:
    """The hand-written packer of export format 1, kept verbatim as the reference."""
    if n_bits == 0:
        return torch.zeros(0, dtype=torch.uint8)
    if not 1 <= n_bits <= 62:
        raise ValueError(f"n_bits must be 0..62, got {n_bits}.")
    flat = q.detach().reshape(-1).long().cpu()
    if flat.numel() and int(flat.abs().max()) > 2**n_bits - 1:
        raise ValueError(
            f"|q| must be <= 2^{n_bits} - 1 = {2**n_bits - 1} to pack in {n_bits} bits."
        )
    code = flat.abs() | ((flat < 0).long() << n_bits)  # (N,) sign bit above the magnitude
    shifts = torch.arange(n_bits, -1, -1)  # (n + 1,) sign first, then MSB .. LSB
    weights = 2 ** torch.arange(7, -1, -1)  # (8,) MSB-first byte filling
    chunks = []
    for start in range(0, flat.numel(), _OLD_CHUNK):
        bits = ((code[start : start + _OLD_CHUNK, None] >> shifts) & 1).reshape(-1)  # (n_w*(n+1),)
        pad = (-bits.numel()) % 8
        bits = torch.cat([bits, bits.new_zeros(pad)]).reshape(-1, 8)  # (bytes, 8)
        chunks.append((bits * weights).sum(1).to(torch.uint8))
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)


@st.composite
def _ints(draw):
    n_bits = draw(st.integers(1, 8))
    top = 2**n_bits - 1
    values = draw(st.lists(st.integers(-top, top), min_size=0, max_size=300))
    return n_bits, values


@given(_ints())
@settings(max_examples=200, deadline=None)
def test_pack_unpack_round_trip(case):
    n_bits, values = case
    q = torch.tensor(values, dtype=torch.long)
    packed = pack_bits(q, n_bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == -(-len(values) * (n_bits + 1) // 8)  # n + 1 bits per weight
    assert unpack_bits(packed, n_bits, len(values)).tolist() == values


def test_pack_layout_is_sign_then_magnitude_msb_first():
    # 2 bits: +3 -> 0 11, -1 -> 1 01, +0 -> 0 00 => 011 101 00|0 (padded) -> 0x74, 0x00
    assert pack_bits(torch.tensor([3, -1, 0]), 2).tolist() == [0b01110100, 0]


def test_pack_keeps_the_shape_out_and_spans_chunks():
    q = torch.randint(-7, 8, (3, 5, 7))
    assert torch.equal(unpack_bits(pack_bits(q, 3), 3, q.numel()).reshape(q.shape), q)
    big = torch.randint(-1, 2, ((1 << 20) + 13,))  # more than one packing chunk
    assert torch.equal(unpack_bits(pack_bits(big, 1), 1, big.numel()), big)


def test_zero_bits_pack_to_nothing():
    assert pack_bits(torch.zeros(10, dtype=torch.long), 0).numel() == 0
    assert unpack_bits(torch.zeros(0, dtype=torch.uint8), 0, 10).tolist() == [0] * 10


def test_pack_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="2\\^2 - 1"):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match="need"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 4, 4)


@given(_ints())
@settings(max_examples=200, deadline=None)
def test_bytes_equal_the_format_1_packer(case):
    n_bits, values = case
    q = torch.tensor(values, dtype=torch.long)
    assert torch.equal(pack_bits(q, n_bits), _old_pack_bits(q, n_bits))


@pytest.mark.parametrize("n_bits", [3, 12])
def test_format_1_bytes_unpack_across_chunks(n_bits):
    top = 2**n_bits - 1
    q = torch.randint(-top, top + 1, ((1 << 20) + 13,), generator=torch.Generator().manual_seed(0))
    old = _old_pack_bits(q, n_bits)
    assert torch.equal(pack_bits(q, n_bits), old)
    assert torch.equal(unpack_bits(old, n_bits, q.numel()), q)

"""Pure numerics of the bit representation (BSQ_METHOD.md section 1 and 3, steps 1-3)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bsq_engine.core.functional import (
    RoundSTE,
    from_bit_planes,
    int_to_planes,
    place_values,
    plane_density,
    plane_group_norm,
    planes_to_int,
    planes_to_value,
    quantize_unit,
    requantized_ints,
    round_ste,
    to_bit_planes,
)

_FINITE = st.floats(
    min_value=-(2.0**100), max_value=2.0**100, allow_nan=False, allow_subnormal=False, width=32
)


@st.composite
def _weights(draw) -> torch.Tensor:
    """A float tensor of 1-4 dims (sides 1-4): random, all-zero, or negative-only."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    numel = int(torch.Size(shape).numel())
    kind = draw(st.sampled_from(["random", "zeros", "negative"]))
    if kind == "zeros":
        return torch.zeros(shape)
    values = draw(st.lists(_FINITE, min_size=numel, max_size=numel))
    w = torch.tensor(values, dtype=torch.float32).reshape(shape)
    return -w.abs() if kind == "negative" else w


# ------------------------------------------------------------------ conversion


@settings(max_examples=120, deadline=None)
@given(w=_weights(), n_bits=st.integers(1, 8))
def test_round_trip_within_half_a_step(w, n_bits):
    pos, neg, scale = to_bit_planes(w, n_bits)
    assert pos.shape == neg.shape == (*w.shape, n_bits)
    rebuilt = from_bit_planes(pos, neg, scale)
    s = float(w.abs().max()) or 1.0
    assert float(scale) == pytest.approx(s)
    half_step = s / (2**n_bits - 1) / 2
    # float32 arithmetic on w / s may land a tie on the other neighbour: a few ulps of s.
    assert float((rebuilt - w).abs().max()) <= half_step + 4e-7 * s


@settings(max_examples=80, deadline=None)
@given(w=_weights(), n_bits=st.integers(1, 8))
def test_pos_neg_exclusive_and_sign_placement(w, n_bits):
    pos, neg, _ = to_bit_planes(w, n_bits)
    assert set(pos.unique().tolist()) <= {0.0, 1.0}
    assert set(neg.unique().tolist()) <= {0.0, 1.0}
    assert not bool(((pos > 0) & (neg > 0)).any())
    positive = w > 0
    assert not bool(neg[positive].any()), "a positive weight put a bit in neg"
    assert not bool(pos[~positive].any()), "a weight <= 0 put a bit in pos"


def test_conversion_hand_case():
    # s = 1, 3 bits: 0.5 * 7 = 3.5 -> 4 = 0b100; -0.3 * 7 = -2.1 -> 2 = 0b010; 0 -> neg zeros.
    pos, neg, scale = to_bit_planes(torch.tensor([0.5, -0.3, 0.0, -1.0]), 3)
    assert float(scale) == 1.0
    assert pos.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert neg.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]]


def test_to_bit_planes_rejects_zero_bits():
    with pytest.raises(ValueError, match="n_bits must be >= 1"):
        to_bit_planes(torch.ones(2), 0)


@settings(max_examples=60, deadline=None)
@given(
    n_bits=st.integers(1, 10),
    data=st.data(),
)
def test_int_planes_round_trip(n_bits, data):
    ints = data.draw(st.lists(st.integers(0, 2**n_bits - 1), min_size=1, max_size=20))
    q = torch.tensor(ints)
    planes = int_to_planes(q, n_bits)
    assert planes.shape == (len(ints), n_bits)
    assert planes_to_int(planes).tolist() == ints


def test_place_values_msb_first():
    assert place_values(3).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert int_to_planes(torch.tensor([6]), 3).tolist() == [[1.0, 1.0, 0.0]]
    assert float(place_values(8).sum()) == pytest.approx(1.0)


def test_planes_to_value_uses_pos_minus_neg():
    pos = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    neg = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert planes_to_value(pos, neg).tolist() == pytest.approx([5 / 7, -3 / 7])


def test_planes_to_value_equals_the_difference_form_to_rounding():
    gen = torch.Generator().manual_seed(3)
    pos, neg = 2 * torch.rand(50, 4, 6, generator=gen), 2 * torch.rand(50, 4, 6, generator=gen)
    plain = (pos - neg) @ place_values(6)  # the method's formula, one (N, n) temporary
    assert planes_to_value(pos, neg).shape == (50, 4)
    assert torch.allclose(planes_to_value(pos, neg), plain, rtol=0, atol=1e-6)


# ------------------------------------------------------------ straight-through


@pytest.mark.parametrize("n_bits", [1, 2, 4, 8])
def test_sign_magnitude_equals_the_method_formula_bit_for_bit(n_bits):
    """``round(clamp(x) * L) / L`` against ``sign(x) * round(|x| * L) / L`` (section 1),
    on exact ties ``(k + 1/2) / L`` of both signs, zeros, clamped values and noise."""
    levels = float(2**n_bits - 1)
    ties = (torch.arange(-levels, levels + 1) + 0.5) / levels
    gen = torch.Generator().manual_seed(n_bits)
    x = torch.cat([ties, torch.tensor([0.0, -0.0, 1.0, -1.0, 1.5, -9.0, 1e-9, -1e-9]),
                   4 * torch.rand(2000, generator=gen) - 2])  # fmt: skip
    clamped = x.clamp(-1.0, 1.0)
    method = torch.sign(clamped) * torch.round(clamped.abs() * levels) / levels
    assert torch.equal(quantize_unit(x, n_bits), method)


def test_quantize_unit_values_and_clamp():
    x = torch.tensor([0.5, -0.3, 2.0, -7.0, 0.0])
    assert quantize_unit(x, 2).tolist() == pytest.approx([2 / 3, -1 / 3, 1.0, -1.0, 0.0])
    assert quantize_unit(x, 0).tolist() == [0.0] * 5


def test_quantize_unit_backward_is_identity_even_when_clamped():
    x = torch.tensor([0.1, -0.45, 1.7, -3.0, 0.99], requires_grad=True)
    upstream = torch.tensor([1.0, -2.0, 3.0, 0.5, -0.25])
    quantize_unit(x, 3).backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_round_ste_and_round_function_backward():
    x = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == torch.round(x.detach()).tolist()
    y.backward(torch.tensor([2.0, 3.0, 4.0]))
    assert x.grad.tolist() == [2.0, 3.0, 4.0]
    z = torch.tensor([5.0, -5.0], requires_grad=True)
    RoundSTE.apply(z, 7.0).sum().backward()
    assert z.grad.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("n_bits", [1, 3, 8])
def test_plane_gradient_is_scaled_by_place_value(n_bits):
    torch.manual_seed(n_bits)
    pos = torch.rand(3, 4, n_bits, dtype=torch.float64, requires_grad=True)
    neg = torch.rand(3, 4, n_bits, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 4, dtype=torch.float64)  # dL/dW
    w = from_bit_planes(pos, neg, scale)
    w.backward(upstream)
    levels = 2**n_bits - 1
    for b in range(n_bits):
        expected = 0.7 * upstream * 2 ** (n_bits - 1 - b) / levels
        assert torch.allclose(pos.grad[..., b], expected, rtol=1e-12, atol=0)
        assert torch.allclose(neg.grad[..., b], -expected, rtol=1e-12, atol=0)
    q = quantize_unit(planes_to_value(pos.detach(), neg.detach()), n_bits)
    assert float(scale.grad) == pytest.approx(float((q * upstream).sum()), rel=1e-12)


# ------------------------------------------------------------ re-quantized view


def test_requantized_ints_rounds_continuous_planes():
    # 3 bits: planes of 0.6 -> v = 0.6 -> 0.6 * 7 = 4.2 -> 4; negative side likewise.
    pos = torch.tensor([[0.6, 0.6, 0.6], [0.0, 0.0, 0.0], [0.0, 0.9, 0.2]])
    neg = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.6, 0.6], [0.0, 0.0, 0.0]])
    rp, rn = requantized_ints(pos, neg)
    # third row: (0.9 * 2 + 0.2 * 1) = 2.0 -> 2
    assert rp.tolist() == [4, 0, 2]
    assert rn.tolist() == [0, 4, 0]
    assert rp.dtype == torch.long


def test_requantized_ints_overflow_exceeds_levels():
    rp, rn = requantized_ints(torch.full((1, 3), 2.0), torch.zeros(1, 3))
    assert rp.tolist() == [14] and rn.tolist() == [0]


def test_plane_density_hand_case():
    # ints 5 (101), 1 (001), -4 (100), 0 over 3 bits
    pos = int_to_planes(torch.tensor([5, 1, 0, 0]), 3)
    neg = int_to_planes(torch.tensor([0, 0, 4, 0]), 3)
    assert plane_density(pos, neg).tolist() == pytest.approx([0.5, 0.0, 0.5])


def test_plane_density_overflow_view_has_one_more_plane():
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # v = 4/3 -> R = 4 = 0b100; R = 1 = 0b001
    neg = torch.zeros(2, 2)
    density = plane_density(pos, neg, max_bits=8)
    assert density.tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert plane_density(pos, neg).shape == (3,)  # no max_bits: growth is still allowed


def test_plane_density_clips_at_max_bits():
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # R = 4 clips to 3 = 0b11 at max_bits = 2
    density = plane_density(pos, torch.zeros(2, 2), max_bits=2)
    assert density.tolist() == pytest.approx([0.5, 1.0])


def test_plane_group_norm_values():
    pos = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    assert plane_group_norm(pos, neg, eps=0.0).tolist() == pytest.approx([5.0, 1.0])
    zero = plane_group_norm(torch.zeros(3, 2), torch.zeros(3, 2), eps=1e-8)
    assert zero.tolist() == pytest.approx([1e-4, 1e-4])

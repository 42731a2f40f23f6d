"""Pure numerics of BSQ's bit representation.

Plane layout (used everywhere in this package): a layer whose float weight has shape ``S``
keeps two tensors of shape ``(*S, n_bits)``, ``pos`` and ``neg``. The last dimension is the
bit position, **MSB first**: plane ``b`` has place value ``2**(n_bits - 1 - b) / (2**n_bits - 1)``.

The planes are *stored* in exactly this layout (dense, last dimension fastest) on every
device and in every memory format; a ``channels_last`` model computes its effective weight
in the format of its input (see ``layers``; a plane-major storage was not tried).

Small pure functions; the straight-through estimators are two tiny ``autograd.Function``s
(``RoundSTE``, and ``PlanesToWeight``, which fuses the weight and the group norms).

Cost: every pass over the planes is memory-bound (ResNet-20 at 8 bits: 17 MB), so passes
are counted. On the CPU the fused node runs C++ kernels (``native``): one read of the planes
forward, one read and one write of each plane tensor backward. Its eager kernels (CUDA,
``layer.native = False``, no compiler) read them twice forward (``v`` by two mat-vecs, no
``pos - neg`` temporary; the sums of squares) and make about 4.5 passes backward.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from bsq_engine.core import native as _native

__all__ = [
    "EPS",
    "InBackwardSGD",
    "PlanesToWeight",
    "RoundSTE",
    "from_bit_planes",
    "int_to_planes",
    "place_values",
    "plane_density",
    "plane_group_norm",
    "planes_to_int",
    "planes_to_value",
    "quantize_unit",
    "requantized_ints",
    "round_ste",
    "to_bit_planes",
    "weight_and_group_norms",
]

EPS = 1e-8  # the regularizer's epsilon inside each group norm (BSQ_METHOD.md section 2)


class RoundSTE(torch.autograd.Function):
    """``sign(x) * round(|clamp(x, -1, 1)| * levels) / levels`` with an identity backward.

    Both the clamp and the round are straight-through (BSQ_METHOD.md section 1), so the
    gradient reaches the continuous bit planes unchanged.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: float) -> torch.Tensor:
        return _sign_magnitude(x, levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _sign_magnitude(x: torch.Tensor, levels: float) -> torch.Tensor:
    # sign(x) * round(|x| * L) / L written as round(x * L) / L: the same values bit for bit
    # (negation is exact and round-half-to-even is symmetric), in 4 kernels instead of 7.
    # clamp gives a fresh tensor, so the rest runs in place on it.
    return x.clamp(-1.0, 1.0).mul_(levels).round_().div_(levels)


def round_ste(x: torch.Tensor, step: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Round to a multiple of ``step`` with a straight-through (identity) gradient.

    The one straight-through rounding of the package: ``ActQuant`` calls it with its level
    spacing. The gradient is exactly 1, whatever the step.

    >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
    >>> y = round_ste(x); y.sum().backward(); y.tolist(), x.grad.tolist()
    ([0.0, 2.0], [1.0, 1.0])
    >>> x = torch.tensor([0.26, 0.9], requires_grad=True)
    >>> y = round_ste(x, step=0.5); y.sum().backward(); y.tolist(), x.grad.tolist()
    ([0.5, 1.0], [1.0, 1.0])
    """
    return x + (torch.round(x / step) * step - x).detach()


def quantize_unit(x: torch.Tensor, n_bits: int) -> torch.Tensor:
    """``Q_n(clamp(x, -1, 1))``: sign-magnitude quantization of ``x`` to ``n_bits`` bits.

    >>> quantize_unit(torch.tensor([0.5, -0.3, 2.0]), 2).tolist()
    [0.6666666865348816, -0.3333333432674408, 1.0]
    """
    if n_bits <= 0:
        return torch.zeros_like(x)
    return RoundSTE.apply(x, float(2**n_bits - 1))


def place_values(n_bits: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Place value of each plane, MSB first: ``2**(n-1-b) / (2**n - 1)``.

    >>> place_values(2).tolist()
    [0.6666666865348816, 0.3333333432674408]
    """
    powers = 2.0 ** torch.arange(n_bits - 1, -1, -1, device=device, dtype=torch.float64)
    return (powers / (2**n_bits - 1)).to(dtype)


@lru_cache(maxsize=64)
def _cached_place(n_bits: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return place_values(n_bits, device, dtype)


def _place(n_bits: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`place_values`, built once per (bits, device, dtype): it is read every step.
    Under ``torch.compile`` built in the graph (the compiler cannot trace the cache)."""
    if torch.compiler.is_compiling():
        return place_values(n_bits, device, dtype)
    return _cached_place(n_bits, device, dtype)


def planes_to_value(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Value ``v`` encoded by (continuous) planes; shapes ``(*S, n) -> S``.

    >>> pos = torch.tensor([[1.0, 0.0]]); neg = torch.tensor([[0.0, 1.0]])
    >>> planes_to_value(pos, neg).tolist()
    [0.3333333432674408]
    """
    n_bits = pos.shape[-1]
    place = _place(n_bits, pos.device, pos.dtype)  # (n,)
    return _value_2d(pos.reshape(-1, n_bits), neg.reshape(-1, n_bits), place).view(pos.shape[:-1])


def _value_2d(pos2: torch.Tensor, neg2: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
    """``pos2 @ place - neg2 @ place`` for ``(N, n)`` planes: two mat-vecs, no ``(N, n)``
    temporary for ``pos - neg`` (the fused and the plain path share it, so their weights
    stay bit-identical)."""
    return torch.addmv(pos2 @ place, neg2, place, alpha=-1)  # (N,)


def int_to_planes(q: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Non-negative integers -> 0/1 planes ``(*q.shape, n_bits)``, MSB first.

    >>> int_to_planes(torch.tensor([5]), 3).tolist()
    [[1.0, 0.0, 1.0]]
    """
    shifts = torch.arange(n_bits - 1, -1, -1, device=q.device)  # (n,)
    bits = (q.long().unsqueeze(-1) >> shifts) & 1  # (*S, n)
    return bits.float()


def planes_to_int(planes: torch.Tensor) -> torch.Tensor:
    """0/1 planes ``(*S, n)`` (MSB first) -> integers ``S``; inverse of :func:`int_to_planes`.

    >>> planes_to_int(torch.tensor([[1.0, 0.0, 1.0]])).tolist()
    [5]
    """
    n_bits = planes.shape[-1]
    powers = 2 ** torch.arange(n_bits - 1, -1, -1, device=planes.device)  # (n,)
    return (planes.round().long() * powers).sum(-1)


def to_bit_planes(w: torch.Tensor, n_bits: int):
    """Convert a float weight to ``(pos, neg, scale)`` with ``n_bits`` planes.

    ``s = max|w|``, ``q = round(|w| / s * (2^n - 1))`` written in binary; the bits go to
    ``pos`` where ``w > 0`` and to ``neg`` where ``w <= 0``.

    >>> pos, neg, s = to_bit_planes(torch.tensor([0.3, -1.0]), 2)  # 0.3 * 3 rounds to 1 = 0b01
    >>> pos.tolist(), neg.tolist(), float(s)
    ([[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]], 1.0)
    """
    if n_bits < 1:
        raise ValueError(f"n_bits must be >= 1, got {n_bits}")
    w = w.detach()
    scale = w.abs().max()
    # An all-zero weight has no meaningful scale; any positive value encodes zeros exactly.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w.abs() / scale * (2**n_bits - 1))  # S
    planes = int_to_planes(q, n_bits).to(w.dtype)  # (*S, n)
    positive = (w > 0).unsqueeze(-1)  # (*S, 1)
    pos = torch.where(positive, planes, torch.zeros_like(planes))
    neg = torch.where(positive, torch.zeros_like(planes), planes)
    return pos, neg, scale.clone()


def from_bit_planes(pos: torch.Tensor, neg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The weight the forward pass uses: ``W = s * Q_n(clamp(v, -1, 1))`` (STE backward).

    >>> pos, neg, s = to_bit_planes(torch.tensor([0.3, -1.0]), 2)
    >>> from_bit_planes(pos, neg, s).tolist()
    [0.3333333432674408, -1.0]
    """
    n_bits = pos.shape[-1]
    return scale * quantize_unit(planes_to_value(pos, neg), n_bits)


def requantized_ints(pos: torch.Tensor, neg: torch.Tensor):
    """Steps 1 of re-quantization: integer magnitudes ``(Rp, Rn)`` of the current planes.

    ``Rp = round(max(v, 0) * (2^n - 1))``, ``Rn = round(max(-v, 0) * (2^n - 1))``; they can
    exceed ``2^n - 1`` (overflow) since continuous planes live in ``[0, 2]``.

    >>> requantized_ints(torch.tensor([[2.0, 2.0]]), torch.zeros(1, 2))
    (tensor([6]), tensor([0]))
    """
    levels = 2 ** pos.shape[-1] - 1
    v = planes_to_value(pos.detach().double(), neg.detach().double())  # S
    rp = torch.round(v.clamp(min=0) * levels).long()
    rn = torch.round((-v).clamp(min=0) * levels).long()
    return rp, rn


def plane_density(pos: torch.Tensor, neg: torch.Tensor, max_bits: int | None = None):
    """Fraction of weights whose bit is 1, per plane (MSB first), in the re-quantized view.

    The view is steps 1-3 of re-quantization computed without touching the planes: with
    overflow below ``max_bits`` the view has one more (MSB) plane; at ``max_bits`` the
    integers are clipped.

    >>> plane_density(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2, 2)).tolist()
    [0.5, 0.5]
    """
    n_bits = pos.shape[-1]
    rp, rn = requantized_ints(pos, neg)
    r = torch.maximum(rp, rn)  # S; at most one of rp, rn is non-zero
    levels = 2**n_bits - 1
    view_bits = n_bits
    if int(r.max()) > levels:
        if max_bits is not None and n_bits >= max_bits:
            r = r.clamp(max=levels)
        else:
            view_bits = n_bits + 1
    planes = int_to_planes(r, view_bits)  # (*S, view_bits)
    return planes.reshape(-1, view_bits).mean(0)


def plane_group_norm(pos: torch.Tensor, neg: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Group norm of each plane (what the regularizer sees): ``sqrt(eps + sum pos^2 + neg^2)``.

    >>> plane_group_norm(torch.ones(4, 2), torch.zeros(4, 2), eps=0.0).tolist()
    [2.0, 2.0]
    """
    n_bits = pos.shape[-1]
    sq = pos.reshape(-1, n_bits).square().sum(0) + neg.reshape(-1, n_bits).square().sum(0)
    return torch.sqrt(eps + sq)  # (n,)


class InBackwardSGD:
    """``torch.optim.SGD``'s update of one layer's planes, made by the fused node's backward.

    With it, the C++ backward (``native.planes_backward_sgd``) does not write a plane
    gradient for the optimizer to read: in the same pass over the planes it computes the
    gradient, applies SGD (momentum, weight decay; the optimizer's current ``lr``,
    ``momentum`` and ``weight_decay``, read from its param ``group`` at that moment) and
    clips to [0, 2]. The momentum buffers stay in the optimizer's ``state`` under
    ``"momentum_buffer"``, where SGD keeps them, so checkpoints and resumes are unchanged;
    the planes' ``.grad`` stays ``None`` and ``optimizer.step()`` skips them.

    Only for a step of one forward and one backward (``training.fast_path`` arms it per step
    and detaches it after the epoch); a layer forwarded more than once in a step (``uses``)
    leaves the update to the optimizer. Where the C++ kernels do not run (CUDA, eager), the
    node returns gradients as usual. ``done`` tells ``clip_planes_`` the planes are clipped.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict, pos, neg) -> None:
        self.state, self.group, self.pos, self.neg = optimizer.state, group, pos, neg
        self.uses = 0  # forwards of the layer since the step was armed
        self.done = False  # this step's update was applied

    def arm(self) -> None:
        self.uses, self.done = 0, False

    def buffers(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The momentum buffers (new, uninitialised ones on the first step) and ``first``."""
        a = self.state[self.pos].get("momentum_buffer")
        b = self.state[self.neg].get("momentum_buffer")
        if a is not None and b is not None:
            return a, b, False
        a, b = torch.empty_like(self.pos), torch.empty_like(self.neg)
        self.state[self.pos]["momentum_buffer"] = a
        self.state[self.neg]["momentum_buffer"] = b
        return a, b, True


class PlanesToWeight(torch.autograd.Function):
    """``(pos, neg, scale) -> (W, group norms)`` as one autograd node (the fused path).

    Forward: the same arithmetic as :func:`from_bit_planes` (so ``W`` is bit-identical to
    it) and, when ``with_norms``, the per-plane norms of :func:`plane_group_norm` (else
    ``None``), saving (besides the planes themselves) only the ``(N,)`` quantized unit
    weight and the ``(n,)`` norms. ``W`` is written directly in ``memory_format`` (the
    conv's ``channels_last``: one kernel instead of a product and a re-layout copy).
    ``native``: the C++ kernels (:mod:`native`) on float32 CPU planes when they build; the
    weight may then differ by one level where ``v (2^n - 1)`` is within rounding of a tie.
    Backward writes each plane gradient once: ``outer(s * dW, place)`` (both
    straight-through estimators of section 1) plus the group Lasso term
    ``d_norm * plane / norm``; with ``sgd`` (an armed :class:`InBackwardSGD`, C++ kernels
    only) it applies the optimizer's update to the planes in that same pass instead and
    returns no plane gradient. The plain path builds about ten autograd nodes per layer and
    keeps plane-sized temporaries; on ResNet-20's planes its forward + backward measured
    1.8x the CPU time of this node's.
    """

    @staticmethod
    def forward(
        ctx, pos, neg, scale, eps: float, with_norms=True, memory_format=None, native=False,
        sgd: InBackwardSGD | None = None,
    ):  # fmt: skip
        n_bits = pos.shape[-1]
        pos2, neg2 = pos.reshape(-1, n_bits), neg.reshape(-1, n_bits)  # (N, n) views
        place = _place(n_bits, pos.device, pos.dtype)  # (n,)
        levels = float(2**n_bits - 1)
        ctx.native = _native.kernels_for(pos, neg) if native else None
        ctx.sgd = sgd if ctx.native is not None and sgd is not None else None
        if ctx.sgd is not None:
            ctx.sgd.uses += 1
        ctx.set_materialize_grads(False)
        ctx.plane_shape = pos.shape
        if ctx.native is not None:  # one pass over the planes (core.native)
            fmt = memory_format or torch.contiguous_format
            weight = torch.empty(pos.shape[:-1], dtype=pos.dtype, memory_format=fmt)
            weight, unit, norms = ctx.native.planes_forward(
                pos2, neg2, place, scale.detach(), levels, eps, bool(with_norms), weight
            )
            ctx.save_for_backward(pos2, neg2, scale, place, unit, norms)
            return weight, norms
        unit = _sign_magnitude(_value_2d(pos2, neg2, place), levels)  # (N,)
        norms = None
        if with_norms:
            # per-plane sums of squares; vecdot over the (n, N) view measured a little
            # faster than square().sum(0) on ResNet-20's planes (CPU time, 1 thread)
            sq = torch.linalg.vecdot(pos2.T, pos2.T) + torch.linalg.vecdot(neg2.T, neg2.T)
            norms = torch.sqrt(eps + sq)  # (n,)
        ctx.save_for_backward(pos2, neg2, scale, place, unit, norms)
        unit = unit.view(pos.shape[:-1])  # S
        if memory_format is None:
            return scale * unit, norms
        weight = torch.empty_like(unit, memory_format=memory_format)
        return torch.mul(unit, scale, out=weight), norms

    @staticmethod
    def backward(ctx, grad_w, grad_norms):
        pos2, neg2, scale, place, unit, norms = ctx.saved_tensors
        grad_pos = grad_neg = grad_scale = None
        sgd = ctx.sgd
        if ctx.native is not None and grad_w is not None:  # the kernels' group-Lasso factors
            lasso = place.new_empty(0) if grad_norms is None else grad_norms / norms  # (n,)
        if sgd is not None and sgd.uses == 1 and grad_w is not None:  # gradient + update
            mom_pos, mom_neg, first = sgd.buffers()
            group = sgd.group
            grad_scale = ctx.native.planes_backward_sgd(
                grad_w, pos2, neg2, place, scale, unit, lasso, ctx.needs_input_grad[2],
                mom_pos.view(pos2.shape), mom_neg.view(neg2.shape),
                group["lr"], group["momentum"], group["weight_decay"], first,
            )  # fmt: skip
            for plane in (sgd.pos, sgd.neg):  # changed in place, as optimizer.step() would
                torch.autograd.graph.increment_version(plane)
            sgd.done = True
            return None, None, grad_scale, None, None, None, None, None
        if ctx.native is not None and grad_w is not None:  # both terms in one pass
            grad_pos, grad_neg, grad_scale = ctx.native.planes_backward(
                grad_w, pos2, neg2, place, scale, unit, lasso, ctx.needs_input_grad[2]
            )
            grad_norms = None  # the kernel added the group Lasso term
        elif grad_w is not None:
            g = grad_w.reshape(-1)  # (N,); a copy when W is channels_last
            # outer(s * dW, place) as a k = 1 matrix product: the same products, and BLAS
            # wrote them faster than torch.outer's broadcast multiply (CPU, cold caches)
            grad_pos = torch.mm((g * scale).unsqueeze(1), place.unsqueeze(0))  # (N, n)
            # measured against an outer with -place, torch.addcmul(pos2 * lasso, ...), addr
            # and addmm with diag(lasso): negating the product is the cheapest second term
            grad_neg = -grad_pos
            if ctx.needs_input_grad[2]:
                grad_scale = torch.dot(unit, g)
        if grad_norms is not None:
            lasso = grad_norms / norms  # (n,)
            if grad_pos is None:
                grad_pos, grad_neg = pos2 * lasso, neg2 * lasso
            else:
                grad_pos = grad_pos.addcmul_(pos2, lasso)
                grad_neg = grad_neg.addcmul_(neg2, lasso)
        shape = ctx.plane_shape
        grad_pos = None if grad_pos is None else grad_pos.view(shape)
        grad_neg = None if grad_neg is None else grad_neg.view(shape)
        return grad_pos, grad_neg, grad_scale, None, None, None, None, None


def weight_and_group_norms(
    pos, neg, scale, eps: float = EPS, with_norms: bool = True, memory_format=None, native=False,
    sgd: InBackwardSGD | None = None,
):  # fmt: skip
    """``(W, norms)``: :func:`from_bit_planes` and :func:`plane_group_norm` in one node.

    Values equal the two plain functions'; gradients equal theirs to float rounding.
    ``with_norms=False`` skips the norms (``None``; a step without the regularizer);
    ``memory_format`` lays ``W`` out in that format (the default: the planes' own order);
    ``native=True`` (the layers' default) runs the C++ kernels where they apply;
    ``sgd``: see :class:`InBackwardSGD` (training steps only).

    >>> pos, neg, s = to_bit_planes(torch.tensor([0.3, -1.0]), 2)
    >>> w, norms = weight_and_group_norms(pos, neg, s, eps=0.0)
    >>> w.tolist(), norms.tolist()
    ([0.3333333432674408, -1.0], [1.0, 1.4142135381698608])
    """
    return PlanesToWeight.apply(pos, neg, scale, eps, with_norms, memory_format, native, sgd)

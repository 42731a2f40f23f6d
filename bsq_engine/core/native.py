"""Optional C++ kernels for the fused planes node (``functional.PlanesToWeight``) on the CPU.

Each pass over the bit planes is memory-bound, so these kernels make one pass where eager
PyTorch makes several (ResNet-20 at 8 bits: 2 x 2.1 M floats, 17 MB):

- ``planes_forward``: ``v = pos @ place - neg @ place``, the sign-magnitude rounding and
  the per-plane sums of squares in ONE read of the planes (eager: two mat-vecs + two
  vecdots, two reads), then ``W = s * unit`` in the requested memory format and the norms.
- ``planes_backward``: ``grad_pos = s g place + lasso pos`` and
  ``grad_neg = -s g place + lasso neg`` in one read of the planes and one write of each
  gradient (eager: a matmul, a negation and two ``addcmul_``: 4.5 passes), plus the scale
  gradient ``dot(unit, g)``.

Reductions run over fixed blocks of rows summed in block order, so results do not depend on
the number of threads (a resumed run with the same data is bit-identical). Rows are split
across threads with ``at::parallel_for``.

An optional accelerator: :func:`kernels` builds the extension lazily, on first use (never
at import), with ``torch.utils.cpp_extension.load_inline`` (g++ and ninja needed), cached
in torch's extensions directory (``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``):
only the first process pays for compiling (the app's pre-started training process builds
it before any run asks). With ``BSQ_NATIVE=0``, without a compiler, or when the build
fails, it returns ``None`` after logging one line saying why, and the eager kernels run
instead (same values to float rounding). On CUDA the eager path runs.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

__all__ = ["kernels", "kernels_for", "native_wanted", "status"]

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

// Rows per block: reductions sum blocks in order, whatever the thread count.
constexpr int64_t kBlock = 2048;

// NB > 0: the bit count as a compile-time constant (lets the compiler vectorize the row).
template <int NB>
static void forward_block(const float* __restrict__ pos, const float* __restrict__ neg,
                          const float* __restrict__ place, int64_t n, float levels,
                          float* __restrict__ unit, float* __restrict__ sq,
                          int64_t begin, int64_t end) {
  const int64_t nb = NB > 0 ? NB : n;
  float acc[64] = {0};
  for (int64_t i = begin; i < end; ++i) {
    const float* p = pos + i * nb;
    const float* q = neg + i * nb;
    float vp = 0.f, vn = 0.f;
    for (int64_t b = 0; b < nb; ++b) {
      vp += p[b] * place[b];
      vn += q[b] * place[b];
      acc[b] += p[b] * p[b] + q[b] * q[b];
    }
    // sign(x) round(|x| L) / L as round(x L) / L (half to even is symmetric), as eager
    const float v = std::min(1.f, std::max(-1.f, vp - vn));
    unit[i] = std::nearbyint(v * levels) / levels;
  }
  if (sq != nullptr) {
    for (int64_t b = 0; b < nb; ++b) sq[b] = acc[b];
  }
}

std::vector<torch::Tensor> planes_forward(torch::Tensor pos, torch::Tensor neg,
                                          torch::Tensor place, torch::Tensor scale,
                                          double levels, double eps, bool with_norms,
                                          torch::Tensor weight) {
  const int64_t N = pos.size(0), n = pos.size(1);
  TORCH_CHECK(n <= 64, "at most 64 bit planes, got ", n);
  auto unit = torch::empty({N}, pos.options());
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  // per-block sums of squares, only when the norms are asked for
  auto partial = with_norms ? torch::empty({blocks, n}, pos.options()) : torch::Tensor();
  const float* P = pos.data_ptr<float>();
  const float* Q = neg.data_ptr<float>();
  const float* pl = place.data_ptr<float>();
  float* U = unit.data_ptr<float>();
  float* S = with_norms ? partial.data_ptr<float>() : nullptr;
  const float L = static_cast<float>(levels);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t s = blk * kBlock, e = std::min(N, s + kBlock);
      float* sq = with_norms ? S + blk * n : nullptr;
      if (n == 8) forward_block<8>(P, Q, pl, n, L, U, sq, s, e);
      else forward_block<0>(P, Q, pl, n, L, U, sq, s, e);
    }
  });
  // the same product as eager's torch.mul(unit, scale, out=weight), in weight's format
  at::mul_out(weight, unit.view(weight.sizes()), scale);
  torch::Tensor norms;
  if (with_norms) {  // blocks summed in order (not torch's sum: it may split by threads)
    norms = torch::empty({n}, pos.options());
    float* out = norms.data_ptr<float>();
    for (int64_t b = 0; b < n; ++b) {
      double total = 0.0;
      for (int64_t blk = 0; blk < blocks; ++blk) total += S[blk * n + b];
      out[b] = static_cast<float>(std::sqrt(eps + total));
    }
  }
  return {weight, unit, norms};
}

// body(nb, lasso, begin, end) over the rows in blocks, across threads, with the bit count
// (8, the usual one, or 0: read at run time) and whether there is a Lasso term as
// compile-time constants (std::integral_constant), so the row loops vectorize.
template <class Body>
static void for_rows(int64_t N, int64_t n, bool lasso, Body body) {
  using Eight = std::integral_constant<int, 8>;
  using Any = std::integral_constant<int, 0>;
  at::parallel_for(0, N, kBlock, [&](int64_t s0, int64_t e0) {
    if (lasso && n == 8) body(Eight{}, std::true_type{}, s0, e0);
    else if (lasso) body(Any{}, std::true_type{}, s0, e0);
    else if (n == 8) body(Eight{}, std::false_type{}, s0, e0);
    else body(Any{}, std::false_type{}, s0, e0);
  });
}

// LASSO false: no regularizer term, the planes are not read at all.
template <int NB, bool LASSO>
static void backward_rows(const float* __restrict__ g, const float* __restrict__ pos,
                          const float* __restrict__ neg, const float* __restrict__ place,
                          const float* __restrict__ lasso, int64_t n, float s,
                          float* __restrict__ gp, float* __restrict__ gn,
                          int64_t begin, int64_t end) {
  const int64_t nb = NB > 0 ? NB : n;
  for (int64_t i = begin; i < end; ++i) {
    const float gs = g[i] * s;
    const float* p = pos + i * nb;
    const float* q = neg + i * nb;
    float* op = gp + i * nb;
    float* on = gn + i * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const float t = gs * place[b];  // both straight-through estimators: s g place
      op[b] = LASSO ? t + p[b] * lasso[b] : t;
      on[b] = LASSO ? -t + q[b] * lasso[b] : -t;
    }
  }
}

static float blocked_dot(const float* a, const float* b, int64_t N) {
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      double acc = 0.0;
      for (int64_t i = blk * kBlock, e = std::min(N, i + kBlock); i < e; ++i)
        acc += static_cast<double>(a[i]) * b[i];
      partial[blk] = acc;
    }
  });
  double total = 0.0;
  for (double x : partial) total += x;
  return static_cast<float>(total);
}

// lasso: (n,) group-Lasso factors d_norm / norm, or an empty tensor (no regularizer term).
std::vector<torch::Tensor> planes_backward(torch::Tensor grad_w, torch::Tensor pos,
                                           torch::Tensor neg, torch::Tensor place,
                                           torch::Tensor scale, torch::Tensor unit,
                                           torch::Tensor lasso, bool need_scale) {
  const int64_t N = pos.size(0), n = pos.size(1);
  auto g = grad_w.contiguous().view({N});  // a copy of the (small) weight grad if strided
  auto gp = torch::empty_like(pos);
  auto gn = torch::empty_like(neg);
  const bool with_lasso = lasso.numel() > 0;
  auto la = with_lasso ? lasso.contiguous() : lasso;  // not read without the term
  const float s = scale.item<float>();
  const float* G = g.data_ptr<float>();
  const float* P = pos.data_ptr<float>();
  const float* Q = neg.data_ptr<float>();
  const float* pl = place.data_ptr<float>();
  const float* LA = with_lasso ? la.data_ptr<float>() : nullptr;
  float* OP = gp.data_ptr<float>();
  float* ON = gn.data_ptr<float>();
  for_rows(N, n, with_lasso, [&](auto nb, auto la, int64_t s0, int64_t e0) {
    backward_rows<decltype(nb)::value, decltype(la)::value>(G, P, Q, pl, LA, n, s, OP, ON,
                                                             s0, e0);
  });
  torch::Tensor gscale;
  if (need_scale)
    gscale = torch::full({}, blocked_dot(unit.data_ptr<float>(), G, N), scale.options());
  return {gp, gn, gscale};
}

// The plane gradient of planes_backward, then in the same pass torch.optim.SGD's update
// (dampening 0, no Nesterov) and the method's clip to [0, 2], written over the planes and
// their momentum buffers in place:
//   d = grad + wd p;  m = first ? d : momentum m + d;  p = clamp(p - lr m, 0, 2)
// (the clamp keeps a NaN, as torch.clamp does). Each element is independent: results do
// not depend on the number of threads.
template <int NB, bool LASSO>
static void sgd_rows(const float* __restrict__ g, float* __restrict__ pos,
                     float* __restrict__ neg, const float* __restrict__ place,
                     const float* __restrict__ lasso, float* __restrict__ mp,
                     float* __restrict__ mn, int64_t n, float s, float lr, float momentum,
                     float wd, bool first, int64_t begin, int64_t end) {
  const int64_t nb = NB > 0 ? NB : n;
  for (int64_t i = begin; i < end; ++i) {
    const float gs = g[i] * s;
    float* p = pos + i * nb;
    float* q = neg + i * nb;
    float* a = mp + i * nb;
    float* c = mn + i * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const float t = gs * place[b];
      const float dp = (LASSO ? t + p[b] * lasso[b] : t) + wd * p[b];
      const float dn = (LASSO ? -t + q[b] * lasso[b] : -t) + wd * q[b];
      const float ma = first ? dp : a[b] * momentum + dp;
      const float mc = first ? dn : c[b] * momentum + dn;
      a[b] = ma;
      c[b] = mc;
      const float np = p[b] - lr * ma, nq = q[b] - lr * mc;
      p[b] = np < 0.f ? 0.f : (np > 2.f ? 2.f : np);
      q[b] = nq < 0.f ? 0.f : (nq > 2.f ? 2.f : nq);
    }
  }
}

// Returns the scale gradient (or an undefined tensor); the planes get no gradient tensor.
torch::Tensor planes_backward_sgd(torch::Tensor grad_w, torch::Tensor pos, torch::Tensor neg,
                                  torch::Tensor place, torch::Tensor scale, torch::Tensor unit,
                                  torch::Tensor lasso, bool need_scale, torch::Tensor mom_pos,
                                  torch::Tensor mom_neg, double lr, double momentum,
                                  double weight_decay, bool first) {
  const int64_t N = pos.size(0), n = pos.size(1);
  TORCH_CHECK(pos.is_contiguous() && neg.is_contiguous() && mom_pos.is_contiguous() &&
                  mom_neg.is_contiguous(), "planes and momentum buffers must be dense");
  TORCH_CHECK(mom_pos.numel() == pos.numel() && mom_neg.numel() == neg.numel(),
              "momentum buffers must match the planes");
  auto g = grad_w.contiguous().view({N});
  const bool with_lasso = lasso.numel() > 0;
  auto la = with_lasso ? lasso.contiguous() : lasso;
  const float s = scale.item<float>();
  const float* G = g.data_ptr<float>();
  float* P = pos.data_ptr<float>();
  float* Q = neg.data_ptr<float>();
  float* MP = mom_pos.data_ptr<float>();
  float* MN = mom_neg.data_ptr<float>();
  const float* pl = place.data_ptr<float>();
  const float* LA = with_lasso ? la.data_ptr<float>() : nullptr;
  const float fl = static_cast<float>(lr), fm = static_cast<float>(momentum);
  const float fw = static_cast<float>(weight_decay);
  // the scale gradient reads the unit weight, not the planes: order does not matter
  torch::Tensor gscale;
  if (need_scale)
    gscale = torch::full({}, blocked_dot(unit.data_ptr<float>(), G, N), scale.options());
  for_rows(N, n, with_lasso, [&](auto nb, auto la, int64_t s0, int64_t e0) {
    sgd_rows<decltype(nb)::value, decltype(la)::value>(G, P, Q, pl, LA, MP, MN, n, s, fl, fm,
                                                        fw, first, s0, e0);
  });
  return gscale;
}
"""

_FUNCTIONS = ["planes_forward", "planes_backward", "planes_backward_sgd"]
_LOCK = threading.Lock()
_STATE: dict = {"tried": False, "module": None, "why": "not built yet (built on first use)"}


def native_wanted() -> bool:
    """False when the user turned the kernels off with ``BSQ_NATIVE=0``."""
    return os.environ.get("BSQ_NATIVE", "1").strip() != "0"


def status() -> str:
    """One line: whether the kernels are in use, and if not, why."""
    return _STATE["why"]


def _flags() -> list[str]:
    # AVX2 + FMA only where torch itself dispatches to them: the build is cached per machine
    # user, and a binary with instructions the CPU lacks would kill the process
    flags = ["-O3", "-fopenmp"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _build():
    # importing cpp_extension on a machine without CUDA logs a warning about CUDA_HOME that
    # does not concern a CPU-only build: keep it out of the run's log
    ext_log = logging.getLogger("torch.utils.cpp_extension")
    level = ext_log.level
    ext_log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load_inline  # slow import: only when building
    finally:
        ext_log.setLevel(level)
    log.info("loading the native plane kernels (a first build on this machine: about 30 s)")
    flags = _flags()
    name = "bsq_planes_" + ("avx2" if "-mavx2" in flags else "base")
    # torch serializes builders with an OS-level lock (its ``lock`` file stays; the kernel
    # drops the lock if a builder dies), so a build killed halfway blocks nothing
    return load_inline(
        name, cpp_sources=[_SOURCE], functions=_FUNCTIONS,
        extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False,
    )  # fmt: skip


def kernels():
    """The compiled kernels, or ``None`` (then use the eager path). Built once per process
    on first call; a failure is logged once and never retried."""
    if _STATE["tried"]:
        return _STATE["module"]
    with _LOCK:
        if _STATE["tried"]:
            return _STATE["module"]
        if not native_wanted():
            _STATE["why"] = "native plane kernels off (BSQ_NATIVE=0): eager kernels in use"
        else:
            try:
                _STATE["module"] = _build()
                _STATE["why"] = "native plane kernels in use (CPU)"
            except Exception as exc:  # no compiler, no ninja, a failed build: eager path
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                _STATE["why"] = (
                    f"native plane kernels unavailable ({type(exc).__name__}: {first}); "
                    "eager kernels in use. Install g++ and ninja to build them, or set "
                    "BSQ_NATIVE=0 to silence this"
                )
        if _STATE["module"] is None:  # one line per process, never an error
            (log.info if not native_wanted() else log.warning)(_STATE["why"])
        _STATE["tried"] = True
    return _STATE["module"]


def kernels_for(pos: torch.Tensor, neg: torch.Tensor):
    """The kernels when they apply to these planes (float32, dense, on the CPU, not under
    ``torch.compile``) and build; else ``None`` (the eager kernels)."""
    if pos.device.type != "cpu" or pos.dtype != torch.float32 or neg.dtype != torch.float32:
        return None
    if not (pos.is_contiguous() and neg.is_contiguous()) or torch.compiler.is_compiling():
        return None
    return kernels()  # built lazily on the first call, never at import

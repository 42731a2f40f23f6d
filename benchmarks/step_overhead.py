"""Overhead of one BSQ training step over the float step: ResNet-20, batch 128, CPU.

    python benchmarks/step_overhead.py                 # 15 interleaved rounds, 4-bit acts
    python benchmarks/step_overhead.py --json          # last line: one JSON object
    python benchmarks/step_overhead.py --profile       # where the BSQ step's extra time goes
    python benchmarks/step_overhead.py --prototype     # also time a faster BSQ step sketch

Time: both steps run in ONE process, interleaved after a warm-up (the order rotates each
round), so machine load hits both alike; medians are reported. BSQ step = forward,
cross-entropy + alpha * bit_group_lasso, backward, SGD (momentum 0.9, weight decay 1e-4),
clip_planes_, on the model prepared at 8 bits with float shortcuts (the CIFAR preset). The
float step is the same model unprepared, with the same activation quantizers.

Memory: each variant runs a few steps in a fresh child process that reports its own peak
RSS (``VmHWM``); a baseline child only imports, builds the float model and the batch. Peak
memory of a variant = its peak minus the baseline's: what the variant adds (bit planes,
gradients, optimizer state, activations). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsq_engine.core.layers import BitLayer
from bsq_engine.core.quantize import BSQConfig, _swap_activations_, prepare_bsq
from bsq_engine.core.regularizer import EPS, bit_group_lasso, clip_planes_
from bsq_engine.models import create_model

RATIO_TARGET = 1.10  # BSQ step time / float step time
MEMORY_TARGET = 1.5  # BSQ peak memory / float peak memory
ALPHA = 5e-3  # the paper's headline ResNet-20 alpha
MEMORY_STEPS = 3  # steps per memory child: the first allocates the optimizer state
# A fixed mmap threshold makes glibc map and unmap every large tensor, so peak RSS follows
# the live tensors. With its default dynamic threshold freed blocks stay cached on the heap
# and identical runs differed by +-100 MB (measured); with it, by < 1 MB.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
_BSQ = BSQConfig(n_bits=8, float_shortcuts=True)

# ------------------------------------------------------------------ set-up


def _batch(args) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen)  # (B, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,), generator=gen)  # (B,)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _float_model(args) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    _swap_activations_(model, args.act_bits)  # the same ActQuant swap prepare_bsq does
    return model


def _ready(model: nn.Module, args, fused: bool = False):
    """Train mode, memory format, and the trainer's optimizer (paper settings)."""
    if args.channels_last:  # leaf by leaf: model.to() refuses the 5-D plane tensors
        for module in model.modules():
            if not isinstance(module, BitLayer) and not list(module.children()):
                module.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=fused or None
    )
    return model.train(), opt


def make_step(variant: str, args, base: nn.Module | None = None):
    """A closure running one training step of ``variant`` on a fixed random batch."""
    x, y = _batch(args)
    model = copy.deepcopy(base) if base is not None else _float_model(args)
    bsq = variant != "float"
    if bsq:
        model = prepare_bsq(model, _BSQ)
    if variant == "bsq-fast":
        return _FastBSQ(model, x, y, args)
    model, opt = _ready(model, args)

    def step():
        loss = F.cross_entropy(model(x), y)
        if bsq:
            loss = loss + ALPHA * bit_group_lasso(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bsq:
            clip_planes_(model)

    return step


# ------------------------------------------------------------------ prototype


class _PlanesToWeight(torch.autograd.Function):
    """One layer's weight AND regularizer term from its planes, with a hand-written backward.

    Forward: ``v = pos @ place - neg @ place`` (no (N, n) temporary), ``W = s * Q_n(v)``,
    per-plane norms by ``vector_norm`` (no squared copy). Backward writes each plane
    gradient once: ``outer(s * dW, place) +- alpha * c * planes / norm`` (addcmul), the
    straight-through rule and the group-Lasso gradient fused.
    """

    @staticmethod
    def forward(ctx, pos, neg, scale, place, coef):
        n_bits = pos.shape[-1]
        pos2, neg2 = pos.reshape(-1, n_bits), neg.reshape(-1, n_bits)  # (N, n)
        v = torch.mv(pos2, place) - torch.mv(neg2, place)  # (N,)
        levels = float(2**n_bits - 1)
        unit = v.clamp(-1.0, 1.0)
        q = torch.sign(unit) * torch.round(unit.abs() * levels) / levels  # (N,)
        sq = torch.linalg.vector_norm(pos2, dim=0) ** 2 + torch.linalg.vector_norm(neg2, dim=0) ** 2
        norms = torch.sqrt(EPS + sq)  # (n,)
        ctx.save_for_backward(pos2, neg2, scale, place, q, norms)
        ctx.coef, ctx.shape = coef, pos.shape
        return scale * q.reshape(pos.shape[:-1]), coef * norms.sum()

    @staticmethod
    def backward(ctx, grad_w, grad_reg):
        pos2, neg2, scale, place, q, norms = ctx.saved_tensors
        grad_w = grad_w.reshape(-1)  # (N,)
        through = torch.outer(grad_w * scale, place)  # (N, n): straight-through
        lasso = (grad_reg * ctx.coef) / norms  # (n,)
        grad_pos = torch.addcmul(through, pos2, lasso)
        grad_neg = torch.addcmul(through.neg_(), neg2, lasso)
        grad_scale = torch.dot(q, grad_w)
        return grad_pos.view(ctx.shape), grad_neg.view(ctx.shape), grad_scale, None, None


class _FastBSQ:
    """The BSQ step with the prototype, fused SGD and one foreach clamp for all planes."""

    def __init__(self, model: nn.Module, x, y, args):
        self.layers = [m for m in model.modules() if isinstance(m, BitLayer)]
        total = sum(m.n_weights for m in self.layers)
        self.coefs = [m.n_weights * m.reported_bits / total for m in self.layers]
        self.places = [
            2.0 ** torch.arange(m.n_bits - 1, -1, -1.0) / (2**m.n_bits - 1) for m in self.layers
        ]
        self.cache: dict[int, torch.Tensor] = {}
        for layer in self.layers:  # the forward reads the weight computed with the regularizer
            layer.effective_weight = lambda layer=layer: self.cache[id(layer)]
        self.model, self.opt = _ready(model, args, fused=True)
        self.planes = [p for m in self.layers for p in (m.pos_planes, m.neg_planes)]
        self.x, self.y = x, y

    def terms(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            _PlanesToWeight.apply(m.pos_planes, m.neg_planes, m.scale, place, coef)
            for m, place, coef in zip(self.layers, self.places, self.coefs)
        ]

    def loss(self) -> torch.Tensor:
        terms = self.terms()
        self.cache.update((id(m), w) for m, (w, _) in zip(self.layers, terms))
        reg = torch.stack([r for _, r in terms]).sum()
        return F.cross_entropy(self.model(self.x), self.y) + ALPHA * reg

    def __call__(self) -> None:
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_clamp_min_(self.planes, 0.0)
            torch._foreach_clamp_max_(self.planes, 2.0)
            for layer in self.layers:
                layer.scale.clamp_(min=1e-12)


def check_equivalence(args) -> float:
    """Largest gradient difference, prototype vs engine (one backward), relative to the
    largest gradient. (Per tensor it would mislead for the scales: behind BatchNorm their
    gradient is ~0 by scale invariance, so what is left is rounding noise.)"""
    base, (x, y) = _float_model(args), _batch(args)
    engine = prepare_bsq(copy.deepcopy(base), _BSQ).train()
    (F.cross_entropy(engine(x), y) + ALPHA * bit_group_lasso(engine)).backward()
    prototype = _FastBSQ(prepare_bsq(copy.deepcopy(base), _BSQ), x, y, args)
    prototype.loss().backward()
    pairs = list(zip(engine.parameters(), prototype.model.parameters()))
    largest = max(float(a.grad.abs().max()) for a, _ in pairs)
    return max(float((a.grad - b.grad).abs().max()) for a, b in pairs) / largest


# ------------------------------------------------------------------ timing


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def time_interleaved(fns: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """ms of each callable per round; the order rotates so none always runs first."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_timed(fns[name]))
    return times


# ------------------------------------------------------------------ memory


def _peak_rss_kb() -> int:
    """Peak RSS of this process's own address space (``VmHWM``), in kB.

    Not ``ru_maxrss``: Linux keeps it across ``execve`` and Python starts children with
    ``vfork``, so a child reports the (larger) peak of the parent that started it.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # other OSes: best effort


def _child(variant: str, args) -> None:
    """Entry point of a memory child: build, run a few steps, print own peak RSS."""
    if variant == "baseline":
        _float_model(args), _batch(args)
    else:
        step = make_step(variant, args)
        for _ in range(MEMORY_STEPS):
            step()
    print(json.dumps({"peak_rss_kb": _peak_rss_kb()}))


def peak_memory_mb(variants: list[str], args) -> dict[str, float]:
    """Peak RSS (MB) of each variant's child above the baseline child's."""
    flags = [f"--batch={args.batch}", f"--act-bits={args.act_bits or 'float'}"]
    flags += [f"--threads={args.threads}"] if args.threads else []
    flags += ["--channels-last"] if args.channels_last else []
    rss = {}
    for variant in ["baseline", *variants]:
        out = subprocess.run(
            [sys.executable, __file__, f"--_child={variant}", *flags],
            capture_output=True, text=True, check=True, env=os.environ | _MALLOC_ENV,
        )  # fmt: skip
        rss[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_kb"] / 1024
    return {v: rss[v] - rss["baseline"] for v in variants}


# ------------------------------------------------------------------ profile


_PHASES = ("forward", "planes -> weights", "regularizer", "backward", "optimizer", "clip")


def _profiled_step(variant: str, args):
    """A step of ``variant`` with each phase in a ``record_function`` range."""
    from torch.profiler import record_function

    def ranged(phase, fn, *a):
        with record_function(f"{variant}/{phase}"):
            return fn(*a)

    model, bsq = _float_model(args), variant != "float"
    if bsq:
        model = prepare_bsq(model, _BSQ)
        for m in model.modules():
            if isinstance(m, BitLayer):  # nested inside "forward"
                m.effective_weight = lambda f=m.effective_weight: ranged("planes -> weights", f)
    model, opt = _ready(model, args)
    x, y = _batch(args)

    def step():
        loss = ranged("forward", lambda: F.cross_entropy(model(x), y))
        if bsq:
            loss = loss + ALPHA * ranged("regularizer", bit_group_lasso, model)
        opt.zero_grad(set_to_none=True)
        ranged("backward", loss.backward)
        ranged("optimizer", opt.step)
        if bsq:
            ranged("clip", clip_planes_, model)

    return step


def isolated_costs(args, rounds: int = 9) -> dict[str, float]:
    """Median ms of each piece of BSQ-only work alone (forward + backward where it has one),
    engine vs prototype, interleaved."""
    model = prepare_bsq(_float_model(args), _BSQ)
    layers = [m for m in model.modules() if isinstance(m, BitLayer)]
    upstream = [torch.randn(m.weight_shape) for m in layers]  # a dL/dW for each layer
    fast = _FastBSQ(prepare_bsq(_float_model(args), _BSQ), *_batch(args), args)
    float_model = _float_model(args)

    def backward(net, outputs, grads):
        net.zero_grad(set_to_none=True)
        torch.autograd.backward(outputs, grads)

    alpha = torch.tensor(ALPHA)
    fns = {
        "planes -> weights (engine)": lambda: backward(
            model, [m.effective_weight() for m in layers], upstream
        ),
        "regularizer (engine)": lambda: backward(model, [bit_group_lasso(model)], [alpha]),
        "both, fused (prototype)": lambda: backward(
            fast.model,
            [t for pair in fast.terms() for t in pair],
            [g for u in upstream for g in (u, alpha)],
        ),
        "clip_planes_ (engine)": lambda: clip_planes_(model),
    }
    stepped = prepare_bsq(_float_model(args), _BSQ)  # its gradients are never cleared
    for p in (*stepped.parameters(), *float_model.parameters()):
        p.grad = torch.randn_like(p)
    for label, net, fused in (("float", float_model, 0), ("bsq", stepped, 0), ("bsq", stepped, 1)):
        _, opt = _ready(net, args, fused=bool(fused))
        fns[f"SGD step, {label} params{' (fused)' if fused else ''}"] = opt.step
    times = time_interleaved(fns, rounds, warmup=1)
    return {name: statistics.median(t) for name, t in times.items()}


def profile_bsq(args, steps: int = 3) -> str:
    """Per-phase ms/step of float vs BSQ (torch.profiler ranges, steps interleaved), the
    BSQ-only work timed alone, and the top operators. The backward of the reconstruction
    and of the regularizer run inside "backward"; the isolated table splits them out."""
    from torch.profiler import ProfilerActivity, profile

    fns = {v: _profiled_step(v, args) for v in ("float", "bsq")}
    time_interleaved(fns, rounds=0, warmup=max(args.warmup, 1))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_interleaved(fns, rounds=steps, warmup=0)
    totals = {e.key: e.cpu_time_total / 1000 / steps for e in prof.key_averages()}
    lines = [f"{'phase (ms/step)':<34}{'float':>9}{'bsq':>9}{'extra':>9}"]
    for phase in _PHASES:
        f, b = totals.get(f"float/{phase}", 0.0), totals.get(f"bsq/{phase}", 0.0)
        lines.append(f"{phase:<34}{f:>9.1f}{b:>9.1f}{b - f:>+9.1f}")
    lines += ["", f"{'BSQ-only work, alone (ms)':<34}{'median':>9}"]
    lines += [f"{k:<34}{v:>9.1f}" for k, v in isolated_costs(args).items()]
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    return "\n".join([*lines, "", "Both steps, top operators by self time:", table])


# ------------------------------------------------------------------ main


def _act_bits(text: str) -> int | None:
    return None if text.lower() in ("float", "none") else int(text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=15, help="timed rounds (default 15)")
    add("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    add("--batch", type=int, default=128)
    add("--channels-last", action="store_true", help="NHWC inputs and model")
    add("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    add("--act-bits", type=_act_bits, default=4, help="activation bits or 'float' (default 4)")
    add("--json", action="store_true", help="print one JSON object as the last line")
    add("--no-memory", action="store_true", help="skip the memory children")
    add("--profile", action="store_true", help="where the BSQ step's extra time goes")
    add("--prototype", action="store_true", help="also time the bsq-fast sketch")
    add("--_child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        _child(args._child, args)
        return {}
    variants = ["bsq", "float"] + (["bsq-fast"] if args.prototype else [])
    load_before = _load()
    memory = {} if args.no_memory else peak_memory_mb(variants, args)  # before: small parent
    base = _float_model(args)
    steps = {v: make_step(v, args, base) for v in variants}
    times = time_interleaved(steps, args.rounds, args.warmup)
    ms = {v: statistics.median(t) for v, t in times.items()}
    result = {
        "bsq_ms": ms["bsq"], "float_ms": ms["float"], "ratio": ms["bsq"] / ms["float"],
        # robust to bursts of load from other processes: best-of-N, and same-round pairs
        "ratio_min": min(times["bsq"]) / min(times["float"]),
        "ratio_paired": statistics.median(b / f for b, f in zip(times["bsq"], times["float"])),
        "float_spread": max(times["float"]) / min(times["float"]),
        "bsq_peak_mb": memory.get("bsq"), "float_peak_mb": memory.get("float"),
        "memory_ratio": memory["bsq"] / memory["float"] if memory else None,
        "rounds": args.rounds, "batch": args.batch, "threads": torch.get_num_threads(),
        "channels_last": args.channels_last, "act_bits": args.act_bits,
        "load_avg": f"{load_before} -> {_load()}", "torch": torch.__version__,
    }  # fmt: skip
    result["targets_met"] = result["ratio"] <= RATIO_TARGET and (
        result["memory_ratio"] is None or result["memory_ratio"] <= MEMORY_TARGET
    )
    if args.prototype:
        result["bsq_fast_ms"] = ms["bsq-fast"]
        result["bsq_fast_ratio"] = ms["bsq-fast"] / ms["float"]
        result["bsq_fast_peak_mb"] = memory.get("bsq-fast")
        result["prototype_max_grad_diff"] = check_equivalence(args)
    _report(result, times, args)
    if args.profile:
        print(profile_bsq(args))
    if args.json:
        print(json.dumps(result))
    return result


def _report(result: dict, times: dict, args) -> None:
    print(f"ResNet-20, batch {args.batch}, {result['threads']} threads, act_bits "
          f"{args.act_bits or 'float'}, channels_last={args.channels_last}, "
          f"{args.rounds} rounds, load {result['load_avg']}")  # fmt: skip
    for name, values in times.items():
        spread = f"min {min(values):.1f} / max {max(values):.1f}"
        print(f"  {name:<9} median {statistics.median(values):8.1f} ms  ({spread})")
    print(f"  ratio bsq/float {result['ratio']:.3f} (medians; target <= {RATIO_TARGET}), "
          f"{result['ratio_min']:.3f} (minima), {result['ratio_paired']:.3f} (same-round "
          "pairs)")  # fmt: skip
    if result["float_spread"] > 1.5:
        print(f"  WARNING: float steps vary {result['float_spread']:.1f}x: the machine is busy "
              "and medians are unreliable; rerun when idle, or with --threads 1")  # fmt: skip
    if result["memory_ratio"] is not None:
        print(f"  peak memory: bsq {result['bsq_peak_mb']:.1f} MB, float "
              f"{result['float_peak_mb']:.1f} MB, ratio {result['memory_ratio']:.2f} "
              f"(target <= {MEMORY_TARGET})")  # fmt: skip
    if "prototype_max_grad_diff" in result:
        print(f"  bsq-fast gradients match the engine's to {result['prototype_max_grad_diff']:.1e}")
    print(f"  targets met: {result['targets_met']}")


if __name__ == "__main__":
    main()

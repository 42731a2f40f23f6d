"""A BSQ training step against the fastest float step: ResNet-20, batch 128, CPU.

    python benchmarks/step_overhead.py                 # 30 interleaved rounds, 4-bit acts
    python benchmarks/step_overhead.py --json          # last line: one JSON object
    python benchmarks/step_overhead.py --profile       # top operators of the fast steps
    python benchmarks/step_overhead.py --ablate        # what each part of bsq-fast costs
    python benchmarks/step_overhead.py --planes        # the planes' own work, alone
    python benchmarks/step_overhead.py --only float,float-cl,bsq-fast --rounds 150
                                                       # the headline ratio, more rounds

Five steps are built in ONE process and run interleaved after a warm-up (the order rotates
each round), so load from other processes hits them alike:

- ``float``: the float model (same activation quantizers), NCHW, the trainer's SGD;
- ``float-cl``: the same in ``channels_last``;
- ``bsq-today``: the BSQ step as the engine ran it before the fast path: NCHW, weight and
  regularizer as separate graphs (``layer.fused = False``), foreach SGD, each layer's
  ``clip_()`` (the structure of then; the shared kernels, e.g. the sign-magnitude
  rounding, are today's);
- ``bsq-eager``: ``bsq-optim`` with the fused node's eager kernels (``layer.native = False``:
  what runs where the C++ kernels cannot be built, and what ran before them);
- ``bsq-optim``: ``channels_last``, the fused planes -> weight + group norms node with its
  C++ kernels on the CPU (``core.native``; eager when they cannot be built: the report says
  which), fused SGD (``make_sgd``) over every parameter, ``clip_planes_``: the fast path
  before the planes' update moved into the backward pass;
- ``bsq-fast``: the engine's step now: ``bsq-optim`` whose fused node's backward applies SGD
  and the clip to the planes in its one pass over them
  (``fast_path.planes_sgd_in_backward``); the optimizer updates the other parameters.

Each BSQ step = forward, cross-entropy + alpha * bit_group_lasso, backward, SGD (momentum
0.9, weight decay 1e-4), clipping, on the model prepared at 8 bits with float shortcuts (the
CIFAR preset). Ratios are medians of same-round pairs; ``ratio_vs_fastest_float`` divides
``bsq-fast`` by whichever float step has the smaller median, round by round, and comes with
a bootstrap 95% interval of that median (``ratio_ci95``) and the ratios' quartiles
(``ratio_iqr``): ``targets_met`` judges the median, ``targets_met_robustly`` the interval's
upper end.

``--ablate`` times two more steps in the same rounds, each ``bsq-fast`` without one of its
parts: ``bsq-no-reg`` (alpha 0: no group norms, no Lasso gradient), ``bsq-no-plane-sgd``
(the planes get gradients, written as tensors, but no update, nor clipping); a part's cost is
``bsq-fast`` minus that step, per round, in points of the fastest float step (median and
bootstrap 95% interval). Removal measures what the profiler cannot: a pass over the planes
also slows the float operators around it (the caches it evicts).

The timed steps run inside ``training.allocator.keep_freed_memory``, as the trainer's do
(``--allocator default``: glibc's own policy); the report gives each step's minor page
faults per step. ``benchmarks/allocator.py`` measures what the policy changes.

Memory: each variant runs a few steps in a fresh child process that reports its own peak
RSS (``VmHWM``) minus a baseline child's (imports, float model, batch). See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsq_engine.core import native
from bsq_engine.core.functional import weight_and_group_norms
from bsq_engine.core.layers import BitLayer, QuantLayer
from bsq_engine.core.quantize import BSQConfig, _swap_activations_, prepare_bsq
from bsq_engine.core.regularizer import bit_group_lasso, clip_planes_
from bsq_engine.models import create_model
from bsq_engine.training.allocator import keep_freed_memory
from bsq_engine.training.fast_path import make_sgd, planes_sgd_in_backward

RATIO_TARGET = 1.05  # BSQ fast step / fastest float step (paired median)
MEMORY_TARGET = 1.3  # BSQ fast peak memory / that float step's peak memory
ALPHA = 5e-3  # the paper's headline ResNet-20 alpha
MEMORY_STEPS = 3  # steps per memory child: the first allocates the optimizer state
VARIANTS = ("float", "float-cl", "bsq-today", "bsq-eager", "bsq-optim", "bsq-fast")
# --ablate: bsq-fast without one part each (see the module docstring)
ABLATIONS = {"bsq-no-reg": "regularizer", "bsq-no-plane-sgd": "SGD on the planes + clipping"}
# A fixed mmap threshold makes glibc map and unmap every large tensor, so peak RSS follows
# the live tensors (with the default dynamic threshold identical runs differed by +-100 MB).
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
_BSQ = BSQConfig(n_bits=8, float_shortcuts=True)
_SGD = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)

# ------------------------------------------------------------------ the four steps


def _batch(args, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen)  # (B, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,), generator=gen)  # (B,)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _float_model(args) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    _swap_activations_(model, args.act_bits)  # the same ActQuant swap prepare_bsq does
    return model


def _clip_per_layer_(model: nn.Module) -> None:
    """``clip_planes_`` as it was: each layer's ``clip_()``."""
    for module in model.modules():
        if isinstance(module, BitLayer | QuantLayer):
            module.clip_()


def make_step(variant: str, args, base: nn.Module | None = None):
    """A closure running one training step of ``variant`` on a fixed random batch."""
    model = copy.deepcopy(base) if base is not None else _float_model(args)
    bsq, today = variant.startswith("bsq"), variant == "bsq-today"
    channels_last = variant not in ("float", "bsq-today")
    reg = bsq and variant != "bsq-no-reg"
    if bsq:
        model = prepare_bsq(model, _BSQ)
        for layer in model.modules():
            if isinstance(layer, BitLayer):
                layer.fused = not today
                layer.native = variant != "bsq-eager"  # the layers' default: True
                layer.fused_norms = reg  # as the trainer's step_forward sets it
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    params, frozen = list(model.parameters()), []
    if variant == "bsq-no-plane-sgd":  # the planes still get their gradients
        layers = [m for m in model.modules() if isinstance(m, BitLayer)]
        frozen = [p for m in layers for p in (m.pos_planes, m.neg_planes)]
        frozen_ids = {id(p) for p in frozen}
        params = [p for p in params if id(p) not in frozen_ids]
    opt = torch.optim.SGD(params, **_SGD) if today else make_sgd(params, **_SGD)
    x, y = _batch(args, channels_last)
    clip = _clip_per_layer_ if today else clip_planes_
    clipped = bsq and variant != "bsq-no-plane-sgd"
    in_backward = variant in ("bsq-fast", "bsq-no-reg")
    attachment, updaters = None, []
    if in_backward:  # attached while the step lives (the trainer: for an epoch)
        attachment = planes_sgd_in_backward(model, opt)
        updaters = attachment.__enter__()

    def step():
        for updater in updaters:  # as fast_path.step_forward arms them
            updater.arm()
        loss = F.cross_entropy(model(x), y)
        if reg:
            loss = loss + ALPHA * bit_group_lasso(model)
        opt.zero_grad(set_to_none=True)
        for p in frozen:  # as zero_grad does for the optimizer's parameters
            p.grad = None
        loss.backward()
        opt.step()
        if clipped:
            clip(model)

    step.model = model  # for tests
    step.attachment = attachment  # kept: once collected, its exit detaches the updaters
    return step


# ------------------------------------------------------------------ timing and memory


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(
    fns: dict, rounds: int, warmup: int, clock: str = "cpu", faults: dict | None = None
) -> dict:
    """ms of each callable per round; the order rotates so none always runs first.
    ``faults``, when given, receives each callable's minor page faults per round.

    ``cpu``: CPU seconds of this process (all its threads). On a shared machine a step
    that waits for a core costs wall time but no CPU time, so CPU time compares steps
    even under load (measured: wall-clock steps of one variant varied up to 7x on the
    2-core machine with 7 users). ``wall``: elapsed time, for an idle machine."""
    names, now = list(fns), CLOCKS[clock]
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    faulted: dict[str, list[int]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            first_fault, started = _minor_faults(), now()
            fns[name]()
            times[name].append((now() - started) * 1000)
            faulted[name].append(_minor_faults() - first_fault)
    if faults is not None:
        faults.update(faulted)
    return times


def _peak_rss_kb() -> int:
    """Own peak RSS (``VmHWM``), kB. Not ``ru_maxrss``: Linux keeps it across ``execve``,
    so a child started by ``vfork`` would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux; use --no-memory")


def _child(variant: str, args) -> None:
    if variant == "baseline":
        _float_model(args), _batch(args, False)
    else:
        step = make_step(variant, args)
        for _ in range(MEMORY_STEPS):
            step()
    print(json.dumps({"peak_rss_kb": _peak_rss_kb()}))


def peak_memory_mb(args) -> dict[str, float]:
    """Peak RSS (MB) of each variant's child above the baseline child's."""
    flags = [f"--batch={args.batch}", f"--act-bits={args.act_bits or 'float'}"]
    flags += [f"--threads={args.threads}"] if args.threads else []
    rss = {}
    for variant in ("baseline", *args.only):
        out = subprocess.run(
            [sys.executable, __file__, f"--_child={variant}", *flags],
            capture_output=True, text=True, check=True, env=os.environ | _MALLOC_ENV,
        )  # fmt: skip
        rss[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_kb"] / 1024
    return {v: rss[v] - rss["baseline"] for v in args.only}


def _ratios(times: dict, a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(times[a], times[b])]


def _paired(times: dict, a: str, b: str) -> float:
    return statistics.median(_ratios(times, a, b))


def median_interval(values: list[float], level: float = 0.95, resamples: int = 4000):
    """Percentile-bootstrap interval of the median of ``values`` (seeded: reproducible).

    The rounds' paired ratios are the sample; resampling them says how far the median could
    move with another set of rounds on the same machine. With few rounds the interval is
    coarse (the median can only take sample values), hence 30 rounds by default."""
    rng = random.Random(0)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1 - tail) * resamples))]


def summarize(times: dict, memory: dict, args) -> dict:
    ms = {v: statistics.median(t) for v, t in times.items()}
    fastest = min((v for v in ("float", "float-cl") if v in ms), key=ms.get)

    def paired(a: str, b: str) -> float | None:  # None where --only left a step out
        return _paired(times, a, b) if a in times and b in times else None

    def interval(a: str, b: str) -> list[float] | None:
        return list(median_interval(_ratios(times, a, b))) if a in times and b in times else None

    ratios = [x / y for x, y in zip(times["bsq-fast"], times[fastest])]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    result = {
        "ms": ms, "fastest_float": fastest,
        "ratio_vs_fastest_float": statistics.median(ratios),
        "ratio_ci95": list(median_interval(ratios)),
        "ratio_iqr": [quartiles[0], quartiles[2]],
        "ratios_paired": {v: _paired(times, v, fastest) for v in times},
        "speedup_fast_vs_today": paired("bsq-today", "bsq-fast"),
        "speedup_in_backward": paired("bsq-optim", "bsq-fast"),
        "in_backward_ci95": interval("bsq-optim", "bsq-fast"),
        "speedup_native": paired("bsq-eager", "bsq-optim"),
        "native_ci95": interval("bsq-optim", "bsq-eager"),
        "native": native.status(),
        "float_spread": max(times[fastest]) / min(times[fastest]),
        "peak_mb": memory or None,
        "memory_ratio": memory["bsq-fast"] / memory[fastest] if memory else None,
        "clock": args.clock, "rounds": args.rounds, "batch": args.batch,
        "threads": torch.get_num_threads(),
        "act_bits": args.act_bits, "torch": torch.__version__,
    }  # fmt: skip
    if any(v in times for v in ABLATIONS):  # a part's cost in points of the float step
        result["ablation"] = {}
        for variant, part in ABLATIONS.items():
            points = [
                100 * (a - b) / f
                for a, b, f in zip(times["bsq-fast"], times[variant], times[fastest])
            ]
            result["ablation"][part] = {
                "points": statistics.median(points), "ci95": list(median_interval(points)),
            }  # fmt: skip
    memory_ok = result["memory_ratio"] is None or result["memory_ratio"] <= MEMORY_TARGET
    result["targets_met"] = result["ratio_vs_fastest_float"] <= RATIO_TARGET and memory_ok
    # robust: even the interval's upper end is within the target
    result["targets_met_robustly"] = result["ratio_ci95"][1] <= RATIO_TARGET and memory_ok
    return result


def _report(result: dict, times: dict, load: str) -> None:
    print(f"ResNet-20, batch {result['batch']}, {result['threads']} threads, act_bits "
          f"{result['act_bits'] or 'float'}, {result['rounds']} rounds, {result['clock']} "
          f"time, load {load}")  # fmt: skip
    fastest = result["fastest_float"]
    print(f"  {'step':<18}{'median ms':>10}{'min':>8}{'max':>8}{'/ ' + fastest:>14}{'peak MB':>9}")
    for name, values in times.items():
        peak = (result["peak_mb"] or {}).get(name)
        print(f"  {name:<18}{statistics.median(values):>10.1f}{min(values):>8.1f}"
              f"{max(values):>8.1f}{result['ratios_paired'][name]:>14.3f}"
              f"{'' if peak is None else f'{peak:9.1f}'}")  # fmt: skip
    low, high = result["ratio_ci95"]
    print(f"  bsq-fast / fastest float ({fastest}): {result['ratio_vs_fastest_float']:.3f} "
          f"(paired median, 95% CI {low:.3f}-{high:.3f}, IQR "
          f"{result['ratio_iqr'][0]:.3f}-{result['ratio_iqr'][1]:.3f}; target <= "
          f"{RATIO_TARGET})")  # fmt: skip
    if result["speedup_fast_vs_today"] is not None:
        print(f"  bsq-today / bsq-fast: {result['speedup_fast_vs_today']:.3f}")
    if result["in_backward_ci95"] is not None:
        low, high = result["in_backward_ci95"]
        print(f"  bsq-optim / bsq-fast: {result['speedup_in_backward']:.3f} (95% CI {low:.3f}-"
              f"{high:.3f}): the planes' update in the backward pass")  # fmt: skip
    if result["native_ci95"] is not None:
        low, high = result["native_ci95"]
        print(f"  bsq-eager / bsq-optim: {result['speedup_native']:.3f} (bsq-optim / bsq-eager "
              f"95% CI {low:.3f}-{high:.3f}); {result['native']}")  # fmt: skip
    for part, cost in result.get("ablation", {}).items():
        low, high = cost["ci95"]
        print(f"  cost of {part}: {cost['points']:+.1f} points of {fastest} (95% CI "
              f"{low:+.1f} to {high:+.1f})")  # fmt: skip
    if result["memory_ratio"] is not None:
        print(f"  peak memory bsq-fast / {fastest}: {result['memory_ratio']:.2f} "
              f"(target <= {MEMORY_TARGET})")  # fmt: skip
    if result["float_spread"] > 1.5:
        print(f"  WARNING: {fastest} steps vary {result['float_spread']:.1f}x: the machine is "
              "busy; trust the paired ratios over the medians, or rerun")  # fmt: skip
    print(f"  targets met: {result['targets_met']} (median); robustly (CI upper end): "
          f"{result['targets_met_robustly']}")  # fmt: skip
    print(
        f"  allocator: {result['allocator']}; minor page faults per step (median): "
        + ", ".join(f"{v} {n:.0f}" for v, n in result["minor_faults"].items())
    )


def _plane_work_of(variant: str, args, gen: torch.Generator):
    """A closure: the planes' work of one step of ``variant`` (see :func:`plane_work`)."""
    # the same model for both (bsq-optim's step attaches nothing); the update is attached here
    model = make_step("bsq-optim", args, _float_model(args)).model
    layers = [m for m in model.modules() if isinstance(m, BitLayer)]
    grads = [torch.randn(m.weight_shape, generator=gen) * 1e-3 for m in layers]  # fixed dW
    opt = make_sgd([m.pos_planes for m in layers] + [m.neg_planes for m in layers], **_SGD)
    attachment = planes_sgd_in_backward(model, opt, enabled=variant == "bsq-fast")
    updaters = attachment.__enter__()

    def run():
        for updater in updaters:
            updater.arm()
        total = 0.0
        for layer, g in zip(layers, grads):
            weight, norms = weight_and_group_norms(
                layer.pos_planes, layer.neg_planes, layer.scale, native=True,
                memory_format=torch.channels_last if g.dim() == 4 else None, sgd=layer.plane_sgd,
            )  # fmt: skip
            total = total + (weight * g).sum() + ALPHA * norms.sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        clip_planes_(model)

    run.attachment = attachment  # kept: once collected, its exit detaches the updaters
    run.model = model  # for tests
    return run


def plane_work(args, rounds: int = 40) -> dict:
    """The planes' own work per step, alone (no convolution): each BSQ layer's fused node
    forward and backward for a fixed weight gradient, then the planes' update, as
    ``bsq-optim`` does it (gradient tensors, fused SGD, ``clip_planes_``) and as ``bsq-fast``
    does it (update and clip in the backward pass). Interleaved, CPU time: ms medians and
    the paired ratio with its bootstrap 95% interval. The whole step's noise hides a change
    of this size; this isolates it."""
    gen = torch.Generator().manual_seed(0)
    work = {v: _plane_work_of(v, args, gen) for v in ("bsq-optim", "bsq-fast")}
    times = time_interleaved(work, rounds, warmup=3)
    ratios = _ratios(times, "bsq-optim", "bsq-fast")
    return {
        "ms": {v: statistics.median(t) for v, t in times.items()},
        "optim_over_fast": statistics.median(ratios), "ci95": list(median_interval(ratios)),
    }  # fmt: skip


def profile_fast(args, steps: int = 3, rows: int = 18) -> str:
    """Where the BSQ-only milliseconds go: operators by self CPU time per step, ``bsq-fast``
    minus ``float-cl`` (each profiled alone, after a warm-up; the profiler adds overhead
    per operator, so read the differences, not the absolute figures)."""
    from torch.profiler import ProfilerActivity, profile

    per_step = {}
    for variant in ("float-cl", "bsq-fast"):
        step = make_step(variant, args, _float_model(args))
        step()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                step()
        per_step[variant] = {
            e.key: (e.self_cpu_time_total / 1000 / steps, e.count // steps)
            for e in prof.key_averages()
        }
    base, fast = per_step["float-cl"], per_step["bsq-fast"]
    delta = {k: fast.get(k, (0.0, 0))[0] - base.get(k, (0.0, 0))[0] for k in base | fast}
    lines = [f"  {'operator (self CPU ms / step)':<48}{'float-cl':>9}{'bsq-fast':>9}{'extra':>8}"
             f"{'calls':>10}"]  # fmt: skip
    for key in sorted(delta, key=delta.get, reverse=True)[:rows]:
        (a, na), (b, nb) = base.get(key, (0.0, 0)), fast.get(key, (0.0, 0))
        lines.append(f"  {key[:47]:<48}{a:>9.2f}{b:>9.2f}{b - a:>+8.2f}{f'{na}/{nb}':>10}")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def _act_bits(text: str) -> int | None:
    return None if text.lower() in ("float", "none") else int(text)


def _variant_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
        )
    if "bsq-fast" not in names or not {"float", "float-cl"} & set(names):
        raise argparse.ArgumentTypeError("--only needs bsq-fast and float or float-cl")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=30, help="timed rounds (default 30)")
    add("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    add("--batch", type=int, default=128)
    add("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    add("--act-bits", type=_act_bits, default=4, help="activation bits or 'float' (default 4)")
    add("--clock", choices=sorted(CLOCKS), default="cpu", help="cpu (default) or wall time")
    add("--json", action="store_true", help="print one JSON object as the last line")
    add("--no-memory", action="store_true", help="skip the memory children")
    add("--profile", action="store_true", help="top operators of float-cl and bsq-fast")
    add("--ablate", action="store_true", help="also bsq-fast without each of its parts")
    add("--planes", action="store_true", help="the planes' own work alone: bsq-optim vs bsq-fast")
    add("--allocator", choices=("kept", "default"), default="kept",
        help="kept (default): freed memory stays in the process while the steps run, as the "
        "trainer does (training.allocator); default: glibc's own policy")  # fmt: skip
    add("--only", type=_variant_list, default=VARIANTS,
        help="time these steps only, comma-separated (bsq-fast and a float step among them), "
        "e.g. float-cl,bsq-fast: more rounds in the same time for the headline ratio")  # fmt: skip
    add("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1 (got {args.rounds}): medians need a round")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        _child(args._child, args)
        return {}
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    memory = {} if args.no_memory else peak_memory_mb(args)  # first: a small parent
    base = _float_model(args)
    variants = args.only + (tuple(ABLATIONS) if args.ablate else ())
    steps, faults = {v: make_step(v, args, base) for v in variants}, {}
    keep = keep_freed_memory() if args.allocator == "kept" else nullcontext(False)
    with keep as kept:  # for every timing below (its exit would change glibc's policy)
        times = time_interleaved(steps, args.rounds, args.warmup, args.clock, faults)
        result = summarize(times, memory, args)
        result["allocator"] = "kept" if kept else "default"
        result["minor_faults"] = {v: statistics.median(f) for v, f in faults.items()}
        result["load_avg"] = f"{load} -> " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        _report(result, times, result["load_avg"])
        if args.planes:
            planes = result["planes"] = plane_work(args)
            low, high = planes["ci95"]
            print(f"  planes' work alone (node forward + backward + update, ms per step): "
                  f"bsq-optim {planes['ms']['bsq-optim']:.2f}, bsq-fast "
                  f"{planes['ms']['bsq-fast']:.2f}; bsq-optim / bsq-fast "
                  f"{planes['optim_over_fast']:.3f} (95% CI {low:.3f}-{high:.3f})")  # fmt: skip
        if args.profile:
            print(profile_fast(args))
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

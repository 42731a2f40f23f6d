"""BSQ-stage investigations (issue 12): scale traces, and runs with / without a stage option.

    python benchmarks/bsq_stage.py trace --model mlp --dataset digits        # scale per step
    python benchmarks/bsq_stage.py compare --model mlp --dataset digits \\
        --variant base --variant fixed_bn_scales=1 --variant max_msb_drop=2 --alphas 0.2 0.3

``trace`` prints, for each quantized layer, its scale at the start of the BSQ stage, its
largest and last value, and the step where it first exceeded 100x its start (the blow-up of
layers followed by BatchNorm: the loss does not depend on their scale, so nothing holds it).
``compare`` runs one BSQ run per (variant, alpha, seed) and prints accuracy at the end of
the BSQ stage, final accuracy, compression and bits. One torch thread; float models shared
through ``--cache``. Nothing is stored in the run store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from bsq_engine.core.quantize import quantized_layers  # noqa: E402
from bsq_engine.training.callbacks import Callback  # noqa: E402
from bsq_engine.training.presets import make_config  # noqa: E402
from bsq_engine.training.trainer import Trainer  # noqa: E402


class ScaleTrace(Callback):
    """Every BSQ-stage step: each quantized layer's scale (python floats)."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_step_end(self, trainer, step: dict) -> None:
        if step["stage"] == "bsq":
            self.steps.append(
                {n: float(m.scale.detach()) for n, m in quantized_layers(trainer.model)}
            )


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def _variant(text: str) -> tuple[str, dict]:
    if text == "base":
        return text, {}
    pairs = [item.split("=", 1) for item in text.split(",")]
    return text, {k: _value(v) for k, v in pairs}


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("trace", "compare"))
    p.add_argument("--model", default="mlp")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--max-train", type=int)
    p.add_argument("--alphas", type=float, nargs="+", default=[None])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variant", action="append", default=[], help="base or k=v[,k=v]")
    p.add_argument("--set", action="append", default=[], help="k=v for every run")
    p.add_argument("--cache", help="float-model cache folder (default: temporary)")
    return p.parse_args(argv)


def _config(args, alpha, seed, extra):
    settings = {**{k: v for s in args.set for k, v in _variant(s)[1].items()}, **extra}
    return make_config(args.model, args.dataset, max_train=args.max_train, alpha=alpha,
                       seed=seed, **settings)  # fmt: skip


def _trace(args, cache: Path) -> None:
    for name, extra in [_variant(v) for v in (args.variant or ["base"])]:
        config = _config(args, args.alphas[0], args.seeds[0], extra)
        tracer = ScaleTrace()
        summary = Trainer(config, [tracer], cache_dir=cache).run()
        print(
            f"{name}: alpha {config.alpha:g}, lr {config.lr:g}, final "
            f"{100 * summary['accuracy']:.2f}% at {summary['compression'] or 0:.1f}x"
        )
        for layer in tracer.steps[0]:
            series = [s[layer] for s in tracer.steps]
            start = series[0]
            blown = next((i for i, v in enumerate(series) if v > 100 * start), None)
            print(
                f"  {layer:<8} start {start:.4g}  max {max(series):.4g}  "
                f"last {series[-1]:.4g}  >100x start at step "
                f"{'-' if blown is None else blown + 1} of {len(series)}"
            )


def _compare(args, cache: Path) -> None:
    print(
        f"{'variant':<28} {'alpha':>6} {'seed':>4} {'BSQ-end %':>9} {'final %':>8} "
        f"{'x':>6}  bits  (CPU s)"
    )
    for name, extra in [_variant(v) for v in (args.variant or ["base"])]:
        for alpha in args.alphas:
            for seed in args.seeds:
                config = _config(args, alpha, seed, extra)
                cpu0 = time.process_time()
                s = Trainer(config, cache_dir=cache).run()
                bits = "/".join(str(layer["n_bits"]) for layer in s["layers"])
                stage = s["quant_stage_accuracy"]
                print(
                    f"{name:<28} {config.alpha:>6g} {seed:>4} {100 * stage:>9.2f} "
                    f"{100 * s['accuracy']:>8.2f} {s['compression'] or 0:>6.1f}  {bits}  "
                    f"({time.process_time() - cpu0:.0f})",
                    flush=True,
                )
    print(f"float model: {100 * s['float_accuracy']:.2f}% (test set {s['test_size']})")


def main(argv=None) -> int:
    import candidates  # noqa: F401  (registers benchmark-only models; here, not at import)

    args = _parse(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or tmp)
        (_trace if args.what == "trace" else _compare)(args, cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())

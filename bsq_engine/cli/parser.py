"""The argument parser of ``python -m bsq_engine``: every command, flag and help text.

Each subcommand's ``func`` default is the ``cmd_*`` that runs it (see ``cli.main``).
Argparse errors become one line (``UsageError``), never the whole usage text.
"""

from __future__ import annotations

import argparse

from bsq_engine.cli import control, info, maintenance, manage, train
from bsq_engine.cli.settings import FLOAT_ACTS
from bsq_engine.training.config import METHODS, SENSITIVITIES

__all__ = ["UsageError", "build_parser"]


class UsageError(Exception):
    """An argparse error, reported as one line (argparse would add the whole usage)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _act_bits(text: str):
    """``--act-bits``: a bit-width, or ``float`` for unquantized activations."""
    if text.lower() in ("float", "none"):
        return FLOAT_ACTS
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of bits or 'float', got {text!r}"
        ) from None


def _scheme(text: str) -> tuple[int, ...]:
    """``--scheme 8,4,2,4,8`` (commas, dashes or slashes): bits per quantized layer."""
    parts = text.replace("-", ",").replace("/", ",").split(",")
    try:
        return tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers of bits such as 8,4,2,4,8, got {text!r}"
        ) from None


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """The run settings shared by ``train`` and ``sweep``; unset = the preset's value."""
    g = p.add_argument_group("run settings (default: the preset of --model/--dataset)")
    g.add_argument("--n-bits", type=int, help="bits per weight at conversion (bsq; default 8)")
    g.add_argument("--max-bits", type=int, help="precision cap when a layer overflows (8)")
    g.add_argument("--act-bits", type=_act_bits, help="activation bits, or 'float'")
    g.add_argument(
        "--float-shortcuts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep ResNets' 1x1 shortcut convs in float, as the reference does",
    )
    g.add_argument("--epochs", type=int, help="BSQ (or uniform QAT) stage epochs, <= 10000")
    g.add_argument("--pretrain-epochs", type=int, help="float pretraining epochs")
    g.add_argument("--finetune-epochs", type=int, help="finetune epochs (scheme fixed)")
    g.add_argument("--requant-interval", type=int, help="re-quantize every N BSQ epochs (bsq)")
    g.add_argument(
        "--fixed-bn-scales",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bsq, our option (README): do not train the scales of layers followed by "
        "BatchNorm (off = the paper)",
    )
    g.add_argument(
        "--max-msb-drop",
        type=int,
        help="bsq, our option (README): drop at most N zero MSB planes per layer at each "
        "re-quantization (unset = the paper)",
    )
    g.add_argument("--lr", type=float, help="learning rate of the BSQ stage, <= 10")
    g.add_argument("--batch-size", type=int, help="<= 65536")
    g.add_argument("--seed", type=int, help="0 .. 2**32-1")
    g.add_argument("--device", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda[:N], mps")
    g.add_argument("--data-root", help="folder holding the dataset files")
    g.add_argument("--max-train", type=int, help="use a fixed random subset of the train split")
    g.add_argument("--max-test", type=int, help="use a fixed random subset of the test split")


def _add_model(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", default=None if required else "mlp", required=required,
                   help="model name (see `list`); default mlp")  # fmt: skip
    p.add_argument("--dataset", default=None if required else "digits", required=required,
                   help="dataset name (see `list`); default digits")  # fmt: skip


def _add_executor(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the runs train")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local job queue (default) or one Ray task per run")  # fmt: skip
    g.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join (auto, ray://HOST:10001); default: local")  # fmt: skip
    g.add_argument("--storage", metavar="DIR",
                   help="folder every Ray worker reaches, for checkpoints and the float "
                        "model (default: the store's folder)")  # fmt: skip


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _run_commands(sub) -> None:
    p = sub.add_parser("train", help="train one run in the foreground")
    _add_model(p)
    p.add_argument("--method", choices=METHODS, default=None)
    p.add_argument("--alpha", type=float, help="regularization strength (bsq); >= 0")
    p.add_argument("--bits", type=int, help="bits of the uniform baseline (--method uniform)")
    p.add_argument("--first-last-bits", type=int, help="uniform: first and last layers' bits")
    p.add_argument("--scheme", type=_scheme, help="--method scheme: bits per layer, e.g. 8,4,2")
    p.add_argument("--avg-bits", type=float, help="--method hawq: average-bits budget")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, help="--method hawq (hessian)")
    p.add_argument("--name", help="a label for the run (<= 200 characters, one line)")
    _add_overrides(p)
    _json_flag(p)
    p.set_defaults(func=train.cmd_train)

    p = sub.add_parser("reproduce", help="the paper's recipe, its figures next to the run's")
    p.add_argument("recipe", help="resnet20-cifar10")
    p.add_argument("--report", choices=("last", "best"), default="last",
                   help="last epoch (default) or best epoch (the authors' rule)")  # fmt: skip
    _add_overrides(p)
    _json_flag(p)
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("resume", help="continue a stopped or interrupted run to its end")
    p.add_argument("run_id")
    _json_flag(p)
    p.set_defaults(func=train.cmd_resume)

    p = sub.add_parser("sweep", help="an alpha sweep (plus uniform baselines), in the foreground")
    _add_model(p, required=True)
    p.add_argument("--alphas", type=float, nargs="+", default=[], metavar="A")
    p.add_argument("--uniform-bits", type=int, nargs="+", default=[], metavar="K",
                   help="also run uniform K-bit baselines")  # fmt: skip
    p.add_argument("--first-last-uniform-bits", type=int, nargs="+", default=[], metavar="K",
                   help="also uniform K-bit with first/last layers at 8 bits")  # fmt: skip
    p.add_argument("--hawq-avg-bits", type=float, nargs="+", default=[], metavar="B",
                   help="also run HAWQ-style allocations at these average-bit budgets")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                   help="repeat every point with these seeds (mean and spread)")  # fmt: skip
    p.add_argument("--name", help="a label for the sweep")
    _add_executor(p)
    _add_overrides(p)
    _json_flag(p)
    p.set_defaults(func=train.cmd_sweep)


def _run_management(sub) -> None:
    p = sub.add_parser("list", help="models, datasets (with availability) and presets")
    p.add_argument("--data-root", help="also look for datasets in this folder")
    _json_flag(p)
    p.set_defaults(func=info.cmd_list)

    p = sub.add_parser("runs", help="the stored runs, newest first")
    p.add_argument("--status", help="queued, running, finished, failed, stopped, interrupted")
    p.add_argument("--model")
    p.add_argument("--dataset")
    _json_flag(p)
    p.set_defaults(func=info.cmd_runs)

    p = sub.add_parser("show", help="config, results, bits per layer and events of a run")
    p.add_argument("run_id")
    _json_flag(p)
    p.set_defaults(func=info.cmd_show)

    p = sub.add_parser(
        "sensitivity",
        help="per-layer Hessian trace and one-layer-at-a-time "
        "costs of a run (measured once, then read from its folder)",
    )
    p.add_argument("run_id")
    p.add_argument("--recompute", action="store_true", help="measure again, replacing the saved")
    _json_flag(p)
    p.set_defaults(func=_sensitivity)

    p = sub.add_parser("export", help="scheme, metrics and packed integer weights of a run")
    p.add_argument("run_id")
    p.add_argument("--out", required=True, help="a new or empty folder to write the files into")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder, replacing the export's files there",
    )
    _json_flag(p)
    p.set_defaults(func=manage.cmd_export)

    p = sub.add_parser("stop", help="stop a queued or running run, whichever process trains it")
    p.add_argument("run_id")
    p.add_argument("--no-wait", action="store_true", help="return once the stop is asked")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    p.set_defaults(func=control.cmd_stop)

    p = sub.add_parser("delete", help="delete a run, its metrics and its folder")
    p.add_argument("run_id")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=manage.cmd_delete)

    p = sub.add_parser("store", help="check the run store, or repair it from the run folders")
    p.add_argument("action", choices=("check", "repair"))
    _json_flag(p)
    p.set_defaults(func=maintenance.cmd_store)


def _reproduce(args) -> int:
    from bsq_engine.cli.reproduce import cmd_reproduce  # imports the paper's figures: lazily

    return cmd_reproduce(args)


def _sensitivity(args) -> int:
    from bsq_engine.cli.sensitivity import cmd_sensitivity  # imports scipy: lazily

    return cmd_sensitivity(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bsq_engine",
        description="BSQ Explorer: mixed-precision quantization by bit-level sparsity.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_commands(sub)
    _run_management(sub)
    return parser

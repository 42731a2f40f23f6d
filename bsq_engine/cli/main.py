"""``python -m bsq_engine <command>``: train, inspect, resume, export and sweep from a terminal.

Commands: ``train``, ``resume``, ``sweep`` (run in the foreground with a progress bar on
stderr), ``list``, ``runs``, ``show``, ``export``, ``stop``, ``delete``. Every command takes
``--json`` (except ``stop`` and ``delete``): the last line of stdout is then one JSON object
(a list for ``runs``).

Exit codes: 0 done; 1 a run failed or was stopped, or an action was refused; 2 bad arguments
(one line on stderr, never a traceback); 130 interrupted outside a run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import contextmanager

import torch

from bsq_engine.cli import commands as c
from bsq_engine.cli.control import cmd_stop
from bsq_engine.runs import runner
from bsq_engine.runs.jobs import TORCH_THREADS_ENV, default_torch_threads
from bsq_engine.runs.ownership import CLI_OWNER
from bsq_engine.runs.status import ACTIVE, RESUMABLE, RunStatus
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import ProgressBarCallback
from bsq_engine.training.config import METHODS, SENSITIVITIES, RunConfig
from bsq_engine.training.presets import preset_for

__all__ = ["build_parser", "main"]


class _UsageError(Exception):
    """An argparse error, reported as one line (argparse would add the whole usage)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _act_bits(text: str):
    """``--act-bits``: a bit-width, or ``float`` for unquantized activations."""
    if text.lower() in ("float", "none"):
        return c.FLOAT_ACTS
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
    g.add_argument("--n-bits", type=int, help="bits per weight at conversion (default 8)")
    g.add_argument("--max-bits", type=int, help="precision cap when a layer overflows (8)")
    g.add_argument("--act-bits", type=_act_bits, help="activation bits, or 'float'")
    g.add_argument(
        "--float-shortcuts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep ResNets' 1x1 shortcut convs in float, as the reference does",
    )
    g.add_argument("--epochs", type=int, help="BSQ (or uniform QAT) stage epochs")
    g.add_argument("--pretrain-epochs", type=int, help="float pretraining epochs")
    g.add_argument("--finetune-epochs", type=int, help="finetune epochs (scheme fixed)")
    g.add_argument("--requant-interval", type=int, help="re-quantize every N BSQ epochs")
    g.add_argument("--lr", type=float, help="learning rate of the BSQ stage")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--data-root", help="folder holding the dataset files")
    g.add_argument("--max-train", type=int, help="use a fixed random subset of the train split")
    g.add_argument("--max-test", type=int, help="use a fixed random subset of the test split")


def _add_model(p: argparse.ArgumentParser, required: bool = False) -> None:
    model_help = "model name (see `list`); default mlp"
    p.add_argument("--model", default=None if required else "mlp", required=required,
                   help=model_help)  # fmt: skip
    p.add_argument("--dataset", default=None if required else "digits", required=required,
                   help="dataset name (see `list`); default digits")  # fmt: skip


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bsq_engine",
        description="BSQ Explorer: mixed-precision quantization by bit-level sparsity.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run in the foreground")
    _add_model(p)
    p.add_argument("--method", choices=METHODS, default=None)
    p.add_argument("--alpha", type=float, help="regularization strength (bsq); >= 0")
    p.add_argument("--bits", type=int, help="bits of the uniform baseline (--method uniform)")
    p.add_argument("--first-last-bits", type=int, help="uniform: first and last layers' bits")
    p.add_argument("--scheme", type=_scheme, help="--method scheme: bits per layer, e.g. 8,4,2")
    p.add_argument("--avg-bits", type=float, help="--method hawq: average-bits budget")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, help="--method hawq (hessian)")
    p.add_argument("--name", help="a label for the run")
    _add_overrides(p)
    _json_flag(p)
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("list", help="models, datasets (with availability) and presets")
    p.add_argument("--data-root", help="also look for datasets in this folder")
    _json_flag(p)
    p.set_defaults(func=c.cmd_list)

    p = sub.add_parser("runs", help="the stored runs, newest first")
    p.add_argument("--status", help="queued, running, finished, failed, stopped, interrupted")
    p.add_argument("--model")
    p.add_argument("--dataset")
    _json_flag(p)
    p.set_defaults(func=c.cmd_runs)

    p = sub.add_parser("show", help="config, results, bits per layer and events of a run")
    p.add_argument("run_id")
    _json_flag(p)
    p.set_defaults(func=c.cmd_show)

    p = sub.add_parser("export", help="scheme, metrics and packed integer weights of a run")
    p.add_argument("run_id")
    p.add_argument("--out", required=True, help="folder to write the files into")
    _json_flag(p)
    p.set_defaults(func=c.cmd_export)

    p = sub.add_parser("stop", help="stop a queued or running run, whichever process trains it")
    p.add_argument("run_id")
    p.add_argument("--no-wait", action="store_true", help="return once the stop is asked")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("delete", help="delete a run, its metrics and its folder")
    p.add_argument("run_id")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=c.cmd_delete)

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
    _add_overrides(p)
    _json_flag(p)
    p.set_defaults(func=cmd_sweep)
    return parser


# ---------------------------------------------------------------- foreground runs
# ---------------------------------------------------------------- foreground runs
@contextmanager
def _stop_on_signals(stop: threading.Event):
    """Ctrl-C / SIGTERM set ``stop``: the run ends ``stopped`` at its next step, resumable.
    A second signal aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current step (again to abort)...", file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_foreground(store: RunStore, run_id: str, *, resume: bool, as_json: bool) -> int:
    """Train ``run_id`` here with a progress bar; print the outcome; exit code 0 / 1."""
    stop = threading.Event()
    bar = ProgressBarCallback(file=sys.stderr)
    with _stop_on_signals(stop):
        try:
            run = runner.execute_run(
                store, run_id, stop_event=stop, callbacks=(bar,), resume=resume
            )
        finally:
            if bar.bar is not None:
                bar.bar.close()
    summary = c.run_summary(store, run)
    if as_json:
        c.emit_json(summary)
        if summary["status"] != RunStatus.FINISHED:
            c.print_outcome(summary)
    else:
        c.print_outcome(summary)
        if summary["status"] == RunStatus.FINISHED:
            c.print_layers(summary["layers"])
    return 0 if summary["status"] == RunStatus.FINISHED else 1


def cmd_train(args) -> int:
    config = c.config_from(args.model, args.dataset, c.overrides_of(args))
    c.check_runnable(config)
    with RunStore() as store:
        run_id = store.create_run(config.to_dict(), name=config.name, owner=CLI_OWNER)
        print(f"run {run_id}", file=sys.stderr if args.json else sys.stdout, flush=True)
        return run_foreground(store, run_id, resume=False, as_json=args.json)


def _reproduce(args) -> int:
    from bsq_engine.cli.reproduce import cmd_reproduce

    return cmd_reproduce(args)


def cmd_resume(args) -> int:
    with RunStore() as store:
        run = store.get_run(args.run_id)
        status, rid = run["status"], run["run_id"]
        if status == RunStatus.FINISHED:
            raise ValueError(f"Run {rid!r} is already finished; nothing to resume.")
        if status not in RESUMABLE:  # running, or queued in some process's job manager
            raise ValueError(
                f"Run {rid!r} is {status} (process {run.get('pid')} on {run.get('hostname')}); "
                "stop it there first. Only stopped, interrupted or failed runs resume."
            )
        c.check_runnable(RunConfig.from_dict(run["config"]))
        _, checkpoint = runner.load_resume_point(store, rid)  # unreadable: refused, untouched
        out = sys.stderr if args.json else sys.stdout
        print(f"run {rid}", file=out, flush=True)
        if checkpoint is None:
            print("no checkpoint yet: the run starts over", file=sys.stderr)
        return run_foreground(store, rid, resume=True, as_json=args.json)


# ---------------------------------------------------------------- sweeps
@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt) while a sweep waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sweep_overrides(args) -> dict:
    method_fields = ("method", "alpha", "uniform_bits", "first_last_bits", "scheme", "avg_bits")
    overrides = c.overrides_of(args, exclude=(*method_fields, "name", "seed"))
    if overrides.get("act_bits") == c.FLOAT_ACTS:
        # start_sweep builds configs with make_config, where None means "the preset's".
        preset_bits = preset_for(args.model, args.dataset).get("act_bits")
        if preset_bits is not None:
            raise ValueError(
                f"--act-bits float cannot override the {preset_bits}-bit activations of the "
                f"{args.model}/{args.dataset} preset in a sweep; train those runs one by one."
            )
        del overrides["act_bits"]
    return overrides


def cmd_sweep(args) -> int:
    from bsq_engine.runs import sweep
    from bsq_engine.runs.jobs import get_manager

    overrides = _sweep_overrides(args)
    configs = [
        c.config_from(args.model, args.dataset, {**overrides, "alpha": a}) for a in args.alphas
    ]
    configs += [
        c.config_from(
            args.model, args.dataset, {**overrides, "method": "uniform", "uniform_bits": k}
        )
        for k in args.uniform_bits
    ]  # validated here too, so the one-line reason names the CLI flag's value
    configs += [
        c.config_from(args.model, args.dataset, {**overrides, "method": "hawq", "avg_bits": b})
        for b in args.hawq_avg_bits
    ]
    if not configs and not args.first_last_uniform_bits:
        raise ValueError("A sweep needs --alphas, --uniform-bits, --first-last-uniform-bits "
                         "or --hawq-avg-bits.")  # fmt: skip
    c.check_runnable(configs[0] if configs else c.config_from(args.model, args.dataset, overrides))
    manager = get_manager()
    sweep_id = sweep.start_sweep(
        manager, model=args.model, dataset=args.dataset, alphas=args.alphas,
        uniform_bits=tuple(args.uniform_bits), name=args.name, overrides=overrides,
        first_last_bits=tuple(args.first_last_uniform_bits),
        hawq_avg_bits=tuple(args.hawq_avg_bits), seeds=tuple(args.seeds),
        owner=CLI_OWNER,
    )  # fmt: skip
    n_runs = len(manager.store.list_runs(sweep_id=sweep_id))
    out = sys.stderr if args.json else sys.stdout
    print(f"sweep {sweep_id}: {n_runs} runs queued", file=out, flush=True)
    seen: set[str] = set()

    def report(progress=None) -> None:
        """A line per run that ended since the last call."""
        for run in reversed(manager.store.list_runs(sweep_id=sweep_id)):
            if run["run_id"] in seen or run["status"] in ACTIVE:
                continue
            seen.add(run["run_id"])
            s = c.run_summary(manager.store, run)
            print(f"  {len(seen)}/{n_runs} {s['run_id']} {s['status']:<9} "
                  f"{c.method_label(s):<12} accuracy {c.pct(s['accuracy'])}, "
                  f"{c.num(s['avg_bits'])} bits, {c.num(s['compression'], '.1f', 'x')}",
                  file=out, flush=True)  # fmt: skip

    try:
        with _sigterm_as_interrupt():
            try:
                sweep.run_sweep_blocking(manager, sweep_id, on_progress=report)
            except KeyboardInterrupt:
                print("\nstopping the sweep's runs (again to abort)...", file=sys.stderr)
                ids = set(sweep.sweep_progress(manager.store, sweep_id)["run_ids"])
                for run_id in manager.active_runs():
                    if run_id in ids:
                        manager.stop(run_id)
                sweep.run_sweep_blocking(manager, sweep_id, on_progress=report)
    except KeyboardInterrupt:
        manager.shutdown(timeout=5.0)
        raise
    report()
    runs = reversed(manager.store.list_runs(sweep_id=sweep_id))  # creation order
    summaries = [c.run_summary(manager.store, run) for run in runs]
    done = sum(s["status"] == RunStatus.FINISHED for s in summaries)
    print(f"sweep {sweep_id}: {done}/{len(summaries)} runs finished", file=out)
    if args.json:
        c.emit_json({"sweep_id": sweep_id, "runs": summaries})
    return 0 if done == len(summaries) else 1


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _apply_thread_setting() -> None:
    """Honour ``$BSQ_TORCH_THREADS`` (as the app does). Unset, the CLI keeps torch's own
    choice, all cores: a foreground run owns the machine, unlike the app's worker."""
    if os.environ.get(TORCH_THREADS_ENV, "").strip():
        torch.set_num_threads(default_torch_threads())


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(_one_line(f"error: {exc}"), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        _apply_thread_setting()
        return args.func(args)
    except c.BAD_INPUT as exc:
        print(_one_line(f"error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(RunStatus.INTERRUPTED, file=sys.stderr)
        return 130

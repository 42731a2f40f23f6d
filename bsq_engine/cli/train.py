"""The long-running commands: ``train``, ``resume`` and ``sweep`` (foreground, with a
progress bar on stderr). Each ``cmd_*`` takes the parsed arguments and returns the exit code:
0 finished, 1 a run failed or was stopped."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from bsq_engine.cli import format as fmt
from bsq_engine.cli.settings import (
    FLOAT_ACTS,
    SWEEP_FLAGS,
    check_runnable,
    config_from,
    overrides_of,
)
from bsq_engine.runs import runner
from bsq_engine.runs.ownership import CLI_OWNER
from bsq_engine.runs.status import ACTIVE, RESUMABLE, RunStatus
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import ProgressBarCallback
from bsq_engine.training.config import RunConfig
from bsq_engine.training.presets import preset_for
from bsq_engine.training.validation import label_problems

__all__ = ["cmd_resume", "cmd_sweep", "cmd_train", "run_foreground"]


@contextmanager
def _on_signals(handler, signals=(signal.SIGINT, signal.SIGTERM)):
    """Install ``handler`` for ``signals`` while in the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_handler(stop: threading.Event):
    """Ctrl-C / SIGTERM set ``stop``: the run ends ``stopped`` at its next step, resumable.
    A second signal aborts at once."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current step (again to abort)...", file=sys.stderr)

    return handler


def run_foreground(store: RunStore, run_id: str, *, resume: bool, as_json: bool) -> int:
    """Train ``run_id`` here with a progress bar; print the outcome; exit code 0 / 1."""
    stop = threading.Event()
    bar = ProgressBarCallback(file=sys.stderr)
    with _on_signals(_stop_handler(stop)):  # the trainer's teardown closes the bar
        run = runner.execute_run(store, run_id, stop_event=stop, callbacks=(bar,), resume=resume)
    summary = fmt.run_summary(store, run)
    if as_json:
        fmt.emit_json(summary)
        if summary["status"] != RunStatus.FINISHED:
            fmt.print_outcome(summary)
    else:
        fmt.print_outcome(summary)
        if summary["status"] == RunStatus.FINISHED:
            fmt.print_layers(summary["layers"])
    return 0 if summary["status"] == RunStatus.FINISHED else 1


def cmd_train(args) -> int:
    config = config_from(args.model, args.dataset, overrides_of(args))
    check_runnable(config)
    from bsq_engine.cli import ddp

    if ddp.is_torchrun():  # torchrun --nproc_per_node=N -m bsq_engine train ...
        return ddp.run_ddp(config=config, as_json=args.json)
    with RunStore() as store:
        run_id = store.create_run(config.to_dict(), name=config.name, owner=CLI_OWNER)
        print(f"run {run_id}", file=sys.stderr if args.json else sys.stdout, flush=True)
        return run_foreground(store, run_id, resume=False, as_json=args.json)


def cmd_resume(args) -> int:
    from bsq_engine.cli import ddp

    if ddp.is_torchrun():  # any world size: checkpoints hold global-batch state
        return ddp.run_ddp(run_id=args.run_id, as_json=args.json)
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
        # The same validation as train: a stored config that no longer passes is refused.
        check_runnable(RunConfig.from_dict(run["config"]))
        _, checkpoint = runner.load_resume_point(store, rid)  # unreadable: refused, untouched
        out = sys.stderr if args.json else sys.stdout
        print(f"run {rid}", file=out, flush=True)
        if checkpoint is None:
            print("no checkpoint yet: the run starts over", file=sys.stderr)
        return run_foreground(store, rid, resume=True, as_json=args.json)


# ---------------------------------------------------------------- sweeps
def _sweep_overrides(args) -> dict:
    method_fields = ("method", "alpha", "uniform_bits", "first_last_bits", "scheme", "avg_bits")
    overrides = overrides_of(args, exclude=(*method_fields, "name", "seed"))
    if overrides.get("act_bits") == FLOAT_ACTS:
        # start_sweep builds configs with make_config, where None means "the preset's".
        preset_bits = preset_for(args.model, args.dataset).get("act_bits")
        if preset_bits is not None:
            raise ValueError(
                f"--act-bits float cannot override the {preset_bits}-bit activations of the "
                f"{args.model}/{args.dataset} preset in a sweep; train those runs one by one."
            )
        del overrides["act_bits"]
    return overrides


def _sweep_configs(args, overrides: dict) -> list[RunConfig]:
    """Every run of the sweep, validated here so the one-line reason names the CLI flags."""
    configs = []
    problems = [p.render(SWEEP_FLAGS) for p in label_problems("name", args.name)]
    points = [{"alpha": a} for a in args.alphas]
    points += [{"method": "uniform", "uniform_bits": k} for k in args.uniform_bits]
    points += [{"method": "hawq", "avg_bits": b} for b in args.hawq_avg_bits]
    for point in points:
        try:
            settings = {**overrides, **point}
            configs.append(
                config_from(args.model, args.dataset, settings, SWEEP_FLAGS, one_method=False)
            )
        except ValueError as exc:
            problems.append(str(exc).rstrip("."))
    if problems:  # the same flag problem of every point is said once
        raise ValueError("; ".join(dict.fromkeys(problems)) + ".")
    if not configs and not args.first_last_uniform_bits:
        raise ValueError("A sweep needs --alphas, --uniform-bits, --first-last-uniform-bits "
                         "or --hawq-avg-bits.")  # fmt: skip
    return configs


def _report_ended(manager, sweep_id: str, seen: set, total: int, out) -> None:
    """A line per run of the sweep that ended since the last call."""
    for run in reversed(manager.store.list_runs(sweep_id=sweep_id)):
        if run["run_id"] in seen or run["status"] in ACTIVE:
            continue
        seen.add(run["run_id"])
        s = fmt.run_summary(manager.store, run)
        print(f"  {len(seen)}/{total} {s['run_id']} {s['status']:<9} "
              f"{fmt.method_label(s):<12} accuracy {fmt.pct(s['accuracy'])}, "
              f"{fmt.num(s['avg_bits'])} bits, {fmt.num(s['compression'], '.1f', 'x')}",
              file=out, flush=True)  # fmt: skip


def _wait_for_sweep(manager, sweep_id: str, report) -> None:
    """Block until the sweep ends; Ctrl-C stops its runs (resumable), a second aborts."""
    from bsq_engine.runs import sweep

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        with _on_signals(interrupt, (signal.SIGTERM,)):
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


def cmd_sweep(args) -> int:
    from bsq_engine.runs import sweep
    from bsq_engine.runs.jobs import get_manager

    overrides = _sweep_overrides(args)
    configs = _sweep_configs(args, overrides)
    check_runnable(configs[0] if configs else config_from(args.model, args.dataset, overrides))
    if args.executor == "ray":
        from bsq_engine.runs.ray_executor import RayExecutor

        manager = RayExecutor(address=args.ray_address, storage=args.storage)
    else:
        manager = get_manager()
    sweep_id = sweep.start_sweep(
        manager, model=args.model, dataset=args.dataset, alphas=args.alphas,
        uniform_bits=tuple(args.uniform_bits), name=args.name, overrides=overrides,
        first_last_bits=tuple(args.first_last_uniform_bits),
        hawq_avg_bits=tuple(args.hawq_avg_bits), seeds=tuple(args.seeds), owner=CLI_OWNER,
    )  # fmt: skip
    n_runs = len(manager.store.list_runs(sweep_id=sweep_id))
    out = sys.stderr if args.json else sys.stdout
    print(f"sweep {sweep_id}: {n_runs} runs queued", file=out, flush=True)
    seen: set[str] = set()

    def report(progress=None) -> None:
        _report_ended(manager, sweep_id, seen, n_runs, out)

    _wait_for_sweep(manager, sweep_id, report)
    report()
    runs = reversed(manager.store.list_runs(sweep_id=sweep_id))  # creation order
    summaries = [fmt.run_summary(manager.store, run) for run in runs]
    done = sum(s["status"] == RunStatus.FINISHED for s in summaries)
    print(f"sweep {sweep_id}: {done}/{len(summaries)} runs finished", file=out)
    if args.json:
        fmt.emit_json({"sweep_id": sweep_id, "runs": summaries})
    return 0 if done == len(summaries) else 1

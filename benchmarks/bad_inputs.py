"""The bad-input tally of issue 10: try every bad input a careful user might, count how each
ends.

Categories: CLI arguments, ``RunConfig`` built directly, the Train form's builder, damaged
store files and rows, damaged checkpoints (resume), export paths, image folders. Each case
ends one of three ways:

- **clean**: refused with a one-line reason that names what is wrong (CLI exit 2; a
  ``ValueError`` naming the field or label), and nothing stored or changed;
- **accepted**: it went through (for the CLI: a run would have started);
- **traceback**: any other exception, or a traceback printed.

Runs in a private ``BSQ_HOME`` under /tmp; trains two tiny runs (~5 s) for the checkpoint
and export cases. ``--json`` prints the counts as one JSON line. No accepted case trains:
the CLI's foreground run is replaced by a recorder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bsq_engine.cli import main as cli
from bsq_engine.cli import train as cli_train
from bsq_engine.runs.runner import checkpoint_path, execute_run
from bsq_engine.runs.store import RunStore
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.checkpoint import load_checkpoint, save_checkpoint
from bsq_engine.training.config import ConfigError, RunConfig
from bsq_engine.training.presets import make_config
from dashboard.ui.widgets import build_config

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
            max_train=256, max_test=128)  # fmt: skip
SWEEP = ["sweep", "--model", "mlp", "--dataset", "digits", "--alphas", "0.1"]
BIG = str(10**23)
CLI_CASES = [
    ["train", "--epochs", BIG], ["train", "--epochs", "0"], ["train", "--epochs", "-1"],
    ["train", "--epochs", "1e23"], ["train", "--batch-size", BIG], ["train", "--batch-size", "0"],
    ["train", "--requant-interval", BIG], ["train", "--requant-interval", "0"],
    ["train", "--max-train", BIG], ["train", "--max-train", "0"], ["train", "--max-test", "-3"],
    ["train", "--name", "a\nb"], ["train", "--name", "x" * 100_000], ["train", "--name", ""],
    ["train", "--name", "tab\there"], ["train", "--method", "uniform", "--alpha", "0.1"],
    ["train", "--bits", "4"], ["train", "--method", "uniform", "--n-bits", "4"],
    ["train", "--method", "uniform", "--requant-interval", "2"], ["train", "--seed", BIG],
    ["train", "--seed", "-1"], ["train", "--seed", "1e23"], ["train", "--lr", "1e308"],
    ["train", "--lr", "0"], ["train", "--lr", "-1"], ["train", "--lr", "nan"],
    ["train", "--lr", "inf"], ["train", "--alpha", "1e308"], ["train", "--alpha", "-1"],
    ["train", "--alpha", "nan"], ["train", "--alpha", "1e6"], ["train", "--alpha", "inf"],
    ["train", "--max-bits", "-1"], ["train", "--max-bits", "0"], ["train", "--max-bits", "99"],
    ["train", "--n-bits", "0"], ["train", "--n-bits", "9"], ["train", "--n-bits", "x"],
    ["train", "--act-bits", "1"], ["train", "--act-bits", "99"], ["train", "--act-bits", "x"],
    ["train", "--method", "uniform", "--bits", "0"],
    ["train", "--method", "uniform", "--bits", "9"],
    ["train", "--method", "hawq"], ["train", "--model", "vgg99"], ["train", "--dataset", "nope"],
    ["train", "--device", "cuda:abc"], ["train", "--device", "tpu"], ["train", "--device", ""],
    ["train", "--pretrain-epochs", "-1"], ["train", "--finetune-epochs", BIG],
    ["train", "--dataset", "imagefolder"], ["train", "--dataset", "mnist", "--data-root", "/nope"],
    ["train", "--bogus"], ["train", "--epochs"], [], ["nope"],
    [*SWEEP, "--uniform-bits", "0"], [*SWEEP[:-1], "-2"], [*SWEEP, "--name", "a\nb"],
    [*SWEEP, "--epochs", BIG], ["sweep", "--model", "mlp"],
    ["show", "no-such-run"], ["show", "../../etc"], ["resume", "no-such-run"],
    ["export", "no-such-run", "--out", "x"], ["delete", "no-such-run", "--yes"],
    ["runs", "--status", "sleeping"], ["store", "fix"],
    ["train", "--method", "scheme"], ["train", "--method", "scheme", "--scheme", "8,x"],
    ["train", "--method", "hawq", "--avg-bits", "99"], ["train", "--first-last-bits", "3"],
    ["train", "--method", "hawq", "--avg-bits", "2", "--sensitivity", "magic"],
]  # fmt: skip
CONFIG_CASES = [
    {"act_bits": "4"}, {"act_bits": 1}, {"act_bits": 4.5}, {"device": None}, {"device": 3},
    {"device": "cuda:abc"}, {"lr_milestones": "ab"}, {"lr_milestones": None},
    {"lr_milestones": (1.5,)}, {"finetune_milestones": [0]}, {"version": "2"}, {"version": 99},
    {"version": 0}, {"n_bits": True}, {"n_bits": 4.5}, {"n_bits": 0}, {"n_bits": "8"},
    {"seed": "abc"}, {"seed": -1}, {"seed": 2**40}, {"momentum": 5}, {"momentum": -1},
    {"weight_decay": float("nan")}, {"reuse_pretrained": "no"}, {"float_shortcuts": 1},
    {"model": None}, {"model": "vgg"}, {"dataset": 3}, {"method": "magic"}, {"alpha": "0.1"},
    {"alpha": 1e308}, {"alpha": None}, {"batch_size": 0}, {"batch_size": 10**9},
    {"bsq_epochs": 10**23}, {"bsq_epochs": 2.5}, {"pretrain_epochs": True},
    {"max_train": 0}, {"max_test": "all"}, {"name": "a\nb"}, {"data_root": ""},
    {"n_bits": 16, "max_bits": 2}, {"uniform_bits": 9, "method": "uniform"},
]  # fmt: skip
FORM_CASES = [
    {"n_bits": 16, "max_bits": 2}, {"alpha": 1e6}, {"alpha": -1.0}, {"lr": "fast"},
    {"batch_size": 0, "seed": -5}, {"bsq_epochs": 0, "requant_interval": 0},
    {"act_bits": 1}, {"device": "tpu"},
]  # fmt: skip


class Tally:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, category: str, case: str, outcome: str) -> None:
        self.rows.append((category, case[:70], outcome))

    def counts(self) -> dict:
        out = {"tried": len(self.rows)}
        for outcome in ("clean", "accepted", "traceback"):
            out[outcome] = sum(r[2] == outcome for r in self.rows)
        return out


def run_cli(argv: list[str]) -> tuple[str, str]:
    """Outcome of one CLI call: clean = exit 2 with one line and no traceback."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    except BaseException as exc:
        return "traceback", f"{type(exc).__name__}: {exc}"
    text = err.getvalue()
    if "Traceback" in text:
        return "traceback", text
    one_line = code == 2 and len(text.strip().splitlines()) == 1 and text.startswith("error: ")
    return ("clean" if one_line else "accepted"), text.strip()[:200]


def cli_cases(tally: Tally) -> None:
    started = []
    cli_train.run_foreground = lambda store, run_id, **kw: started.append(run_id) or 0
    for argv in CLI_CASES:
        before = len(RunStore().list_runs())
        outcome, _ = run_cli(argv)
        if outcome == "clean" and len(RunStore().list_runs()) != before:
            outcome = "accepted"  # refused, but something was stored
        tally.add("cli", " ".join(argv), outcome)


def config_cases(tally: Tally) -> None:
    for kwargs in CONFIG_CASES:
        try:
            RunConfig(**kwargs)
            outcome = "accepted"
        except ConfigError as exc:
            outcome = "clean" if set(exc.fields) & set(kwargs) else "accepted"
        except Exception:
            outcome = "traceback"
        tally.add("RunConfig", repr(kwargs), outcome)
    for values in FORM_CASES:
        try:
            build_config({"act_bits": "float", **values})
            outcome = "accepted"
        except ValueError as exc:
            outcome = "clean" if "Traceback" not in str(exc) else "traceback"
        except Exception:
            outcome = "traceback"
        tally.add("form", repr(values), outcome)


class _StopAt(Callback):
    def __init__(self, event):
        self.event = event

    def on_epoch_end(self, trainer, record, layers):
        if (record["stage"], record["epoch"]) == ("bsq", 1):
            self.event.set()


def _state(run_id: str) -> tuple:
    with RunStore() as store:
        run = store.get_run(run_id)
        return run["status"], run["error"], store.epochs(run_id)


def checkpoint_cases(tally: Tally, home: Path) -> None:
    store = RunStore()
    run_id = store.create_run(make_config(**TINY).to_dict())
    stop = threading.Event()
    execute_run(store, run_id, stop_event=stop, callbacks=(_StopAt(stop),))
    path = checkpoint_path(store, run_id)
    good = path.read_bytes()
    tensors, meta = load_checkpoint(path)
    layer = next(iter(meta["layers"]))
    plane = next(k for k in tensors if k.endswith("pos_planes"))
    metas = {
        "meta list": [1], "no stage": {k: v for k, v in meta.items() if k != "stage"},
        "epoch -5": meta | {"epoch": -5}, "epoch 10^6": meta | {"epoch": 10**6},
        "n_bits 100000": meta | {"layers": {layer: meta["layers"][layer] | {"n_bits": 100000}}},
        "layers list": meta | {"layers": []},
        "no config": {k: v for k, v in meta.items() if k != "config"},
    }  # fmt: skip
    damages = {name: (tensors, m) for name, m in metas.items()}
    damages["wrong shape"] = (tensors | {plane: torch.zeros(2, 2, 2)}, meta)
    damages["int dtype"] = (tensors | {plane: tensors[plane].long()}, meta)
    for name in [*damages, "truncated 0", "truncated half", "garbled header"]:
        path.write_bytes(good)
        if name in damages:
            save_checkpoint(path, *damages[name])
        elif name == "truncated 0":
            path.write_bytes(b"")
        elif name == "truncated half":
            path.write_bytes(good[: len(good) // 2])
        else:
            path.write_bytes(good[:8] + b"\xff" * 32 + good[40:])
        before = _state(run_id)
        outcome, _ = run_cli(["resume", run_id])
        if outcome == "clean" and _state(run_id) != before:
            outcome = "accepted"
        tally.add("checkpoint", name, outcome)
    path.write_bytes(good)
    shutil.rmtree(path.parent)
    outcome, _ = run_cli(["resume", run_id])
    tally.add("checkpoint", "run folder deleted", outcome)


def export_cases(tally: Tally, tmp: Path) -> None:
    store = RunStore()
    run_id = store.create_run(make_config(**TINY).to_dict())
    execute_run(store, run_id)
    (tmp / "afile").write_text("x")
    (tmp / "busy").mkdir()
    (tmp / "busy" / "scheme.json").write_text("mine")
    for out in ("", str(tmp / "afile"), str(tmp / "busy"), str(tmp / "afile" / "sub"),
                "/proc/bsq-export"):  # fmt: skip
        outcome, _ = run_cli(["export", run_id, "--out", out])
        tally.add("export", f"--out {out!r}", outcome)


def store_cases(tally: Tally, tmp: Path) -> None:
    rows = {"config {": ("config_json", "{"), "config []": ("config_json", "[]"),
            "summary {": ("summary_json", "{"), "status zombie": ("status", "zombie")}  # fmt: skip
    for name, (column, value) in rows.items():
        store = RunStore()
        rid = store.create_run(make_config().to_dict(), status="stopped")
        with contextlib.closing(sqlite3.connect(store.db_path)) as conn, conn:
            conn.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", (value, rid))
        listing, text = run_cli(["runs"])  # exit 0 with a warning: the clean ending
        shown, _ = run_cli(["show", rid])
        clean = listing == "accepted" and text.startswith("warning: run") and shown == "clean"
        tally.add("store row", name, "clean" if clean else "traceback")
        run_cli(["store", "repair"])
    for name, content in (("0-byte runs.db", b""), ("garbage runs.db", b"x" * 4096),
                          ("truncated runs.db", None)):  # fmt: skip
        db = Path(os.environ["BSQ_HOME"]) / "runs.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:  # everything into runs.db itself
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        saved = db.read_bytes()
        db.write_bytes(saved[: len(saved) // 3] if content is None else content)
        # A fresh process, as a user would run it: no connection of ours is open on the file.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "bsq_engine", "runs"], cwd=ROOT, env=env,
                              capture_output=True, text=True)  # fmt: skip
        err = proc.stderr
        if "Traceback" in err:
            outcome = "traceback"
        else:
            one = proc.returncode == 2 and len(err.strip().splitlines()) == 1
            outcome = "clean" if one and db.read_bytes() != saved else "accepted"
        tally.add("store file", name, outcome)
        db.write_bytes(saved)


def dataset_cases(tally: Tally, tmp: Path) -> None:
    from PIL import Image

    for name in ("non-image png", "0-byte jpg", "link out", "empty class", "huge header"):
        root = tmp / name.replace(" ", "_")
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8)).save(root / cls / f"{i}.png")
        if name == "non-image png":
            (root / "a" / "bad.png").write_text("not an image")
        elif name == "0-byte jpg":
            (root / "a" / "empty.jpg").write_bytes(b"")
        elif name == "link out":
            (root / "a" / "out.png").symlink_to(tmp / "afile")
        elif name == "empty class":
            (root / "c").mkdir()
        else:  # a PNG whose header claims 100000 x 100000 pixels
            head = (root / "a" / "0.png").read_bytes()
            (root / "a" / "huge.png").write_bytes(
                head[:16] + (100000).to_bytes(4, "big") * 2 + head[24:]
            )
        outcome, _ = run_cli(["train", "--dataset", "imagefolder", "--data-root", str(root)])
        tally.add("dataset", name, outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="bsq-bad-inputs-") as tmp:
        tmp = Path(tmp)
        os.environ["BSQ_HOME"] = str(tmp / "home")
        real_foreground = cli_train.run_foreground
        config_cases(tally)
        dataset_cases(tally, tmp)
        checkpoint_cases(tally, tmp)
        export_cases(tally, tmp)
        cli_cases(tally)
        store_cases(tally, tmp)
        cli_train.run_foreground = real_foreground
    for category, case, outcome in tally.rows:
        if args.verbose or outcome != "clean":
            print(f"{outcome:<10} {category:<11} {case!r}")
    counts = tally.counts()
    print(json.dumps(counts) if args.json else
          f"bad inputs tried: {counts['tried']}, handled cleanly: {counts['clean']}, "
          f"accepted: {counts['accepted']}, tracebacks: {counts['traceback']}")  # fmt: skip


if __name__ == "__main__":
    main()

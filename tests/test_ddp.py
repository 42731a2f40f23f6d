"""Data-parallel training: helpers alone, then a real 2-process Gloo job under torchrun.

The slow test drives one run across world sizes 2 -> 1 -> 2: stopped by rank 0 in its
second BSQ epoch (ranks compared bit for bit after each re-quantization), resumed in this
process and stopped again, then resumed to the end by ``torchrun -m bsq_engine resume``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from shared import free_port
from torch import nn

from bsq_engine.runs.paths import checkpoint_path
from bsq_engine.runs.runner import execute_run
from bsq_engine.runs.store import RunStore
from bsq_engine.training import distributed
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.checkpoint import load_checkpoint
from bsq_engine.training.presets import make_config
from bsq_engine.training.trainer import resolve_device

ROOT = Path(__file__).resolve().parents[1]
PORTS = range(8660, 8680)  # this project's port range for local rendezvous


def test_single_process_helpers_are_no_ops():
    info = distributed.current()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    x, y = torch.arange(10.0), torch.arange(10)
    assert distributed.shard(x, y, info) == (x, y)
    assert distributed.all_sum([1.5, 2], info, torch.device("cpu")) == [1.5, 2]
    assert distributed.any_rank([False, True], info, torch.device("cpu")) == [False, True]
    model = nn.Linear(2, 2)
    assert distributed.wrap(model, info, torch.device("cpu")) is model
    assert distributed.worker_label(info, torch.device("cpu"), "cli") == "cli"


def test_shards_cover_a_batch_exactly_once():
    x, y = torch.arange(13.0), torch.arange(13)
    parts = [distributed.shard(x, y, distributed.DistInfo(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert [len(p[1]) for p in parts] == [5, 4, 4]


def test_digest_sees_a_single_flipped_bit():
    model = nn.Linear(3, 2)
    before = distributed.planes_digest(model)
    with torch.no_grad():
        bits = model.weight.view(torch.int32)
        bits[0, 0] ^= 1  # the lowest mantissa bit of one weight
    assert distributed.planes_digest(model) != before


def test_auto_device_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    mps = getattr(torch.backends, "mps", None)
    if expected == "cpu" and mps is not None and mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    if expected != "mps":
        with pytest.raises(ValueError, match="no MPS"):
            resolve_device("mps")


def test_placement_is_stored_and_listed(bsq_home):
    with RunStore(bsq_home) as store:
        rid = store.create_run(make_config().to_dict())
        assert store.get_run(rid)["world_size"] is None  # unknown until it starts
        store.set_placement(rid, device="cuda:1", world_size=2, worker="torchrun x2 (nccl)")
        run = store.list_runs()[0]
    assert (run["device"], run["world_size"], run["worker"]) == ("cuda:1", 2, "torchrun x2 (nccl)")


# ---------------------------------------------------------------- 2 processes, Gloo


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "BSQ_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    port = free_port(PORTS, "torchrun's rendezvous")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", *args]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


class _StopInFinetune(Callback):
    def __init__(self, event):
        self.event = event

    def on_step_end(self, trainer, step):
        if step["stage"] == "finetune":
            self.event.set()


def _ddp_config():
    """256 digits in batches of 32 (8 steps per epoch); alpha and lr high enough that both
    re-quantizations drop planes, so the ranks must agree on new shapes."""
    return make_config(
        pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
        max_train=256, max_test=128, alpha=2.0, lr=0.5, batch_size=32,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed / Gloo backend",
)
def test_ddp_run_identical_ranks_resume_across_world_sizes(bsq_home, tmp_path):
    config = _ddp_config()
    out = tmp_path / "ranks.json"
    store = RunStore(bsq_home)
    # 0) one plain run caches the float model; rank 0 will read it and send it to rank 1
    plain = execute_run(store, store.create_run(config.to_dict()))
    # 1) two ranks; rank 0 stops at step 10 = the 2nd step of BSQ epoch 2 (after a requant;
    # a reused pretraining adds no steps)
    _torchrun("tests/ddp_worker.py", json.dumps(config.to_dict()), "10", str(out))
    report = json.loads(out.read_text())
    assert report["status"] == "stopped"
    assert len(report["digests"]) == 1  # the re-quantization at the end of BSQ epoch 1
    ranks = report["digests"][0]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["bits"] and ranks[0]["bits"] == ranks[1]["bits"]  # planes were dropped
    assert ranks[0]["digest"] == ranks[1]["digest"]  # bit-identical after re-quantization

    runs = store.list_runs()
    assert len(runs) == 2  # the plain run and one DDP run: rank 1 created nothing
    run = runs[0]
    assert run["owner"] == "cli"  # started from a terminal: controlled from the CLI
    rid = run["run_id"]
    (pre,) = [e for e in store.epochs(rid) if e["stage"] == "pretrain"]
    assert pre["seconds"] == store.epochs(plain["run_id"])[0]["seconds"]  # cache reused
    assert (run["world_size"], run["worker"]) == (2, "torchrun x2 (gloo)")
    assert load_checkpoint(checkpoint_path(store, rid))[1]["stage"] == "bsq"

    # 2) world size 1: resume here, stop again in the finetune stage
    stop = threading.Event()
    run = execute_run(store, rid, resume=True, stop_event=stop, callbacks=[_StopInFinetune(stop)])
    assert (run["status"], run["world_size"]) == ("stopped", 1)

    # 3) world size 2 again, through the CLI as a user would
    done = _torchrun("-m", "bsq_engine", "resume", rid, "--json")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["run_id"] == rid
    run = store.get_run(rid)
    assert run["world_size"] == 2 and run["status"] == "finished"
    epochs = store.epochs(rid)
    assert [e["global_epoch"] for e in epochs] == list(range(1, config.total_epochs + 1))
    assert [e["stage"] for e in epochs] == ["pretrain", "bsq", "bsq", "finetune"]
    assert {e["epoch"] for e in store.events(rid)} == {1, 2}  # both requants, stored once
    store.close()


def test_runs_table_shows_where_a_run_trains(bsq_home):
    from dashboard.views.frames import runs_frame

    with RunStore(bsq_home) as store:
        rid = store.create_run(make_config().to_dict())
        store.set_placement(rid, device="cpu", world_size=2, worker="torchrun x2 (gloo)")
        other = store.create_run(make_config().to_dict())  # never started: blank, not 0
        df = runs_frame(store.list_runs()).set_index("run_id")
    assert df.loc[rid, ["device", "world_size", "worker"]].tolist() == [
        "cpu",
        2.0,
        "torchrun x2 (gloo)",
    ]
    assert df.loc[other, "world_size"] != df.loc[other, "world_size"]  # NaN


def test_runs_page_lists_a_ddp_run_once_with_its_world_size(bsq_home):
    from apptest_helpers import open_page

    with RunStore(bsq_home) as store:
        rid = store.create_run(make_config().to_dict(), name="ddp run")
        store.set_placement(rid, device="cpu", world_size=2, worker="torchrun x2 (gloo)")
    at = open_page("pages/runs.py")
    assert not at.exception
    df = at.dataframe[0].value
    assert df["run_id"].tolist() == [rid]
    assert df.loc[0, ["world_size", "worker"]].tolist() == [2, "torchrun x2 (gloo)"]

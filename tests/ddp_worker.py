"""Run by ``tests/test_ddp.py`` under torchrun (2 Gloo processes); not a test module.

Trains one small run through :func:`bsq_engine.runs.ddp.train_distributed`, as the CLI
does, with two extras: rank 0 stops the run at a chosen step, and every rank hashes its
model after each re-quantization; rank 0 writes every rank's hashes to ``OUT`` (JSON).

    torchrun --nproc_per_node=2 tests/ddp_worker.py CONFIG_JSON STOP_STEP OUT
"""

from __future__ import annotations

import json
import sys
import threading

import torch.distributed as dist

from bsq_engine.runs.ddp import train_distributed
from bsq_engine.training import distributed
from bsq_engine.training.callbacks import Callback
from bsq_engine.training.config import RunConfig


class RankDigests(Callback):
    """After every re-quantization: every rank's model hash and bits per layer."""

    def __init__(self):
        self.rows = []

    def on_requantize(self, trainer, events):
        mine = {
            "rank": trainer.dist.rank, "epoch": trainer.epoch,
            "digest": distributed.planes_digest(trainer.model),
            "bits": [e["new_bits"] for e in events],
        }  # fmt: skip
        everyone = [None] * trainer.dist.world_size
        dist.all_gather_object(everyone, mine)  # every rank calls it at the same point
        self.rows.append(everyone)


class StopAtStep(Callback):
    def __init__(self, event, step):
        self.event, self.step = event, step

    def on_step_end(self, trainer, step):
        if step["step"] >= self.step:
            self.event.set()


def main(config_json: str, stop_step: str, out: str) -> None:
    config = RunConfig.from_dict(json.loads(config_json))
    info = distributed.env_info()
    stop = threading.Event()
    digests = RankDigests()
    rank0 = (StopAtStep(stop, int(stop_step)),) if info.is_main and int(stop_step) > 0 else ()
    run = train_distributed(config, stop_event=stop, callbacks=rank0, rank_callbacks=(digests,))
    if info.is_main:
        with open(out, "w") as handle:
            json.dump({"run_id": run["run_id"], "status": run["status"],
                       "digests": digests.rows}, handle)  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:4])

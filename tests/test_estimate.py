"""Measured time estimates come from the store, per machine and per cost-relevant setting."""

from __future__ import annotations

import socket

import pytest

from bsq_engine.runs.estimate import estimate_run
from bsq_engine.runs.store import RunStore
from bsq_engine.training.config import RunConfig


@pytest.fixture
def store(bsq_home):
    s = RunStore(bsq_home)
    yield s
    s.close()


def _past_run(store, config: RunConfig, stage_seconds: dict, *, finish_s=None) -> str:
    """A run of ``config`` with hand-made epoch timings; finished in ``finish_s`` if given."""
    run_id = store.create_run(config.to_dict(), status="running")  # this host, this pid
    records, g = [], 0
    for stage in config.stages:
        for epoch in range(1, config.epochs_of(stage) + 1):
            g += 1
            records.append({"stage": stage.value, "epoch": epoch, "global_epoch": g,
                            "seconds": stage_seconds[stage.value]})  # fmt: skip
    store.add_epochs(run_id, records)
    if finish_s is None:
        store.set_status(run_id, "stopped")
    else:
        store.finish(run_id, {"seconds": finish_s})
    return run_id


CFG = RunConfig(pretrain_epochs=2, bsq_epochs=4, finetune_epochs=2, reuse_pretrained=False)


def test_no_measurement_no_estimate(store):
    assert estimate_run(store, CFG) is None


def test_exact_settings_use_the_median_of_finished_runs(store):
    for seconds in (10.0, 30.0, 12.0):
        _past_run(store, CFG, {"pretrain": 1, "bsq": 2, "finetune": 1}, finish_s=seconds)
    found = estimate_run(store, CFG)
    assert found.exact and found.seconds == 12.0 and found.runs == 3
    assert "median of 3 finished run(s)" in found.describe()


def test_other_epoch_counts_scale_the_measured_epochs(store):
    _past_run(store, CFG, {"pretrain": 1.0, "bsq": 3.0, "finetune": 2.0})  # stopped: epochs count
    longer = CFG.replace(bsq_epochs=10, finetune_epochs=0)
    found = estimate_run(store, longer)
    assert not found.exact and found.seconds == pytest.approx(2 * 1.0 + 10 * 3.0)
    assert found.epochs == 2 + 4  # pretrain and bsq epochs measured; finetune not needed


def test_other_cost_settings_or_hosts_are_not_mixed_in(store):
    _past_run(store, CFG, {"pretrain": 1, "bsq": 2, "finetune": 1}, finish_s=8.0)
    assert estimate_run(store, CFG.replace(batch_size=CFG.batch_size * 2)) is None
    assert estimate_run(store, CFG.replace(method="uniform", alpha=0.0)) is None  # no qat yet
    assert estimate_run(store, CFG, host=socket.gethostname() + "-elsewhere") is None
    assert estimate_run(store, CFG.replace(alpha=CFG.alpha * 3)).seconds == 8.0  # alpha is free

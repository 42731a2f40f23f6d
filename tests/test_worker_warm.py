"""The job manager's pre-started training child (``worker_process.WarmChild``): a Start
hands its run to a child that has imported torch already; the next one is spawned after
the run; a dead one is replaced by a fresh spawn; shutdown ends the waiting one."""

from __future__ import annotations

import pytest
from shared import wait_for

from bsq_engine.runs.jobs import JobManager

pytestmark = pytest.mark.slow  # spawns Python processes that import torch


def _manager(home) -> JobManager:
    return JobManager(home, max_concurrent=1, torch_threads=1, worker="process", prestart=True)


def test_a_run_trains_in_the_prestarted_child_and_the_next_one_is_ready(bsq_home, tiny_config):
    manager = _manager(bsq_home)
    try:
        warm = manager._warm
        assert warm is not None and warm.alive()
        run_id = manager.start(tiny_config)
        assert manager.wait(run_id, timeout=180) == "finished"
        assert manager.store.get_run(run_id)["pid"] == warm.proc.pid  # no new spawn
        assert manager.snapshot(run_id) is None
        nxt = wait_for(lambda: manager._warm, 30, what="the next waiting child")
        assert nxt is not warm and nxt.alive() and not warm.alive()
    finally:
        manager.shutdown()
    assert not nxt.alive()  # shutdown ends the child still waiting for a run


def test_a_dead_waiting_child_is_replaced_by_a_fresh_spawn(bsq_home, tiny_config):
    manager = _manager(bsq_home)
    try:
        dead = manager._warm
        dead.proc.kill()
        dead.proc.join(10)
        run_id = manager.start(tiny_config)
        assert manager.wait(run_id, timeout=180) == "finished"
        assert manager.store.get_run(run_id)["pid"] != dead.proc.pid
    finally:
        manager.shutdown()


def test_thread_workers_and_the_default_never_prestart(bsq_home):
    for manager in (JobManager(bsq_home, worker="thread", prestart=True),
                    JobManager(bsq_home, worker="process")):  # fmt: skip
        assert manager._warm is None
        manager.shutdown()

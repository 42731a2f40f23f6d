"""``training.allocator``: freed memory stays in the process while a run trains.

The allocation rounds run in a fresh child process: glibc's state (its thresholds, the heap)
depends on everything the process allocated before, and the pytest process has a history.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest

from bsq_engine.training import allocator

needs_glibc = pytest.mark.skipif(
    not allocator.supported(), reason="the allocator setting is glibc's (Linux); a no-op here"
)

# Ten 8 MiB tensors allocated, touched and freed per round, like a step's activations.
# Minor page faults per round and the resident memory after each phase, as JSON.
_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from bsq_engine.training.allocator import keep_freed_memory

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    def round_():
        before = faults()
        tensors = [torch.ones(2 * 1024 * 1024) for _ in range(10)]  # 10 x 8 MiB
        del tensors
        return faults() - before

    out = {}
    with keep_freed_memory() as kept:
        out["kept"] = kept
        out["outer"] = [round_() for _ in range(4)]
        with keep_freed_memory():  # a second run in the same process, ending first
            out["nested"] = [round_() for _ in range(2)]
        out["after_nested"] = [round_() for _ in range(2)]
        out["rss_inside"] = rss_mb()
    out["rss_after"] = rss_mb()
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def rounds() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_a_step_reuses_the_memory_the_last_one_freed(rounds):
    """80 MiB per round: the first round faults its pages in (20,480 of 4 KiB), the heap
    may still grow by a tensor while it settles (2,048), then each round reuses its pages.
    (Under glibc's default policy every round faulted about 20,450 times: it trims the
    freed top of the heap, over its 16 MiB threshold, and faults it in again.)"""
    assert rounds["kept"] is True
    assert rounds["outer"][0] > 10_000
    assert max(rounds["outer"][1:]) <= 2 * 2048
    assert rounds["outer"][-1] < 500


@needs_glibc
def test_the_setting_holds_until_the_last_user_leaves(rounds):
    assert max(rounds["nested"]) < 500
    assert max(rounds["after_nested"]) < 500  # the inner exit neither trimmed nor reset


@needs_glibc
def test_the_runs_end_gives_the_memory_back(rounds):
    assert rounds["rss_inside"] - rounds["rss_after"] > 60  # of the 80 MiB kept


def test_where_the_c_library_is_not_glibc_nothing_changes(monkeypatch):
    monkeypatch.setitem(allocator._STATE, "loaded", True)
    monkeypatch.setitem(allocator._STATE, "libc", None)
    assert not allocator.supported()
    with allocator.keep_freed_memory() as kept:
        assert kept is False


def test_the_trainer_holds_the_setting_while_a_run_trains(monkeypatch):
    """Entered once around the whole pipeline, left when it ends (also on failure)."""
    from bsq_engine.training import trainer as trainer_module
    from bsq_engine.training.config import RunConfig

    entries = []

    @contextmanager
    def recording():
        entries.append("enter")
        try:
            yield True
        finally:
            entries.append("exit")

    monkeypatch.setattr(trainer_module, "keep_freed_memory", recording)
    seen = []

    class Watch(trainer_module.Callback):
        def on_epoch_end(self, trainer, record, layers):
            seen.append(list(entries))

    config = RunConfig(
        model="mlp", dataset="digits", max_train=64, max_test=32, pretrain_epochs=1,
        bsq_epochs=1, finetune_epochs=0, batch_size=32,
    )  # fmt: skip
    trainer_module.Trainer(config, [Watch()]).run()
    assert seen and all(s == ["enter"] for s in seen)
    assert entries == ["enter", "exit"]

"""Shared fixtures: every test gets its own store folder and a config that trains in ~1 s."""

from __future__ import annotations

import pytest

from bsq_engine.training.presets import make_config


@pytest.fixture(autouse=True)
def bsq_home(tmp_path, monkeypatch):
    """Point ``BSQ_HOME`` at a fresh folder so no test reads or writes ~/.bsq_explorer."""
    home = tmp_path / "bsq_home"
    monkeypatch.setenv("BSQ_HOME", str(home))
    # The app's default trains in a child process (seconds to spawn); tests that mean the
    # process worker ask for it (tests/test_classroom_jobs.py, the browser tests).
    monkeypatch.setenv("BSQ_WORKER", "thread")
    return home


@pytest.fixture
def tiny_config():
    """MLP on 256 digits: 1 pretrain + 2 BSQ (re-quantized each epoch) + 1 finetune epoch."""
    return make_config(
        pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
        max_train=256, max_test=128,
    )  # fmt: skip


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """Every test trains on one intra-op thread: tiny models gain nothing from more, and on
    a shared 2-core machine a second spinning thread makes steps up to 100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def manager(bsq_home, single_torch_thread):
    """A job manager of the test's store, one run at a time; shut down (joined) afterwards."""
    from bsq_engine.runs.jobs import JobManager

    jobs = JobManager(bsq_home, max_concurrent=1, torch_threads=1)
    yield jobs
    jobs.shutdown()

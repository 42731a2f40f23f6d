"""Shared fixtures, one of each kind: every test gets its own store folder (``bsq_home``),
training tests a config that trains in about a second (``tiny_config``), and job tests a
manager (``manager``). Plain helpers (the tiny settings, ``wait_for``) are in ``shared.py``.

Fast lane: ``python -m pytest -m "not slow"`` skips every test marked ``slow`` (it trains
for more than ~2 s, or starts a server or a browser); ``python -m pytest`` runs them all.
"""

from __future__ import annotations

import pytest
from shared import TINY

from bsq_engine.training.presets import make_config


@pytest.fixture(autouse=True)
def bsq_home(tmp_path, monkeypatch):
    """Point ``BSQ_HOME`` at a fresh folder so no test reads or writes ~/.bsq_explorer;
    training gets one thread (a core stays free for AppTest's script thread). The job
    manager of that store, if the test made one, is shut down (workers joined) afterwards."""
    home = tmp_path / "bsq_home"
    monkeypatch.setenv("BSQ_HOME", str(home))
    monkeypatch.setenv("BSQ_TORCH_THREADS", "1")
    # The app's default trains in a child process (seconds to spawn per run); tests that
    # mean that worker ask for it (test_classroom_engine.py, the browser tests' server).
    monkeypatch.setenv("BSQ_WORKER", "thread")
    yield home
    from bsq_engine.runs.jobs import release_manager

    release_manager(home, timeout=30)


@pytest.fixture
def tiny_config():
    """MLP on 256 digits: 1 pretrain + 2 BSQ (re-quantized each epoch) + 1 finetune epoch."""
    return make_config(**TINY)


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

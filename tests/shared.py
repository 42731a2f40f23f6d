"""Plain helpers shared by test modules; the fixtures themselves live in ``conftest.py``.

- ``TINY``: the settings of the tiny run every training test uses (MLP on 256 digits,
  1 pretrain + 2 BSQ epochs re-quantized each epoch + 1 finetune epoch: about a second).
- ``wait_for``: the one poll-until of the suite (jobs, AppTest pages, the browser).
- ``BROWSER_MARKS`` / ``CHROMIUM``: how a browser test module marks and skips itself.
- ``free_port``: a free local port from a given range (torchrun's rendezvous, Ray's GCS).
- ``serve_app`` / ``stop_app``: ``streamlit run serve.py`` on a port, healthy, and its end.
- ``PROGRESS``: the live panel's progress bar in the browser (the pushed one, which
  ``serve.py`` serves: ``dashboard/ui/live_progress.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "BROWSER_MARKS", "CHROMIUM", "PROGRESS", "ROOT", "TINY", "free_port", "serve_app",
    "stop_app", "wait_for",
]  # fmt: skip

CHROMIUM = Path("/usr/bin/chromium")
PROGRESS = '[data-testid="bsqProgress"]'
ROOT = Path(__file__).resolve().parents[1]

#: ``pytestmark`` of every browser test module: slow, browser, skipped without Chromium.
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed (apt-get install chromium); CI installs it",
    ),
]


def free_port(ports: range, what: str) -> int:
    """The first port of ``ports`` nobody listens on (bound to 127.0.0.1 only); skips the
    test when all are taken."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {ports.start}-{ports.stop - 1} for {what}")


def serve_app(home: Path, port: int, log, env: dict | None = None, timeout: float = 90.0):
    """``streamlit run serve.py`` (the app and its live route, as the README starts it) on
    127.0.0.1:``port`` with the store in ``home`` (one torch thread, plus ``env``); returns
    the process once ``/_stcore/health`` answers."""
    env = {**os.environ, "BSQ_HOME": str(home), "BSQ_TORCH_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"streamlit on port {port} did not become healthy in {timeout} s")


def stop_app(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


TINY = dict(
    pretrain_epochs=1, bsq_epochs=2, finetune_epochs=1, requant_interval=1,
    max_train=256, max_test=128,
)  # fmt: skip


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    *,
    every: float = 0.05,
    what: str | Callable[[], str] = "condition",
) -> Any:
    """Call ``predicate`` every ``every`` seconds until it returns something truthy, and
    return that; after ``timeout`` seconds fail with ``what`` (a callable is asked then,
    e.g. for the page's text at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {detail}")
        time.sleep(every)


def continuous_planes(shape, n_bits: int, seed: int):
    """Converted planes moved off 0/1 as training does (some values leave [-1, 1]), with
    gradients: (pos, neg, scale)."""
    import torch

    from bsq_engine.core.functional import to_bit_planes

    gen = torch.Generator().manual_seed(seed)
    pos, neg, scale = to_bit_planes(torch.randn(shape, generator=gen), n_bits)
    pos = (pos + 0.6 * torch.rand(pos.shape, generator=gen)).requires_grad_()
    neg = (neg + 0.3 * torch.rand(neg.shape, generator=gen)).requires_grad_()
    return pos, neg, (scale * 1.3).requires_grad_()

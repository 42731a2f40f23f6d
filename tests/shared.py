"""Plain helpers shared by test modules; the fixtures themselves live in ``conftest.py``.

- ``TINY``: the settings of the tiny run every training test uses (MLP on 256 digits,
  1 pretrain + 2 BSQ epochs re-quantized each epoch + 1 finetune epoch: about a second).
- ``wait_for``: the one poll-until of the suite (jobs, AppTest pages, the browser).
- ``BROWSER_MARKS`` / ``CHROMIUM``: how a browser test module marks and skips itself.
- ``free_port``: a free local port from a given range (torchrun's rendezvous, Ray's GCS).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["BROWSER_MARKS", "CHROMIUM", "TINY", "free_port", "wait_for"]

CHROMIUM = Path("/usr/bin/chromium")

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

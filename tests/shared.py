"""Plain helpers shared by test modules; the fixtures themselves live in ``conftest.py``.

- ``TINY``: the settings of the tiny run every training test uses (MLP on 256 digits,
  1 pretrain + 2 BSQ epochs re-quantized each epoch + 1 finetune epoch: about a second).
- ``wait_for``: the one poll-until of the suite (jobs, AppTest pages, the browser).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["TINY", "wait_for"]

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

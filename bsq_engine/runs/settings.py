"""Server settings of the app's job manager, read from the environment once per manager.

=============================  =========================================================
``BSQ_MAX_CONCURRENT``         runs trained at the same time (default: what the machine
                               allows, see :func:`default_max_concurrent`)
``BSQ_WORKER``                 ``process`` (default for the app: each run trains in a
                               child process) or ``thread`` (in the server process)
``BSQ_MAX_QUEUED_PER_USER``    queued (not yet running) runs one name may have (default 6,
                               one alpha sweep of the default 5 points plus one)
``BSQ_TORCH_THREADS``          intra-op threads per run (see ``jobs.default_torch_threads``)
=============================  =========================================================

Why a child process by default: a Streamlit server runs every session's script in the same
Python process, so with threads the training loop shares one GIL with every viewer's
reruns; ``benchmarks/classroom_load.py`` measured the epoch time stretch with viewers (see
README, "Serving a classroom").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["TORCH_THREADS_ENV", "ServerSettings", "default_max_concurrent", "default_torch_threads"]


WORKER_KINDS = ("process", "thread")
TORCH_THREADS_ENV = "BSQ_TORCH_THREADS"


def default_torch_threads() -> int | None:
    """Intra-op threads for training: ``$BSQ_TORCH_THREADS``, else one core left free on
    small machines, else None (keep torch's own choice).

    ``torch.set_num_threads`` is process-wide, and the Streamlit server shares the process
    with the workers: on a 2-core laptop, training on both cores starves the page's script
    runs and websocket (ticks arrive late, clicks feel dead). Leaving one core free costs
    little because small models barely scale past one thread
    (``benchmarks/snapshot_and_store.py --threads-compare`` measures both sides).
    """
    raw = os.environ.get(TORCH_THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{TORCH_THREADS_ENV} must be a whole number >= 1, got {raw!r}.")
        return int(raw)
    cores = os.cpu_count() or 1
    return max(1, cores - 1) if cores <= 4 else None


def default_max_concurrent(cuda_devices: int, cores: int | None = None) -> int:
    """One run per GPU; on CPU one run per two cores beyond the first, at least one.

    A choice of ours, not the paper's: small models barely scale past two intra-op threads,
    and one core stays free for the server and the viewers' script runs.
    """
    if cuda_devices > 0:
        return cuda_devices
    cores = cores or os.cpu_count() or 1
    return max(1, (cores - 1) // 2)


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {raw!r}; unset it: {default}.")
    return int(raw)


@dataclass(frozen=True)
class ServerSettings:
    max_concurrent: int
    worker: str = "process"
    max_queued_per_user: int = 6

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.max_queued_per_user < 1:
            raise ValueError("max_concurrent and max_queued_per_user must be >= 1.")
        if self.worker not in WORKER_KINDS:
            raise ValueError(f"worker must be one of {WORKER_KINDS}, got {self.worker!r}.")

    @classmethod
    def from_env(cls, cuda_devices: int = 0) -> ServerSettings:
        worker = os.environ.get("BSQ_WORKER", "").strip().lower() or "process"
        if worker not in WORKER_KINDS:
            raise ValueError(f"BSQ_WORKER must be 'process' or 'thread', got {worker!r}.")
        return cls(
            max_concurrent=_positive_int(
                "BSQ_MAX_CONCURRENT", default_max_concurrent(cuda_devices)
            ),
            worker=worker,
            max_queued_per_user=_positive_int("BSQ_MAX_QUEUED_PER_USER", 6),
        )

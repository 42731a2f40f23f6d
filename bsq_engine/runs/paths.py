"""Where a store keeps its files: the one home of run paths.

Runner (writes checkpoints), export (reads the final one), the job manager and the pages'
Learn view (the float cache) all ask here, so no module climbs to another one for a path.

Layout under the store's home::

    runs.db                          the SQLite run store
    runs/<run_id>/checkpoint.safetensors
    runs/<run_id>/error.log          traceback of an unexpected failure
    runs/<run_id>/sensitivity.json   per-layer sensitivity, measured once (sensitivity_cache)
    float_cache/<key>.safetensors    pretrained float models shared by runs
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "cache_dir", "checkpoint_path", "db_path", "error_log_path", "run_folder",
    "sensitivity_path",
]  # fmt: skip


CHECKPOINT_FILE = "checkpoint.safetensors"  # in each run folder; `store repair` reads it too


def db_path(home: str | Path) -> Path:
    """The store's SQLite file."""
    return Path(home) / "runs.db"


def run_folder(home: str | Path, run_id: str) -> Path:
    """Checkpoints, exports and logs of one run (``RunStore.run_dir`` checks and creates it)."""
    return Path(home) / "runs" / run_id


def cache_dir(home: str | Path) -> Path:
    """Folder of the pretrained float models shared by every run of one store."""
    return Path(home) / "float_cache"


def checkpoint_path(store, run_id: str) -> Path:
    """The run's single, atomically replaced checkpoint (export reads the final one).

    ``store``: a ``RunStore``; its ``run_dir`` checks the id and creates the folder.
    """
    return store.run_dir(run_id) / CHECKPOINT_FILE


def error_log_path(store, run_id: str) -> Path:
    """The traceback of a run that failed unexpectedly (its message points here)."""
    return store.run_dir(run_id) / "error.log"


def sensitivity_path(store, run_id: str) -> Path:
    """The run's measured per-layer sensitivity (JSON, ``runs.sensitivity_cache``)."""
    return store.run_dir(run_id) / "sensitivity.json"

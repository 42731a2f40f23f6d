"""Opening the run store's SQLite file, and the errors a store reports.

Connections run in autocommit mode with explicit ``BEGIN IMMEDIATE`` transactions, in WAL
mode so readers (pages, CLI) and the training thread never block each other.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = [
    "BUSY_TIMEOUT_MS",
    "RunNotFound",
    "StoreError",
    "SweepNotFound",
    "connect",
    "enable_wal",
    "unreadable",
]

BUSY_TIMEOUT_MS = 30_000


class StoreError(RuntimeError):
    """The store file cannot be used as it is; the message says what to do."""


class _NotFound(KeyError):
    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class RunNotFound(_NotFound):
    """No run with that id (a KeyError, so ``dict``-style callers can catch it)."""


class SweepNotFound(_NotFound):
    """No sweep with that id."""


def connect(db_path: Path, *, wal: bool = True) -> sqlite3.Connection:
    """Open one connection in autocommit mode; transactions are explicit (BEGIN IMMEDIATE).

    ``wal=False`` is for the first connection, which validates and migrates the file before
    anything is written to it (a foreign or corrupt file is left exactly as it was).
    """
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if wal:
            enable_wal(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise unreadable(db_path, exc) from exc
    return conn


def enable_wal(conn: sqlite3.Connection) -> None:
    """WAL: readers (pages, CLI) never block the training thread's writes, nor it them."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL, much faster


def unreadable(db_path: Path, exc: Exception) -> StoreError:
    """The error for a file that is not a usable store; it says how to recover (never by
    moving the index away: `store repair` keeps a copy and rebuilds it)."""
    writable = os.access(db_path.parent, os.W_OK) and (
        not db_path.exists() or os.access(db_path, os.W_OK)
    )
    if not writable:  # the file is fine; the folder or the file is read-only for us
        return StoreError(
            f"{db_path} cannot be written ({exc}): its folder or the file is read-only. Make "
            "them writable, or set BSQ_HOME to a writable folder; nothing was changed."
        )
    return StoreError(
        f"{db_path} is not a usable BSQ Explorer run store ({exc}). Nothing was changed. "
        "`python -m bsq_engine store repair` keeps a copy of it, then rebuilds the index "
        "from the run folders; or set BSQ_HOME to another folder."
    )

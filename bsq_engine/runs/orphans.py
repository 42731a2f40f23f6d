"""Recognising runs whose process died: a `running` or `queued` row nobody will work on."""

from __future__ import annotations

import os
import socket
import sqlite3

__all__ = ["orphan_reason", "queued_orphan_reason"]


def orphan_reason(row: sqlite3.Row, *, owned: bool, now: float, stale_after: float) -> str | None:
    """Why a `running` row's owner is presumed dead, or None while it may be alive.

    Same host: the pid decides (a run this process owns is never an orphan; our own pid on a
    run we do not own was inherited from a dead process). Another host, or a live pid that
    may have been reused by an unrelated process: a heartbeat older than ``stale_after``.
    """
    pid, host = row["pid"], row["hostname"]
    where = f"process {pid} on {host}"
    if host == socket.gethostname() and pid is not None:
        if pid == os.getpid():
            return None if owned else f"{where} ended (this new process reuses its pid)"
        if not _pid_alive(pid):
            return f"{where} ended without finishing the run"
    silent = now - (row["heartbeat"] or row["started_at"] or row["created_at"])
    if silent > stale_after:
        return f"{where} sent no heartbeat for {silent:.0f} s"
    return None


def queued_orphan_reason(row: sqlite3.Row) -> str | None:
    """Why a `queued` row will never start, or None while its owner may still start it.

    A queued run lives in one process's job queue, and queued runs send no heartbeat, so
    only the pid can tell: on this host a dead owner (or none recorded, as older releases
    wrote) means the run was orphaned. Runs queued on another host are left alone.
    """
    pid, host = row["pid"], row["hostname"]
    if pid is None:
        return "queued by a process that left no owner (an older BSQ Explorer)"
    if host == socket.gethostname() and pid != os.getpid() and not _pid_alive(pid):
        return f"process {pid} on {host} ended before starting the run"
    return None


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True  # undecidable here; the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True

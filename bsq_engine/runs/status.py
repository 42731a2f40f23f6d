"""The one home of a run's life cycle: its statuses and the legal steps between them.

Every module that asks "is this run still going?" or "may it be resumed?" imports the answer
from here; no status is spelled as a string anywhere else.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE",
    "ENDED",
    "RESUMABLE",
    "TRANSITIONS",
    "RunStatus",
    "check_transition",
    "parse_status",
]


class RunStatus(StrEnum):
    """Life cycle of a run; ``interrupted`` means its process died without saying so."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


_S = RunStatus
# Deleting is always allowed and is not a status; finished runs are final.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.STOPPED, _S.FAILED}),
    _S.RUNNING: frozenset({_S.FINISHED, _S.FAILED, _S.STOPPED, _S.INTERRUPTED}),
    _S.INTERRUPTED: frozenset({_S.QUEUED, _S.RUNNING}),
    _S.STOPPED: frozenset({_S.QUEUED, _S.RUNNING}),
    _S.FAILED: frozenset({_S.QUEUED, _S.RUNNING}),
    _S.FINISHED: frozenset(),
}
ENDED = frozenset({_S.FINISHED, _S.FAILED, _S.STOPPED, _S.INTERRUPTED})
#: A process is (or was, until it died unseen) working on these.
ACTIVE = frozenset({_S.QUEUED, _S.RUNNING})
#: These can be queued again and continue from their last checkpoint.
RESUMABLE = frozenset({_S.STOPPED, _S.INTERRUPTED, _S.FAILED})


def parse_status(status: str | RunStatus) -> RunStatus:
    """Accept the enum or its string value; a typo names the valid choices."""
    try:
        return RunStatus(status)
    except ValueError:
        valid = ", ".join(s.value for s in RunStatus)
        raise ValueError(f"Unknown run status {status!r}; use one of: {valid}.") from None


def check_transition(run_id: str, old: str, new: RunStatus) -> None:
    """Raise ValueError unless ``old -> new`` is a legal step of the life cycle."""
    old_status = parse_status(old)
    allowed = TRANSITIONS[old_status]
    if new not in allowed:
        choices = ", ".join(sorted(s.value for s in allowed)) or "nothing (delete it instead)"
        raise ValueError(
            f"Run {run_id!r} cannot go from {old_status.value} to {new.value}; "
            f"from {old_status.value} it can go to: {choices}."
        )

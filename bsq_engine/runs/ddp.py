"""One run trained by every process of a ``torchrun`` job; only rank 0 touches the store.

Rank 0 creates (or, to resume, reads) the run in its store, then sends the run id, the
config and the resume checkpoint to the other ranks, so they need neither the store nor the
run's folder (on a second machine neither exists). Rank 0 trains through
:func:`runner.execute_run`, exactly like a single-process run: store rows, checkpoints,
outcome -> status. The other ranks train the same pipeline with no callbacks at all.
"""

from __future__ import annotations

import logging
import threading

from bsq_engine.runs import runner
from bsq_engine.runs.ownership import CLI_OWNER
from bsq_engine.runs.status import RESUMABLE
from bsq_engine.runs.store import RunStore
from bsq_engine.training import distributed
from bsq_engine.training.config import RunConfig
from bsq_engine.training.trainer import DivergenceError, RunStopped, Trainer

__all__ = ["train_distributed"]

log = logging.getLogger(__name__)


def _prepare_on_rank0(store, config, run_id):
    """``(run_id, config dict, checkpoint, error)``: what every rank needs to start."""
    try:
        if run_id is None:
            run_id = store.create_run(config.to_dict(), name=config.name, owner=CLI_OWNER)
            return run_id, config.to_dict(), None, None
        status = store.get_run(run_id)["status"]
        if status not in RESUMABLE:
            raise ValueError(
                f"Run {run_id!r} is {status}; only stopped, interrupted or failed runs resume."
            )
        config, checkpoint = runner.load_resume_point(store, run_id)
        return run_id, config.to_dict(), checkpoint, None
    except (ValueError, KeyError) as exc:  # ResumeError, RunNotFound: all ranks give up
        return run_id, None, None, exc


def train_distributed(
    config: RunConfig | None = None,
    *,
    run_id: str | None = None,
    home=None,
    stop_event: threading.Event | None = None,
    callbacks=(),
    rank_callbacks=(),
) -> dict | None:
    """Call on every rank. A new run from ``config``, or ``run_id`` to resume.

    Returns the run dict on rank 0 (as :func:`runner.execute_run` does) and None on the
    others. ``callbacks`` (a progress bar) run on rank 0 only; ``rank_callbacks`` on every
    rank (checks that compare ranks; they must not write the store). Raises on every rank when
    rank 0 cannot start the run (bad id, unreadable checkpoint): nothing was changed then.
    """
    info = distributed.init_from_env()
    stop_event = stop_event or threading.Event()
    store = RunStore(home) if info.is_main else None
    try:
        start = _prepare_on_rank0(store, config, run_id) if info.is_main else None
        error = start[3] if info.is_main else None
        shared = None if start is None else (*start[:3], None if error is None else str(error))
        run_id, config_dict, checkpoint, message = distributed.broadcast_object(shared, info)
        if error is not None:
            raise error
        if message is not None:
            raise ValueError(f"rank 0 could not start the run: {message}")
        if info.is_main:
            return runner.execute_run(
                store, run_id, stop_event=stop_event, callbacks=(*callbacks, *rank_callbacks),
                resume=config is None,
            )  # fmt: skip
        _follow(RunConfig.from_dict(config_dict), checkpoint, stop_event, info, rank_callbacks)
        return None
    finally:
        if store is not None:
            store.close()
        distributed.finalize()


def _follow(config: RunConfig, checkpoint, stop_event, info, callbacks) -> None:
    """Rank > 0: the same pipeline; no store, no checkpoints (rank 0 sends the cached float
    model, the config and the resume point).

    A stop or a divergence is agreed by all ranks at the same step and rank 0 records it.
    Anything else (this node lacks the dataset...) propagates: the process exits non-zero
    and torchrun ends the whole job at once instead of leaving rank 0 waiting.
    """
    try:
        Trainer(config, list(callbacks), stop_event=stop_event).run(resume=checkpoint)
    except (RunStopped, DivergenceError) as exc:
        log.info("rank %d ended: %s", info.rank, exc)

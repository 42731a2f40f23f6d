"""Everything the pages read from disk: runs as DataFrames, exports, models, references.

A run that is live in this process is read from the job manager's snapshot (fresh, no disk)
on top of what the store already holds; any other run comes from the store alone. Only
ended runs are cached: a running run must never be served stale. ``dashboard.views`` stays
pure because every file, checkpoint and store read happens here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import torch
from torch import nn

from bsq_engine.core.quantize import BSQConfig, prepare_bsq
from bsq_engine.data import DatasetUnavailable, get_dataset_info
from bsq_engine.models import create_model
from bsq_engine.runs.export import export_run, load_run_model
from bsq_engine.runs.paths import cache_dir
from bsq_engine.runs.sensitivity_cache import cached_sensitivity, sensitivity_of
from bsq_engine.runs.settings import default_torch_threads
from bsq_engine.runs.status import ACTIVE, RunStatus
from bsq_engine.runs.store import RunNotFound
from bsq_engine.training import run_model
from bsq_engine.training.checkpoint import CheckpointError
from bsq_engine.training.config import RunConfig
from bsq_engine.training.float_cache import FloatCache
from bsq_engine.training.presets import make_config
from dashboard.ui.state import manager, store
from dashboard.views import compare, curves, frames, pareto, plain
from dashboard.views.colors import PALETTE, run_colors

__all__ = [
    "RunView",
    "color_of",
    "export_files",
    "forget_run_colors",
    "lesson_model",
    "list_runs_frame",
    "load_references",
    "load_run_view",
    "measure_sensitivity",
    "model_for_lesson",
    "planned_layers",
    "run_sensitivity",
    "scheme_file",
]

_CACHE_TTL_S = 300


class RunView:
    """Everything the run panel shows about one run.

    ``run``: the store's run dict (config, summary, error, ...; ``status`` already reflects
    the live snapshot). ``epochs``: one row per epoch (frames.EPOCH_COLUMNS). ``layers``: the
    latest layer snapshot (frames.LAYER_COLUMNS). ``snapshots``: every layer snapshot, read
    from the store on first use (live ticks never need it). ``events``: precision-change
    events in training order. ``snapshot``: the manager's live snapshot dict when the run is
    live in this process (``live`` True), else None.

    A live view (:func:`load_run_view`) is made from records and builds its ``epochs`` and
    ``layers`` frames on first use: the progress part of the panel reads a new view about
    once a second and needs only counts and the last epoch (:attr:`n_epochs`,
    :meth:`last_epoch`), while the frames are needed only when figures are built, every
    8-10 s. Views are shared read-only across sessions; two sessions building the same
    frames at once build equal ones.
    """

    def __init__(
        self, run: dict, epochs: pd.DataFrame | None = None, layers: pd.DataFrame | None = None,
        events: list[dict] | None = None, live: bool = False, snapshot: dict | None = None,
        *, records: tuple[list[dict], list[dict]] | None = None,
    ) -> None:  # fmt: skip
        """Either the frames (``epochs``, ``layers``) or ``records``: the epoch and layer
        records they are built from, when first asked for (``_live_frames``)."""
        if records is None and (epochs is None or layers is None):
            raise ValueError("RunView needs its epochs and layers frames, or their records")
        self.run, self.events, self.live, self.snapshot = run, events or [], live, snapshot
        self._epochs, self._layers, self._records = epochs, layers, records
        self._snapshots: pd.DataFrame | None = None
        self._steps: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"RunView({self.run.get('run_id')!r}, {self.status!r}, {self.n_epochs} epochs)"

    def _build_frames(self) -> None:
        epochs, layers = self._records
        self._epochs, self._layers = _live_frames(self.run_id, epochs, layers)

    @property
    def epochs(self) -> pd.DataFrame:
        if self._epochs is None:
            self._build_frames()
        return self._epochs

    @property
    def layers(self) -> pd.DataFrame:
        if self._layers is None:
            self._build_frames()
        return self._layers

    @property
    def n_epochs(self) -> int:
        """``len(self.epochs)``, without building the frame."""
        return len(self._records[0]) if self._epochs is None else len(self._epochs)

    @property
    def n_layers(self) -> int:
        """``len(self.layers)``, without building the frame."""
        return len(self._records[1]) if self._layers is None else len(self._layers)

    def last_epoch(self, stage: str | None = None) -> dict | None:
        """The last row of ``epochs`` (of ``stage`` only, if given) as a dict, None when
        there is none; from the records while the frame is not built."""
        if self._epochs is None:
            records = self._records[0]
            if stage is not None:
                records = [r for r in records if r.get("stage") == stage]
            return frames.last_epoch(records)
        rows = self._epochs if stage is None else self._epochs[self._epochs["stage"] == stage]
        return None if rows.empty else rows.iloc[-1].to_dict()

    @property
    def snapshots(self) -> pd.DataFrame:
        if self._snapshots is None:
            self._snapshots = frames.layers_frame(store().layer_snapshots(self.run_id))
        return self._snapshots

    @property
    def steps(self) -> pd.DataFrame:
        """The stored per-step series (``curves.series_frame``), read on first use; a live
        run's panel draws the job manager's thinner live curve instead."""
        if self._steps is None:
            self._steps = curves.series_frame(store().step_points(self.run_id))
        return self._steps

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    @property
    def status(self) -> str:
        return self.run["status"]

    @property
    def active(self) -> bool:
        """Queued or running: the panel polls while this is true."""
        return self.status in ACTIVE

    @property
    def config(self) -> dict:
        return self.run.get("config") or {}

    @property
    def max_bits(self) -> int:
        """Width of the density grid: the config's max_bits, widened if a layer needs it.

        A uniform k-bit run's planes are b(k-1)..b0 by place value; in an 8-wide grid they
        would sit under b7..b4 with grey "dropped" cells after them, though nothing was
        dropped. Its grid is k wide."""
        if self.run.get("method") == "uniform" and self.config.get("uniform_bits"):
            width = int(self.config["uniform_bits"])
        else:
            width = int(self.config.get("max_bits") or 8)
        for offset, density in zip(
            self.layers.get("msb_offset", []), self.layers.get("density", [])
        ):
            width = max(width, int(offset) + len(density))
        return width

    def layers_in_grid(self, width: int) -> pd.DataFrame:
        """The latest layers placed in a grid ``width`` planes wide: a uniform run's planes
        are its LSB end (b(k-1)..b0), so they move right by ``width - k``."""
        shift = width - self.max_bits
        if self.run.get("method") != "uniform" or shift <= 0 or self.layers.empty:
            return self.layers
        return self.layers.assign(msb_offset=self.layers["msb_offset"] + shift)


def load_run_view(run_id: str) -> RunView:
    """The run's current view; raises ``RunNotFound`` (a KeyError) for an unknown id."""
    snap = _live_snapshot(run_id)
    run = store().get_run(run_id)
    if snap is not None:
        return _live_view(run, snap)
    if run["status"] in ACTIVE:  # queued here, or running in another process (CLI)
        return _store_view(run)
    key = (str(store().home), run["status"], run.get("finished_at"))
    return _ended_view(run_id, key)


def _live_snapshot(run_id: str) -> dict | None:
    try:
        return manager().snapshot(run_id)
    except (KeyError, AttributeError):  # AttributeError: a queued job has no buffer yet
        return None


@st.cache_data(ttl=_CACHE_TTL_S, max_entries=64, show_spinner=False)
def _ended_view(run_id: str, cache_key: tuple) -> RunView:
    # `cache_key` is hashed with run_id (a leading underscore would exclude it):
    # it changes when the run is resumed and ends again, or the store is another one.
    view = _store_view(store().get_run(run_id))
    view.snapshots  # noqa: B018 - load now, so the cached copy carries it
    view.steps  # noqa: B018
    return view


def _store_view(run: dict) -> RunView:
    db, run_id = store(), run["run_id"]
    return RunView(
        run=run,
        epochs=frames.epochs_frame(db.epochs(run_id)),
        layers=frames.layers_frame(db.latest_layers(run_id)),
        events=db.events(run_id),
    )


def _live_view(run: dict, snap: dict) -> RunView:
    """The live snapshot holds every epoch so far (it loads the stored ones on start) and
    the latest layers, so a tick reads only the run row and the events from SQLite. Their
    frames are built when first used, from what changed since the run's last frames
    (:func:`_live_frames`)."""
    db, run_id = store(), run["run_id"]
    epochs = snap.get("epochs") or db.epochs(run_id)
    layers = snap.get("layers")
    if layers:
        epoch = int(snap.get("global_epoch") or 0)
        layers = [{"global_epoch": epoch, "layer_index": i, **r} for i, r in enumerate(layers)]
    else:
        layers = db.latest_layers(run_id)
    return RunView(
        run={**run, "status": snap.get("status") or run["status"]},
        events=_merge_events(db.events(run_id), snap.get("events") or []),
        live=True,
        snapshot=snap,
        records=(epochs, layers),  # the frames are built when first asked for
    )


@dataclass
class _Built:
    """A live run's last epochs and layers frames and the records they were built from."""

    epochs: list[dict]
    epochs_df: pd.DataFrame
    layers: list[dict]
    layers_df: pd.DataFrame


_BUILT: dict[str, _Built] = {}  # run id -> its last live frames (a few live runs at a time)
_BUILT_MAX = 32
_BUILT_LOCK = threading.Lock()  # sessions' script threads read views of one run at once


def _live_frames(run_id: str, epochs: list[dict], layers: list[dict]):
    """``(epochs_frame(epochs), layers_frame(layers))``, reusing the run's last ones: its
    epochs only grow (only the new ones are converted) and its layers change once an epoch.
    Views are shared read-only, so a frame may serve several views. The previous records
    are compared, not trusted: a run resumed with other epochs gets whole new frames."""
    with _BUILT_LOCK:
        built = _BUILT.get(run_id)
    epochs_df = layers_df = None
    if built is not None:
        n = len(built.epochs)  # the same first and last of those epochs: only appended to
        grown = len(epochs) >= n and epochs[:1] == built.epochs[:1]
        if grown and (n == 0 or epochs[n - 1] == built.epochs[-1]):
            epochs_df = frames.extend_epochs_frame(built.epochs_df, epochs[n:])
        if layers == built.layers:
            layers_df = built.layers_df
    if epochs_df is None:
        epochs_df = frames.epochs_frame(epochs)
    if layers_df is None:
        layers_df = frames.layers_frame(layers)
    with _BUILT_LOCK:
        _BUILT.pop(run_id, None)  # re-inserted last: the oldest run is dropped first
        _BUILT[run_id] = _Built(epochs, epochs_df, layers, layers_df)  # fresh lists: kept
        while len(_BUILT) > _BUILT_MAX:
            _BUILT.pop(next(iter(_BUILT)))
    return epochs_df, layers_df


def _merge_events(stored: list[dict], live: list[dict]) -> list[dict]:
    seen = {(e.get("stage"), e.get("epoch"), e.get("layer")) for e in stored}
    extra = [e for e in live if (e.get("stage"), e.get("epoch"), e.get("layer")) not in seen]
    return [*stored, *extra]


@st.cache_data(max_entries=32, show_spinner=False)
def planned_layers(config: dict) -> pd.DataFrame:
    """``run_model.planned_layers`` of a stored config as a layers frame (empty when the
    run has no planned start: a mixed-scheme method, or data that cannot be shaped)."""
    try:
        return frames.layers_frame(run_model.planned_layers(RunConfig.from_dict(config)))
    except (ValueError, KeyError, DatasetUnavailable):
        return frames.layers_frame([])


def color_of(run_id: str) -> str:
    """The run's colour on every page (``views.colors``): ranked among the same rows the
    Compare page lists (damaged rows left out), without its warnings. The ranking is read
    at most every ``_COLORS_TTL_S`` (a live run's figures ask at each rebuild, and listing
    a class's runs is the costly part); a run newer than that ranking is ranked now."""
    colors = _run_colors(str(store().home))
    if run_id not in colors:
        forget_run_colors()
        colors = _run_colors(str(store().home))
    return colors.get(run_id, PALETTE[-1])  # not in the store (deleted): as run_colors does


def forget_run_colors() -> None:
    """Rank again at the next :func:`color_of` (after this app deleted runs: the colours
    of later runs move up; a deletion by another process shows within the TTL)."""
    _run_colors.clear()


_COLORS_TTL_S = 10.0


@st.cache_data(ttl=_COLORS_TTL_S, max_entries=4, show_spinner=False)
def _run_colors(home: str) -> dict[str, str]:
    return run_colors(frames.runs_frame(store().list_runs()))


def list_runs_frame(**filters: Any) -> pd.DataFrame:
    """All runs matching ``RunStore.list_runs`` filters, as ``frames.runs_frame`` rows.

    Not cached: it is one indexed query, and running runs must show fresh numbers. Damaged
    rows are left out; the unfiltered listing (every page that lists runs makes one) warns
    about each, once per page, saying how to repair the store.
    """
    runs = store().list_runs(**filters)
    unfiltered = all(v is None for v in filters.values())
    for run_id, why in store().skipped_rows() if unfiltered else []:
        run_id, why = plain.md(run_id), plain.md(why)  # row text is not ours: never Markdown
        st.warning(
            f"Run {run_id} is damaged and is not listed ({why}). Run "
            "`python -m bsq_engine store repair` to rebuild it from its folder.",
            icon=":material/warning:",
        )
    return frames.runs_frame(runs)


@st.cache_data(ttl=_CACHE_TTL_S, max_entries=64, show_spinner="Preparing exports...")
def _export(home: str, run_id: str, finished_at: float | None) -> dict[str, str]:
    out = store().run_dir(run_id) / "export"
    result = export_run(store(), run_id, out)
    return {name: str(path) for name, path in result["files"].items()}


def export_files(run_id: str) -> dict[str, Path]:
    """Export a finished run into ``<run folder>/export`` once; {file name: path}.

    Raises what ``export_run`` raises (e.g. a missing checkpoint) with its message.
    """
    run = store().get_run(run_id)
    files = _export(str(store().home), run_id, run.get("finished_at"))
    paths = {name: Path(p) for name, p in files.items()}
    if not all(p.exists() for p in paths.values()):  # folder removed behind our back
        _export.clear()
        files = _export(str(store().home), run_id, run.get("finished_at"))
        paths = {name: Path(p) for name, p in files.items()}
    return paths


def scheme_file(db, run: dict, layers: list[dict]) -> Callable[[], bytes]:
    """A callable for a deferred download: the exported ``scheme.json`` of a finished run
    (written into its folder once), else the scheme from the stored summary."""

    def _data() -> bytes:
        if run.get("status") == RunStatus.FINISHED:
            folder = db.run_dir(run["run_id"]) / "export"
            try:
                if not (folder / "scheme.json").exists():
                    export_run(db, run["run_id"], folder)
                return (folder / "scheme.json").read_bytes()
            except Exception:  # no final checkpoint (e.g. records written without training)
                pass
        return compare.scheme_json(run, layers)

    return _data


REFERENCE_PATH = Path(__file__).resolve().parents[2] / "assets" / "paper_reference.csv"


def load_references(path: Path | str = REFERENCE_PATH) -> pd.DataFrame:
    """Published figures of the paper (``assets/paper_reference.csv``) for the Pareto page."""
    return pareto.references_frame(pd.read_csv(path))


# ---------------------------------------------------------------- the Learn page's models
LESSON_DATASET = "digits"


def lesson_model(model_name: str = "mlp", home: Path | str | None = None) -> tuple[nn.Module, str]:
    """A model converted to 8-bit planes for the lesson, and where its weights come from.

    The float weights are the store's cached pretrained model of the preset (the one a
    "Try it" run trains) when it exists, else a fresh initialisation.
    """
    info = get_dataset_info(LESSON_DATASET)
    torch.manual_seed(0)
    model = create_model(
        model_name, in_channels=info.in_channels, num_classes=info.num_classes,
        image_size=info.image_size,
    )  # fmt: skip
    source = f"a freshly initialised (untrained) {model_name}"
    if home is not None:
        hit = FloatCache(cache_dir(home)).load(make_config(model_name, LESSON_DATASET), model)
        if hit is not None:
            source = f"the pretrained float {model_name} of this store (test accuracy {hit[0]:.1%})"
    return prepare_bsq(model, BSQConfig()), source


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _model(run_id: str | None, finished_at: float | None, home: str, fresh: str):
    # finished_at keys the cache: a resumed and re-finished run has a new final model.
    if run_id is not None:
        try:
            model, config, _ = load_run_model(store(), run_id)
            return model, f"the final model of run **{run_id}** ({config.model})"
        except (CheckpointError, RunNotFound, ValueError):
            pass
    return lesson_model(fresh, home)


def model_for_lesson(run: dict | None, fresh: str) -> tuple[nn.Module, str]:
    """The final model of ``run`` (a store run dict), else the ``fresh`` lesson model; with
    a sentence saying where its weights come from."""
    run_id = run["run_id"] if run else None
    return _model(run_id, run.get("finished_at") if run else None, str(store().home), fresh)


# ---------------------------------------------------------------- per-layer sensitivity
def run_sensitivity(run_id: str) -> tuple[dict | None, str | None]:
    """The run's stored sensitivity (with its bits) or ``None``, and a note when the stored
    file is damaged. Not cached: a small JSON file, and another viewer may measure it."""
    return cached_sensitivity(store(), run_id)


def measure_sensitivity(run_id: str, recompute: bool = False) -> dict:
    """Measure (seconds on the small models) and store; a second viewer asking for the same
    run meanwhile waits for the first measurement and reads it (one lock per run)."""
    # The training rule of this server (``BSQ_TORCH_THREADS``, else a core left free on small
    # machines). With torch's default of every core, the loaded 2-core machine took 8.6x
    # to 25x the wall time (spinning threads; benchmarks/sensitivity_cost.py). Process-wide
    # and kept, as the job manager's thread worker does: restoring would race a 2nd viewer.
    threads = default_torch_threads()
    if threads:
        torch.set_num_threads(threads)
    return sensitivity_of(store(), run_id, recompute=recompute)

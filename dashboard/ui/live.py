"""Live run views shared by every session: read and built once per (run, version).

Thirty students watching one run must cost the server little more than one. Each viewer's
fragment asks :func:`live_frame` for the run; that costs one dict lookup (the job manager's
version counter, or a cached one-row query for runs another process trains) while nothing
changed, and returns the frame (RunView + figures) already built for that version. When
the version moves, one session reads the new view (cheap: the progress moves every
tick) while the others keep drawing the previous frame instead of waiting; the figures are
rebuilt only when stale, so builds of one run use at most 1/``BUILD_SHARE`` of a core (the
next one waits 20x the last one's CPU time, between ``MIN_BUILD_S`` and ``MAX_BUILD_S``,
8-10 s: a chart a few seconds old costs a viewer nothing, a rebuild costs every run),
however fast its epochs; the first epoch and the first layers are drawn at once, a
re-quantization after ``MIN_BUILD_S``. A module-level cache rather than
``st.cache_data``: that one unpickles a fresh copy of every figure on every hit, i.e. per
viewer per tick, which is the cost this module exists to avoid. Frames are never mutated
after they are published.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from bsq_engine.runs.status import RunStatus
from dashboard.ui.accessors import RunView, load_run_view
from dashboard.ui.state import manager, store

__all__ = ["BUILDS", "CHART_TICK_S", "LiveFrame", "chart_tick_s", "crowd_scale", "live_frame",
           "poll_interval", "queue_place", "run_age_s", "watchers", "watching"]  # fmt: skip

# Figures are rebuilt at most every MIN_BUILD_S, and the charts (with the tiles) tick as
# often: 8 s rather than 5, because at 5 s one viewer of a fast run cost the server
# 0.019-0.029 core, about half of it these rebuilds and re-sends
# (benchmarks/classroom_load.py, README "Serving a classroom"); the progress still ticks
# every 1.5 s. (TensorBoard's page reloads its data every 30 s by default.)
MIN_BUILD_S, MAX_BUILD_S, BUILD_SHARE = 8.0, 10.0, 20
# A training run's progress ticks every 1.5 s, whatever its pace: within-epoch progress of a
# slow run (LeNet-5 on Fashion-MNIST) then moves at least every ~2 s in the browser
# (benchmarks/page_response.py), and benchmarks/classroom_load.py measured a viewer's cost
# at this cadence (its fast run ticked at the 1.5 s floor).
MIN_TICK_S = MAX_TICK_S = 1.5
# A run's view is re-read at most this often for all its viewers: less than a tick, so each
# tick of a lone viewer shows new progress (a hold equal to the tick aliased: half the ticks
# found a view a few ms too young to re-read and showed the old one, a 3 s gap).
VIEW_HOLD_S = 1.2
STALLED_S, STALLED_TICK_S = 15.0, 8.0  # nothing new for 15 s: tick every 8 s
# The charts tick apart from the progress, this often: re-sending them (Plotly JSON, each
# Vega-Lite dataset converted to Arrow) is most of what a viewer's tick costs the server,
# and their figures are rebuilt at most every MIN_BUILD_S anyway.
CHART_TICK_S = MIN_BUILD_S
# Right after a Start the first steps arrive within about a second (the job manager keeps a
# training process ready): tick fast for the first seconds, then back off to the pace.
FAST_TICK_S, FAST_FOR_S, FAST_UNTIL_S = 0.4, 8.0, 20.0
# A crowd on one run ticks slower. A viewer's tick costs the server little (0.006 core per viewer,
# benchmarks/classroom_load.py) and that viewer's browser much more: one tab of the live panel
# kept its renderer's main thread 0.115-0.159 core busy, 0.061 without the charts
# (benchmarks/tab_cost.py: React re-renders each tick's elements, the charts redraw). A viewer who
# opens a run that CROWD_SIZE or more sessions already watch ticks one step slower per CROWD_SIZE
# of them (1.5 s -> 3 s -> 4.5 s; 8 s -> 16 s -> 24 s), so a class costs the server and the
# students' laptops about half the ticks. The scale is set when the page runs, never by a tick:
# changing it under viewers that are already watching made every one of them rerun its page, and
# on the 2-core machine with 30 tabs the starved tabs then dropped out of the count and back in,
# and the pages kept rerunning (the owner's Stop button did not show within 60 s). A viewer counts
# while it ticked within WATCHING_S.
CROWD_SIZE, MAX_CROWD_SCALE, WATCHING_S = 8, 3, 30.0
_MARKER_TTL_S, _QUEUE_TTL_S, _MAX_FRAMES = 0.5, 2.0, 64
BUILDS: Counter = Counter()  # builds per run id (tests: no rebuild while nothing changed)


@dataclass(frozen=True)
class LiveFrame:
    run_id: str
    version: tuple
    view: RunView
    figures: dict
    view_at: float  # when the view was read
    figures_at: float  # when the figures were built (the view may be newer)
    cost_s: float = 0.0  # CPU seconds the figures took (this thread only)
    drawn: tuple = (0, 0, 0)  # (epochs, layers, precision changes) the figures drew
    # the run has ended and these are still its live figures: the view goes out first
    # (the outcome of a Stop shows at once), the final figures are built by the next caller
    pending: bool = False
    figures_of: RunView | None = None  # the view the figures were built from (None: view)

    @property
    def figures_view(self) -> RunView:
        """The view the figures were built from: ``view`` may be newer (a new view is read
        every tick, figures are kept up to ``MIN_BUILD_S``). The tiles drawn with the
        charts show its numbers, so tiles and charts agree."""
        return self.figures_of or self.view

    @property
    def rebuild_after_s(self) -> float:
        return min(max(BUILD_SHARE * self.cost_s, MIN_BUILD_S), MAX_BUILD_S)

    def figures_fresh(self, view: RunView) -> bool:
        """Keep these figures for ``view``: same run still live, and either nothing they
        draw has changed (no new epoch, layers or precision change: the version also moves
        with the progress within an epoch, and a run with long epochs would otherwise
        redraw the same charts every few seconds), or built recently enough and not lacking
        the first epoch or the first layers (drawn at once). A re-quantization (what a
        viewer watches for) is drawn ``MIN_BUILD_S`` after the last build, without the
        longer wait a costly build earns: a fast run re-quantizes every second."""
        if not (self.view.active and view.active):
            return False
        drawn = _drawn(view)
        if drawn == self.drawn:
            return True
        epochs, layers, events = drawn
        if (epochs and not self.drawn[0]) or (layers and not self.drawn[1]):
            return False
        waited = time.monotonic() - self.figures_at
        return waited < (MIN_BUILD_S if events > self.drawn[2] else self.rebuild_after_s)


_LOCK = threading.Lock()
_FRAMES: dict[str, LiveFrame] = {}
_WATCHERS: dict[str, dict[str, float]] = {}  # run id -> {viewer id: last tick (monotonic)}
_BUILDERS: dict[str, threading.Lock] = {}
_MEMO: dict[tuple, tuple[float, object]] = {}


def _memo(key: tuple, ttl: float, compute: Callable[[], object]) -> object:
    """``compute()`` at most once per ``ttl`` seconds per key, process-wide."""
    now = time.monotonic()
    with _LOCK:
        hit = _MEMO.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    value = compute()
    with _LOCK:
        _MEMO[key] = (now, value)
    return value


def live_version(run_id: str) -> tuple:
    """Changes exactly when the run has something new to draw."""
    version = manager().version(run_id)
    if version is not None:
        return ("live", version)
    home = str(store().home)  # trained by another process (the CLI), or ended
    return ("store", _memo(("marker", home, run_id), _MARKER_TTL_S,
                           lambda: store().change_marker(run_id)))  # fmt: skip


def live_frame(run_id: str, build: Callable[[RunView], dict], *, figures: bool = True) -> LiveFrame:
    """The shared frame of ``run_id`` now; ``build(view)`` makes its figures when needed.
    ``figures=False``: the caller draws only the view (progress, outcome), so a run that
    has just ended is returned at once with its live figures (``pending``) rather than
    after the final figures' build, which other viewers may be running.

    Raises ``RunNotFound`` when the run is gone."""
    version = live_version(run_id)
    with _LOCK:
        frame = _FRAMES.get(run_id)
    done = frame is not None and (not frame.pending or not figures)
    if done and (frame.version == version or _too_soon(frame, version)):
        return frame
    with _LOCK:
        builder = _BUILDERS.setdefault(run_id, threading.Lock())
    if not builder.acquire(blocking=frame is None or (frame.pending and figures)):
        # another session is building this version: draw the last one, except where the
        # progress part may be missing the run's end (it is not live here: ended, or
        # trained by another process), which it draws at once rather than after that
        # build (the final figures of a run 30 viewers watch took seconds to build)
        if figures or version[0] != "store" or not frame.view.active:
            return frame
        view = load_run_view(run_id)
        return replace(frame, version=version, view=view, view_at=time.monotonic(),
                       pending=frame.pending or not view.active)  # fmt: skip
    try:
        with _LOCK:
            current = _FRAMES.get(run_id)
        if current is not None and current.version == version and not current.pending:
            return current
        new = _build(run_id, version, current, build, figures)
        with _LOCK:
            _FRAMES[run_id] = new
            while len(_FRAMES) > _MAX_FRAMES:
                _FRAMES.pop(next(iter(_FRAMES)))
        return new
    finally:
        builder.release()


def _too_soon(frame: LiveFrame, version: tuple) -> bool:
    """New epochs arrive faster than viewers tick: read a new view at most once a tick per
    run (however many viewers ask); a status change never waits."""
    same_kind = frame.version[0] == version[0] == "live"
    waited = time.monotonic() - frame.view_at
    steps = (frame.view.snapshot or {}).get("steps") or ()
    # until the first curve can be drawn (two steps), a new view at each fast tick
    hold = VIEW_HOLD_S if frame.view.n_epochs or len(steps) >= 2 else FAST_TICK_S
    return same_kind and frame.view.active and waited < hold


def _build(run_id: str, version: tuple, old: LiveFrame | None, build, figures=True) -> LiveFrame:
    """A new view always (progress and tiles move each tick: cheap); new figures only when
    the old ones are stale (Altair and Plotly builds are what costs). A run that has just
    ended, for a caller without figures: the new view with the live figures, ``pending``."""
    view, now = load_run_view(run_id), time.monotonic()
    if old is not None:
        ended_now = not figures and old.view.active and not view.active
        if ended_now or old.figures_fresh(view):  # the old figures with the new view
            return replace(old, version=version, view=view, view_at=now, pending=ended_now)
    started = time.thread_time()
    figures = build(view)
    with _LOCK:
        BUILDS[run_id] += 1
    return LiveFrame(run_id, version, view, figures, now, time.monotonic(),
                     time.thread_time() - started, _drawn(view), figures_of=view)  # fmt: skip


def _drawn(view: RunView) -> tuple[int, int, int]:
    return view.n_epochs, view.n_layers, len(view.events or ())


def watching(run_id: str, viewer: str) -> None:
    """Viewer ``viewer`` (a session) is watching ``run_id``'s live panel now."""
    now = time.monotonic()
    with _LOCK:
        _WATCHERS.setdefault(run_id, {})[viewer] = now
        if len(_WATCHERS) > _MAX_FRAMES:  # runs nobody has watched for a while
            last = {r: max(seen.values(), default=0.0) for r, seen in _WATCHERS.items()}
            for old in [r for r, at in last.items() if now - at > WATCHING_S]:
                _WATCHERS.pop(old)


def watchers(run_id: str, *, besides: str | None = None) -> int:
    """Sessions that ticked on ``run_id``'s live panel within the last ``WATCHING_S``,
    session ``besides`` not counted."""
    now = time.monotonic()
    with _LOCK:
        seen = _WATCHERS.get(run_id, {})
        for viewer in [v for v, at in seen.items() if now - at > WATCHING_S]:
            del seen[viewer]
        return len(seen) - (besides in seen)


def crowd_scale(run_id: str, viewer: str) -> int:
    """The tick scale for ``viewer`` opening ``run_id`` now: 1 while fewer than
    ``CROWD_SIZE`` other sessions watch it, one more per ``CROWD_SIZE`` others, at most
    ``MAX_CROWD_SCALE``. Asked when a page runs, and kept by its fragments."""
    return min(MAX_CROWD_SCALE, 1 + watchers(run_id, besides=viewer) // CROWD_SIZE)


def chart_tick_s(scale: int = 1) -> float:
    """Seconds between a viewer's chart ticks, for crowd scale ``scale``."""
    return CHART_TICK_S * scale


def poll_interval(frame: LiveFrame, scale: int = 1) -> float:
    """Seconds between a viewer's progress ticks: about half an epoch, between
    ``MIN_TICK_S`` and ``MAX_TICK_S`` (each tick re-sends the progress, so a fast run does
    not tick faster), times the crowd scale (:func:`crowd_scale`); ``STALLED_TICK_S`` when
    its live state has not moved for ``STALLED_S`` (a long evaluation, a stalled worker); a
    queued run only moves when another ends, so 3 s (or the crowd's tick, if longer); a run
    created less than ``FAST_FOR_S`` ago ticks every ``FAST_TICK_S`` (its first chart is on
    its way: only its owner watches it yet)."""
    view = frame.view
    if run_age_s(view) < FAST_FOR_S and not view.n_epochs:
        return FAST_TICK_S
    if view.status == RunStatus.QUEUED:
        return max(3.0, MIN_TICK_S * scale)
    updated = (view.snapshot or {}).get("updated_at")
    if updated is not None and time.time() - updated > STALLED_S:
        return STALLED_TICK_S
    pace = (view.snapshot or {}).get("epoch_s")
    if pace is None and view.n_epochs and "seconds" in view.epochs:
        pace = view.epochs["seconds"].tail(5).median()
    if pace is None or pace != pace:  # NaN: no timed epoch yet
        pace = 4.0
    return min(max(float(pace) / 2, MIN_TICK_S), MAX_TICK_S) * scale


def run_age_s(view: RunView) -> float:
    """Seconds since the run was created (queued)."""
    return time.time() - (view.run.get("created_at") or 0.0)


def queue_place(run_id: str) -> dict | None:
    """``{"place", "of", "ahead": [owner names], "start_s"}`` of a run queued here, else None.

    One queue read per ``_QUEUE_TTL_S`` for the whole server (20 queued runs, 30 viewers)."""
    home = str(store().home)
    places = _memo(("queue", home), _QUEUE_TTL_S, _queue_with_owners)
    for place in places:
        if place["run_id"] == run_id:
            return {**place, "of": len(places)}
    return None


def _queue_with_owners() -> list[dict]:
    places = manager().queue()
    owners = {}
    for place in places:
        try:
            owners[place["run_id"]] = store().get_run(place["run_id"]).get("owner") or "?"
        except KeyError:
            owners[place["run_id"]] = "?"
    return [{**p, "owner": owners[p["run_id"]], "ahead": [owners[r] for r in p["ahead"]]}
            for p in places]  # fmt: skip

"""Classroom app: user text and URL values stay plain text, owner-aware controls, admin
login, and the shared live frame (no rebuild while the version stands still)."""

from __future__ import annotations

import re
import threading

import pytest
from apptest_helpers import (
    button,
    make_run,
    open_page,
    page_text,
    tiny_config,
)
from streamlit.testing.v1 import AppTest

from bsq_engine.runs.jobs import get_manager
from bsq_engine.training.callbacks import Callback
from dashboard.ui import identity
from dashboard.views import plain

pytestmark = pytest.mark.usefixtures("bsq_home")

INJECTED = "x` ![t](http://host/x.png) [login](http://host/login)"
_MARKDOWN_KINDS = ("markdown", "caption", "warning", "error", "info", "success", "title",
                   "header", "subheader", "toast")  # fmt: skip
# A link, an image or a code span only forms from unescaped `[`, `!`, `(` or backquote.
_LIVE_MARKUP = re.compile(r"(?<!\\)(\]\(|!\[|`x|<a |<img )")


def _markdown_values(at) -> list[str]:
    values = []
    for kind in _MARKDOWN_KINDS:
        values += [str(e.value) for e in at.get(kind)]
    values += [str(p.proto.progress_text if hasattr(p.proto, "progress_text") else "")
               for p in at.get("progress")]  # fmt: skip
    return values


def _assert_plain(at, needle: str) -> None:
    """``needle`` is shown (as text) and nothing on the page turns it into markup."""
    assert not at.exception, at.exception
    assert needle in page_text(at), "the value should be shown, literally"
    bad = [v for v in _markdown_values(at) if _LIVE_MARKUP.search(v)]
    assert not bad, f"markup formed from user text: {bad}"


def test_md_and_html_escape_every_markup_character():
    escaped = plain.md(INJECTED + " :red[big] :material/home: **b** <b>")
    assert not _LIVE_MARKUP.search(escaped)
    assert all(f"\\{ch}" in escaped for ch in "`![]():*<>")
    assert "<" not in plain.html('<a href="http://host">x</a>')


def test_injected_run_value_in_the_url_is_plain_text():
    at = open_page(run=INJECTED)
    _assert_plain(at, INJECTED)
    assert at.warning, "an unknown run id gets a warning"


def test_run_and_dataset_names_are_plain_text():
    run_id = make_run(get_manager().store, name=INJECTED, owner="ana")
    _assert_plain(open_page(run=run_id), INJECTED)
    at = open_page("pages/runs.py", run=run_id)
    _assert_plain(at, INJECTED)
    assert INJECTED in set(at.dataframe[0].value["name"])  # table cells are never Markdown


def test_user_name_from_the_url_is_plain_text_and_cleaned():
    at = open_page(user="ana")
    assert not at.exception and "ana" in [t.value for t in at.text]
    at = open_page(user="cli")  # reserved: the session gets a guest name instead
    names = [t.value for t in at.text]
    assert "cli" not in names and any(n.startswith("guest-") for n in names)
    assert at.query_params["user"] != ["cli"]


def _select_first(at):
    key = next(d.key for d in at.dataframe if d.key and d.key.startswith("runs.table"))
    at.session_state[key] = {"selection": {"rows": [0], "columns": []}}
    return at.run()


def _sidebar_script():
    import streamlit as st

    from dashboard.ui import identity

    identity.sidebar()
    st.text(f"admin={identity.actor().admin}")


def test_admin_login(monkeypatch):
    monkeypatch.delenv("BSQ_ADMIN_PASSWORD", raising=False)
    at = AppTest.from_function(_sidebar_script, default_timeout=60).run()
    at.text_input(key="app.admin_password").set_value("anything").run()
    assert "No admin password is set" in page_text(at) and "admin=False" in page_text(at)
    monkeypatch.setenv("BSQ_ADMIN_PASSWORD", "teach")
    at.text_input(key="app.admin_password").set_value("wrong").run()
    assert "Wrong admin password" in page_text(at) and "admin=False" in page_text(at)
    at.text_input(key="app.admin_password").set_value("teach").run()
    assert "admin=True" in page_text(at) and "Admin: you can stop" in page_text(at)
    assert "teach" not in str(at.query_params)  # never in the URL


def test_only_the_owner_or_an_admin_may_delete():
    store = get_manager().store
    run_id = make_run(store, name="anas-run", owner="ana")
    at = _select_first(open_page("pages/runs.py", user="ben"))
    assert button(at, "Delete").disabled and button(at, "Resume").disabled
    assert "belongs to ana" in page_text(at)

    at = _select_first(open_page("pages/runs.py", user="ana"))
    assert not button(at, "Delete").disabled

    at = open_page("pages/runs.py", user="ben")
    at.session_state[identity.KEY_ADMIN] = True  # logged in (see test_admin_login)
    at = _select_first(at.run())
    assert not button(at, "Delete").disabled
    button(at, "Delete").click().run()
    button(at, "Yes, delete").click().run()
    assert not at.exception and store.list_runs() == []
    assert run_id not in page_text(at)


class _Hold(Callback):
    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def on_epoch_end(self, trainer, record, layers):
        self.entered.set()
        assert self.release.wait(60)


@pytest.mark.slow
def test_live_panel_stop_is_for_the_owner_and_frames_are_shared():
    from dashboard.ui import live

    manager = get_manager()
    hold = _Hold()
    run_id = manager.start(tiny_config(bsq_epochs=50), owner="ana", callbacks=(hold,))
    try:
        assert hold.entered.wait(60)
        builds = live.BUILDS[run_id]
        viewers = [open_page(run=run_id, user=name) for name in ("ben", "ana", "cy")]
        assert all(not at.exception for at in viewers)
        for at in viewers:  # ticks while nothing new happened: no rebuild
            at.run()
        assert live.BUILDS[run_id] - builds == 1, "one build for every viewer and tick"
        ben, ana = viewers[0], viewers[1]
        assert button(ben, "Stop").disabled and not button(ana, "Stop").disabled
        button(ana, "Stop").click().run()
        hold.release.set()
        assert manager.wait(run_id, timeout=60) == "stopped"
    finally:
        hold.release.set()


def _cli_run(monkeypatch):
    """A run another process trains (the store's change marker is its version, read on
    every tick), and a figures builder that counts its calls."""
    from dashboard.ui import live

    store = get_manager().store
    run_id = make_run(store, status="queued", name="cli-run", owner="cli")
    store.set_status(run_id, "running")
    calls = []

    def build(view):
        calls.append(view.run_id)
        return {}

    monkeypatch.setattr(live, "_MARKER_TTL_S", 0.0)
    return store, run_id, build, calls


def test_shared_frame_is_rebuilt_only_when_the_version_moves(monkeypatch):
    """A run another process trains (the store's change marker is its version)."""
    from dashboard.ui import live

    store, run_id, build, calls = _cli_run(monkeypatch)
    monkeypatch.setattr(live, "MIN_BUILD_S", 3600.0)  # figures stay fresh while it runs
    zero = live.live_frame(run_id, build)
    store.add_epochs(run_id, [{"stage": "pretrain", "epoch": 1, "global_epoch": 1,
                               "test_acc": 0.5, "seconds": 1.0}])  # fmt: skip
    first = live.live_frame(run_id, build)  # the first epoch is drawn at once
    assert first.figures is not zero.figures and len(calls) == 2
    for _ in range(5):  # viewers' ticks with nothing new: the same frame, no build
        assert live.live_frame(run_id, build) is first
    assert len(calls) == 2
    store.add_epochs(run_id, [{"stage": "pretrain", "epoch": 2, "global_epoch": 2,
                               "test_acc": 0.55, "seconds": 1.0}])  # fmt: skip
    second = live.live_frame(run_id, build)  # a new view (progress moves), same figures
    assert second is not first and len(second.view.epochs) == 2
    assert second.figures is first.figures and len(calls) == 2
    # the tiles drawn with those figures show the view they were built from
    assert second.figures_view is first.view and first.figures_view is first.view
    store.add_events(run_id, [{"layer": "fc1", "old_bits": 8, "new_bits": 6, "msb_dropped": 2,
                               "lsb_dropped": 0, "grown": 0, "stage": "bsq", "epoch": 1,
                               "message": "fc1: 8 -> 6 bits"}])  # fmt: skip
    assert live.live_frame(run_id, build).figures is second.figures  # MIN_BUILD_S not over
    monkeypatch.setattr(live, "MIN_BUILD_S", 0.0)
    monkeypatch.setattr(live, "BUILD_SHARE", 1e9)  # the cost rule alone waits MAX_BUILD_S
    store.add_events(run_id, [{"layer": "fc2", "old_bits": 8, "new_bits": 5, "msb_dropped": 3,
                               "lsb_dropped": 0, "grown": 0, "stage": "bsq", "epoch": 1,
                               "message": "fc2: 8 -> 5 bits"}])  # fmt: skip
    third = live.live_frame(run_id, build)  # a re-quantization: after MIN_BUILD_S only
    assert third.figures is not second.figures and len(calls) == 3
    monkeypatch.setattr(live, "BUILD_SHARE", 20)
    monkeypatch.setattr(live, "MIN_BUILD_S", 0.0)
    store.add_epochs(run_id, [{"stage": "pretrain", "epoch": 3, "global_epoch": 3,
                               "test_acc": 0.6, "seconds": 1.0}])  # fmt: skip
    fourth = live.live_frame(run_id, build)
    assert fourth.figures is not third.figures and len(calls) == 4
    assert fourth.figures_view is fourth.view and len(fourth.view.epochs) == 3
    store.request_stop(run_id)  # a new version (a new view), nothing new to draw: no build
    asked = live.live_frame(run_id, build)
    assert asked is not fourth and asked.figures is fourth.figures and len(calls) == 4
    monkeypatch.setattr(live, "MIN_BUILD_S", 3600.0)
    store.set_status(run_id, "stopped")
    # the progress fragment draws no figure: the ended view at once, the live figures kept
    ended = live.live_frame(run_id, build, figures=False)
    assert not ended.view.active and ended.pending and len(calls) == 4
    assert live.live_frame(run_id, build, figures=False) is ended
    final = live.live_frame(run_id, build)  # an ended run always gets its final figures
    assert not final.view.active and not final.pending and len(calls) == 5
    assert live.live_frame(run_id, build, figures=False) is final


def test_the_end_of_a_run_shows_while_another_session_builds_its_figures(monkeypatch):
    """While one session builds a run's figures (the final ones of a run 30 viewers watch
    took seconds), the progress part of the others still draws the run's end at once; the
    charts keep the last frame until that build is done."""
    from dashboard.ui import live

    store, run_id, build, calls = _cli_run(monkeypatch)
    running = live.live_frame(run_id, build)
    assert running.view.active and len(calls) == 1
    store.set_status(run_id, "stopped")
    builder = live._BUILDERS[run_id]
    assert builder.acquire(blocking=False)  # another session is building
    try:
        ended = live.live_frame(run_id, build, figures=False)
        assert not ended.view.active and ended.view.status == "stopped" and ended.pending
        assert live.live_frame(run_id, build) is running  # the charts: the last frame
        assert len(calls) == 1
    finally:
        builder.release()
    final = live.live_frame(run_id, build)
    assert not final.view.active and not final.pending and len(calls) == 2


def test_live_step_chart_is_built_once_for_every_default_viewer(monkeypatch):
    """The per-step loss chart of a live run: one spec per run for every session with the
    default options, rebuilt only when new steps arrived and ``STEP_REBUILD_S`` passed."""
    from dashboard.ui import run_charts
    from dashboard.ui.accessors import RunView
    from dashboard.views import curves, frames

    built = []
    real = curves.step_parts
    monkeypatch.setattr(curves, "step_parts", lambda *a: built.append(1) or real(*a))
    monkeypatch.setattr(run_charts, "_SHARED_STEPS", {})
    steps = [{"step": i, "stage": "bsq", "epoch": 1, "loss": 1.0 / (i + 1), "reg": 0.1,
              "batch_acc": 0.5, "lr": 0.1, "time": 1000.0 + i} for i in range(8)]  # fmt: skip
    view = RunView(run={"run_id": "r1", "status": "running"}, epochs=frames.epochs_frame([]),
                   layers=frames.layers_frame([]), live=True,
                   snapshot={"steps": steps})  # fmt: skip
    default = curves.CurveOptions()
    first = run_charts._step_chart(view, "a", default)
    for key in ("b", "c", "d"):  # other viewers' ticks: the same spec, no build
        assert run_charts._step_chart(view, key, default) is first
    assert len(built) == 1
    steps.append({**steps[-1], "step": 8, "time": 1008.0})
    assert run_charts._step_chart(view, "b", default) is first  # new step, too soon
    monkeypatch.setattr(run_charts, "STEP_REBUILD_S", 0.0)
    assert run_charts._step_chart(view, "b", default) is not first and len(built) == 2


def _frame(status="running", epochs=0, steps=0, epoch_s=None, age_s=60.0, view_age_s=0.0):
    import time

    from dashboard.ui import live
    from dashboard.ui.accessors import RunView

    snapshot = {"steps": [{"step": i} for i in range(steps)], "updated_at": time.time()}
    if epoch_s is not None:
        snapshot["epoch_s"] = epoch_s
    records = [{"stage": "bsq", "global_epoch": g, "seconds": 1.0} for g in range(1, epochs + 1)]
    view = RunView(
        run={"run_id": "r", "status": status, "created_at": time.time() - age_s},
        live=True, snapshot=snapshot, records=(records, []),
    )  # fmt: skip
    now = time.monotonic()
    return live.LiveFrame("r", ("live", 1), view, {}, now - view_age_s, now - view_age_s)


def test_progress_ticks_fast_enough_for_a_slow_run_and_never_alias():
    from dashboard.ui import live

    slow = _frame(epochs=3, epoch_s=40.0)  # LeNet-5 on Fashion-MNIST: long epochs
    assert live.poll_interval(slow) <= 1.5  # progress moves within ~2 s in the browser
    # a view is re-read for every tick of a lone viewer (a hold equal to the tick aliased)
    assert live.poll_interval(slow) > live.VIEW_HOLD_S
    assert live._too_soon(_frame(epochs=3, view_age_s=live.VIEW_HOLD_S - 0.1), ("live", 2))
    assert not live._too_soon(_frame(epochs=3, view_age_s=live.poll_interval(slow)), ("live", 2))


def test_a_new_run_reads_views_at_the_fast_tick_until_its_first_curve():
    from dashboard.ui import live

    new = _frame(age_s=1.0)
    assert live.poll_interval(new) == live.FAST_TICK_S
    one_step = _frame(age_s=1.0, steps=1, view_age_s=live.FAST_TICK_S + 0.05)
    assert not live._too_soon(one_step, ("live", 2))  # one step draws no curve yet
    two = _frame(age_s=1.0, steps=2, view_age_s=live.FAST_TICK_S + 0.05)
    assert live._too_soon(two, ("live", 2))  # the curve is drawable: back to the hold


def test_a_viewer_who_joins_a_crowd_ticks_slower(monkeypatch):
    from dashboard.ui import live

    clock = [1000.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(live, "_WATCHERS", {})

    def joins(viewer: str) -> int:  # as the page does: the scale first, then it watches
        scale = live.crowd_scale("r", viewer)
        live.watching("r", viewer)
        return scale

    scales = [joins(f"s{i}") for i in range(30)]
    assert scales == [1] * 8 + [2] * 8 + [3] * 14  # 8 and 16 others watching: x2, x3
    assert live.watchers("r") == 30 and live.watchers("other") == 0
    assert joins("s0") == 3  # a page rerun: itself is not one of the others
    assert live.crowd_scale("r", "s29") == live.crowd_scale("r", "new") == 3
    clock[0] += live.WATCHING_S / 2
    for i in range(10):  # twenty stopped ticking
        live.watching("r", f"s{i}")
    clock[0] += live.WATCHING_S / 2 + 1
    assert live.watchers("r") == 10 and joins("late") == 2
    clock[0] += live.WATCHING_S + 1
    assert live.watchers("r") == 0 and joins("alone") == 1

    running, queued, new = _frame(epochs=3, epoch_s=0.2), _frame("queued"), _frame(age_s=1.0)
    assert [live.poll_interval(running, s) for s in (1, 2, 3)] == [1.5, 3.0, 4.5]
    assert [live.chart_tick_s(s) for s in (1, 2, 3)] == [8.0, 16.0, 24.0]
    assert [live.poll_interval(queued, s) for s in (1, 3)] == [3.0, 4.5]
    assert live.poll_interval(new, 3) == live.FAST_TICK_S  # only its owner watches it yet


def test_who_is_ahead_in_the_queue_is_grouped_by_name_as_plain_text():
    from dashboard.ui.run_panel import ahead_text

    queue = ["zed"] * 6 + ["ana"] + ["cid"] * 5 + ["dee", "eve", "dee", "fay"]
    assert ahead_text(queue) == ("zed (6 runs), ana, cid (5 runs), dee (2 runs) and 2 more people")
    assert ahead_text(["ana", "ana"]) == "ana (2 runs)"
    assert ahead_text(list("abcde")) == "a, b, c, d and 1 more person"
    assert ahead_text(["**bold**"]) == "**bold**"  # plain text: escaped where it is drawn


def test_a_refused_sweep_says_why_in_plain_text(monkeypatch):
    """The sweep's refusal may quote user text (a full queue names its owner): shown as
    text, like the Start button's."""
    from bsq_engine.runs.queueing import QueueFull
    from dashboard.ui import train

    def refuse(*args, **kwargs):
        raise QueueFull(f"{INJECTED} already has 6 runs waiting; wait for one to start.")

    monkeypatch.setattr(train, "start_sweep", refuse)
    at = open_page()
    button(at, "Start sweep").click().run()
    _assert_plain(at, INJECTED)
    assert any("Cannot start this sweep" in e.value for e in at.error)

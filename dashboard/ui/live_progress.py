"""A live run's progress bar that updates itself: pushed to the page without script runs.

Each tick of a Streamlit fragment is a script run, and a script run costs the viewer's
browser far more than what it sends: one progress tick of the live panel kept a tab's
renderer busy about 0.24 s on the 2-core machine, against 53 ms for the same bar and button
alone on a bare page (``benchmarks/tick_cost.py``), because the frontend re-renders the
page around the fragment. Thirty tabs ticking every 1.5-4.5 s on the 2-core machine wanted
more than the cores had left (``benchmarks/classroom_load.py``).

So when the server was started through ``serve.py`` (which adds ``live_route``'s JSON
route to Streamlit's server), the bar is a small ``st.components.v2`` component: its
JavaScript asks ``/_bsq/live/<run>`` every tick for the fraction and the line
(``run_panel.progress_line``: the same text the page draws) and writes them into its own
DOM, as text (``textContent``: names in the queue line stay plain text). The progress
fragment then has no timer: the route answers ``rerun`` when something else than the bar
must change (the run ended, left the queue, changed its pace; it is gone), and only then
does the component rerun its fragment (a trigger value), which draws what the page draws
today. Served by ``streamlit run app.py`` (no route), or in ``AppTest``, the fragment
ticks as before and draws ``st.progress``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

import streamlit as st

__all__ = ["ROUTE", "Push", "bar", "mark_served", "rerun_once", "served", "url"]

_PREFIX = "_bsq/live/"
ROUTE = f"/{_PREFIX}{{run_id:path}}"  # a run id with any character travels percent-encoded
_SERVED = {"route": False}

# The page's own progress bar, drawn by the component's HTML: the look of st.progress
# (text above a thin bar in the theme's primary colour), in the theme's CSS variables. No
# transition on the width: an animated width lays the page out again on every frame.
_HTML = """<div class="bsq-progress" data-testid="bsqProgress" role="progressbar"
  aria-valuemin="0" aria-valuemax="100"><p class="bsq-progress-text"></p>
  <div class="bsq-progress-track"><div class="bsq-progress-fill"></div></div></div>"""
_CSS = """
.bsq-progress { font-family: var(--st-font, sans-serif); color: var(--st-text-color); }
.bsq-progress-text { margin: 0 0 0.35rem 0; font-size: 0.875rem; line-height: 1.4;
  overflow-wrap: anywhere; }
.bsq-progress-track { height: 0.5rem; border-radius: 0.25rem; overflow: hidden;
  background: var(--st-secondary-background-color, #f0f2f6); }
.bsq-progress-fill { height: 100%; width: 0; border-radius: 0.25rem;
  background: var(--st-primary-color, #2e6bc6); }
"""
# Polls the route every `every` s (a hidden tab's timers are slowed by the browser, which
# is what a hidden tab should cost). A new `data` (the fragment ran again) restarts the loop
# from the values the server just drew; the component is not remounted, so a counter on the
# element ends the loop of the previous data. A `rerun` answer (or an error status) triggers
# the fragment, again after 3 s if still due (the rerun may wait behind another of this
# session's script runs). An answer that is not the route's JSON (the server restarting, a
# proxy that does not pass the route) also triggers it, every tick: the fragment's run then
# redraws the bar, as the ticking fragment did (while the websocket is down too, nothing runs).
_JS = """
export default function ({ data, parentElement, setTriggerValue }) {
  const root = parentElement.querySelector(".bsq-progress");
  const fill = root.querySelector(".bsq-progress-fill");
  const line = root.querySelector(".bsq-progress-text");
  const show = (fraction, text) => {
    const percent = Math.round(Math.min(Math.max(Number(fraction) || 0, 0), 1) * 1000) / 10;
    fill.style.width = `${percent}%`;
    root.setAttribute("aria-valuenow", String(percent));
    line.textContent = String(text);
  };
  show(data.fraction, data.text);
  const round = (root.bsqRound = (root.bsqRound || 0) + 1);
  clearTimeout(root.bsqTimer);
  const poll = async () => {
    if (round !== root.bsqRound) return;
    let next = data.every * 1000;
    try {
      const response = await fetch(data.url, { cache: "no-store" });
      const state = await response.json();
      if (round !== root.bsqRound) return;
      if (!response.ok || state.rerun) {
        setTriggerValue("due", Date.now());
        next = Math.max(next, 3000);
      } else {
        show(state.fraction, state.text);
      }
    } catch (error) {
      setTriggerValue("due", Date.now());
    }
    if (round === root.bsqRound) root.bsqTimer = setTimeout(poll, next);
  };
  root.bsqTimer = setTimeout(poll, data.every * 1000);
  return () => { root.bsqRound += 1; clearTimeout(root.bsqTimer); };
}
"""
_component = st.components.v2.component(
    "bsq_explorer.live_progress", html=_HTML, css=_CSS, js=_JS, isolate_styles=False
)
# One rerun of its fragment, `after` s from now: the second step of a run's end (the
# outcome is drawn in place first, then the page) where no timer ticks the fragment.
_ONCE_JS = """
export default function ({ data, parentElement, setTriggerValue }) {
  clearTimeout(parentElement.bsqOnce);
  parentElement.bsqOnce = setTimeout(() => setTriggerValue("due", Date.now()), data.after * 1000);
  return () => clearTimeout(parentElement.bsqOnce);
}
"""
_once = st.components.v2.component("bsq_explorer.rerun_once", js=_ONCE_JS, isolate_styles=False)


@dataclass(frozen=True)
class Push:
    """Where a pushed bar polls (``url``), how often (``every`` s), and its element key."""

    url: str
    every: float
    key: str


def mark_served() -> None:
    """Called by ``live_route.routes()``: this server answers the route."""
    _SERVED["route"] = True


def served() -> bool:
    """Whether this server answers ``ROUTE`` (started through ``serve.py``)."""
    return _SERVED["route"]


def url(run_id: str, *, viewer: str, every: float, scale: int, status: str) -> str:
    """The route's URL for one bar, relative to the page (``/``, ``/runs``...): the viewer
    (counted as watching, as a tick counts it), the tick length and crowd scale the page
    drew with, and the status its header shows (the route compares them)."""
    query = urlencode({"viewer": viewer, "every": f"{every:g}", "scale": scale, "status": status})
    return f"{_PREFIX}{quote(run_id, safe='')}?{query}"


def _noop() -> None:
    """The trigger's callback: the rerun of the fragment is all it is for."""


def bar(fraction: float, text: str, push: Push) -> None:
    """The pushed bar, drawn now at ``fraction`` with ``text`` (plain text)."""
    data = {"fraction": fraction, "text": text, "url": push.url, "every": push.every}
    _component(data=data, key=push.key, on_due_change=_noop)


def rerun_once(after: float, key: str) -> None:
    """Rerun the calling fragment once, ``after`` seconds from now (it has no timer)."""
    _once(data={"after": after}, key=key, on_due_change=_noop)

"""The JSON route that pushed progress bars poll (``live_progress``): ``GET /_bsq/live/<run>``.

Added to Streamlit's server by ``serve.py`` (``st.App(routes=...)``). One request reads the
run's shared frame without figures (``live.live_frame(figures=False)``: a version check,
and at most one view read per run per ``live.VIEW_HOLD_S`` for all viewers, as a fragment
tick does) and answers::

    {"fraction": 0.42, "text": "BSQ training · epoch 3 of 10 · 42%", "status": "running",
     "rerun": false}

``rerun`` is true when the viewer's panel must run its fragment: the run has ended, its
status is no longer the one the page drew (``status=``), or its pace asks for another tick
length than ``every=`` at crowd scale ``scale=`` (``run_panel.page_rerun_due``). A run that
is not in the store answers 404 with ``rerun`` (the fragment then shows that it is gone); a
store that cannot be read answers 503 with ``rerun`` (the fragment shows the store's own
message). ``viewer=`` counts the session as watching the run (``live.watching``), so the
crowd scale sees viewers whose fragments no longer tick. Everyone may view every run (the
app's rule); the route changes nothing. Values are checked: a bad query is a 400, never an
exception page.
"""

from __future__ import annotations

import re

import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bsq_engine.runs.store import RunNotFound, StoreError
from dashboard.ui import live, live_progress
from dashboard.ui.run_charts import build_figures
from dashboard.ui.run_panel import page_rerun_due, progress_line

__all__ = ["live_state", "routes"]

_VIEWER = re.compile(r"[0-9a-f]{1,64}")
_HEADERS = {"Cache-Control": "no-store"}


def routes() -> list[Route]:
    """The routes ``serve.py`` adds to Streamlit's server; pushed bars are on from now.

    Streamlit serves its pages under ``server.baseUrlPath`` and an ``st.App``'s own routes
    at the root, so the route is also added under that path, where a page's relative URL
    (``live_progress.url``) finds it, directly or behind a proxy that keeps the path."""
    live_progress.mark_served()
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    paths = [live_progress.ROUTE] + ([f"/{base}{live_progress.ROUTE}"] if base else [])
    return [Route(path, live_state, methods=["GET"]) for path in paths]


def _answer(body: dict, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=_HEADERS)


def live_state(request: Request) -> JSONResponse:
    """The handler (a plain function: Starlette runs it in its thread pool, off the event
    loop that serves every session's websocket)."""
    run_id = request.path_params["run_id"]
    query = request.query_params
    try:
        every = float(query.get("every", ""))
        scale = int(query.get("scale", ""))
        status = query.get("status", "")
        if not (0 < every <= 600 and 1 <= scale <= live.MAX_CROWD_SCALE) or len(run_id) > 200:
            raise ValueError
    except ValueError:
        return _answer({"error": "expected ?every=<s>&scale=<1..>&status=<status>"}, 400)
    viewer = query.get("viewer", "")
    if _VIEWER.fullmatch(viewer):
        live.watching(run_id, viewer)
    try:
        frame = live.live_frame(run_id, build_figures, figures=False)
    except RunNotFound:
        return _answer({"error": "no such run", "rerun": True}, 404)
    except StoreError:  # damaged or locked: the page's own message says what to do
        return _answer({"error": "the run store cannot be read", "rerun": True}, 503)
    view = frame.view
    fraction, text = progress_line(view)
    rerun = not view.active or page_rerun_due(frame, every, scale, status)
    return _answer({"fraction": fraction, "text": text, "status": view.status, "rerun": rerun})

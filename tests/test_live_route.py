"""The pushed progress bar: ``serve.py``'s JSON route (``dashboard/ui/live_route.py``) and
the panel that draws the bar instead of a ticking fragment (``live_progress``)."""

from __future__ import annotations

import json
from urllib.parse import unquote, urlencode, urlsplit

import pytest
from apptest_helpers import make_run, open_page
from starlette.requests import Request
from starlette.routing import Match

from bsq_engine.runs.jobs import get_manager
from bsq_engine.runs.store import StoreError
from dashboard.ui import live, live_progress, live_route

pytestmark = pytest.mark.usefixtures("bsq_home")


class _Client:
    """Requests as Starlette routes them (the path decoded as an ASGI server does), answered
    by the route's handler; no HTTP client package needed."""

    def __init__(self, routes):
        self.routes = routes

    def get(self, url: str) -> _Answer:
        parts = urlsplit(url)
        scope = {"type": "http", "method": "GET", "path": unquote(parts.path),
                 "query_string": parts.query.encode(), "headers": []}  # fmt: skip
        for route in self.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                return _Answer(route.endpoint(Request({**scope, **child})))
        return _Answer(None)


class _Answer:
    def __init__(self, response):
        self.status_code = 404 if response is None else response.status_code
        self.headers = {} if response is None else response.headers
        self.body = b"null" if response is None else response.body

    def json(self):
        return json.loads(self.body)


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setitem(live_progress._SERVED, "route", False)
    monkeypatch.setattr(live, "_MARKER_TTL_S", 0.0)  # every request sees the store's changes
    routes = live_route.routes()
    assert live_progress.served()  # routes() turned the pushed bars on
    return _Client(routes)


def _running(name: str = "pushed") -> tuple:
    store = get_manager().store
    run_id = make_run(store, status="queued", name=name, owner="cli")
    store.set_status(run_id, "running")
    return store, run_id


def _get(client, run_id: str, **query):
    """GET the URL the page gives the bar (``live_progress.url``), ``query`` changed."""
    path = live_progress.url(run_id, viewer="ab12", every=0.4, scale=1, status="running")
    base, _ = path.split("?")
    query = {"viewer": "ab12", "every": "0.4", "scale": "1", "status": "running", **query}
    return client.get("/" + base + "?" + urlencode(query))


def test_route_answers_a_running_runs_bar_and_counts_its_viewer(client):
    from dashboard.ui.run_panel import progress_line

    _, run_id = _running()
    response = _get(client, run_id)  # a new run: the page ticks fast (0.4 s)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    view = live.live_frame(run_id, lambda view: {}, figures=False).view
    assert (body["fraction"], body["text"]) == progress_line(view)
    assert body["text"].startswith("Pretraining") and body["status"] == "running"
    assert body["rerun"] is False  # nothing but the bar changes
    assert live.watchers(run_id) == 1  # the viewer counts as watching, as a tick would
    assert _get(client, run_id, viewer="not a viewer id!").status_code == 200
    assert live.watchers(run_id) == 1  # a malformed viewer id is not counted


def test_route_asks_for_a_rerun_when_more_than_the_bar_changes(client):
    store, run_id = _running()
    assert _get(client, run_id, status="queued").json()["rerun"]  # the run left the queue
    assert _get(client, run_id, every="30").json()["rerun"]  # another pace: a new tick length
    store.request_stop(run_id)
    store.set_status(run_id, "stopped")
    ended = _get(client, run_id).json()
    assert ended["rerun"] and ended["status"] == "stopped"  # the outcome is drawn in place


def test_route_is_also_under_the_base_url_path(monkeypatch):
    """Pages live under ``server.baseUrlPath`` and a bar asks a URL relative to its page."""
    from streamlit import config

    monkeypatch.setitem(live_progress._SERVED, "route", False)
    before = config.get_option("server.baseUrlPath")
    config.set_option("server.baseUrlPath", "/class/")
    try:
        client = _Client(live_route.routes())
    finally:
        config.set_option("server.baseUrlPath", before)
    _, run_id = _running()
    path = live_progress.url(run_id, viewer="ab12", every=0.4, scale=1, status="running")
    for page in ("/", "/class/"):  # served at the root, and under the base path
        assert client.get(page + path).json()["status"] == "running"


def test_route_refuses_bad_values_and_names_missing_runs(client, monkeypatch):
    _, run_id = _running()
    for bad in ({"every": "x"}, {"every": "0"}, {"scale": "0"}, {"scale": "99"}):
        assert _get(client, run_id, **bad).status_code == 400
    odd = "a/b c?d=%2F"  # any run id travels in the path and comes back whole
    gone = _get(client, odd)
    assert gone.status_code == 404 and gone.json() == {"error": "no such run", "rerun": True}

    def damaged(*args, **kwargs):
        raise StoreError("the store is damaged")

    monkeypatch.setattr(live, "live_frame", damaged)
    broken = _get(client, run_id)
    assert broken.status_code == 503 and broken.json()["rerun"]


def test_route_sends_names_as_plain_text_and_the_page_escapes_them(client, monkeypatch):
    """The queue line quotes owners: the route sends them as they are (the bar writes
    them with ``textContent``), ``st.progress`` gets them escaped."""
    injected = "**a**![t](h/x)"  # within the 20 characters a name keeps
    place = {"place": 2, "of": 2, "ahead": [injected], "start_s": None, "run_id": "?"}
    monkeypatch.setattr(live, "queue_place", lambda run_id: place)
    run_id = make_run(get_manager().store, status="queued", owner="cli")
    line = _get(client, run_id, status="queued").json()["text"]
    assert line == f"Queued: place 2 of 2 · ahead: {injected}"
    live_progress._SERVED["route"] = False  # the page's own bar: st.progress, Markdown
    at = open_page(run=run_id)
    assert not at.exception
    (drawn,) = [element.proto.text for element in at.get("progress")]
    assert "![" not in drawn and "\\*\\*a\\*\\*" in drawn


def test_served_panel_draws_the_pushed_bar_without_a_timer(monkeypatch):
    """Served through ``serve.py``: the bar is the component (its data: the same line,
    the route's URL for this run and viewer), and no ``st.progress``."""
    monkeypatch.setitem(live_progress._SERVED, "route", True)
    _, run_id = _running()
    at = open_page(run=run_id, user="ana")
    assert not at.exception
    assert not at.get("progress")
    drawn = [e for e in at.get("bidi_component") if "live_progress" in str(e.proto)]
    assert len(drawn) == 1
    proto = str(drawn[0].proto)
    assert "_bsq/live/" + run_id in proto and "Pretraining" in proto
    monkeypatch.setitem(live_progress._SERVED, "route", False)
    at = open_page(run=run_id, user="ana")
    assert at.get("progress") and not at.get("bidi_component")  # the ticking fragment

"""App-wide state: ``page_setup``, the job manager, the run store, URL parameters and
session keys.

Every page calls ``page_setup()`` first; ``dashboard.ui`` modules reach the engine through
``manager()`` / ``store()`` (pages never import the engine). Run ids live in the URL
(``?run=<id>`` for one run, ``?sweep=<id>`` for a sweep, ``?runs=a,b,c`` for a comparison)
so reloads and shared links re-attach; ``run`` and ``sweep`` follow page switches too.
Session-state keys are named here once so pages never collide.
"""

from __future__ import annotations

import streamlit as st

from bsq_engine.runs.store import RunStore, StoreError, default_home
from dashboard.ui import identity
from dashboard.views import plain

__all__ = [
    "KEY_DELETE_PENDING",
    "KEY_FLASH",
    "KEY_URL_KEPT",
    "manager",
    "page_setup",
    "pop_flash",
    "ray_executor",
    "ray_installed",
    "set_flash",
    "set_url_run",
    "set_url_runs",
    "set_url_sweep",
    "store",
    "url_run_id",
    "url_runs",
    "url_sweep_id",
]

# Session-state keys shared between pages and helpers.
KEY_URL_KEPT = "app.url_kept"  # {"run"|"sweep": id}: URL values that follow page switches
KEY_DELETE_PENDING = "runs.delete_pending"  # run ids awaiting the second "confirm" click
KEY_FLASH = "app.flash"  # (kind, message) shown once on the next run, e.g. after a rerun


@st.cache_resource(show_spinner=False)
def _manager_for(home: str):
    from bsq_engine.runs.jobs import get_manager

    return get_manager(home)


def manager():
    """The process-wide ``JobManager`` of the current ``BSQ_HOME`` (one per store). A store
    that cannot be opened (damaged, read-only) stops the page with its message."""
    home = str(default_home())
    try:
        found = _manager_for(home)
    except StoreError as exc:  # not cached: the next rerun tries again, e.g. after a repair
        st.error(plain.md(exc), icon=":material/error:")
        st.stop()
        raise  # outside a script run (live_route) st.stop() returns: the caller handles it
    if getattr(found, "_closed", False):  # shut down (tests, atexit): get a fresh one
        _manager_for.clear()
        found = _manager_for(home)
    return found


@st.cache_resource(show_spinner=False)
def _ray_for(home: str):
    from bsq_engine.runs.ray_executor import RayExecutor

    return RayExecutor(RunStore(home))  # a local Ray; starting it takes a while, once


def ray_executor():
    """The process-wide Ray executor of the current store (sweeps with executor Ray)."""
    return _ray_for(str(default_home()))


def ray_installed() -> bool:
    from bsq_engine.runs.ray_executor import ray_available

    return ray_available()


def store() -> RunStore:
    """The run store the manager writes to."""
    return manager().store


def _url_value(name: str) -> str | None:
    """``?name=`` of the URL. A page switch drops query parameters, so the value last seen in
    this session is put back into the URL (then a reload keeps it too)."""
    value = (st.query_params.get(name) or "").strip()
    kept = st.session_state.setdefault(KEY_URL_KEPT, {})
    if value:
        kept[name] = value
        return value
    if kept.get(name):
        st.query_params[name] = kept[name]
        return kept[name]
    return None


def _set_url_value(name: str, value: str | None) -> None:
    kept = st.session_state.setdefault(KEY_URL_KEPT, {})
    if value:
        st.query_params[name] = kept[name] = value
    else:
        st.query_params.pop(name, None)
        kept.pop(name, None)


def url_run_id() -> str | None:
    """The run named in ``?run=`` (kept across page switches in this session), or None."""
    return _url_value("run")


def set_url_run(run_id: str | None) -> None:
    """Put ``run_id`` in the URL (``None`` removes it, here and for later pages)."""
    _set_url_value("run", run_id)


def url_sweep_id() -> str | None:
    """The sweep named in ``?sweep=`` (kept across page switches in this session), or None."""
    return _url_value("sweep")


def set_url_sweep(sweep_id: str | None) -> None:
    """Put ``sweep_id`` in the URL (``None`` removes it)."""
    _set_url_value("sweep", sweep_id)


def url_runs() -> list[str]:
    """Run ids of ``?runs=a,b,c`` (Compare page), in order, duplicates removed."""
    raw = st.query_params.get("runs") or ""
    return list(dict.fromkeys(r.strip() for r in raw.split(",") if r.strip()))


def set_url_runs(run_ids: list[str]) -> None:
    """Put ``run_ids`` in ``?runs=`` (an empty list removes it)."""
    if run_ids:
        st.query_params["runs"] = ",".join(run_ids)
    else:
        st.query_params.pop("runs", None)


def set_flash(kind: str, message: str) -> None:
    """Remember a message ("success" | "info" | "warning" | "error") for the next run."""
    st.session_state[KEY_FLASH] = (kind, message)


def pop_flash() -> None:
    """Show (once) the message left by ``set_flash``, if any."""
    flash = st.session_state.pop(KEY_FLASH, None)
    if flash:
        kind, message = flash
        getattr(st, kind, st.info)(message)


def page_setup(title: str | None = None, caption: str | None = None) -> None:
    """Every page's first call (the OpenMS template's anchor): its title and caption, then
    the message a previous rerun left with ``set_flash``."""
    identity.sidebar()  # who this session is: the owner of the runs it starts
    if title:
        st.title(title, anchor=False)
    if caption:
        st.caption(caption)
    pop_flash()

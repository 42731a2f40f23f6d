"""The app's pages, its router, and the guard that keeps Streamlit's old page discovery away.

Why a guard: Streamlit decides once per server process (``PagesManager.uses_pages_directory``,
on the first session) whether the app is a "v1" multipage app, and it says yes for any main
script that sits next to a ``pages/`` folder, as ``app.py`` does. In that mode every script
run goes through ``_mpa_v1``: it registers each file of ``pages/`` under its *file name*,
sends that list as the sidebar, and runs the requested page script directly, without
``app.py`` (no page config, no real navigation). A fresh server meets exactly that when a
tab reconnects after a restart or a deep link is opened first: the sidebar read "app,
compare, learn, pareto, runs, train" until ``/`` happened to be visited.

What the server shows before ``app.py`` has run is therefore kept empty: with
``client.showSidebarNavigation = false`` the v1 list is never drawn, and the router draws
the real navigation itself (sidebar page links), so a tab shows either nothing or the real
pages, never file names.

The flag is a class attribute that is only set while it is None, so switching it off once
makes every later run, in every session, execute ``app.py`` and its ``st.navigation``.
``serve.py`` switches it off before any session (it imports ``dashboard.ui``); under a bare
``streamlit run app.py``, ``app.py`` switches it off as it starts, and a page script run by
the v1 path switches it off as soon as it imports ``dashboard.ui`` (before any heavy import)
and reruns itself, which now goes through ``app.py`` and lands on the same page (v1 and
``st.navigation`` derive a page's id from the same URL path). The ``pages/`` folder stays
where it is.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

__all__ = ["ICON", "PAGES", "anchor", "ensure_router", "jump_to", "router"]

ROOT = Path(__file__).resolve().parents[2]
#: Shipped with the app: a ``:material/...:`` page icon makes browsers fetch the favicon
#: from a font host, which an offline machine cannot reach.
ICON = ROOT / "assets" / "bsq_icon.png"
#: (script, title, icon); the first page is the default one (``/``).
PAGES = (
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/runs.py", "Runs", ":material/table_rows:"),
    ("pages/pareto.py", "Pareto frontier", ":material/scatter_plot:"),
    ("pages/compare.py", "Compare runs", ":material/compare_arrows:"),
    ("pages/learn.py", "Learn", ":material/school:"),
)


def ensure_router() -> None:
    """Turn Streamlit's ``pages/`` discovery off; rerun if this run came through it.

    Returns at once (no-op) once it is off in this process. Outside a script run (the
    server's start through ``serve.py``, which imports the dashboard before any session;
    plain imports, tests of pure modules) it only switches the flag, so that the first
    session of a fresh server already goes through ``app.py``'s router.
    """
    if PagesManager.uses_pages_directory is False:
        return
    came_through_v1 = bool(PagesManager.uses_pages_directory)
    PagesManager.uses_pages_directory = False
    if came_through_v1 and st.runtime.exists() and _in_script_run():
        st.rerun()  # this run is the v1 one: let app.py's router serve the same page


def _in_script_run() -> bool:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True) is not None


def router() -> None:
    """``app.py``'s whole body: page config, the navigation, the selected page."""
    PagesManager.uses_pages_directory = False  # we are the router: no v1 pass from now on
    st.set_page_config(
        page_title="BSQ Explorer",
        page_icon=str(ICON),
        layout="wide",
        # Presentation mode (Learn page, ?present=1) gives the projector the whole width.
        initial_sidebar_state="collapsed" if st.query_params.get("present") == "1" else "expanded",
    )
    pages = [
        st.Page(script, title=title, icon=icon, default=index == 0)
        for index, (script, title, icon) in enumerate(PAGES)
    ]
    # Our own sidebar links: `client.showSidebarNavigation = false` (config.toml) keeps the
    # v1 file-name list hidden on a fresh server, and it hides st.navigation's sidebar too.
    current = st.navigation(pages, position="hidden")
    with st.sidebar.container(key="app-nav"):
        for page in pages:
            st.page_link(page, label=page.title, icon=page.icon, width="stretch")
    current.run()


def anchor(name: str):
    """A container to jump to (``jump_to(name)``); use it as ``with anchor("x"): ...``."""
    return st.container(key=f"jump-{name}")


# Retries until the target is drawn (its elements may arrive after this one), then scrolls
# it to just under Streamlit's top bar, which overlays the page (aligned with the page's top,
# a run panel's title row sat under the bar).
_JUMP_JS = """<script>(() => {{ let tries = 0; const go = () => {{
  const el = document.querySelector('.st-key-jump-{name}');
  if (el && el.getBoundingClientRect().height > 0) {{
    const bar = document.querySelector('[data-testid="stHeader"]');
    el.style.scrollMarginTop = ((bar ? bar.getBoundingClientRect().height : 0) + 8) + 'px';
    el.scrollIntoView({{behavior: 'smooth', block: 'start'}}); return; }}
  if (++tries < 60) setTimeout(go, 50); }}; go(); }})();</script>"""


def jump_to(name: str) -> None:
    """Scroll the page to ``anchor(name)``. Call it only in the run where the target
    appeared (after Start training, a click on a point), not on every rerun."""
    if not name.replace("-", "").isalnum():
        raise ValueError(f"An anchor name is letters, digits and '-'; got {name!r}.")
    st.html(_JUMP_JS.format(name=name), unsafe_allow_javascript=True)

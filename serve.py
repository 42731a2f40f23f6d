"""BSQ Explorer's server: ``streamlit run serve.py``.

Streamlit's server running ``app.py`` (the router), plus one read-only JSON route that the
live panel's progress bar polls (``dashboard/ui/live_route.py``), so a watched run's progress
reaches the page without a script run per tick. ``streamlit run app.py`` also works: its
progress then ticks as a fragment, which costs each viewer's browser more.
"""

import streamlit as st

from dashboard.ui.live_route import routes

app = st.App("app.py", routes=routes())

"""The only dashboard modules that import Streamlit: page setup and state, accessors, the run
panel, the form widgets, and one module per page (train, runs, pareto, compare, learn)."""

from dashboard.ui.navigation import ensure_router

# Every page imports this package before anything else of the dashboard: a page script run
# by Streamlit's `pages/` discovery (a fresh server) reruns through app.py's router before
# anything heavy is imported. See dashboard/ui/navigation.py.
ensure_router()

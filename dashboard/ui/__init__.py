"""The only dashboard modules that import Streamlit: page setup and state, accessors, the run
panel and the form widgets."""

from dashboard.ui.navigation import ensure_router

# First thing any page does is import this package: a page script run by Streamlit's
# `pages/` discovery (a fresh server) reruns through app.py's router before anything heavy
# is imported. See dashboard/ui/navigation.py.
ensure_router()

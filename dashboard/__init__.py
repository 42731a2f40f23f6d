"""The Streamlit dashboard's helpers.

``dashboard.ui`` holds the only modules that import Streamlit (page setup and session state,
cached accessors, the run panel, widgets); ``dashboard.views`` is pure: frames and chart
builders, one module per page.
"""

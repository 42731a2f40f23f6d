"""Runs: every run in the store; open, resume, stop, delete or compare the selected ones."""

import streamlit as st

from dashboard.ui import runs
from dashboard.ui.state import page_setup

page_setup("Runs")
head, refresh = st.columns([6, 1], vertical_alignment="bottom")
head.caption("All runs in this store. Click a column header to sort.")
refresh.button("Refresh", icon=":material/refresh:", width="stretch")
runs.runs_table()
runs.selected_run()

"""Train: configure one BSQ run (or an alpha sweep), start it, and watch it live."""

import streamlit as st

from dashboard.ui import train, widgets
from dashboard.ui.state import page_setup

page_setup(
    "Train",
    "BSQ learns how many bits each layer needs in one training run: a penalty on every bit "
    "plane (strength **alpha**) drives whole planes to zero, and re-quantization drops them.",
)
widgets.init_form()
with st.container(border=True):
    dataset_ok = train.run_form()
with st.expander("Sweep alpha: several runs for the Pareto frontier", icon=":material/tune:"):
    train.sweep_section(dataset_ok)
widgets.save_form()
train.watched_run()

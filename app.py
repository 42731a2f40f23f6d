"""BSQ Explorer: router only. Run with ``streamlit run app.py``."""

import streamlit as st

st.set_page_config(
    page_title="BSQ Explorer",
    page_icon=":material/grain:",
    layout="wide",
    # Presentation mode (Learn page, ?present=1) gives the projector the whole width.
    initial_sidebar_state="collapsed" if st.query_params.get("present") == "1" else "expanded",
)

pages = [
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("pages/pareto.py", title="Pareto frontier", icon=":material/scatter_plot:"),
    st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
]
st.navigation(pages).run()

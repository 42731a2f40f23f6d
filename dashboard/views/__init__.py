"""Pure views: run records and frames in, pandas frames and Plotly/Altair figures out. No
Streamlit, no store, no file I/O."""

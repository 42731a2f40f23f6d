"""Pure views: run records and frames in, pandas frames and Plotly/Altair figures out; one
module per page (runs, pareto, compare, learn) next to the shared frames and charts. No
Streamlit, no store, no file I/O, no threads."""

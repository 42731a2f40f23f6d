"""The only dashboard modules that import Streamlit: page setup and state, accessors, the run
panel, the form widgets, and one module per page (train, runs, pareto, compare, learn)."""

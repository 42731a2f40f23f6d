"""The only dashboard modules that import Streamlit: page setup and state, accessors, the run
panel and the form widgets."""

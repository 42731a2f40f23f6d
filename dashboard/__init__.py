"""Dashboard helpers: pure chart builders and frame helpers used by the Streamlit pages."""

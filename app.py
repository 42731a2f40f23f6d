"""BSQ Explorer: router only. Run with ``streamlit run app.py``."""

from dashboard.ui.navigation import router

# Streamlit runs this script as ``__main__``. The guard matters: a run's child process
# (``spawn``, ``runs.worker_process``) started while a script run is under way re-imports the
# parent's ``__main__`` (this file) as ``__mp_main__``, where drawing pages would fail.
if __name__ == "__main__":
    router()

"""BSQ Explorer: router only. Run with ``streamlit run app.py``."""

from dashboard.ui.navigation import router

router()

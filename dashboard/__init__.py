"""The Streamlit dashboard's helpers; ``pages/`` reach the engine only through them.

``dashboard.ui`` holds the only modules that import Streamlit: ``state`` (``page_setup``,
URL and session keys), ``accessors`` (every read of the store, checkpoints and files),
``run_panel``, ``widgets``, and ``<page>`` for the Streamlit pieces of one page.
``dashboard.views`` is pure (no Streamlit, store, file I/O or threads): ``frames`` and
``charts``, and ``<page>`` for the logic of one page.
"""

"""CSV and PNG downloads under any chart: the data it draws, and the picture itself.

The PNG is rendered only when its button is clicked (Streamlit calls the ``data`` callable
then): Plotly figures through ``kaleido`` (it drives a headless Chromium), Altair/Vega-Lite
specs through ``vl-convert-python`` (no browser). Both are optional packages
(requirements-dev.txt); without one, its charts offer CSV only and say how to get PNG.
File names are built from run ids and chart names, never from user text.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

__all__ = ["HAS_KALEIDO", "HAS_VL_CONVERT", "chart_downloads", "png_bytes"]

HAS_KALEIDO = importlib.util.find_spec("kaleido") is not None
HAS_VL_CONVERT = importlib.util.find_spec("vl_convert") is not None
PNG_SIZE = (1200, 700)


def png_bytes(chart: go.Figure | dict) -> bytes:
    """The chart as a PNG: a Plotly figure or a Vega-Lite spec (dict)."""
    if isinstance(chart, go.Figure):
        width, height = PNG_SIZE
        return chart.to_image(format="png", width=width, height=height, scale=1)
    import vl_convert

    return vl_convert.vegalite_to_png(_json_datasets(chart), scale=2)


def _json_datasets(spec: dict) -> dict:
    """``spec`` with its Arrow datasets (``run_charts.vega_spec``) as the rows vl-convert
    reads; a new dict (specs are shared across sessions: never changed in place)."""
    datasets = spec.get("datasets")
    if not isinstance(datasets, dict) or not any(isinstance(d, bytes) for d in datasets.values()):
        return spec
    import pyarrow as pa

    rows = {name: pa.ipc.open_stream(data).read_all().to_pylist() if isinstance(data, bytes)
            else data for name, data in datasets.items()}  # fmt: skip
    return {**spec, "datasets": rows}


def _can_png(chart) -> bool:
    return HAS_KALEIDO if isinstance(chart, go.Figure) else HAS_VL_CONVERT


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "chart"


def chart_downloads(
    chart: go.Figure | dict | None, data: pd.DataFrame | Callable[[], pd.DataFrame],
    name: str, key: str,
) -> None:  # fmt: skip
    """Two small buttons (CSV, PNG) for ``chart`` drawing ``data``; ``name`` makes the file
    names, ``key`` the element keys (unique per page)."""
    base = _safe(name)
    row = st.container(horizontal=True, gap="small", key=f"{key}-dl-row")

    def csv() -> bytes:
        frame = data() if callable(data) else data
        return frame.to_csv(index=False).encode()

    row.download_button("CSV", data=csv, file_name=f"{base}.csv", mime="text/csv",
                        key=f"{key}-dl-csv", on_click="ignore", type="tertiary",
                        icon=":material/download:", help="The data this chart draws")  # fmt: skip
    if chart is not None and _can_png(chart):
        row.download_button("PNG", data=lambda: png_bytes(chart), file_name=f"{base}.png",
                            mime="image/png", key=f"{key}-dl-png", on_click="ignore",
                            type="tertiary", icon=":material/image:",
                            help="This chart as a picture (takes a few seconds)")  # fmt: skip
    elif chart is not None:
        need = "kaleido" if isinstance(chart, go.Figure) else "vl-convert-python"
        row.caption(f"PNG: `pip install {need}`")

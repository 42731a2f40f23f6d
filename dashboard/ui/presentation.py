"""Presentation mode of the Learn page: what a projector at 1280x720 needs.

The body text grows to 1.3rem (21 px), and chart and table text follow it, so the whole page
reads at one size from the back of a room; step buttons stay on one line.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

__all__ = ["PRESENT_CSS", "PRESENT_FONT", "SHORT_STEPS", "plot", "table"]

PRESENT_CSS = """<style>
[data-testid="stMain"] p, [data-testid="stMain"] li, [data-testid="stMain"] label p
{ font-size: 1.3rem !important; }
[data-testid="stMain"] h1 { font-size: 3rem !important; }
[data-testid="stMain"] h2, [data-testid="stMain"] h3 { font-size: 2rem !important; }
[data-testid="stMain"] .katex { font-size: 1.55em !important; }
[data-testid="stMain"] [data-testid="stMetricValue"],
[data-testid="stMain"] [data-testid="stMetricValue"] p { font-size: 2.8rem !important; }
[data-testid="stMain"] input { font-size: 1.3rem !important; }
[data-testid="stMain"] [data-testid="stSliderThumbValue"] { font-size: 1rem !important; }
[data-testid="stMain"] [data-testid="stTable"] th,
[data-testid="stMain"] [data-testid="stTable"] td { font-size: 1.3rem !important; }
[data-testid="stMain"] [data-testid="stButtonGroup"] > div { flex-wrap: nowrap !important; }
</style>"""
# Chart and table text follow the body text (1.3rem = 21 px): a projector at 1280x720 shows
# the whole page at one reading size. Tables become st.table (HTML, scaled by the CSS above;
# st.dataframe draws on a canvas at a fixed 12-14 px).
PRESENT_FONT = 20  # Plotly font size in presentation mode
SHORT_STEPS = {1: "Bits", 2: "Planes", 3: "Penalty", 4: "Replay", 5: "Try it"}  # one line


def plot(where, fig, key: str, **kwargs) -> None:
    """``plotly_chart`` with larger chart type in presentation mode."""
    if st.session_state.get("learn-present"):
        fig.update_layout(font_size=PRESENT_FONT, title_font_size=PRESENT_FONT + 4,
                          hoverlabel_font_size=PRESENT_FONT)  # fmt: skip
        fig.update_annotations(font_size=PRESENT_FONT - 2)
        # Streamlit's chart theme is a template that sizes axis text itself (12 px); only
        # sizes set on the axes themselves win over it, not the layout's font size.
        for axes in (fig.update_xaxes, fig.update_yaxes):
            axes(tickfont_size=PRESENT_FONT, title_font_size=PRESENT_FONT)
        fig.update_layout(legend_font_size=PRESENT_FONT)
    where.plotly_chart(fig, key=key, width="stretch", **kwargs)


def table(data, key: str, percent: tuple[str, ...] = ()) -> None:
    """``st.dataframe``; in presentation mode an HTML ``st.table`` the CSS scales."""
    if not st.session_state.get("learn-present"):
        percent_cfg = st.column_config.NumberColumn(format="percent")
        st.dataframe(data, hide_index=True, key=key, width="stretch",
                     column_config={col: percent_cfg for col in percent})  # fmt: skip
        return
    styler = pd.DataFrame(data).style.hide(axis="index")
    st.table(styler.format({col: "{:.1%}" for col in percent}, precision=4))

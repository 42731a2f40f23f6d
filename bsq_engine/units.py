"""Human-readable quantities shared by the CLI and the dashboard."""

from __future__ import annotations

import math

__all__ = ["format_duration"]


def format_duration(seconds, *, compact: bool = False, missing: str = "-") -> str:
    """Seconds as text; ``missing`` when unknown or not finite.

    >>> format_duration(185), format_duration(185, compact=True), format_duration(3720)
    ('3 min 05 s', '3m05s', '1 h 02 min')
    """
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return missing
    s = round(seconds)
    sec, mins, hours = ("s", "m", "h") if compact else (" s", " min ", " h ")
    if s < 60:
        return f"{s}{sec}"
    if s < 3600:
        return f"{s // 60}{mins}{s % 60:02d}{sec}"
    return f"{s // 3600}{hours}{s % 3600 // 60:02d}{mins.rstrip()}"

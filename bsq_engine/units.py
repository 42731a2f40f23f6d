"""Human-readable quantities shared by the CLI and the dashboard: one home for each format."""

from __future__ import annotations

import math

__all__ = ["MISSING", "format_bits", "format_compression", "format_duration", "format_pct",
           "is_number"]  # fmt: skip

MISSING = "—"  # an unknown or absent number, in the app's tables and tiles


def is_number(value) -> bool:
    """A finite int or float (not a bool, not None, not NaN or infinity).

    >>> is_number(3), is_number(float("nan")), is_number(None), is_number(True)
    (True, False, False, False)
    """
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_duration(seconds, *, compact: bool = False, missing: str = "-") -> str:
    """Seconds as text; ``missing`` when unknown or not finite.

    >>> format_duration(185), format_duration(185, compact=True), format_duration(3720)
    ('3 min 05 s', '3m05s', '1 h 02 min')
    """
    if not is_number(seconds):
        return missing
    s = round(seconds)
    sec, mins, hours = ("s", "m", "h") if compact else (" s", " min ", " h ")
    if s < 60:
        return f"{s}{sec}"
    if s < 3600:
        return f"{s // 60}{mins}{s % 60:02d}{sec}"
    return f"{s // 3600}{hours}{s % 3600 // 60:02d}{mins.rstrip()}"


def format_pct(fraction, *, digits: int = 2, missing: str = MISSING) -> str:
    """An accuracy fraction (0-1) as a percentage.

    >>> format_pct(0.96667), format_pct(None)
    ('96.67 %', '—')
    """
    return f"{100 * fraction:.{digits}f} %" if is_number(fraction) else missing


def format_bits(avg_bits, *, missing: str = MISSING) -> str:
    """Average bits per weight.

    >>> format_bits(1.777), format_bits(0)
    ('1.78', '0.00')
    """
    return f"{avg_bits:.2f}" if is_number(avg_bits) else missing


def format_compression(ratio, *, missing: str = MISSING) -> str:
    """A compression ratio; never "inf": a run with every layer pruned stores no weight bits,
    so its ratio is undefined and shows as ``all pruned``.

    >>> format_compression(18.04), format_compression(float("inf")), format_compression(None)
    ('18.0x', 'all pruned', '—')
    """
    if isinstance(ratio, float) and math.isinf(ratio):
        return "all pruned"
    return f"{ratio:.1f}x" if is_number(ratio) else missing

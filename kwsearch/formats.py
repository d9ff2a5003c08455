"""How kwsearch writes the numbers a user compares: one format per kind of number, used alike by
the search's summary and live view, the report, and what replay and calibrate print.

A cost is written exactly (``1,403,567``): two configs a hundred parameters apart are two
configs, and a rounded ``0.328M`` would show them as one. A value of the search space is written
as Python reads it back (``0.15625``, never ``0.1562``), so that it is still a value of the space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kwsearch.records import MEASURED


def format_cost(value: float | None, name: str = "params") -> str:
    """The cost ``name`` of a config: a parameter or MAC count exactly, with thousands separators;
    a measured time (:data:`kwsearch.records.MEASURED`) in milliseconds to three significant
    digits; ``–`` when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if name in MEASURED:
        return format_ms(value)
    return f"{round(value):,}"


def format_ms(value: float) -> str:
    """A time in milliseconds to three significant digits (``0.372 ms``, ``12.3 ms``, ``1,234 ms``;
    in exponent form below a microsecond)."""
    if 0 < abs(value) < 1e-3:
        return f"{value:.3g} ms"
    digits = 0 if value == 0 else max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f} ms"


def format_accuracy(value: float | None) -> str:
    """An accuracy to four decimals (a 1,000-image validation set resolves 0.001)."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.4f}"


def format_value(value: Any) -> str:
    """A value of the search space as it was sampled: floats in their shortest exact form."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_millions(values: Sequence[float]) -> list[str]:
    """Counts in millions (``1.40``) for a paper's table, with the fewest decimals (at least two)
    that keep different counts different."""
    distinct = len(set(values))
    for decimals in range(2, 7):
        shown = [f"{v / 1e6:.{decimals}f}" for v in values]
        if len(set(shown)) == distinct:
            return shown
    return shown


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

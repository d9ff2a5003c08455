"""What every report page is made of: the self-contained document (plotly.js inlined, no
network), plots, tables of numbers, and data handed to the page's scripts.

Every string a user or a study provided is escaped on its way in: HTML text through
:func:`html.escape`, plot text through :func:`plot_text`, script data through
:func:`script_json`."""

from __future__ import annotations

import json
from html import escape
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kwsearch.formats import format_accuracy, format_cost, format_value
from kwsearch.records import MEASURED
from kwsearch.report.data import present

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:0 16px 48px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:18px 0 4px;word-break:break-all}h2{font-size:1.2em;margin-top:32px;
border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:1em;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f6f8}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.note{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px;border-radius:4px;margin:10px 0}
.muted{color:#666;font-size:13px}.wide{overflow-x:auto}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:14px}
dl.facts dt{color:#555}dl.facts dd{margin:0;word-break:break-word}
.controls{margin:6px 0;font-size:13px}.controls input[type=text]{width:28em;padding:2px 6px}
.scroll{max-height:560px;overflow:auto;border:1px solid #ddd}.scroll table{margin:0}
.scroll th{position:sticky;top:0;cursor:pointer;user-select:none}.scroll td{white-space:nowrap}
th[data-sorted=up]::after{content:" \\25B2"}th[data-sorted=down]::after{content:" \\25BC"}
pre.copy{background:#f6f8fa;border:1px solid #ddd;padding:8px;overflow-x:auto;font-size:12px}
"""
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}
COST_COLUMNS = ("params", "effective_params", "macs", "MACs", *MEASURED)
COUNT_COLUMNS = ("trial", "number", "config", "n", "pairs", "seed", "seeds", "runs", "epochs")


def document(title: str, body: list[str]) -> str:
    """The whole HTML file: ``body`` (HTML parts) under ``title``, plotly.js inlined."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f'<style>{STYLE}</style><script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(body)}</body></html>\n"
    )


def plot(fig: go.Figure, div_id: str | None = None) -> str:
    """A plotly figure as HTML (``div_id``: the id its div gets, for the page's scripts)."""
    html = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG, div_id=div_id)
    return f"<div class='wide'>{html}</div>"


def plot_text(value: Any) -> str:
    """``value`` as text in a plot (hover boxes, labels, ticks): escaped, quotes as typed.
    Plotly renders such text as a subset of HTML: it decodes ``&lt;``, ``&gt;`` and ``&amp;`` but
    shows ``&quot;`` as typed, and with ``<`` escaped no tag can form."""
    return escape(str(value), quote=False)


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element (no ``<``, ``>`` or ``&``
    that could end it or start markup)."""
    return (
        json.dumps(value, separators=(",", ":"), allow_nan=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def table(frame: pd.DataFrame, mono: set[str] = frozenset()) -> str:
    """An HTML table with every cell escaped; numbers right-aligned and formatted by column."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.to_dict("records"):
        cells = []
        for column, value in row.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = " class='n'" if numeric else (" class='mono'" if column in mono else "")
            cells.append(f"<td{css}>{escape(number(value, str(column)) if numeric else _text(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def with_intervals(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Fold each ``name``, ``name low`` and ``name high`` column triple into one text column:
    ``mean (95% CI low to high)``."""
    out = frame.copy()
    for name in names:
        low, high = f"{name} low", f"{name} high"
        if name not in out or low not in out:
            continue

        def shown(mean: float, lo: float, hi: float, name: str = name) -> str:
            interval = f" (95% CI {number(lo, name)} to {number(hi, name)})"
            return number(mean, name) + ("" if not present(lo) else interval)

        out[name] = [shown(*bounds) for bounds in zip(out[name], out[low], out[high], strict=True)]
        out = out.drop(columns=[low, high])
    return out


def space_values(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` (values of the search space) as text, exactly as sampled."""
    out = frame.copy()
    for column in columns:
        out[column] = out[column].map(format_value)
    return out


def number(value: Any, column: str) -> str:
    """A number in a column named ``column``: costs exactly, counts as integers, accuracies to
    four decimals, anything else to four significant digits."""
    if not present(value):
        return "–"
    if column.removeprefix("Δ ") in COST_COLUMNS:
        return format_cost(value, column.removeprefix("Δ "))
    if column in COUNT_COLUMNS:
        return str(int(value))
    if "accuracy" in column or column in ("hypervolume", "Spearman ρ", "Kendall τ"):
        return format_accuracy(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _text(value: Any) -> str:
    return str(value) if present(value) else ""

"""Every trial in one table the reader sorts (click a column) and filters (type terms), with a
little plain JavaScript in the page: no network, nothing to install. :func:`trials_frame`
gathers the rows; :func:`render` writes the table and its script.

Filter terms, all of which a row must meet: ``kw`` (any cell contains it), ``status:pruned``
(that column contains it), ``accuracy>0.8``, ``params<=1000000``, ``width=0.5`` (compared as
numbers where both sides are). Clicking a trial's number shows its learning curve."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from kwsearch.formats import format_value
from kwsearch.records import MEASURED
from kwsearch.report import layout
from kwsearch.report.data import StudyData, present

ERROR_SHOWN = 100  # characters of an error in its cell
# the table's columns: the trials' columns under the names the filter takes
COLUMNS = {
    "number": "trial",
    "status": "status",
    "front": "front",
    "accuracy": "accuracy",
    "accuracy_low": "ci_low",
    "accuracy_high": "ci_high",
    "params": "params",
    "effective_params": "effective_params",
    "macs": "macs",
    "train_ms_per_image": "train_ms_per_image",
    "latency_ms": "latency_ms",
    "latency_batch_ms": "latency_batch_ms",
    "epochs": "epochs",
    "train_seconds": "train_seconds",
    "seed": "seed",
}


def trials_frame(data: StudyData) -> pd.DataFrame:
    """One row per search trial and baseline (its label as its trial), with the columns of
    :data:`COLUMNS` (effective params only where sparse training made them differ, MACs only
    where counted), each searched setting, and the error."""
    trials = data.trials.copy()
    trials["front"] = ""
    if "pareto" in trials:
        trials.loc[trials["tied"].fillna(False).astype(bool), "front"] = "tied"
        trials.loc[trials["pareto"].fillna(False).astype(bool), "front"] = "yes"
    baseline = trials["kind"] == "baseline"
    trials["number"] = trials["number"].astype(object)
    trials.loc[baseline, "number"] = "baseline " + trials.loc[baseline, "label"].astype(str)
    trials.loc[baseline, "status"] = "baseline"
    columns = [c for c in COLUMNS if c in trials]
    effective = trials.get("effective_params")
    if effective is not None and effective.fillna(-1).eq(trials["params"].fillna(-1)).all():
        columns.remove("effective_params")  # dense families only: the same column twice
    for cost in ("macs", *MEASURED):  # where counted or measured
        if cost in trials and trials[cost].isna().all():
            columns.remove(cost)
    frame = trials[columns].rename(columns=COLUMNS)
    for name in data.dimensions:
        column = f"param:{name}"
        frame[name] = trials.get(column)
    frame["error"] = trials["error"]
    return frame


def render(frame: pd.DataFrame, settings: list[str]) -> str:
    """The table of ``frame`` (from :func:`trials_frame`; ``settings``: its searched-setting
    columns, shown exactly as sampled), the filter box, and the script that sorts and filters."""
    head = "".join(f"<th title='click to sort'>{escape(str(c))}</th>" for c in frame.columns)
    body = [
        "<tr>" + "".join(_cell(column, value, column in settings) for column, value in row.items()) + "</tr>"
        for row in frame.to_dict("records")
    ]
    return (
        "<div class='controls'><input type='text' id='trials-filter' placeholder='filter: kw "
        "status:complete accuracy&gt;0.8 params&lt;1000000'> "
        "<span id='trials-count' class='muted'></span></div>"
        f"<div class='scroll'><table id='trials-table'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div><script>{SCRIPT}</script>"
    )


def _cell(column: str, value: Any, setting: bool) -> str:
    """A cell: its text, and the number it sorts and filters by (``data-v``) when it is one."""
    if not present(value):
        return "<td></td>"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if setting:
        text = format_value(value)
    elif numeric:
        text = layout.number(value, {"ci_low": "accuracy", "ci_high": "accuracy"}.get(column, column))
    else:
        text = str(value)
    if column == "trial" and numeric:
        return f"<td class='n'><a href='#learning-curves' data-trial='{int(value)}'>{int(value)}</a></td>"
    sort = f" data-v='{float(value)!r}'" if numeric else ""
    if column == "error" and len(text) > ERROR_SHOWN:  # the whole of it on hovering
        return f"<td class='mono' title='{escape(text)}'>{escape(text[: ERROR_SHOWN - 1])}…</td>"
    css = " class='n'" if numeric else (" class='mono'" if column == "error" else "")
    return f"<td{css}{sort}>{escape(text)}</td>"


SCRIPT = """
(function () {
  const table = document.getElementById("trials-table");
  const input = document.getElementById("trials-filter");
  const count = document.getElementById("trials-count");
  const names = Array.from(table.tHead.rows[0].cells, (th) => th.textContent.toLowerCase());
  const rows = Array.from(table.tBodies[0].rows);
  const value = (cell) => (cell.dataset.v !== undefined ? Number(cell.dataset.v) : cell.textContent);
  function compare(a, b) {
    const x = Number(a), y = Number(b);
    if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) return x - y;
    return String(a).localeCompare(String(b));
  }
  function test(term, cells) {
    const m = term.match(/^([^<>=:]+)(<=|>=|<|>|=|:)(.*)$/);
    if (!m) return cells.some((c) => c.textContent.toLowerCase().includes(term));
    const at = names.indexOf(m[1]);
    if (at < 0) return false;
    const cell = cells[at], want = m[3];
    if (m[2] === ":") return cell.textContent.toLowerCase().includes(want);
    if (cell.textContent === "") return false;
    const have = value(cell);
    const order = compare(have, want);
    return { "<": order < 0, ">": order > 0, "<=": order <= 0, ">=": order >= 0, "=": order === 0 }[m[2]];
  }
  function filter() {
    const terms = input.value.toLowerCase().split(/\\s+/).filter((t) => t);
    let shown = 0;
    for (const row of rows) {
      const cells = Array.from(row.cells);
      const keep = terms.every((t) => test(t, cells));
      row.style.display = keep ? "" : "none";
      shown += keep;
    }
    count.textContent = shown + " of " + rows.length + " shown";
  }
  let sortedBy = -1, ascending = true;
  function sort(at) {
    ascending = sortedBy === at ? !ascending : true;
    sortedBy = at;
    const empty = (row) => row.cells[at].textContent === "";
    rows.sort((a, b) => {
      if (empty(a) !== empty(b)) return empty(a) ? 1 : -1;  // blanks last either way
      const order = compare(value(a.cells[at]), value(b.cells[at]));
      return ascending ? order : -order;
    });
    for (const row of rows) table.tBodies[0].appendChild(row);
    Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
      th.dataset.sorted = i === at ? (ascending ? "up" : "down") : "";
    });
  }
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => th.addEventListener("click", () => sort(i)));
  input.addEventListener("input", filter);
  table.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-trial]");
    if (link && window.kwsearchShowCurve) window.kwsearchShowCurve(Number(link.dataset.trial));
  });
  filter();
})();
"""

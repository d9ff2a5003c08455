"""Learning curves of any trial: validation accuracy per epoch and, for families with an
attention temperature, the temperature. The page opens on the front's curves; the reader types
any trial numbers (or clicks one in the table of all trials) to see theirs.

:func:`curve_data` gathers every trained trial's curve; :func:`render` writes the plot's frame
(plotly) and the script that draws the chosen curves into it."""

from __future__ import annotations

import json
from typing import Any

import plotly.io as pio
from plotly.subplots import make_subplots

from kwsearch.report import layout
from kwsearch.report.data import StudyData, present
from kwsearch.report.figures import TEMPLATE

DIV = "learning-curves"
HEIGHT = 380
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def curve_data(data: StudyData) -> dict[str, dict[str, list[Any]]]:
    """Each search trial with an epoch, by number: ``epoch``, ``accuracy`` (validation) and,
    where its family has one, ``temperature`` (None in epochs without)."""
    history = data.history
    if history.empty:
        return {}
    search = history[history["kind"] == "search"]
    curves = {}
    for number, curve in search.groupby("number"):
        found = {"epoch": curve["epoch"].astype(int).tolist(), "accuracy": curve["val_accuracy"].tolist()}
        if "temperature" in curve and curve["temperature"].notna().any():
            found["temperature"] = [t if present(t) else None for t in curve["temperature"]]
        curves[str(int(number))] = found
    return curves


def render(data: StudyData) -> str:
    """The learning-curve plot with its trial picker, opening on the front's curves."""
    curves = curve_data(data)
    if not curves:
        return "<p>No trial has finished an epoch yet.</p>"
    with_temperature = any("temperature" in c for c in curves.values())
    fig = make_subplots(
        rows=1,
        cols=2 if with_temperature else 1,
        subplot_titles=("validation accuracy", "attention temperature") if with_temperature else None,
    )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="validation accuracy", col=1)
    fig.update_layout(template=TEMPLATE, height=HEIGHT, margin={"l": 60, "r": 20, "t": 40, "b": 50})
    setup = {
        "curves": curves,
        "front": [n for n in data.front if str(n) in curves],
        "palette": PALETTE,
        "layout": json.loads(pio.to_json(fig))["layout"],
        "config": layout.PLOT_CONFIG,
    }
    return (
        "<div class='controls'>trials: <input type='text' id='curve-trials' "
        "placeholder='e.g. 3, 17, 42'> <button id='curve-show'>show</button> "
        "<button id='curve-front'>the front</button> <span id='curve-note' class='muted'></span></div>"
        f"<div id='{DIV}' class='plotly-graph-div' style='height:{HEIGHT}px;width:100%'></div>"
        f"<script>{SCRIPT}({layout.script_json(setup)});</script>"
    )


SCRIPT = """
(function (setup) {
  const div = document.getElementById("learning-curves");
  const input = document.getElementById("curve-trials");
  const note = document.getElementById("curve-note");
  const { curves, front, palette } = setup;
  function traces(numbers) {
    const out = [];
    numbers.forEach((n, i) => {
      const c = curves[n], color = palette[i % palette.length], group = "trial " + n;
      out.push({ x: c.epoch, y: c.accuracy, mode: "lines+markers", name: group, legendgroup: group,
                 line: { color: color }, xaxis: "x", yaxis: "y" });
      if (c.temperature && setup.layout.xaxis2) {
        out.push({ x: c.epoch, y: c.temperature, mode: "lines", name: group, legendgroup: group,
                   showlegend: false, line: { color: color, dash: "dot" }, xaxis: "x2", yaxis: "y2" });
      }
    });
    return out;
  }
  function show(numbers) {
    numbers = numbers.map(String);
    const missing = numbers.filter((n) => !curves[n]);
    const known = numbers.filter((n, i) => curves[n] && numbers.indexOf(n) === i);
    input.value = known.join(", ");
    note.textContent = missing.length ? "no epoch recorded for trial(s) " + missing.join(", ") : "";
    Plotly.react(div, traces(known), setup.layout, setup.config);
  }
  const typed = () => input.value.split(/[\\s,]+/).filter((t) => t);
  document.getElementById("curve-show").addEventListener("click", () => show(typed()));
  document.getElementById("curve-front").addEventListener("click", () => show(front));
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") show(typed()); });
  window.kwsearchShowCurve = (n) => { show(typed().concat([String(n)])); div.scrollIntoView(); };
  show(front);
})"""

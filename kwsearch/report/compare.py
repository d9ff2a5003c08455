"""Two or more studies on one page (``kwsearch report A B``): their fronts overlaid on each cost,
and their hypervolumes side by side, each against its own reference point and against one
common to all (so that the numbers compare), with the front tables of all of them.

:func:`compare` gathers what the page shows; the ``plot_*`` functions draw it; :func:`render`
writes the page."""

from __future__ import annotations

import time
from html import escape
from typing import NamedTuple

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kwsearch import __version__
from kwsearch.formats import format_accuracy, format_cost
from kwsearch.records import MEASURED
from kwsearch.report import analysis, layout, paper_tables
from kwsearch.report.data import ReportError, StudyData
from kwsearch.report.figures import LABELS, TEMPLATE, hover_text, interval_bars

PALETTE = ("rgb(31,119,180)", "rgb(255,127,14)", "rgb(44,160,44)", "rgb(214,39,40)", "rgb(148,103,189)")


class Comparison(NamedTuple):
    studies: list[StudyData]
    labels: list[str]  # how the page names each study (its name; the name and storage if two share one)
    objectives: list[str]
    reference_point: list[float] | None  # common to all: each objective's worst of their points
    hypervolume: pd.DataFrame  # one row per study: trained, front, own and common hypervolume
    histories: list[pd.DataFrame]  # each study's hypervolume over finished trials, common point


def compare(studies: list[StudyData]) -> Comparison:
    """What the page compares. Raises ReportError when the studies do not share objectives."""
    objectives = studies[0].objectives
    for data in studies[1:]:
        if data.objectives != objectives:
            raise ReportError(
                f"studies {studies[0].name!r} and {data.name!r} have different objectives "
                f"({', '.join(objectives)} against {', '.join(data.objectives)}): their fronts do not compare"
            )
    names = [d.name for d in studies]
    labels = [d.name if names.count(d.name) == 1 else f"{d.name} ({d.storage})" for d in studies]
    points = [d.record.reference_point for d in studies]
    # the box that holds every study's: its hypervolumes compare across the studies
    common = [max(values) for values in zip(*points, strict=True)] if all(points) else None
    histories, rows = [], []
    for label, data in zip(labels, studies, strict=True):
        history = analysis.hypervolume_history(data, common) if common else pd.DataFrame()
        own = analysis.hypervolume_history(data)
        histories.append(history)
        rows.append(
            {
                "study": label,
                "trained trials": int(data.search["trained"].sum()) if len(data.search) else 0,
                "front": len(data.front),
                "hypervolume (own reference point)": own["hypervolume"].iloc[-1] if len(own) else None,
                "hypervolume (common reference point)": (
                    history["hypervolume"].iloc[-1] if len(history) else None
                ),
                "own reference point": _point(data.record.reference_point, objectives),
            }
        )
    return Comparison(studies, labels, objectives, common, pd.DataFrame(rows), histories)


def plot_fronts(comparison: Comparison, cost: str) -> go.Figure:
    """Each study's Pareto front against ``cost`` (points with their 95% intervals, a step line),
    in a colour of its own."""
    fig = go.Figure()
    for i, (label, data) in enumerate(zip(comparison.labels, comparison.studies, strict=True)):
        color, name = PALETTE[i % len(PALETTE)], layout.plot_text(label)
        front = data.search[data.search["number"].isin(data.front)].sort_values(cost)
        if front.empty or front[cost].isna().any():
            continue
        records = front.to_dict("records")
        fig.add_trace(
            go.Scatter(
                x=front[cost].tolist(),
                y=front["accuracy"].tolist(),
                mode="lines+markers",
                line={"shape": "hv", "color": color, "width": 2},
                marker={"size": 9, "color": color},
                name=name,
                error_y=interval_bars(records, color),
                text=[f"<b>{name}</b><br>{hover_text(r, comparison.objectives)}" for r in records],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        height=480,
        xaxis_title=LABELS.get(cost, cost),
        yaxis_title=LABELS["accuracy"],
        legend={"orientation": "h", "y": -0.18},
        hoverlabel={"align": "left", "font": {"size": 11}},
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    return fig


def plot_hypervolumes(comparison: Comparison) -> go.Figure:
    """Side by side: each study's final hypervolume (common reference point) as a bar, and its
    hypervolume over finished trials as a line."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("at the end", "against finished trials"))
    table = comparison.hypervolume
    for i, (label, history) in enumerate(zip(comparison.labels, comparison.histories, strict=True)):
        color = PALETTE[i % len(PALETTE)]
        name = layout.plot_text(label)
        fig.add_trace(
            go.Bar(
                x=[name],
                y=[table["hypervolume (common reference point)"][i]],
                marker={"color": color},
                name=name,
                legendgroup=name,
            ),
            row=1,
            col=1,
        )
        if len(history):
            fig.add_trace(
                go.Scatter(
                    x=history["trials"],
                    y=history["hypervolume"],
                    mode="lines",
                    line={"shape": "hv", "color": color},
                    name=name,
                    legendgroup=name,
                    showlegend=False,
                ),
                row=1,
                col=2,
            )
    fig.update_yaxes(title_text="normalised hypervolume (common reference point)", col=1)
    fig.update_xaxes(title_text="trials finished", col=2)
    fig.update_layout(template=TEMPLATE, height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return fig


def render(comparison: Comparison, markdown_text: str, latex_text: str, files: tuple[str, str]) -> str:
    """The comparison page."""
    names = ", ".join(comparison.labels)
    count = len(comparison.studies)
    body = [f"<h1>{escape(names)}</h1><p class='muted'>kwsearch comparison of {count} studies</p>"]
    facts = pd.DataFrame(
        [
            {
                "study": label,
                "storage": data.storage,
                "objectives": ", ".join(data.objectives),
                "budget limits": ", ".join(
                    f"{k} ≤ {format_cost(v, k)}" for k, v in data.record.budget.items()
                )
                or "none",
                "trials": ", ".join(f"{n} {s}" for s, n in sorted(data.counts().items())),
            }
            for label, data in zip(comparison.labels, comparison.studies, strict=True)
        ]
    )
    body.append(layout.table(facts, mono={"storage"}))
    body.append("<h2>Fronts</h2>")
    body.append(
        "<p class='muted'>Each study's Pareto-optimal trials (on each config's mean accuracy) with their "
        "95% intervals, joined by its front as a step line. Hover a point for its config and replay "
        "command.</p>"
    )
    for cost in ("params", "macs", *MEASURED):
        if all(cost in d.search and d.search[cost].notna().any() for d in comparison.studies):
            body.append(f"<h3>against {escape(LABELS.get(cost, cost))}</h3>")
            body.append(layout.plot(plot_fronts(comparison, cost)))
    body.append("<h2>Hypervolume</h2>")
    if comparison.reference_point:
        body.append(
            "<p class='muted'>Each study's front is measured against its own reference point (fixed when "
            "it started) and against one common to all, each objective's worst of theirs: "
            f"<b>{escape(_point(comparison.reference_point, comparison.objectives))}</b>. Only the common "
            "figures compare across studies.</p>"
        )
        body.append(layout.plot(plot_hypervolumes(comparison)))
    else:
        body.append("<p class='note'>A study has no reference point stored: hypervolumes do not compare.</p>")
    body.append(layout.table(comparison.hypervolume))
    body.append("<h2>The fronts for a paper</h2>")
    body.append(paper_tables.render(markdown_text, latex_text, files))
    body.append(
        f"<p class='muted'>Generated {escape(time.strftime('%Y-%m-%d %H:%M:%S'))} by kwsearch "
        f"{escape(__version__)}.</p>"
    )
    return layout.document(f"kwsearch comparison: {names}", body)


def _point(point: list[float] | None, objectives: list[str]) -> str:
    if not point:
        return "none"
    return ", ".join(
        f"{name} {format_accuracy(abs(v)) if name == 'accuracy' else format_cost(v, name)}"
        for name, v in zip(objectives, point, strict=False)
    )

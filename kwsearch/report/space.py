"""The search space seen through the complete trials, as Optuna draws it: parallel coordinates
(every searched setting and cost an axis, each trial a line coloured by its accuracy) and slice
plots (accuracy against each setting's value). :func:`space_trials` gathers the data; the
``plot_*`` functions draw it."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from kwsearch.formats import format_accuracy, format_value
from kwsearch.report.data import COSTS, StudyData, present
from kwsearch.report.figures import LABELS, TEMPLATE
from kwsearch.report.layout import plot_text

UNSET = "(unset)"  # a conditional setting a trial did not have
UNSET_AT = -0.1  # where a parallel-coordinates axis puts the trials without the setting
COLOUR_BANDS = 12
COLOURS = "Viridis"
SLICES_PER_ROW = 3


class Setting(NamedTuple):
    name: str
    values: list[Any]  # one per trial; None where the trial did not have the setting
    choices: list[Any] | None  # a categorical setting's choices in the space's order; None: numbers


class SpaceTrials(NamedTuple):
    """The complete search trials: their numbers, accuracies, costs and searched settings."""

    numbers: list[int]
    accuracy: list[float]
    costs: dict[str, list[float]]  # the costs counted, by name
    settings: list[Setting]


def space_trials(data: StudyData) -> SpaceTrials | str:
    """The complete trials of ``data`` with their settings; a message when there are none."""
    complete = data.complete[data.complete["accuracy"].notna()]
    if complete.empty:
        return "No complete trial yet: the space is drawn through complete trials."
    if not data.dimensions:
        return "This study searched no setting."
    settings = []
    for name, choices in data.dimensions.items():
        column = f"param:{name}"
        values = complete[column].tolist() if column in complete else [None] * len(complete)
        settings.append(Setting(name, [v if present(v) else None for v in values], choices))
    costs = {
        name: complete[name].astype(float).tolist()
        for name in COSTS
        if name in complete and complete[name].notna().all()
    }
    if "effective_params" in costs and costs["effective_params"] == costs.get("params"):
        del costs["effective_params"]  # dense families: the same axis twice
    return SpaceTrials(
        numbers=complete["number"].astype(int).tolist(),
        accuracy=complete["accuracy"].astype(float).tolist(),
        costs=costs,
        settings=settings,
    )


def plot_parallel_coordinates(space: SpaceTrials) -> go.Figure:
    """One vertical axis per searched setting, then the costs and the accuracy; one line per
    trial, coloured by its accuracy (the most accurate drawn on top). Drawn as SVG (plotly's
    ``Parcoords`` needs WebGL, which not every browser that opens a report offers)."""
    axes = [_axis(setting) for setting in space.settings]
    axes += [_numbers_axis(LABELS.get(name, name), values) for name, values in space.costs.items()]
    axes.append(_numbers_axis(LABELS["accuracy"], space.accuracy))
    fig = go.Figure()
    for i, axis in enumerate(axes):
        fig.add_shape(type="line", x0=i, x1=i, y0=0, y1=1, line={"color": "rgb(90,90,90)", "width": 1})
        fig.add_annotation(x=i, y=1.04, text=f"<b>{axis.label}</b>", showarrow=False, yanchor="bottom")
        for position, text in axis.ticks:
            fig.add_annotation(
                x=i, y=position, text=text, showarrow=False, xanchor="right", xshift=-3, font={"size": 10}
            )
    low, high = min(space.accuracy), max(space.accuracy)
    shade = [0.0 if high == low else (a - low) / (high - low) for a in space.accuracy]
    for band in range(COLOUR_BANDS):  # one trace per colour: a line has one colour per trace
        members = [k for k, v in enumerate(shade) if min(int(v * COLOUR_BANDS), COLOUR_BANDS - 1) == band]
        if not members:
            continue
        x, y, text = [], [], []
        for k in sorted(members, key=lambda k: space.accuracy[k]):
            label = f"trial {space.numbers[k]}<br>accuracy {format_accuracy(space.accuracy[k])}"
            x += [*range(len(axes)), None]
            y += [axis.positions[k] for axis in axes] + [None]
            text += [label] * len(axes) + [None]
        colour = sample_colorscale(COLOURS, (band + 0.5) / COLOUR_BANDS)[0]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line={"color": colour, "width": 1.2},
                opacity=0.75,
                text=text,
                hoverinfo="text",
                showlegend=False,
            )
        )
    fig.add_trace(  # the colour bar
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={
                "color": [low],
                "colorscale": COLOURS,
                "cmin": low,
                "cmax": high,
                "showscale": True,
                "colorbar": {"title": {"text": "accuracy"}},
            },
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.update_xaxes(visible=False, range=[-0.6, len(axes) - 0.4])
    fig.update_yaxes(visible=False, range=[UNSET_AT - 0.06, 1.12])
    fig.update_layout(
        template=TEMPLATE, height=460, hovermode="closest", margin={"l": 60, "r": 20, "t": 20, "b": 20}
    )
    return fig


def plot_slices(space: SpaceTrials) -> go.Figure:
    """Accuracy against each searched setting's value, one panel per setting; the colour is
    the trial's number (the order it was sampled in)."""
    count = len(space.settings)
    columns = min(SLICES_PER_ROW, count)
    rows = math.ceil(count / columns)
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[plot_text(s.name) for s in space.settings],
        shared_yaxes=True,
        horizontal_spacing=0.05,
        vertical_spacing=0.5 / rows,
    )
    for i, setting in enumerate(space.settings):
        row, column = divmod(i, columns)
        taken = [k for k, value in enumerate(setting.values) if value is not None]
        shown = [_shown(setting, setting.values[k]) for k in taken]
        fig.add_trace(
            go.Scatter(
                x=shown,
                y=[space.accuracy[k] for k in taken],
                mode="markers",
                marker={
                    "color": [space.numbers[k] for k in taken],
                    "colorscale": "Blues",
                    "cmin": min(space.numbers),
                    "cmax": max(space.numbers),
                    "showscale": i == 0,
                    "colorbar": {"title": {"text": "trial"}},
                    "line": {"width": 0.5, "color": "rgb(80,80,80)"},
                    "size": 7,
                },
                text=[
                    f"trial {space.numbers[k]}<br>{plot_text(setting.name)}: {value}<br>"
                    f"accuracy {format_accuracy(space.accuracy[k])}"
                    for k, value in zip(taken, shown, strict=True)
                ],
                hoverinfo="text",
                showlegend=False,
            ),
            row=row + 1,
            col=column + 1,
        )
        if setting.choices is not None:
            order = [plot_text(format_value(c)) for c in setting.choices]
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=order, row=row + 1, col=column + 1
            )
    fig.update_yaxes(title_text=LABELS["accuracy"], col=1)
    fig.update_layout(template=TEMPLATE, height=120 + 260 * rows, margin={"l": 60, "r": 20, "t": 40, "b": 40})
    return fig


def _shown(setting: Setting, value: Any) -> Any:
    """A value as its panel's x axis takes it: a choice's label, or the number."""
    return plot_text(format_value(value)) if setting.choices is not None else value


class Axis(NamedTuple):
    label: str
    positions: list[float]  # each trial's place on the axis, 0 (bottom) to 1 (top)
    ticks: list[tuple[float, str]]  # (position, label)


def _axis(setting: Setting) -> Axis:
    """A setting's axis: choices evenly spaced in the space's order, numbers to scale. Trials
    without the setting (a conditional one) sit on a tick of their own below."""
    label = plot_text(setting.name)
    if setting.choices is None:
        axis = _numbers_axis(label, [None if v is None else float(v) for v in setting.values])
    else:
        count = len(setting.choices)
        step = 1 / (count - 1) if count > 1 else 0.0
        start = 0.0 if count > 1 else 0.5
        place = {format_value(c): start + i * step for i, c in enumerate(setting.choices)}
        axis = Axis(
            label,
            [UNSET_AT if v is None else place[format_value(v)] for v in setting.values],
            [(place[format_value(c)], plot_text(format_value(c))) for c in setting.choices],
        )
    if any(v is None for v in setting.values):
        axis.ticks.append((UNSET_AT, UNSET))
    return axis


def _numbers_axis(label: str, values: list[float | None]) -> Axis:
    """Numbers to scale between their least (0) and greatest (1), five ticks; None at UNSET_AT."""
    known = [v for v in values if v is not None]
    low, high = min(known), max(known)
    span = high - low
    positions = [UNSET_AT if v is None else (v - low) / span if span else 0.5 for v in values]
    ticks = [(k / 4, _tick(low + span * k / 4)) for k in range(5)] if span else [(0.5, _tick(low))]
    return Axis(label, positions, ticks)


def _tick(value: float) -> str:
    """An axis tick's label: a coordinate, short (``1.5M``), not a trial's value."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"

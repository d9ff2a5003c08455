"""The report's plots, as plotly figures. Every user-provided string in plot text goes through
:func:`kwsearch.report.layout.plot_text`, so it shows as typed and is never markup."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kwsearch.calibrate import CheapProxy
from kwsearch.formats import format_accuracy, format_cost
from kwsearch.report.data import COSTS, StudyData, present
from kwsearch.report.layout import plot_text

TEMPLATE = "plotly_white"
LABELS = {"accuracy": "proxy accuracy", "params": "parameters", "effective_params": "effective parameters"}
LABELS["macs"] = "MACs"
LABELS["train_ms_per_image"] = "training time per image (ms)"
LABELS["latency_ms"] = "latency, batch 1 (ms)"
LABELS["latency_batch_ms"] = "latency, the recipe's batch (ms)"
# how each kind of trial is drawn on the accuracy-cost plot
STYLES = {
    "dominated": {"color": "rgba(31,119,180,0.30)", "symbol": "circle", "size": 7},
    "tied": {"color": "rgba(31,119,180,0.65)", "symbol": "circle-dot", "size": 9},
    "pareto": {
        "color": "rgb(31,119,180)",
        "symbol": "circle",
        "size": 10,
        "line": {"width": 1, "color": "black"},
    },
    "pruned": {"color": "rgba(127,127,127,0.55)", "symbol": "circle-open", "size": 8},
    "failed": {"color": "rgb(214,39,40)", "symbol": "x", "size": 8},
    "infeasible": {"color": "rgba(255,127,14,0.7)", "symbol": "triangle-down-open", "size": 8},
}
CAPTIONS = {
    "dominated": "complete (dominated)",
    "tied": "tied with the front (within noise)",
    "pareto": "Pareto-optimal",
    "pruned": "pruned (accuracy when stopped)",
    "failed": "failed (last accuracy)",
    "infeasible": "infeasible: over budget or unbuildable",
}
# trials without an accuracy are drawn in a strip under the accuracy axis, one row per kind:
# at accuracy 0 they would stretch the axis until the front is a thin band
NO_ACCURACY = {"infeasible": "never trained", "failed": "failed before an epoch"}


def hover_text(row: dict[str, Any], objectives: list[str]) -> str:
    """A trial's hover box: number and status, metrics, its full config, the replay command."""
    head = f"<b>trial {row['number']}</b> ({plot_text(row['status'])})"
    if row["kind"] == "baseline":
        head = f"<b>baseline {plot_text(row['label'])}</b>"
    lines = [head]
    for name in ("accuracy", *COSTS, "seconds"):
        value = row.get(name)
        if present(value):
            lines.append(f"{LABELS.get(name, name)}: {_format(name, value)}")
            if name == "accuracy" and present(row.get("accuracy_low")):
                runs = f", mean of {row['runs']} runs" if (row.get("runs") or 1) > 1 else ""
                lines.append(f"  95% CI {row['accuracy_low']:.4f} to {row['accuracy_high']:.4f}{runs}")
    if present(row.get("device")):
        lines.append(f"times measured on {plot_text(row['device'])}")
    if present(row.get("temperature")):
        lines.append(f"temperature reached: {row['temperature']:.3g}")
    if present(row.get("seed")):
        lines.append(f"seed: {plot_text(row['seed'])}")
    if present(row.get("error")):
        lines.append(f"error: {plot_text(_shorten(str(row['error']), 300))}")
    config = json.loads(row["config"]) if present(row.get("config")) else None
    if config is not None:
        lines.append("<b>config</b>")
        lines += [f"  {plot_text(key)}: {plot_text(json.dumps(value))}" for key, value in _leaves(config)]
    if present(row.get("replay")):
        lines.append(f"replay: {plot_text(row['replay'])}")
    return "<br>".join(lines)


def accuracy_vs_cost(data: StudyData, cost: str) -> go.Figure:
    """Every trial as a point (accuracy against ``cost``), the front as a step line, baselines
    as stars, the budget as a vertical line, and a linear/log switch for the x axis."""
    objectives = data.objectives
    search = data.search.copy()
    search = search[search["status"] != "duplicate"]
    search["kind_of_point"] = search["status"]
    search.loc[(search["status"] == "complete") & search["pareto"], "kind_of_point"] = "pareto"
    search.loc[(search["status"] == "complete") & ~search["pareto"], "kind_of_point"] = "dominated"
    search.loc[(search["status"] == "complete") & search["tied"], "kind_of_point"] = "tied"
    drawn = search[search[cost].notna()]
    measured = drawn["accuracy"].notna()
    unmeasured = set(drawn.loc[~measured, "kind_of_point"])
    strip = list(dict.fromkeys(_strip_row(k) for k in STYLES if k in unmeasured))
    if strip:
        fig = make_subplots(rows=2, shared_xaxes=True, row_heights=[0.86, 0.14], vertical_spacing=0.03)
    else:
        fig = go.Figure()
    for kind, style in STYLES.items():
        of_kind = drawn["kind_of_point"] == kind
        for group, row in ((drawn[of_kind & measured], 1), (drawn[of_kind & ~measured], 2)):
            if group.empty:
                continue
            records = group.to_dict("records")
            fig.add_trace(
                go.Scatter(
                    x=group[cost].tolist(),
                    y=group["accuracy"].tolist() if row == 1 else [_strip_row(kind)] * len(group),
                    mode="markers",
                    name=CAPTIONS[kind],
                    legendgroup=kind,
                    showlegend=not any(t.legendgroup == kind for t in fig.data),
                    marker=style,
                    error_y=interval_bars(records, style["color"]) if row == 1 else None,
                    text=[hover_text(r, objectives) for r in records],
                    hoverinfo="text",
                ),
                **({"row": row, "col": 1} if strip else {}),
            )
    front = search[search["kind_of_point"] == "pareto"].sort_values(cost)
    if cost in objectives and len(front):
        fig.add_trace(
            go.Scatter(
                x=front[cost].tolist(),
                y=front["accuracy"].tolist(),
                mode="lines",
                line={"shape": "hv", "color": "rgb(31,119,180)", "width": 2},
                name="Pareto front",
                hoverinfo="skip",
            )
        )
    baselines = data.baselines
    if len(baselines) and baselines[cost].notna().any():
        records = baselines.to_dict("records")
        fig.add_trace(
            go.Scatter(
                x=baselines[cost].tolist(),
                y=baselines["accuracy"].tolist(),
                mode="markers+text",
                name="baselines",
                marker={"symbol": "star", "size": 14, "color": "rgb(44,160,44)", "line": {"width": 1}},
                error_y=interval_bars(records, "rgb(44,160,44)"),
                text=[plot_text(r["label"]) for r in records],
                textposition="top center",
                hovertext=[hover_text(r, objectives) for r in records],
                hoverinfo="text",
            )
        )
    limit = data.record.budget.get(cost)
    if limit:
        fig.add_vline(x=limit, line={"dash": "dash", "color": "rgb(214,39,40)"})
        fig.add_annotation(
            x=limit, y=1, yref="paper", text=f"budget {_format(cost, limit)}", showarrow=False, xanchor="left"
        )
    # Open on the trials that trained, the baselines and the budget: far over-budget configs
    # would squeeze the front into a corner (double-click the plot, or "log x", to see them all).
    trained = search.loc[search["kind_of_point"] != "infeasible", cost].dropna().tolist()
    shown = trained + baselines[cost].dropna().tolist() + ([limit] if limit else [])
    if trained and max(search[cost].dropna()) > 1.15 * max(shown):
        fig.update_xaxes(range=[0, 1.08 * max(shown)])
    fig.update_layout(
        template=TEMPLATE,
        height=560 if strip else 520,
        margin={"l": 60 + 70 * bool(strip), "r": 20, "t": 50, "b": 50},
        yaxis_title=LABELS["accuracy"],
        legend={"orientation": "h", "y": -0.18},
        hoverlabel={"align": "left", "font": {"size": 11}},
        updatemenus=[_axis_switch(axes=2 if strip else 1)],
    )
    fig.update_xaxes(title_text=LABELS.get(cost, cost), row=2 if strip else None)
    if strip:
        fig.update_yaxes(
            type="category", categoryorder="array", categoryarray=strip, showgrid=False, row=2, col=1
        )
    return fig


def hypervolume_history(history: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against finished trials", "against compute time"))
    line = {"shape": "hv", "color": "rgb(31,119,180)"}
    fig.add_trace(
        go.Scatter(x=history["trials"], y=history["hypervolume"], mode="lines", line=line, name="by trials"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=history["compute_hours"], y=history["hypervolume"], mode="lines", line=line, name="by time"
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="trials finished", row=1, col=1)
    fig.update_xaxes(title_text="trial compute (hours, summed)", row=1, col=2)
    fig.update_yaxes(title_text="normalised hypervolume", row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=360, showlegend=False, margin={"l": 60, "r": 20, "t": 40})
    return fig


def importances(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for name in table.columns:
        fig.add_trace(
            go.Bar(
                y=[plot_text(s) for s in table.index],
                x=table[name].tolist(),
                orientation="h",
                name=LABELS.get(name, name),
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        height=140 + 40 * len(table) * max(1, len(table.columns)) // 2,
        xaxis_title="importance (PED-ANOVA, normalised per objective)",
        yaxis={"autorange": "reversed"},
        margin={"l": 160, "r": 20, "t": 30, "b": 50},
    )
    return fig


def proxy_vs_full(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=table["proxy_accuracy"],
            y=table["full_accuracy"],
            mode="markers+text",
            text=[f"{n}" for n in table["number"]],
            textposition="top center",
            marker={"size": 9},
            hovertemplate="trial %{text}<br>proxy %{x:.4f}<br>full %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=420,
        xaxis_title="proxy accuracy",
        yaxis_title="full accuracy (mean over replay seeds)",
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    return fig


def calibration(table: pd.DataFrame) -> go.Figure:
    """Each calibrated config's proxy accuracy against its full accuracy, with bars of one
    standard deviation over seeds."""
    compared = table.dropna(subset=["proxy_accuracy", "full_accuracy"])
    labels = [
        f"config {c}" + ("" if not present(t) else f" (trial {int(t)})")
        for c, t in zip(compared["config"], compared["trial"], strict=True)
    ]
    fig = go.Figure(
        go.Scatter(
            x=compared["proxy_accuracy"],
            y=compared["full_accuracy"],
            error_x={"type": "data", "array": compared["proxy_std"].fillna(0).tolist()},
            error_y={"type": "data", "array": compared["full_std"].fillna(0).tolist()},
            mode="markers+text",
            text=[str(c) for c in compared["config"]],
            textposition="top center",
            customdata=labels,
            marker={"size": 9},
            hovertemplate="%{customdata}<br>proxy %{x:.4f}<br>full %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=420,
        xaxis_title="proxy accuracy (mean over proxy seeds)",
        yaxis_title="full accuracy (mean over full seeds)",
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    return fig


def cheap_proxies(proxies: list[CheapProxy], target: float) -> go.Figure:
    """Each cheaper proxy's Spearman's rho against full training (with its 95% bootstrap
    interval) against its cost, and the target as a dashed line."""
    shown = [p for p in proxies if p.spearman is not None]
    low = [p.spearman.value - p.spearman.bootstrap_ci95[0] if p.spearman.bootstrap_ci95 else 0 for p in shown]
    high = [
        p.spearman.bootstrap_ci95[1] - p.spearman.value if p.spearman.bootstrap_ci95 else 0 for p in shown
    ]
    fig = go.Figure(
        go.Scatter(
            x=[p.cost for p in shown],
            y=[p.spearman.value for p in shown],
            # a color of its own: bars take the marker's by default, which is one per point here
            error_y={"type": "data", "array": high, "arrayminus": low, "color": "rgb(100,100,100)"},
            mode="markers+text",
            text=[p.name for p in shown],
            textposition="middle right",
            customdata=[plot_text(p.label) for p in shown],
            marker={
                "size": 10,
                "color": ["rgb(44,160,44)" if p.meets_target else "rgb(31,119,180)" for p in shown],
            },
            hovertemplate="%{customdata}<br>cost %{x:.0%}<br>Spearman %{y:.3f}<extra></extra>",
        )
    )
    fig.add_hline(y=target, line={"dash": "dash", "color": "rgb(214,39,40)"})
    fig.add_annotation(
        x=0, xref="paper", y=target, text=f"target {target:g}", showarrow=False, yanchor="bottom"
    )
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        # room right of the full proxy's cost for the names of the scores there
        xaxis={
            "title": "cost (share of the proxy's training)",
            "tickformat": ".0%",
            "range": [0, 1.3],
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
        },
        yaxis={"title": "Spearman's rho against full training", "range": [-1.05, 1.05]},
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    return fig


def interval_bars(records: list[dict[str, Any]], color: str) -> dict[str, Any] | None:
    """Each point's 95% accuracy interval as an error bar (none where it has no interval)."""
    if not any(present(r.get("accuracy_low")) for r in records):
        return None

    def half(r: dict[str, Any], end: str) -> float:
        if not present(r.get(end)):
            return 0.0
        return abs(r[end] - r["accuracy"])

    return {
        "type": "data",
        "symmetric": False,
        "array": [half(r, "accuracy_high") for r in records],
        "arrayminus": [half(r, "accuracy_low") for r in records],
        "color": color,
        "thickness": 1,
        "width": 3,
    }


def _axis_switch(axes: int = 1) -> dict[str, Any]:
    """Buttons that make the x axes (``axes`` of them, shared) linear or logarithmic."""
    names = ["xaxis"] + [f"xaxis{i}" for i in range(2, axes + 1)]
    return {
        "type": "buttons",
        "direction": "right",
        "x": 0,
        "y": 1.12,
        "xanchor": "left",
        "buttons": [
            {"label": "linear x", "method": "relayout", "args": [{f"{n}.type": "linear" for n in names}]},
            {
                "label": "log x",
                "method": "relayout",
                "args": [{k: v for n in names for k, v in ((f"{n}.type", "log"), (f"{n}.autorange", True))}],
            },
        ],
    }


def _strip_row(kind: str) -> str:
    """The row of the strip under the accuracy axis where trials of ``kind`` without an accuracy
    are drawn."""
    return NO_ACCURACY.get(kind, "no accuracy")


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, node)]


def _format(name: str, value: float) -> str:
    if name == "accuracy":
        return format_accuracy(value)
    if name == "seconds":
        return f"{value:.1f} s"
    return format_cost(value, name)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

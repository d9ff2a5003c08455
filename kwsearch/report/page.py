"""The report page: one self-contained HTML file (plotly.js inlined, no network).

Everything a user or a study provided (names, space values, configs, error messages, labels) goes
through :func:`html.escape` before it reaches the page; plot data travels as JSON that plotly
writes with ``<`` and ``>`` escaped, and hover text is escaped in :mod:`kwsearch.report.figures`.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from html import escape
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kwsearch import __version__
from kwsearch.formats import format_accuracy, format_cost, format_value
from kwsearch.report import analysis, figures
from kwsearch.report.data import StudyData, present, replay_command
from kwsearch.versions import software_versions

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
"""
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}


def render(data: StudyData) -> str:
    """The whole page for ``data``."""
    body = [_header(data)]
    notice = _notice(data)
    if notice:
        body.append(f'<p class="note">{escape(notice)}</p>')
    if len(data.search):
        body += _fronts(data)
        body += _paper_claims(data)
        body += _hypervolume(data)
        body += _settings_that_matter(data)
        body += _learning_curves(data)
        body += _top_configurations(data)
        body += _proxy_vs_full(data)
        body += _proxy_fidelity(data)
        body += _problems(data)
    elif data.calibration is not None:  # calibrated before any search
        body += _proxy_fidelity(data)
    body.append(
        f'<p class="muted">Generated {escape(time.strftime("%Y-%m-%d %H:%M:%S"))} by kwsearch '
        f"{escape(__version__)} from <code>{escape(data.storage)}</code>. The data behind this page is in "
        "the CSV and Parquet files beside it.</p>"
    )
    title = escape(f"kwsearch report: {data.name}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f'<style>{STYLE}</style><script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(body)}</body></html>\n"
    )


def _notice(data: StudyData) -> str | None:
    """What a reader must know before reading the plots: nothing to show, or not finished."""
    counts = data.counts()
    running = counts.get("running", 0) + counts.get("waiting", 0)
    if not len(data.search):
        return "This study has no trials yet: run `kwsearch search` and generate the report again."
    messages = []
    if running:
        messages.append(
            f"This study is still running ({running} trial(s) running or waiting): "
            "the report is a snapshot of the trials finished so far."
        )
    if not len(data.complete):
        finished = sum(counts.get(s, 0) for s in ("pruned", "failed", "infeasible"))
        if finished and counts.get("failed", 0) == finished:
            messages.append(
                f"All {finished} finished trial(s) failed: there is no front; the errors are below."
            )
        elif finished:
            messages.append(
                f"No trial has completed ({_counts_text(counts)}): there is no front yet; "
                "see the trials below."
            )
    elif len(data.complete) == 1:
        messages.append("One complete trial: the front is that trial; comparisons need more.")
    return " ".join(messages) or None


def _header(data: StudyData) -> str:
    settings = data.settings
    counts = data.counts()
    sampler = settings.get("sampler") or {}
    sampler_text = sampler.get("name", "unknown")
    if sampler.get("name") == "grid":
        sampler_text += f", seeds {sampler.get('seeds')}"
    else:
        sampler_text += f", seed {sampler.get('seed')}"
    if sampler.get("options"):
        sampler_text += f", options {json.dumps(sampler['options'])}"
    budget = settings.get("budget") or {}
    # the last search run's (--trials overrides the study file's)
    trial_budget = data.record.trial_budget or budget.get("trials")
    trained = int(data.search["trained"].sum()) if len(data.search) else 0
    spent = f"{trained} trained trial(s)"
    if trial_budget:
        spent += f" of {trial_budget}"
    seconds = float(data.search["seconds"].fillna(0).sum()) if len(data.search) else 0.0
    gpus = data.record.gpus_per_trial
    spent += f"; trial time {seconds / 3600:.2f} h"
    if gpus:
        spent += f" ({seconds * gpus / 3600:.2f} GPU hours)"
    limits = data.record.budget
    limit_text = ", ".join(f"{k} ≤ {v:,.0f}" for k, v in limits.items()) or "none"
    baseline = data.record.baseline_costs
    if baseline is not None:
        limit_text += f" (static baseline: {baseline.params:,} params)"
    data_settings = settings.get("data") or {}
    data_text = str(data_settings.get("name", "unknown"))
    if data_settings.get("options"):
        data_text += f" {json.dumps(data_settings['options'])}"
    started = data.record.started
    early = settings.get("early_stopping") or {}
    facts = {
        "study": data.name,
        "study file": data.record.source or "(none stored)",
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "unknown",
        "objectives": ", ".join(data.objectives),
        "trials": _counts_text(counts) or "none",
        "budget": f"limits: {limit_text}; trials: {trial_budget or 'no limit'}"
        + (f"; wall clock {budget['wall_clock']:.0f} s" if budget.get("wall_clock") else "")
        + (f"; {budget['gpu_hours']} GPU hours" if budget.get("gpu_hours") else ""),
        "budget spent": spent,
        "sampler": sampler_text,
        "early stopping": "off"
        if not early.get("enabled", True)
        else f"Pareto successive halving from epoch {early.get('min_epochs', 1)}, "
        f"factor {early.get('reduction_factor', 3)}",
        "data": data_text,
        "proxy recipe": json.dumps(settings.get("proxy") or {}, sort_keys=True),
        "storage": data.storage,
        "software": _versions(data.record.software),
    }
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts.items())
    return (
        f"<h1>{escape(data.name)}</h1><p class='muted'>kwsearch study report</p><dl class='facts'>{rows}</dl>"
    )


def _fronts(data: StudyData) -> list[str]:
    parts = ["<h2>Accuracy against cost</h2>"]
    parts.append(
        "<p class='muted'>Every trial is a point; the Pareto front is the step line; dominated trials are "
        "faded, those statistically tied with the front are dotted; pruned, failed and infeasible trials "
        "have their own markers (infeasible configs never trained and sit at accuracy 0). Bars are 95% "
        "intervals of the accuracy (from the number of validation images; over the seeds where a config "
        "ran with several). Stars are the baselines; the dashed line is the budget. Hover a point for its "
        "config, metrics, the temperature it reached and its replay command; the buttons switch the x "
        "axis between linear and log.</p>"
    )
    noise = data.noise.describe()
    if noise:
        parts.append(f"<p class='note'>{escape(' '.join(noise))}</p>")
    for cost in ("params", "macs"):
        if cost in data.search and data.search[cost].notna().any():
            parts.append(f"<h3>against {escape(figures.LABELS.get(cost, cost))}</h3>")
            parts.append(_plot(figures.accuracy_vs_cost(data, cost)))
    return parts


def _paper_claims(data: StudyData) -> list[str]:
    """The published orderings among the baselines, tested on this proxy."""
    if not data.claims:
        return []
    return [
        "<h2>The paper's claims on this proxy</h2>",
        "<p class='muted'>Published (Li &amp; Yao, ICML 2024, ImageNet, every backbone): each "
        "KernelWarehouse preset is more accurate than its static backbone, and a larger warehouse more "
        "accurate than a smaller one. Here, among this study's baselines, each difference with its 95% "
        "interval:</p><ul>",
        *(f"<li>{escape(claim.describe())}</li>" for claim in data.claims),
        "</ul>",
    ]


def _hypervolume(data: StudyData) -> list[str]:
    history = analysis.hypervolume_history(data)
    point = data.record.reference_point
    parts = ["<h2>Hypervolume</h2>"]
    if point:
        described = ", ".join(
            f"{name} {_number(abs(v) if name == 'accuracy' else v, name)}"
            for name, v in zip(data.objectives, point, strict=False)
        )
        parts.append(
            "<p class='muted'>Volume dominated by the front, as a fraction of the box between the ideal "
            "point (accuracy 1, zero cost) and the reference point fixed when the study started: "
            f"<b>{escape(described)}</b>.</p>"
        )
    if history.empty:
        return [*parts, "<p>No trial has finished yet.</p>"]
    return [*parts, _plot(figures.hypervolume_history(history))]


def _settings_that_matter(data: StudyData) -> list[str]:
    parts = ["<h2>Which settings matter</h2>", "<h3>Parameter importances</h3>"]
    found = analysis.importances(data)
    if isinstance(found, str):
        parts.append(f"<p>{escape(found)}</p>")
    else:
        parts.append(
            "<p class='muted'>Optuna's PED-ANOVA importance of each searched setting for each objective, "
            "over complete trials (infeasible configs left out).</p>"
        )
        parts.append(_plot(figures.importances(found)))
    parts.append("<h3>Objectives by value (mean and its 95% confidence interval, complete trials)</h3>")
    tables = analysis.effects(data)
    if not tables:
        parts.append("<p>No complete trials to compare.</p>")
    for key, table in tables.items():
        parts.append(f"<h3 class='mono'>{escape(key)}</h3>")
        parts.append(_table(_with_intervals(_space_values(table, ["value"]), data.objectives)))
    parts.append("<h3>Paired differences against the baseline value</h3>")
    paired = analysis.paired_differences(data)
    if isinstance(paired, str):
        parts.append(f"<p>{escape(paired)}</p>")
    else:
        parts.append(
            "<p class='muted'>Each row pairs trials that agree on every other setting and seed and differ "
            "in this one: the mean difference (value minus baseline) with its 95% confidence interval.</p>"
        )
        for key, table in paired.items():
            parts.append(f"<h3 class='mono'>{escape(key)}</h3>")
            shown = _space_values(table, ["value", "baseline"])
            parts.append(_table(_with_intervals(shown, [f"Δ {n}" for n in data.objectives])))
    return parts


def _learning_curves(data: StudyData) -> list[str]:
    fig = figures.learning_curves(data)
    parts = ["<h2>Learning curves of the Pareto-optimal trials</h2>"]
    if fig is None:
        return [*parts, "<p>No Pareto-optimal trial yet.</p>"]
    return [*parts, _plot(fig)]


def _top_configurations(data: StudyData) -> list[str]:
    parts = ["<h2>Top configurations (the Pareto front)</h2>"]
    front = data.search[data.search["number"].isin(data.front)]
    if front.empty:
        return [*parts, "<p>No Pareto-optimal trial yet.</p>"]
    cost = data.objectives[1]
    rows = []
    for row in front.sort_values(cost).to_dict("records"):
        config = json.loads(row["config"]) if row["config"] else None
        rows.append(
            {
                "trial": row["number"],
                "config (difference from the static baseline)": analysis.config_diff(
                    config, data.baseline_config
                ),
                "accuracy (95% CI)": data.noise.estimates[row["number"]].describe(),
                "temperature reached": row["temperature"],
                "params": row["params"],
                "MACs": row["macs"],
                "train time (s)": row["train_seconds"],
                "replay": row["replay"],
            }
        )
    parts.append(_table(pd.DataFrame(rows), mono={"replay"}))
    command = replay_command(data.target, sorted(data.front))
    parts.append(f"<p>Replay the whole front: <code>{escape(command)}</code></p>")
    return parts


def _proxy_vs_full(data: StudyData) -> list[str]:
    parts = [
        "<h2>Proxy against full training</h2>",
        "<p class='muted'>The replayed trials were chosen by the proxy itself, mostly from its front; "
        "how well the proxy ranks configs across the whole space is measured in "
        "<a href='#proxy-fidelity'>Proxy fidelity</a>.</p>",
    ]
    found = analysis.proxy_vs_full(data)
    if isinstance(found, str):
        return [*parts, f"<p>{escape(found)}</p>"]
    table = found
    parts.append(
        "<p>How far the proxy's ranking held under full training, over the replayed trials whose proxy "
        "completed:</p><ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in data.agreement.describe())
        + "</ul>"
    )
    parts.append(_plot(figures.proxy_vs_full(table)))
    parts.append(_table(table))
    return parts


def _proxy_fidelity(data: StudyData) -> list[str]:
    """How well the proxy ranks configs like full training (``kwsearch calibrate``), its own seed
    noise, and the cheaper proxies its learning curves hold."""
    parts = ["<h2 id='proxy-fidelity'>Proxy fidelity</h2>"]
    calibration = data.calibration
    if calibration is None:
        command = f"kwsearch calibrate {shlex.join(data.target)}"
        return [
            *parts,
            f"<p>Not measured. <code>{escape(command)}</code> trains configs spread over the space's "
            "cost range by the proxy and by the full recipe and measures how well the proxy ranks them "
            "(see docs/fidelity.md).</p>",
        ]
    parts.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in calibration.verdict) + "</ul>")
    members = sum(row["trial"] is not None for row in calibration.configs)
    parts.append(
        f"<p class='muted'>{len(calibration.configs)} configs spread over the space's cost range "
        f"({members} of them from the front when calibrated), trained by the proxy with seeds "
        f"{_seeds(calibration.seeds)} and "
        f"by the full recipe with seeds {_seeds(calibration.full_seeds)}: "
        f"{calibration.runs['done']} of {calibration.runs['total']} runs finished, "
        f"{calibration.runs['reused']} of them by the search, its baselines or replays. A config's "
        "proxy accuracy is its last validation accuracy, its full accuracy its test accuracy, each "
        "averaged over seeds.</p>"
    )
    parts.append(_table(analysis.fidelity_figures(calibration)))
    configs = analysis.fidelity_configs(calibration)
    parts.append(_plot(figures.calibration(configs)))
    parts.append(_table(configs, mono={"runs"}))
    parts.append(
        "<h3>Cheaper proxies</h3><p class='muted'>Scores read from the same learning curves, at no "
        "extra training: the validation accuracy after each epoch, and minus the summed training loss "
        "and minus the last validation loss (a lower loss ranks higher). Each is ranked against full "
        f"training; it meets the target when its Spearman's rho is at least {calibration.target:g}.</p>"
    )
    parts.append(_plot(figures.cheap_proxies(calibration.cheap_proxies, calibration.target)))
    parts.append(_table(analysis.cheap_proxy_table(calibration)))
    return parts


def _natural(row: pd.Series) -> tuple:
    """A row of the error table's sort key: its status, then its error with each number in it
    compared as a number."""
    parts = re.split(r"(\d[\d,]*(?:\.\d+)?)", str(row["error"]))
    return (row["status"], [(0, float(p.replace(",", ""))) if i % 2 else (1, p) for i, p in enumerate(parts)])


def _seeds(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _problems(data: StudyData) -> list[str]:
    """Why trials failed or were not trained: each distinct error with its trials."""
    search = data.search
    troubled = search[search["status"].isin(["failed", "infeasible"]) & search["error"].notna()]
    if troubled.empty:
        return []
    grouped = (
        troubled.groupby(["status", "error"])["number"]
        .agg(lambda n: ", ".join(str(x) for x in sorted(n)))
        .reset_index()
    )
    # numbers in the errors compared as numbers: "params 2,100,000" before "params 10,500,000"
    grouped = grouped.iloc[sorted(range(len(grouped)), key=lambda i: _natural(grouped.iloc[i]))]
    grouped["trials"] = grouped["number"]
    return [
        "<h2>Failed and infeasible trials</h2>",
        _table(grouped[["status", "trials", "error"]], mono={"error"}),
    ]


# -- helpers ------------------------------------------------------------------------------------


def _plot(fig: go.Figure) -> str:
    return (
        "<div class='wide'>"
        + fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)
        + "</div>"
    )


def _table(frame: pd.DataFrame, mono: set[str] = frozenset()) -> str:
    """An HTML table with every cell escaped; numbers right-aligned and formatted by column."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.to_dict("records"):
        cells = []
        for column, value in row.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = " class='n'" if numeric else (" class='mono'" if column in mono else "")
            cells.append(f"<td{css}>{escape(_number(value, str(column)) if numeric else _text(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _with_intervals(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Fold each ``name``, ``name low`` and ``name high`` column triple into one text column:
    ``mean (95% CI low to high)``."""
    out = table.copy()
    for name in names:
        low, high = f"{name} low", f"{name} high"
        if name not in out or low not in out:
            continue

        def shown(mean: float, lo: float, hi: float, name: str = name) -> str:
            interval = f" (95% CI {_number(lo, name)} to {_number(hi, name)})"
            return _number(mean, name) + ("" if _missing(lo) else interval)

        out[name] = [shown(*bounds) for bounds in zip(out[name], out[low], out[high], strict=True)]
        out = out.drop(columns=[low, high])
    return out


def _space_values(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` (values of the search space) as text, exactly as sampled."""
    out = table.copy()
    for column in columns:
        out[column] = out[column].map(format_value)
    return out


COST_COLUMNS = ("params", "effective_params", "macs", "MACs")
COUNT_COLUMNS = ("trial", "number", "config", "n", "pairs", "seeds", "runs", "epochs")


def _number(value: Any, column: str) -> str:
    if _missing(value):
        return "–"
    if column.removeprefix("Δ ") in COST_COLUMNS:
        return format_cost(value)
    if column in COUNT_COLUMNS:
        return str(int(value))
    if "accuracy" in column or column in ("hypervolume", "Spearman ρ", "Kendall τ"):
        return format_accuracy(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _text(value: Any) -> str:
    return "" if value is None or _missing(value) else str(value)


def _missing(value: Any) -> bool:
    return not present(value)


def _counts_text(counts: dict[str, int]) -> str:
    order = ("complete", "pruned", "failed", "infeasible", "duplicate", "running", "waiting")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def _versions(stored: dict[str, str] | None) -> str:
    """The versions the study started with; a study stored before they were recorded shows
    the report's own environment, and says so."""
    versions = stored or software_versions()
    text = ", ".join(f"{name} {version}" for name, version in versions.items())
    return text if stored else text + " (this report's environment)"

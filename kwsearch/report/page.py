"""The report page of one study: its sections in order, each drawn by the module of its view
(:mod:`~kwsearch.report.figures`, :mod:`~kwsearch.report.space`, :mod:`~kwsearch.report.curves`,
:mod:`~kwsearch.report.trials_table`, :mod:`~kwsearch.report.paper_tables`) into one
self-contained HTML file (:mod:`~kwsearch.report.layout`: plotly.js inlined, no network).

Everything a user or a study provided (names, space values, configs, error messages, labels) goes
through :func:`html.escape` before it reaches the page; plot text through
:func:`kwsearch.report.layout.plot_text`; plot data travels as JSON that plotly writes with ``<``
and ``>`` escaped.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from html import escape

import pandas as pd

from kwsearch import __version__
from kwsearch.records import MEASURED
from kwsearch.report import analysis, curves, figures, layout, paper_tables, space, trials_table
from kwsearch.report.data import StudyData, present, replay_command
from kwsearch.versions import software_versions


def render(
    data: StudyData, paper: tuple[str, str] | None = None, files: tuple[str, str] | None = None
) -> str:
    """The whole page for ``data``; ``paper``: the front's Markdown and LaTeX tables (made here
    when not given) and ``files``: the names they are written under beside the page."""
    body = [_header(data)]
    notice = _notice(data)
    if notice:
        body.append(f'<p class="note">{escape(notice)}</p>')
    if len(data.search):
        body += _fronts(data)
        body += _paper_claims(data)
        body += _hypervolume(data)
        body += _the_space(data)
        body += _settings_that_matter(data)
        body += _learning_curves(data)
        body += _top_configurations(data)
        body += _for_a_paper(data, paper, files)
        body += _all_trials(data)
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
    return layout.document(f"kwsearch report: {data.name}", body)


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
        "have their own markers; trials without an accuracy (infeasible configs, which never trained, "
        "and trials that failed before an epoch) sit in a strip under the accuracy axis. Bars are 95% "
        "intervals of the accuracy (from the number of validation images; over the seeds where a config "
        "ran with several). Stars are the baselines; the dashed line is the budget. Hover a point for its "
        "config, metrics, the temperature it reached and its replay command; the buttons switch the x "
        "axis between linear and log.</p>"
    )
    noise = data.noise.describe()
    if noise:
        parts.append(f"<p class='note'>{escape(' '.join(noise))}</p>")
    devices = sorted(set(data.trials["device"].dropna())) if "device" in data.trials else []
    if devices:
        parts.append(
            f"<p class='muted'>Times (ms) were measured by the workers before training, on "
            f"<b>{escape('; '.join(devices))}</b>: a time measured on another device does not compare.</p>"
        )
    for cost in ("params", "macs", *MEASURED):
        if cost in data.search and data.search[cost].notna().any():
            parts.append(f"<h3>against {escape(figures.LABELS.get(cost, cost))}</h3>")
            parts.append(layout.plot(figures.accuracy_vs_cost(data, cost)))
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
            f"{name} {layout.number(abs(v) if name == 'accuracy' else v, name)}"
            for name, v in zip(data.objectives, point, strict=False)
        )
        parts.append(
            "<p class='muted'>Volume dominated by the front, as a fraction of the box between the ideal "
            "point (accuracy 1, zero cost) and the reference point fixed when the study started: "
            f"<b>{escape(described)}</b>.</p>"
        )
        open_costs = [n for n in data.objectives if n in MEASURED and n not in data.record.budget]
        if open_costs:
            parts.append(
                f"<p class='note'>{escape(', '.join(open_costs))}: measured, with no budget to bound it, so "
                "its reference is 10% beyond the largest value measured in this study; it moves as the "
                "study grows (a budget fixes it).</p>"
            )
    if history.empty:
        return [*parts, "<p>No trial has finished yet.</p>"]
    return [*parts, layout.plot(figures.hypervolume_history(history))]


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
        parts.append(layout.plot(figures.importances(found)))
    parts.append("<h3>Objectives by value (mean and its 95% confidence interval, complete trials)</h3>")
    tables = analysis.effects(data)
    if not tables:
        parts.append("<p>No complete trials to compare.</p>")
    for key, table in tables.items():
        parts.append(f"<h3 class='mono'>{escape(key)}</h3>")
        shown = layout.space_values(table, ["value"])
        parts.append(layout.table(layout.with_intervals(shown, data.objectives)))
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
            shown = layout.space_values(table, ["value", "baseline"])
            parts.append(layout.table(layout.with_intervals(shown, [f"Δ {n}" for n in data.objectives])))
    return parts


def _the_space(data: StudyData) -> list[str]:
    """Parallel coordinates and slice plots of the complete trials."""
    parts = ["<h2>The search space</h2>"]
    found = space.space_trials(data)
    if isinstance(found, str):
        return [*parts, f"<p>{escape(found)}</p>"]
    parts.append(
        "<p class='muted'>Each complete trial is a line through its value of every searched setting, its "
        "costs and its accuracy, coloured by the accuracy (the most accurate on top); hover a line for its "
        "trial. A conditional setting a trial did not have sits at "
        f"<i>{escape(space.UNSET)}</i>, below its axis.</p>"
    )
    parts.append(layout.plot(space.plot_parallel_coordinates(found)))
    parts.append(
        "<h3>Accuracy against each setting</h3><p class='muted'>One panel per searched setting (complete "
        "trials); the colour is the trial's number, so the sampler's drift to good values shows as the "
        "darker points gathering.</p>"
    )
    parts.append(layout.plot(space.plot_slices(found)))
    return parts


def _learning_curves(data: StudyData) -> list[str]:
    return [
        "<h2>Learning curves</h2>",
        "<p class='muted'>Validation accuracy per epoch (and the attention temperature, dotted, where the "
        "family has one). It opens on the Pareto-optimal trials; type any trial numbers, or click one in "
        "the table of all trials below, to see theirs.</p>",
        curves.render(data),
    ]


def _for_a_paper(data: StudyData, paper: tuple[str, str] | None, files: tuple[str, str] | None) -> list[str]:
    if not data.front:
        return []
    if paper is None:
        rows = paper_tables.front_rows(data)
        paper = (paper_tables.markdown(rows), paper_tables.latex(rows))
    return [
        "<h2>The front for a paper</h2>",
        "<p class='muted'>The baselines and the Pareto-optimal trials by parameters: parameters and MACs "
        "in millions (with as many decimals as keep different counts apart), accuracy in percent with "
        "its 95% interval. The LaTeX table uses the booktabs package.</p>",
        paper_tables.render(*paper, files),
    ]


def _all_trials(data: StudyData) -> list[str]:
    frame = trials_table.trials_frame(data)
    return [
        "<h2>All trials</h2>",
        "<p class='muted'>Click a column to sort by it (again to reverse). Type terms to filter, all of "
        "which a row must meet: a word any cell contains (<code>kw</code>), a column that contains a value "
        "(<code>status:pruned</code>), or a comparison (<code>accuracy&gt;0.8</code>, "
        "<code>params&lt;=1000000</code>, <code>width=0.5</code>). Click a trial's number for its learning "
        "curve.</p>",
        trials_table.render(frame, list(data.dimensions)),
    ]


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
                **{name: row[name] for name in MEASURED if present(row.get(name))},
                "train time (s)": row["train_seconds"],
                "replay": row["replay"],
            }
        )
    parts.append(layout.table(pd.DataFrame(rows), mono={"replay"}))
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
    parts.append(layout.plot(figures.proxy_vs_full(table)))
    parts.append(layout.table(table))
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
    parts.append(layout.table(analysis.fidelity_figures(calibration)))
    configs = analysis.fidelity_configs(calibration)
    parts.append(layout.plot(figures.calibration(configs)))
    parts.append(layout.table(configs, mono={"runs"}))
    parts.append(
        "<h3>Cheaper proxies</h3><p class='muted'>Scores read from the same learning curves, at no "
        "extra training: the validation accuracy after each epoch, and minus the summed training loss "
        "and minus the last validation loss (a lower loss ranks higher). Each is ranked against full "
        f"training; it meets the target when its Spearman's rho is at least {calibration.target:g}.</p>"
    )
    parts.append(layout.plot(figures.cheap_proxies(calibration.cheap_proxies, calibration.target)))
    parts.append(layout.table(analysis.cheap_proxy_table(calibration)))
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
        layout.table(grouped[["status", "trials", "error"]], mono={"error"}),
    ]


# -- helpers ------------------------------------------------------------------------------------


def _counts_text(counts: dict[str, int]) -> str:
    order = ("complete", "pruned", "failed", "infeasible", "duplicate", "running", "waiting")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def _versions(stored: dict[str, str] | None) -> str:
    """The versions the study started with; a study stored before they were recorded shows
    the report's own environment, and says so."""
    versions = stored or software_versions()
    text = ", ".join(f"{name} {version}" for name, version in versions.items())
    return text if stored else text + " (this report's environment)"

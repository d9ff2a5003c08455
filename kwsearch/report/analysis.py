"""What the report computes from a study's tables: hypervolume over time, which settings matter
(importances, effects per value, paired differences of grid ablations), config differences,
proxy-versus-full rank agreement and the proxy's calibration. Each function returns a DataFrame,
or a message (str) saying why there is nothing to show."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from scipy import stats

from kwsearch.calibrate import Calibration
from kwsearch.formats import format_value
from kwsearch.pareto import dominates
from kwsearch.records import MEASURED, normalized_hypervolume
from kwsearch.report.data import StudyData, point_of, present
from kwsearch.stats import accuracy_estimate, default_top_k

MAX_LEVELS = 8  # a numeric dimension with more distinct values is binned into quartiles
# the values each cost can take: counts from 0 up
RANGES: dict[str, tuple[float | None, float | None]] = {
    "params": (0.0, None),
    "effective_params": (0.0, None),
    "macs": (0.0, None),
    **dict.fromkeys(MEASURED, (0.0, None)),  # milliseconds
}


def hypervolume_history(data: StudyData, reference_point: list[float] | None = None) -> pd.DataFrame:
    """The front's normalised hypervolume after each finished search trial, in the order trials
    finished: columns ``trials`` (how many had finished), ``number``, ``compute_hours`` (trial
    wall time summed so far) and ``hypervolume`` (against ``reference_point``; default the
    study's own)."""
    search = data.search
    finished = search[search["status"].isin(["complete", "pruned", "failed", "infeasible"])]
    finished = finished.sort_values(["finished", "number"], na_position="last")
    objectives = data.objectives
    front: list[tuple[float, ...]] = []
    volume, seconds, rows = 0.0, 0.0, []
    for count, row in enumerate(finished.to_dict("records"), start=1):
        seconds += row["seconds"] if present(row["seconds"]) else 0.0
        if row["status"] == "complete" and present(row["accuracy"]):
            point = point_of(row, objectives)
            if not any(dominates(p, point) or p == point for p in front):
                front = [p for p in front if not dominates(point, p)] + [point]
                volume = (
                    normalized_hypervolume(front, reference_point)
                    if reference_point
                    else data.normalized_hypervolume(front)
                )
        rows.append(
            {"trials": count, "number": row["number"], "compute_hours": seconds / 3600, "hypervolume": volume}
        )
    return pd.DataFrame(rows, columns=["trials", "number", "compute_hours", "hypervolume"])


def importances(data: StudyData) -> pd.DataFrame | str:
    """Optuna's default importance evaluator (PED-ANOVA) per objective over the complete trials
    (infeasible configs are stored complete with accuracy 0 and are left out): one row per
    parameter, one column per objective."""
    complete = data.complete
    varying = [
        key
        for key in data.dimensions
        if f"param:{key}" in complete and complete[f"param:{key}"].dropna().astype(str).nunique() > 1
    ]
    if len(complete) < 2:
        return f"{len(complete)} complete trial(s): importances need at least two."
    if len(varying) < 2:
        return (
            "Only one searched setting varies among the complete trials"
            if varying
            else "No searched setting varies among the complete trials"
        ) + ": importances compare two or more."
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"] * len(data.objectives))
    for row in complete.to_dict("records"):
        params = {key: row[f"param:{key}"] for key in data.dimensions if present(row.get(f"param:{key}"))}
        distributions = {key: _distribution(data, key, complete) for key in params}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                values=[float(v) for v in point_of(row, data.objectives)],
            )
        )
    table = {}
    for i, name in enumerate(data.objectives):
        try:
            with warnings.catch_warnings():
                # the targets are minimised on purpose (accuracy is negated, as in the front)
                warnings.simplefilter("ignore", UserWarning)
                found = optuna.importance.get_param_importances(
                    study, target=lambda t, i=i: t.values[i], params=varying
                )
        except (RuntimeError, ValueError) as error:
            return f"Importances could not be computed: {error}"
        table[name] = found
    frame = pd.DataFrame(table).fillna(0.0)
    frame.index.name = "setting"
    return frame.sort_values(data.objectives[0], ascending=False)


def effects(data: StudyData) -> dict[str, pd.DataFrame]:
    """For each searched setting, one row per value (quartile bins for many numbers): how many
    complete trials took it and the mean of each objective with its 95% confidence interval
    (columns ``NAME``, ``NAME low``, ``NAME high``): costs by :func:`mean_interval`, accuracies
    by :func:`kwsearch.stats.accuracy_estimate` (Student's t over the trials, never narrower than
    Wilson's interval of all their validation images, within [0, 1])."""
    complete = data.complete
    tables = {}
    for key, choices in data.dimensions.items():
        column = f"param:{key}"
        if column not in complete or complete[column].dropna().empty:
            continue
        taking = complete[complete[column].notna()]  # conditional settings: the trials that had one
        values = taking[column]
        if choices is None and values.nunique() > MAX_LEVELS:
            bins = pd.qcut(values.astype(float), 4, duplicates="drop")
            order = [str(c) for c in bins.cat.categories]
            values = bins.astype(str)
        else:
            order = [c for c in (choices or sorted(values.unique())) if (values == c).any()]
        rows = []
        for value in order:
            group = taking[values == value]
            row: dict[str, Any] = {"value": value, "n": len(group)}
            for name in data.objectives:
                found = (
                    _accuracy_interval(group)
                    if name == "accuracy"
                    else mean_interval(group[name].astype(float).to_numpy(), *RANGES[name])
                )
                row[name], row[f"{name} low"], row[f"{name} high"] = found
            rows.append(row)
        tables[key] = pd.DataFrame(rows)
    return tables


def paired_differences(data: StudyData) -> dict[str, pd.DataFrame] | str:
    """Grid ablations: for each searched setting and each value other than its baseline (the
    first choice), the difference of each objective against the baseline value in trials that
    agree on every other setting, seed included: the mean over pairs with its 95% confidence
    interval (columns ``Δ NAME``, ``Δ NAME low``, ``Δ NAME high``)."""
    sampler = data.record.sampler.get("name")
    if sampler != "grid":
        return "Paired differences are shown for grid ablations (this study's sampler is {}).".format(
            sampler or "unknown"
        )
    complete = data.complete
    keys = [k for k in data.dimensions if k != "seed" and f"param:{k}" in complete]
    tables = {}
    for key in keys:
        choices = data.dimensions[key] or sorted(complete[f"param:{key}"].dropna().unique())
        baseline = choices[0]
        others = [f"param:{k}" for k in data.dimensions if k != key and f"param:{k}" in complete]
        rows = complete.to_dict("records")
        contexts = [json.dumps([row[c] for c in others], default=str) for row in rows]
        baselines = {
            ctx: row for ctx, row in zip(contexts, rows, strict=True) if row[f"param:{key}"] == baseline
        }
        table = []
        for value in choices[1:]:
            diffs: dict[str, list[float]] = {name: [] for name in data.objectives}
            for ctx, row in zip(contexts, rows, strict=True):
                base = baselines.get(ctx)
                if row[f"param:{key}"] != value or base is None:
                    continue
                for name in data.objectives:
                    diffs[name].append(float(row[name]) - float(base[name]))
            pairs = len(diffs[data.objectives[0]])
            if not pairs:
                continue
            out: dict[str, Any] = {"value": value, "baseline": baseline, "pairs": pairs}
            for name in data.objectives:
                # a difference of accuracies lies in [-1, 1]; of costs, anywhere
                bounds = (-1.0, 1.0) if name == "accuracy" else (None, None)
                found = mean_interval(np.asarray(diffs[name]), *bounds)
                out[f"Δ {name}"], out[f"Δ {name} low"], out[f"Δ {name} high"] = found
            table.append(out)
        if table:
            tables[key] = pd.DataFrame(table)
    return tables or "No pairs: no two complete trials differ in one setting only."


def proxy_vs_full(data: StudyData) -> pd.DataFrame | str:
    """Replayed trials whose proxy completed: proxy accuracy beside full accuracy (mean and
    standard deviation over replay seeds), with their parameters. The rank agreement of these
    pairs is ``data.agreement``."""
    if data.replays.empty:
        return "No replays yet: `kwsearch replay` trains chosen trials with the full recipe."
    pairs = data.agreement.pairs
    columns = ["trial", "proxy_accuracy", "full_accuracy", "full_std", "seeds", "params"]
    table = pd.DataFrame([{k: p.get(k) for k in columns} for p in pairs], columns=columns)
    return table.rename(columns={"trial": "number"}).sort_values("number")


def fidelity_figures(calibration: Calibration) -> pd.DataFrame:
    """The calibration's rank agreements, one row per figure: the proxy against full training,
    and the proxy's first two seeds against each other (its own ceiling)."""
    rows = []
    compared = [("proxy against full", calibration.agreement)]
    if calibration.noise.seed_agreement is not None:
        compared.append(("proxy seed against seed", calibration.noise.seed_agreement))
    for comparison, agreement in compared:
        for name, found, fisher in (
            ("Spearman's rho", agreement.spearman, True),
            ("Kendall's tau", agreement.kendall, True),
            (f"top-{default_top_k(agreement.n)} overlap", agreement.top_k, False),  # no closed form
        ):
            rows.append(
                {
                    "comparison": comparison,
                    "figure": name,
                    "configs": agreement.n,
                    "value": None if found is None else found.value,
                    "95% bootstrap interval": _interval(found.bootstrap_ci95 if found else None),
                    "95% interval (Fisher z)": _interval(found.ci95 if found and fisher else None),
                    "p-value": None if found is None else found.p_value,
                }
            )
    return pd.DataFrame(rows)


def fidelity_configs(calibration: Calibration) -> pd.DataFrame:
    """One row per calibrated config: its costs, proxy and full accuracy (mean and standard
    deviation over seeds) and which runs they come from."""
    rows = [
        {
            "config": row["index"],
            "trial": row["trial"],
            "params": row["params"],
            "proxy_accuracy": row["proxy_mean"],
            "proxy_std": row["proxy_std"],
            "full_accuracy": row["full_mean"],
            "full_std": row["full_std"],
            "runs": ", ".join(r["source"] for r in row["proxy_runs"] + row["full_runs"]),
        }
        for row in calibration.configs
    ]
    return pd.DataFrame(rows)


def cheap_proxy_table(calibration: Calibration) -> pd.DataFrame:
    """Each cheaper proxy read from the learning curves: its cost, Spearman's rho against full
    training with its 95% bootstrap interval, and whether it meets the target."""
    rows = []
    for proxy in calibration.cheap_proxies:
        rho = proxy.spearman
        rows.append(
            {
                "proxy": proxy.label,
                "cost (share of the proxy)": f"{proxy.cost:.0%}",
                "seconds per run": proxy.seconds,
                "Spearman ρ": None if rho is None else rho.value,
                "95% bootstrap interval": _interval(rho.bootstrap_ci95 if rho else None),
                "meets the target": "yes" if proxy.meets_target else "no",
                "so does the interval's low end": "yes" if proxy.interval_meets_target else "no",
            }
        )
    return pd.DataFrame(rows)


def _interval(bounds: list[float] | None) -> str | None:
    return None if bounds is None else f"{bounds[0]:.3f} to {bounds[1]:.3f}"


def config_diff(config: dict[str, Any] | None, baseline: dict[str, Any] | None) -> str:
    """``key: value`` for every leaf of ``config`` that differs from ``baseline`` (dotted keys;
    numbers exactly as sampled)."""
    if config is None:
        return ""
    mine, theirs = _flatten(config), _flatten(baseline or {})
    changed = [
        f"{key}: {format_value(value) if isinstance(value, float) else json.dumps(value)}"
        for key, value in mine.items()
        if key not in theirs or theirs[key] != value
    ]
    changed += [f"{key}: (unset)" for key in theirs if key not in mine]
    return ", ".join(changed) or "(the baseline)"


def _accuracy_interval(group: pd.DataFrame) -> tuple[float, float, float]:
    """The mean accuracy of ``group``'s trials and its 95% interval (NaN bounds where neither
    the trials' spread nor their validation images give one)."""
    images = group["val_images"].dropna() if "val_images" in group else pd.Series(dtype=float)
    # the fewest images any of them had: the interval is never narrower than what they all bear
    per_run = int(images.min()) if len(images) == len(group) else None
    found = accuracy_estimate(group["accuracy"].astype(float).tolist(), per_run)
    low, high = (found.low, found.high) if found.known else (math.nan, math.nan)
    return found.value, low, high


def mean_interval(
    values: np.ndarray, lowest: float | None = None, highest: float | None = None
) -> tuple[float, float, float]:
    """The mean of ``values`` and its 95% confidence interval: Student's t, clipped to the range
    the quantity can take (``lowest``, ``highest``; None: unbounded). The mean lies in that range
    whatever the sample, so clipping keeps the interval's coverage and drops only impossible
    values (an accuracy above 1, a negative count). NaN bounds for fewer than two values."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    sem = float(values.std(ddof=1)) / math.sqrt(len(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * sem)
    low, high = mean - half, mean + half
    if lowest is not None:
        low = max(low, lowest)
    if highest is not None:
        high = min(high, highest)
    return mean, low, high


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def _distribution(data: StudyData, key: str, complete: pd.DataFrame):
    choices = data.dimensions.get(key)
    if choices is not None:
        return CategoricalDistribution(choices)
    values = complete[f"param:{key}"].dropna().astype(float)
    low, high = float(values.min()), float(values.max())
    return optuna.distributions.FloatDistribution(low, high if high > low else low + 1.0)

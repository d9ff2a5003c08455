"""How far the proxy ranking held: replays read back per proxy trial (mean and standard deviation
over seeds), proxy against full accuracy, Spearman's and Kendall's rank correlations with their
p-values and 95% confidence intervals, and the front of the replayed configs. What the report
shows and ``kwsearch replay`` prints."""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna
from scipy import stats

from kwsearch.search.pareto import pareto_front
from kwsearch.search.records import objective_point, replays_name, status_of, trial_objectives

# Fieller, Hartley and Pearson (1957): the variance of Fisher's z of Spearman's rho is about
# 1.06/(n-3), that of Kendall's tau about 0.437/(n-4).
_Z_VARIANCE = {"spearman": (1.06, 3), "kendall": (0.437, 4)}
_Z95 = 1.959963984540054


def replay_results(trials: list[optuna.trial.FrozenTrial]) -> dict[int, dict[str, Any]]:
    """The complete replays of ``trials`` (a replays study's) grouped by the proxy trial they
    replay: seeds, per-seed and mean/standard deviation (sample; 0 for one seed) of the test and
    validation accuracy, and the wall time summed over seeds."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for trial in trials:
        if status_of(trial) == "complete":
            groups.setdefault(int(trial.user_attrs["proxy_trial"]), []).append(trial.user_attrs)
    results = {}
    for number, runs in sorted(groups.items()):
        runs.sort(key=lambda a: a["seed"])
        result: dict[str, Any] = {"seeds": [a["seed"] for a in runs]}
        for key in ("test_accuracy", "val_accuracy"):
            values = [a[key] for a in runs if a.get(key) is not None]
            result[key] = values
            result[f"{key}_mean"] = statistics.fmean(values) if values else None
            result[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
        result["seconds"] = sum(a.get("seconds", 0.0) for a in runs)
        results[number] = result
    return results


def correlation(proxy: list[float], full: list[float]) -> dict[str, dict[str, Any] | None]:
    """Spearman's rho and Kendall's tau (tau-b, ties allowed) between ``proxy`` and ``full``, each
    with its two-sided p-value and a 95% confidence interval from Fisher's z transform (None
    where too few pairs: rho needs 4, tau 5). A coefficient is None for fewer than 3 pairs or
    when either list is constant."""
    n = len(proxy)
    out: dict[str, dict[str, Any] | None] = {"spearman": None, "kendall": None}
    if n < 3 or len(set(proxy)) < 2 or len(set(full)) < 2:
        return out
    for name, test in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        found = test(proxy, full)
        value, p_value = float(found.statistic), float(found.pvalue)
        variance, lost = _Z_VARIANCE[name]
        interval = None
        if n > lost:
            z = math.atanh(max(-1 + 1e-12, min(1 - 1e-12, value)))
            half = _Z95 * math.sqrt(variance / (n - lost))
            interval = [math.tanh(z - half), math.tanh(z + half)]
        out[name] = {"value": value, "p_value": p_value, "ci95": interval, "n": n}
    return out


def rank_agreement(study_name: str, storage: str | optuna.storages.BaseStorage) -> dict[str, Any]:
    """Proxy against full accuracy for the replayed trials of study ``study_name``.

    Returns ``pairs`` (one per replayed trial whose proxy trial is complete, by trial number:
    ``trial``, ``proxy_accuracy`` (last-epoch validation accuracy of the proxy), ``full_accuracy``
    and ``full_std`` (test accuracy, mean and standard deviation over seeds), ``seeds`` and the
    proxy trial's costs), ``spearman`` and ``kendall`` (see :func:`correlation`), ``front`` (the
    replayed trials Pareto-optimal by full accuracy and the study's cost objectives) and
    ``not_compared`` (replayed trials whose proxy did not complete: pruned or failed). Raises
    KeyError when the study or its replays are not in ``storage``."""
    search = optuna.load_study(study_name=study_name, storage=storage)
    replays = optuna.load_study(study_name=replays_name(study_name), storage=storage)
    objectives = search.user_attrs.get("objectives") or ["accuracy", "params"]
    trials = {t.number: t for t in search.get_trials(deepcopy=False)}
    results = replay_results(replays.get_trials(deepcopy=False))
    pairs, not_compared, points = [], [], {}
    for number, result in results.items():
        trial = trials[number]
        costs = trial.user_attrs.get("costs") or {}
        full = result["test_accuracy_mean"]
        if full is None:
            continue
        points[number] = objective_point({"accuracy": full, **costs}, objectives)
        proxy = trial_objectives(trial, objectives)
        if proxy is None:
            not_compared.append(number)
            continue
        pairs.append(
            {
                "trial": number,
                "proxy_accuracy": proxy["accuracy"],
                "full_accuracy": full,
                "full_std": result["test_accuracy_std"],
                "seeds": len(result["seeds"]),
                **costs,
            }
        )
    numbers = list(points)
    front = sorted(numbers[i] for i in pareto_front([points[n] for n in numbers]))
    found = correlation([p["proxy_accuracy"] for p in pairs], [p["full_accuracy"] for p in pairs])
    return {"study": study_name, "pairs": pairs, **found, "front": front, "not_compared": not_compared}

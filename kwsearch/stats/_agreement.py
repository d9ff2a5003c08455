"""How far a study's proxy ranking held under full training: its replays grouped by the proxy
trial they replay, paired with the proxy's accuracy, and the rank agreement of the pairs. The one
computation behind ``kwsearch replay`` and the report's proxy-against-full section."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from kwsearch.pareto import pareto_front
from kwsearch.records import ReplayRecord, TrialRecord, objective_point
from kwsearch.stats._rank import LABELS, Statistic, default_top_k, rank_agreement


@dataclass(frozen=True)
class ReplayResult:
    """The complete replays of one proxy trial: per seed, and mean and standard deviation
    (sample; 0 for one seed) of the test and validation accuracy."""

    seeds: list[int]
    test_accuracy: list[float]
    val_accuracy: list[float]
    seconds: float  # wall time summed over seeds

    @property
    def test_accuracy_mean(self) -> float | None:
        return statistics.fmean(self.test_accuracy) if self.test_accuracy else None

    @property
    def test_accuracy_std(self) -> float | None:
        return _std(self.test_accuracy)

    @property
    def val_accuracy_mean(self) -> float | None:
        return statistics.fmean(self.val_accuracy) if self.val_accuracy else None

    @property
    def val_accuracy_std(self) -> float | None:
        return _std(self.val_accuracy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "test_accuracy": self.test_accuracy,
            "test_accuracy_mean": self.test_accuracy_mean,
            "test_accuracy_std": self.test_accuracy_std,
            "val_accuracy": self.val_accuracy,
            "val_accuracy_mean": self.val_accuracy_mean,
            "val_accuracy_std": self.val_accuracy_std,
            "seconds": self.seconds,
        }


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else 0.0 if values else None


def replay_results(replays: list[ReplayRecord]) -> dict[int, ReplayResult]:
    """The complete replays grouped by the proxy trial they replay, by trial number."""
    groups: dict[int, list[ReplayRecord]] = {}
    for replay in replays:
        if replay.status == "complete":
            groups.setdefault(replay.proxy_trial, []).append(replay)
    results = {}
    for number, runs in sorted(groups.items()):
        runs.sort(key=lambda r: r.seed)
        results[number] = ReplayResult(
            seeds=[r.seed for r in runs],
            test_accuracy=[r.test_accuracy for r in runs if r.test_accuracy is not None],
            val_accuracy=[r.val_accuracy for r in runs if r.val_accuracy is not None],
            seconds=sum(r.seconds for r in runs),
        )
    return results


@dataclass(frozen=True)
class ProxyAgreement:
    """Proxy against full accuracy for a study's replayed trials.

    ``pairs``: one per replayed trial whose proxy trial is complete (``trial``, ``proxy_accuracy``
    (the proxy's last validation accuracy), ``full_accuracy`` and ``full_std`` (test accuracy,
    mean and standard deviation over seeds), ``seeds`` and the trial's costs); ``spearman``,
    ``kendall`` and ``top_k`` from :func:`kwsearch.stats.rank_agreement`; ``front``: the
    replayed trials Pareto-optimal by full accuracy and the study's costs; ``not_compared``:
    replayed trials whose proxy did not complete (pruned or failed)."""

    pairs: list[dict[str, Any]]
    spearman: Statistic | None
    kendall: Statistic | None
    top_k: Statistic | None
    front: list[int] = field(default_factory=list)
    not_compared: list[int] = field(default_factory=list)

    def statistics(self) -> dict[str, Statistic]:
        """The figures there are, by name (``spearman``, ``kendall``, ``top_k``)."""
        found = {"spearman": self.spearman, "kendall": self.kendall, "top_k": self.top_k}
        return {name: value for name, value in found.items() if value is not None}

    def describe(self) -> list[str]:
        """The agreement as lines a person reads (the same in the report and ``kwsearch replay``)."""
        if not self.statistics():
            return [
                f"rank agreement needs 3 or more replayed trials with distinct accuracies ({len(self.pairs)})"
            ]
        k = default_top_k(len(self.pairs))
        return [
            found.describe(LABELS[name] + (f" (top {k} of {found.n})" if name == "top_k" else ""))
            for name, found in self.statistics().items()
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            **{
                name: None if found is None else found.as_dict()
                for name, found in (
                    ("spearman", self.spearman),
                    ("kendall", self.kendall),
                    ("top_k", self.top_k),
                )
            },
            "front": self.front,
            "not_compared": self.not_compared,
        }


def proxy_agreement(
    trials: list[TrialRecord], replays: list[ReplayRecord], objectives: list[str]
) -> ProxyAgreement:
    """Pair each replayed trial of ``trials`` with its replays (see :class:`ProxyAgreement`)."""
    by_number = {t.number: t for t in trials}
    pairs, not_compared, points = [], [], {}
    for number, result in replay_results(replays).items():
        trial = by_number.get(number)
        full = result.test_accuracy_mean
        if trial is None or full is None:
            continue
        costs = trial.costs.as_dict() if trial.costs else {}
        if all(costs.get(name) is not None for name in objectives[1:]):  # measured ones where timed
            points[number] = objective_point({"accuracy": full, **costs}, objectives)
        proxy = trial.objectives(objectives)
        if proxy is None:
            not_compared.append(number)
            continue
        pairs.append(
            {
                "trial": number,
                "proxy_accuracy": proxy["accuracy"],
                "full_accuracy": full,
                "full_std": result.test_accuracy_std,
                "seeds": len(result.seeds),
                **costs,
            }
        )
    numbers = list(points)
    found = rank_agreement([p["proxy_accuracy"] for p in pairs], [p["full_accuracy"] for p in pairs])
    return ProxyAgreement(
        pairs=pairs,
        spearman=found["spearman"],
        kendall=found["kendall"],
        top_k=found["top_k"],
        front=sorted(numbers[i] for i in pareto_front([points[n] for n in numbers])),
        not_compared=not_compared,
    )

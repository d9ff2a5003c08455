"""What a calibration found: how well the proxy ranks its configs like full training, how noisy the
proxy is from seed to seed, and which cheaper proxy, read from the same learning curves, ranks
well enough. One computation behind ``kwsearch calibrate`` and the report's proxy-fidelity
section.

A config's proxy accuracy is its last validation accuracy, averaged over the proxy seeds; its full
accuracy is its last test accuracy, averaged over the full seeds (as in
:func:`kwsearch.stats.proxy_agreement`). Rankings agree by :func:`kwsearch.stats.rank_agreement`.
A cheaper proxy *meets* the target when its Spearman's rho (the point estimate) is at least the
target; whether the lower end of its 95% bootstrap interval does too is said beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kwsearch.calibrate.results import Finished, Unit, finished_runs, units
from kwsearch.records import CalibrationPlan, History, StudyStore
from kwsearch.stats import Statistic, default_top_k, rank_agreement

TARGET = 0.9  # the Spearman's rho a proxy must reach to be trusted, unless told otherwise


@dataclass(frozen=True)
class CheapProxy:
    """A score read from the proxy's learning curves, at ``cost`` (a fraction of the proxy's
    training; ``seconds`` per run on average), and how its ranking agrees with full training."""

    name: str
    label: str
    cost: float
    seconds: float | None
    spearman: Statistic | None
    target: float

    @property
    def meets_target(self) -> bool:
        return self.spearman is not None and self.spearman.value >= self.target

    @property
    def interval_meets_target(self) -> bool:
        interval = self.spearman.bootstrap_ci95 if self.spearman is not None else None
        return interval is not None and interval[0] >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "cost": self.cost,
            "seconds": self.seconds,
            "spearman": self.spearman.as_dict() if self.spearman else None,
            "meets_target": self.meets_target,
            "interval_meets_target": self.interval_meets_target,
        }


@dataclass(frozen=True)
class Agreement:
    """Rank agreement of two rankings of ``n`` configs (each figure None when it cannot be told)."""

    n: int
    spearman: Statistic | None
    kendall: Statistic | None
    top_k: Statistic | None

    @classmethod
    def of(cls, first: list[float], second: list[float]) -> Agreement:
        found = rank_agreement(first, second)
        return cls(len(first), found["spearman"], found["kendall"], found["top_k"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "k": default_top_k(self.n) if self.n else None,
            **{
                name: None if value is None else value.as_dict()
                for name, value in (
                    ("spearman", self.spearman),
                    ("kendall", self.kendall),
                    ("top_k", self.top_k),
                )
            },
        }


@dataclass(frozen=True)
class Noise:
    """How much the proxy moves from seed to seed: the standard deviation of a config's proxy
    accuracy over seeds (mean over configs with two or more), and how far two seeds' rankings
    agree (the proxy's own ceiling); the same standard deviation for full training."""

    proxy_seed_std: float | None
    seed_agreement: Agreement | None
    full_seed_std: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "proxy_seed_std": self.proxy_seed_std,
            "seed_agreement": self.seed_agreement.as_dict() if self.seed_agreement else None,
            "full_seed_std": self.full_seed_std,
        }


@dataclass(frozen=True)
class Calibration:
    """What ``kwsearch calibrate`` reports (see the module docstring). ``configs``: one row per
    config (its costs, the accuracy of each finished run with where it is stored, means and
    standard deviations); ``runs``: how many runs the plan needs (``total``), how many have
    finished (``done``) and how many of those the study had already (``reused``: search trials,
    baselines, confirmation runs, replays)."""

    target: float
    seeds: list[int]
    full_seeds: list[int]
    configs: list[dict[str, Any]]
    runs: dict[str, int]
    agreement: Agreement
    noise: Noise
    cheap_proxies: list[CheapProxy]
    cheapest: CheapProxy | None
    verdict: list[str]

    @property
    def complete(self) -> bool:
        return self.runs["done"] == self.runs["total"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "target": self.target,
            "seeds": self.seeds,
            "full_seeds": self.full_seeds,
            "runs": self.runs,
            "configs": self.configs,
            "agreement": self.agreement.as_dict(),
            "noise": self.noise.as_dict(),
            "cheap_proxies": [c.as_dict() for c in self.cheap_proxies],
            "cheapest": self.cheapest.name if self.cheapest else None,
            "verdict": self.verdict,
        }


def calibration_of(store: StudyStore) -> Calibration | None:
    """The calibration of the study in ``store`` (None when it was never calibrated)."""
    plan = store.calibration_plan()
    if plan is None:
        return None
    return analyse(plan, stored_runs(plan, store))


def stored_runs(plan: CalibrationPlan, store: StudyStore) -> dict[Unit, Finished]:
    """The finished run of each unit of ``plan`` among everything ``store`` holds."""
    return finished_runs(
        plan,
        store.trials(),
        store.baselines(),
        store.confirmations(),
        store.replays(),
        store.calibration_runs(),
    )


def analyse(plan: CalibrationPlan, found: dict[Unit, Finished]) -> Calibration:
    """The calibration of ``plan`` from the finished runs ``found`` (see :class:`Calibration`)."""
    rows = [_config_row(plan, i, found) for i in range(len(plan.configs))]
    compared = [r for r in rows if r["proxy_mean"] is not None and r["full_mean"] is not None]
    full = [r["full_mean"] for r in compared]
    agreement = Agreement.of([r["proxy_mean"] for r in compared], full)
    noise = _noise(plan, rows)
    curves = [
        [found[Unit(r["index"], "proxy", s)].history for s in _seeds(r["proxy_runs"])] for r in compared
    ]
    cheap = _cheap_proxies(curves, full, plan.proxy_recipe["epochs"], plan.target)
    meeting = [c for c in cheap if c.meets_target]
    cheapest = min(meeting, key=lambda c: (c.cost, -c.spearman.value)) if meeting else None
    total = len(units(plan))
    runs = {"total": total, "done": len(found), "reused": sum(f.reused for f in found.values())}
    return Calibration(
        target=plan.target,
        seeds=plan.seeds,
        full_seeds=plan.full_seeds,
        configs=rows,
        runs=runs,
        agreement=agreement,
        noise=noise,
        cheap_proxies=cheap,
        cheapest=cheapest,
        verdict=_verdict(len(rows), agreement, noise, cheapest, plan.target, runs),
    )


def _config_row(plan: CalibrationPlan, index: int, found: dict[Unit, Finished]) -> dict[str, Any]:
    config = plan.configs[index]

    def runs(kind: str, seeds: list[int]) -> list[dict[str, Any]]:
        return [
            {"seed": s, "accuracy": found[u].accuracy, "source": found[u].source}
            for s in seeds
            if (u := Unit(index, kind, s)) in found
        ]

    proxy, full = runs("proxy", plan.seeds), runs("full", plan.full_seeds)
    return {
        "index": index,
        "trial": config.trial,
        **config.costs.as_dict(),
        "proxy_runs": proxy,
        "proxy_mean": _mean(proxy),
        "proxy_std": _std(proxy),
        "full_runs": full,
        "full_mean": _mean(full),
        "full_std": _std(full),
        "config": config.config,
    }


def _seeds(runs: list[dict[str, Any]]) -> list[int]:
    return [r["seed"] for r in runs]


def _mean(runs: list[dict[str, Any]]) -> float | None:
    return statistics.fmean(r["accuracy"] for r in runs) if runs else None


def _std(runs: list[dict[str, Any]]) -> float | None:
    """The sample standard deviation over seeds; None for fewer than two."""
    return statistics.stdev(r["accuracy"] for r in runs) if len(runs) > 1 else None


def _noise(plan: CalibrationPlan, rows: list[dict[str, Any]]) -> Noise:
    proxy_stds = [r["proxy_std"] for r in rows if r["proxy_std"] is not None]
    full_stds = [r["full_std"] for r in rows if r["full_std"] is not None]
    seed_agreement = None
    if len(plan.seeds) > 1:
        first, second = plan.seeds[:2]
        pairs = []
        for row in rows:
            by_seed = {r["seed"]: r["accuracy"] for r in row["proxy_runs"]}
            if first in by_seed and second in by_seed:
                pairs.append((by_seed[first], by_seed[second]))
        seed_agreement = Agreement.of([a for a, _ in pairs], [b for _, b in pairs])
    return Noise(
        proxy_seed_std=statistics.fmean(proxy_stds) if proxy_stds else None,
        seed_agreement=seed_agreement,
        full_seed_std=statistics.fmean(full_stds) if full_stds else None,
    )


# A cheaper proxy: (name, label, cost as a fraction of the proxy, epochs it reads, score of a
# learning curve; higher ranks higher, so losses are negated: the lower loss ranks higher).
Score = Callable[[History], float]


def _scores(epochs: int) -> list[tuple[str, str, float, int, Score]]:
    found: list[tuple[str, str, float, int, Score]] = [
        (
            f"val_accuracy@{k}",
            f"validation accuracy after epoch {k}" + (" (the proxy)" if k == epochs else ""),
            k / epochs,
            k,
            lambda history, k=k: history[k - 1]["val_accuracy"],
        )
        for k in range(1, epochs + 1)
    ]
    found.append(
        (
            "train_loss_sum",
            "training loss summed over the epochs",
            1.0,
            epochs,
            lambda history: -sum(e["train_loss"] for e in history),
        )
    )
    found.append(("val_loss", "last validation loss", 1.0, epochs, lambda h: -h[-1]["val_loss"]))
    return found


def _cheap_proxies(
    curves: list[list[History]], full: list[float], epochs: int, target: float
) -> list[CheapProxy]:
    """Each score of :func:`_scores` (a config's score: the mean over its proxy seeds) against
    ``full``. ``curves`` holds each compared config's proxy learning curves, one per seed."""
    found = []
    for name, label, cost, read, score in _scores(epochs):
        values = [statistics.fmean(score(history) for history in runs) for runs in curves]
        times = [
            sum(e.get("epoch_seconds", 0.0) for e in history[:read]) for runs in curves for history in runs
        ]
        found.append(
            CheapProxy(
                name=name,
                label=label,
                cost=cost,
                seconds=statistics.fmean(times) if times else None,
                spearman=rank_agreement(values, full)["spearman"],
                target=target,
            )
        )
    return found


def _verdict(
    configs: int,
    agreement: Agreement,
    noise: Noise,
    cheapest: CheapProxy | None,
    target: float,
    runs: dict[str, int],
) -> list[str]:
    """The calibration in plain words."""
    lines = []
    if runs["done"] < runs["total"]:
        lines.append(
            f"The calibration is not finished ({runs['done']} of {runs['total']} runs): the figures are "
            "over the configs with both proxy and full runs; run `kwsearch calibrate` again to finish it."
        )
    rho = agreement.spearman
    if rho is None:
        return [
            *lines,
            f"Not enough to tell: {agreement.n} of {configs} configs have both a proxy and a full run, "
            "and a ranking needs 3 or more with distinct accuracies.",
        ]
    interval = rho.bootstrap_ci95
    said = f"95% bootstrap interval {interval[0]:.2f} to {interval[1]:.2f}" if interval else "no interval"
    lines.append(
        f"Over {agreement.n} configs the proxy ranks like full training at Spearman's rho "
        f"{rho.value:.2f} ({said}); the target is {target:.2f}."
    )
    if interval is None:
        meets = "meets" if rho.value >= target else "falls short of"
        verdict = f"The proxy {meets} the target by its estimate; too few configs for an interval."
    elif rho.value >= target and interval[0] >= target:
        verdict = "The proxy meets the target, and so does the low end of its interval: trust its ranking."
    elif rho.value >= target:
        verdict = "The proxy meets the target by its estimate, but its interval reaches below it: "
        verdict += "more configs would tell."
    elif interval[1] >= target:
        verdict = "The proxy falls short of the target by its estimate, but its interval reaches it: "
        verdict += "more configs would tell."
    else:
        verdict = (
            "The proxy ranks configurations clearly worse than the target: read its front as a coarse "
            "guide and replay candidates before deciding."
        )
    lines.append(verdict)
    own = noise.seed_agreement.spearman if noise.seed_agreement else None
    if own is not None:
        lines.append(
            f"Two seeds of the proxy agree with each other at Spearman's rho {own.value:.2f}; a "
            f"config's proxy accuracy moves by {noise.proxy_seed_std:.4f} from seed to seed "
            "(standard deviation, mean over configs)."
        )
        if own.value < target:
            lines.append(
                "One proxy run disagrees with another of the same config more than the target allows: "
                "more validation images or more proxy seeds per config would steady it."
            )
    if cheapest is None:
        lines.append("No proxy read from these learning curves reaches the target, the proxy included.")
        return lines
    low = "reaches it too" if cheapest.interval_meets_target else "does not"
    figure = f"Spearman's rho {cheapest.spearman.value:.2f}; the low end of its interval {low}"
    if cheapest.cost < 1:
        lines.append(
            f"A cheaper proxy reaches the target: {cheapest.label}, at {cheapest.cost:.0%} of the "
            f"proxy's training ({figure})."
        )
    else:
        lines.append(f"No cheaper proxy reaches the target; {cheapest.label} does ({figure}).")
    return lines

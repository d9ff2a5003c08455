"""A study in a few numbers: what ``kwsearch search`` prints and its live view shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kwsearch.formats import format_accuracy, format_cost
from kwsearch.records import (
    FINISHED,
    StudyStore,
    TrialRecord,
    normalized_hypervolume,
    objective_point,
    resolved_reference_point,
)
from kwsearch.stats import Estimate, FrontNoise, accuracy_estimate, front_noise, published_claims

COST_NAMES = {
    "params": "params",
    "effective_params": "effective params",
    "macs": "MACs",
    "train_ms_per_image": "train/image",
    "latency_ms": "latency",
    "latency_batch_ms": "batch latency",
}


@dataclass
class StudySummary:
    """Counts, the front and its hypervolume: what ``kwsearch search --json`` prints."""

    name: str
    trials: int
    complete: int
    pruned: int
    failed: int
    infeasible: int
    running: int
    duplicates: int
    proposals: int  # configs the search proposed: trained, infeasible and duplicates
    pareto: list[int]  # on each config's mean accuracy over its runs (seeds, confirmation runs)
    hypervolume: float
    reference_point: list[float] | None
    objectives: list[str]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> objectives
    # every complete trial's accuracy: the mean over its config's runs, its 95% interval, the runs
    accuracy: dict[int, list[float | None]] = field(default_factory=dict)
    # what each front member costs: params, effective_params (where sparse training keeps fewer),
    # MACs (where counted) and what its worker measured (milliseconds; where measured)
    front_costs: dict[int, dict[str, float]] = field(default_factory=dict)
    measured_on: list[str] = field(default_factory=list)  # the devices the measured costs are from
    tied_with_front: list[int] = field(default_factory=list)  # within noise of the front
    front_within_noise: bool = False  # no front member beats another beyond noise
    noise: list[str] = field(default_factory=list)  # what the two say, in words
    confirmations: int = 0  # confirmation runs complete (apart from the budget)
    baseline_accuracy: dict[str, str] = field(default_factory=dict)  # label -> accuracy and interval
    claims: list[str] = field(default_factory=list)  # the paper's orderings among the baselines
    gpu_hours: float = 0.0
    trial_seconds: float = 0.0
    stop_reason: str | None = None  # set when the search stopped before its budget was spent
    no_result: str | None = None  # why no trial completed, when none did
    interrupted: bool = False  # stopped by Ctrl-C: running the same search again continues it

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        """The summary as ``kwsearch search`` prints it."""
        counts = f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed"
        counts += f", {self.infeasible} infeasible"
        if self.confirmations:
            counts += f", {self.confirmations} confirmation runs"
        out = [f"{self.name}: {counts}; hypervolume {self.hypervolume:.4f}"]
        trained = self.complete + self.pruned + self.failed
        if trained:
            out.append(
                f"{self.proposals} proposals for {trained} trained trials "
                f"({self.proposals / trained:.1f} per trained trial: {self.duplicates} duplicates, "
                f"{self.infeasible} infeasible)"
            )
        if self.pareto:
            out.append("front (accuracy with its 95% interval):")
        by_cost = sorted(self.pareto, key=lambda n: [self.front_costs[n][c] for c in self.objectives[1:]])
        for number in by_cost:
            accuracy, low, high, runs = self.accuracy[number]
            seeds = f", {runs} seeds" if runs > 1 else ""
            interval = ""
            if low is not None:
                interval = f" (95% CI {format_accuracy(low)} to {format_accuracy(high)}{seeds})"
            costs = "  ".join(
                f"{COST_NAMES[name]} {format_cost(cost, name)}"
                for name, cost in self.front_costs[number].items()
            )
            out.append(f"  trial {number:>4}  {format_accuracy(accuracy)}{interval}  {costs}")
        if self.measured_on:
            out.append(f"times measured on {'; '.join(self.measured_on)}")
        out += self.noise
        if self.baselines:
            out.append("baselines: " + "; ".join(self.baseline_accuracy.values()))
        if self.claims:
            out.append("the paper's orderings on this proxy:")
            out += [f"  {claim}" for claim in self.claims]
        return out


def _costs(trial: TrialRecord, objectives: list[str]) -> dict[str, float]:
    """Params, effective params (an objective, or fewer than params), MACs where counted, the
    measured costs where measured."""
    costs = trial.costs.as_dict()
    if costs["effective_params"] == costs["params"] and "effective_params" not in objectives:
        del costs["effective_params"]
    return {name: value for name, value in costs.items() if isinstance(value, int | float)}


def noise_of(store: StudyStore, trials: list[TrialRecord] | None = None) -> FrontNoise:
    """The study's front on its configs' mean accuracies (confirmation runs included) with what
    is within noise (:func:`kwsearch.stats.front_noise`)."""
    record = store.record
    extra: dict[int, list[float]] = {}
    for run in store.confirmations():
        if run.status == "complete":
            extra.setdefault(run.confirms, []).append(run.accuracy)
    return front_noise(
        trials if trials is not None else store.trials(),
        record.objectives,
        images=record.proxy_val_images,
        extra_runs=extra,
    )


def baseline_estimates(store: StudyStore) -> dict[str, Estimate]:
    """Each complete baseline's accuracy with its interval, by label."""
    images = store.record.proxy_val_images
    return {
        t.baseline: accuracy_estimate([t.accuracy], int(t.history[-1].get("val_images") or 0) or images)
        for t in store.baselines()
        if t.status == "complete" and t.history
    }


def why_no_result(trials: list[TrialRecord]) -> str | None:
    """Why no search trial completed (the most frequent error of those that failed, or of the
    configs that could not train); None when one did, or when none has ended yet."""
    if any(t.status == "complete" for t in trials):
        return None
    for status, what in (("failed", "trials failed"), ("infeasible", "configs proposed could not train")):
        errors = Counter(t.error or "no error recorded" for t in trials if t.status == status)
        if errors:
            error, count = errors.most_common(1)[0]
            return f"no trial completed: {sum(errors.values())} {what}; {count} of them with {error}"
    return None


def summarize(store: StudyStore) -> StudySummary:
    record = store.record
    trials = store.trials()
    objectives = record.objectives
    counts = {status: 0 for status in (*FINISHED, "duplicate", "running", "waiting")}
    for trial in trials:
        counts[trial.status] += 1
    noise = noise_of(store, trials)
    by_number = {t.number: t for t in trials}
    points = [
        objective_point(
            {**by_number[n].objectives(objectives), "accuracy": noise.estimates[n].value}, objectives
        )
        for n in noise.front
    ]
    seconds = sum(t.seconds or 0.0 for t in trials)
    estimates = baseline_estimates(store)
    baselines = {}
    reference_point = resolved_reference_point(record.reference_point, objectives, trials + store.baselines())
    devices = {t.costs.device for t in trials + store.baselines() if t.costs and t.costs.device}
    for trial in store.baselines():
        values = trial.objectives(objectives)
        if values is not None:
            baselines[trial.baseline] = values
    return StudySummary(
        name=store.name,
        trials=sum(counts[s] for s in FINISHED),
        complete=counts["complete"],
        pruned=counts["pruned"],
        failed=counts["failed"],
        infeasible=counts["infeasible"],
        running=counts["running"],
        duplicates=counts["duplicate"],
        proposals=sum(counts[s] for s in FINISHED) + counts["duplicate"],
        pareto=noise.front,
        hypervolume=normalized_hypervolume(points, reference_point) if reference_point else 0.0,
        reference_point=reference_point,
        objectives=objectives,
        baselines=baselines,
        accuracy={n: [e.value, e.low, e.high, e.runs] for n, e in noise.estimates.items()},
        front_costs={n: _costs(by_number[n], objectives) for n in noise.front},
        measured_on=sorted(devices),
        tied_with_front=noise.tied,
        front_within_noise=noise.within_noise,
        noise=noise.describe(),
        confirmations=sum(c.status == "complete" for c in store.confirmations()),
        baseline_accuracy={label: f"{label} {e.describe()}" for label, e in estimates.items()},
        claims=[claim.describe() for claim in published_claims(estimates)],
        gpu_hours=seconds * record.gpus_per_trial / 3600,
        trial_seconds=seconds,
        no_result=why_no_result(trials),
    )

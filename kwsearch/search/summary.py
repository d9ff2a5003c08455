"""A study in a few numbers: what ``kwsearch search`` prints and its live view shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kwsearch.records import FINISHED, StudyStore, front_of, normalized_hypervolume, objective_point


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
    pareto: list[int]
    hypervolume: float
    reference_point: list[float]
    objectives: list[str]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> objectives
    gpu_hours: float = 0.0
    trial_seconds: float = 0.0
    stop_reason: str | None = None  # set when the search stopped before its budget was spent
    interrupted: bool = False  # stopped by Ctrl-C: running the same search again continues it

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(store: StudyStore) -> StudySummary:
    record = store.record
    trials = store.trials()
    objectives = record.objectives
    counts = {status: 0 for status in (*FINISHED, "duplicate", "running", "waiting")}
    for trial in trials:
        counts[trial.status] += 1
    front = front_of(trials, objectives)
    points = [objective_point(t.objectives(objectives), objectives) for t in front]
    seconds = sum(t.seconds or 0.0 for t in trials)
    baselines = {}
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
        pareto=sorted(t.number for t in front),
        hypervolume=normalized_hypervolume(points, record.reference_point) if record.reference_point else 0.0,
        reference_point=record.reference_point,
        objectives=objectives,
        baselines=baselines,
        gpu_hours=seconds * record.gpus_per_trial / 3600,
        trial_seconds=seconds,
    )

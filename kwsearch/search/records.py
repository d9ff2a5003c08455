"""What a study stores, and how it is read back: the contract between the search (writer) and
the report and replay (readers).

Everything lives in the Optuna storage. A trial's user attributes:

- ``status``: ``complete`` | ``pruned`` | ``failed`` | ``infeasible`` | ``duplicate`` (Optuna's
  state says the same, except that infeasible configs are stored COMPLETE with accuracy 0 so
  that samplers with constraints learn from them, and a duplicate of a config trained already
  repeats its original's values; always read ``status``);
- ``config``: the model config; ``costs``: params, effective_params, macs; the constraint values
  are Optuna's own (``trial.constraints``: buildable, then one per budget);
- ``trained``: true once it was handed to Ray; ``duplicate_of``: the trial a duplicate repeats;
- ``history``: per-epoch metrics; ``seconds``: wall time of the trial; ``error``: why it failed;
- ``seed``: the proxy recipe's seed; ``reference``: the label of a reference trial.

The study's user attributes hold the study file's settings, the objectives, the resolved
budget, the static baseline's costs and the hypervolume reference point fixed at the start.
Reference trials live in a second study named ``<name>.references`` in the same storage, so
samplers never learn from configs outside the space.

Replays (``kwsearch replay``) live in a third study, ``<name>.replays``: one trial per (proxy
trial, seed), with user attributes ``proxy_trial`` (the search trial's number), ``seed``,
``config``, ``status`` (complete | failed), ``history`` (per-epoch metrics of the full recipe),
``val_accuracy``, ``test_accuracy``, ``seconds`` and ``export`` (the folder holding the trained
model's checkpoint and model config, which ``kwsearch.load`` reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kwsearch.search.pareto import hypervolume, pareto_front

STATUSES = ("complete", "pruned", "failed", "infeasible")  # what a study's trial count counts
REFERENCES_SUFFIX = ".references"


REPLAYS_SUFFIX = ".replays"


def references_name(study_name: str) -> str:
    return study_name + REFERENCES_SUFFIX


def replays_name(study_name: str) -> str:
    return study_name + REPLAYS_SUFFIX


def status_of(trial: FrozenTrial) -> str:
    """``complete``, ``pruned``, ``failed``, ``infeasible``, ``running`` or ``waiting``."""
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "waiting"
    return (
        trial.user_attrs.get("status")
        or {
            TrialState.COMPLETE: "complete",
            TrialState.PRUNED: "pruned",
            TrialState.FAIL: "failed",
        }[trial.state]
    )


def objective_point(values: dict[str, float], objectives: list[str]) -> tuple[float, ...]:
    """The objectives as a vector to minimise (accuracy negated)."""
    return tuple(-values[name] if name == "accuracy" else float(values[name]) for name in objectives)


def trial_objectives(trial: FrozenTrial, objectives: list[str]) -> dict[str, float] | None:
    """The objective values of a complete trial (None for any other)."""
    if status_of(trial) != "complete":
        return None
    history = trial.user_attrs.get("history") or []
    if not history:
        return None
    values = {"accuracy": history[-1]["val_accuracy"], **trial.user_attrs.get("costs", {})}
    return {name: values[name] for name in objectives}


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
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    gpu_hours: float = 0.0
    trial_seconds: float = 0.0
    stop_reason: str | None = None  # set when the search stopped before its budget was spent
    interrupted: bool = False  # stopped by Ctrl-C: running the same search again continues it

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def front_of(trials: list[FrozenTrial], objectives: list[str]) -> list[FrozenTrial]:
    """The Pareto-optimal complete trials."""
    scored = [(t, trial_objectives(t, objectives)) for t in trials]
    scored = [(t, v) for t, v in scored if v is not None]
    points = [objective_point(v, objectives) for _, v in scored]
    return [scored[i][0] for i in pareto_front(points)]


def summarize(study: optuna.Study, references: optuna.Study | None = None) -> StudySummary:
    trials = study.get_trials(deepcopy=False)
    objectives = study.user_attrs["objectives"]
    reference_point = study.user_attrs["reference_point"]
    counts = {status: 0 for status in (*STATUSES, "duplicate", "running", "waiting")}
    for trial in trials:
        counts[status_of(trial)] += 1
    front = front_of(trials, objectives)
    points = [objective_point(trial_objectives(t, objectives), objectives) for t in front]
    seconds = sum(t.user_attrs.get("seconds", 0.0) for t in trials)
    gpus = study.user_attrs.get("gpus_per_trial", 0.0)
    reference_values = {}
    for trial in references.get_trials(deepcopy=False) if references is not None else ():
        values = trial_objectives(trial, objectives)
        if values is not None:
            reference_values[trial.user_attrs["reference"]] = values
    return StudySummary(
        name=study.study_name,
        trials=sum(counts[s] for s in STATUSES),
        complete=counts["complete"],
        pruned=counts["pruned"],
        failed=counts["failed"],
        infeasible=counts["infeasible"],
        running=counts["running"],
        duplicates=counts["duplicate"],
        pareto=sorted(t.number for t in front),
        hypervolume=normalized_hypervolume(points, reference_point),
        reference_point=reference_point,
        objectives=objectives,
        references=reference_values,
        gpu_hours=seconds * gpus / 3600,
        trial_seconds=seconds,
    )


def normalized_hypervolume(points: list[tuple[float, ...]], reference_point: list[float]) -> float:
    """The hypervolume as a fraction of the box between the ideal point (accuracy 1, zero costs)
    and the reference point: 1 would be a perfect model that costs nothing."""
    ideal = [-1.0] + [0.0] * (len(reference_point) - 1)
    box = math.prod(r - i for r, i in zip(reference_point, ideal, strict=True))
    return hypervolume(points, reference_point) / box if points and box > 0 else 0.0

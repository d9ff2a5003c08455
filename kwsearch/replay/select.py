"""Which proxy trials a replay trains: named ones, or K spread along the Pareto front."""

from __future__ import annotations

import math

from kwsearch.records import TrialRecord, front_of, objective_point

REPLAYABLE = ("complete", "pruned", "failed")  # trained with a config that builds and fits the budget


class ReplayError(ValueError):
    """A replay that cannot run (unknown study or trial, nothing to replay); exit code 2."""


def spread_along_front(front: list[TrialRecord], objectives: list[str], k: int) -> list[TrialRecord]:
    """``k`` trials of ``front`` spread along it: both ends of the cost axis first, then, one at a
    time, the trial farthest (in objective space normalised to the front's range) from those
    already taken. Returns them ordered by cost (then by number); all of them when ``k`` covers
    the front. Not the ``k`` most accurate: those would cluster at the expensive end."""
    if k < 1:
        raise ReplayError(f"--top: must be >= 1, got {k}")
    points = {t.number: objective_point(t.objectives(objectives), objectives) for t in front}
    ordered = sorted(front, key=lambda t: (points[t.number][1:], t.number))
    if k >= len(ordered):
        return ordered
    low = [min(p[i] for p in points.values()) for i in range(len(objectives))]
    span = [max(p[i] for p in points.values()) - low[i] or 1.0 for i in range(len(objectives))]
    scaled = {n: [(v - lo) / s for v, lo, s in zip(p, low, span, strict=True)] for n, p in points.items()}
    chosen = [ordered[0], ordered[-1]][:k]
    while len(chosen) < k:
        taken = [scaled[t.number] for t in chosen]
        rest = [t for t in ordered if t not in chosen]
        # ties go to the cheaper trial: the order of ``rest`` and max() keeping the first
        chosen.append(max(rest, key=lambda t: min(math.dist(scaled[t.number], p) for p in taken)))
    return sorted(chosen, key=lambda t: (points[t.number][1:], t.number))


def select_trials(
    trials: list[TrialRecord],
    objectives: list[str],
    *,
    study_name: str,
    top: int | None = None,
    numbers: list[int] | None = None,
) -> list[TrialRecord]:
    """The trials to replay: ``numbers`` (each must have trained), or ``top`` spread along the
    front. Raises ReplayError naming the study or trial when that cannot be done."""
    if (top is None) == (numbers is None):
        raise ReplayError("give either --top K or --trials I,J (not both)")
    if not any(t.status == "complete" for t in trials):
        raise ReplayError(f"study {study_name!r} has no complete trials to replay")
    if top is not None:
        return spread_along_front(front_of(trials, objectives), objectives, top)
    by_number = {t.number: t for t in trials}
    chosen = []
    for number in dict.fromkeys(numbers):
        trial = by_number.get(number)
        if trial is None:
            raise ReplayError(f"study {study_name!r} has no trial {number} (its trials: 0-{len(trials) - 1})")
        if trial.status == "duplicate":
            raise ReplayError(
                f"study {study_name!r}: trial {number} repeats trial {trial.duplicate_of}; replay that one"
            )
        if trial.status not in REPLAYABLE or trial.config is None:
            reason = trial.error or trial.status
            raise ReplayError(f"study {study_name!r}: trial {number} never trained ({reason})")
        chosen.append(trial)
    return chosen

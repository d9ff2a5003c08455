"""The Pareto front of stored trials and its hypervolume."""

from __future__ import annotations

import math

from kwsearch.pareto import hypervolume, pareto_front
from kwsearch.records._trial import TrialRecord


def objective_point(values: dict[str, float], objectives: list[str]) -> tuple[float, ...]:
    """The objectives as a vector to minimise (accuracy negated)."""
    return tuple(-values[name] if name == "accuracy" else float(values[name]) for name in objectives)


def front_of(trials: list[TrialRecord], objectives: list[str]) -> list[TrialRecord]:
    """The Pareto-optimal complete trials."""
    scored = [(t, t.objectives(objectives)) for t in trials]
    scored = [(t, v) for t, v in scored if v is not None]
    points = [objective_point(v, objectives) for _, v in scored]
    return [scored[i][0] for i in pareto_front(points)]


def normalized_hypervolume(points: list[tuple[float, ...]], reference_point: list[float]) -> float:
    """The hypervolume as a fraction of the box between the ideal point (accuracy 1, zero costs)
    and the reference point: 1 would be a perfect model that costs nothing."""
    ideal = [-1.0] + [0.0] * (len(reference_point) - 1)
    box = math.prod(r - i for r, i in zip(reference_point, ideal, strict=True))
    return hypervolume(points, reference_point) / box if points and box > 0 else 0.0

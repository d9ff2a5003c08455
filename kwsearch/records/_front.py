"""The Pareto front of stored trials, members spread along it, and its hypervolume."""

from __future__ import annotations

import math

from kwsearch.pareto import hypervolume, pareto_front
from kwsearch.records._trial import TrialRecord


def objective_point(values: dict[str, float], objectives: list[str]) -> tuple[float, ...]:
    """The objectives as a vector to minimise (accuracy negated)."""
    return tuple(-values[name] if name == "accuracy" else float(values[name]) for name in objectives)


def front_of(
    trials: list[TrialRecord], objectives: list[str], accuracy: dict[int, float] | None = None
) -> list[TrialRecord]:
    """The Pareto-optimal complete trials; ``accuracy`` (by trial number) replaces a trial's own
    last-epoch accuracy, e.g. by its mean over seeds."""
    scored = [(t, t.objectives(objectives)) for t in trials]
    scored = [(t, v) for t, v in scored if v is not None]
    if accuracy is not None:
        scored = [(t, {**v, "accuracy": accuracy.get(t.number, v["accuracy"])}) for t, v in scored]
    points = [objective_point(v, objectives) for _, v in scored]
    return [scored[i][0] for i in pareto_front(points)]


def spread_along_front(front: list[TrialRecord], objectives: list[str], k: int) -> list[TrialRecord]:
    """``k`` trials of ``front`` spread along it: both ends of the cost axis first, then, one at a
    time, the trial farthest (in objective space normalised to the front's range) from those
    already taken. Returns them ordered by cost (then by number); all of them when ``k`` covers
    the front. Not the ``k`` most accurate: those would cluster at the expensive end."""
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


def resolved_reference_point(
    reference_point: list[float | None] | None, objectives: list[str], trials: list[TrialRecord]
) -> list[float] | None:
    """``reference_point`` with each measured cost it leaves open (None: a measured objective
    without a budget, whose bound no config's description tells) set 10% beyond the largest
    value measured among ``trials`` (search trials and baselines): it moves as a study grows.
    None when there is no reference point, or an open cost was never measured yet."""
    if reference_point is None or None not in reference_point:
        return reference_point
    point = list(reference_point)
    for i, (name, value) in enumerate(zip(objectives, reference_point, strict=True)):
        if value is None:
            measured = [v for t in trials if t.costs and (v := getattr(t.costs, name, None)) is not None]
            if not measured:
                return None
            point[i] = 1.1 * max(measured)
    return point


def normalized_hypervolume(points: list[tuple[float, ...]], reference_point: list[float]) -> float:
    """The hypervolume as a fraction of the box between the ideal point (accuracy 1, zero costs)
    and the reference point: 1 would be a perfect model that costs nothing."""
    ideal = [-1.0] + [0.0] * (len(reference_point) - 1)
    box = math.prod(r - i for r, i in zip(reference_point, ideal, strict=True))
    return hypervolume(points, reference_point) / box if points and box > 0 else 0.0

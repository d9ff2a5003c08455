"""Pareto analysis of objective vectors, every objective minimised (negate what is maximised).

Non-dominated sorting and crowding distance rank trials at an early-stopping rung; the
hypervolume measures a front against the reference point fixed when the study started.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` by front: the first list is the Pareto front, the next is the front
    of what remains, and so on. Equal points share a front."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)]
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each index in ``front``: the ends of every objective get
    infinity, so the extremes of a front (the smallest model, the most accurate) are kept first."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: float("inf") for i in front}
    for k in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: points[i][k])
        low, high = points[ordered[0]][k], points[ordered[-1]][k]
        distance[ordered[0]] = distance[ordered[-1]] = float("inf")
        if high == low:
            continue
        for before, here, after in zip(ordered, ordered[1:], ordered[2:], strict=False):
            distance[here] += (points[after][k] - points[before][k]) / (high - low)
    return distance


def rank(points: Sequence[Point]) -> list[int]:
    """Indices of ``points`` best first: by front, then by crowding distance (larger first)."""
    order = []
    for front in non_dominated_sort(points):
        crowding = crowding_distance(points, front)
        order.extend(sorted(front, key=lambda i: -crowding[i]))
    return order


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points (ascending)."""
    return sorted(non_dominated_sort(points)[0]) if points else []


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (exact, any dimension).

    Points that do not dominate the reference point contribute nothing. Computed by slicing along
    the last objective (HSO): exact and fast enough for the few hundred points of a front.
    """
    inside = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference, strict=True))]
    if not inside:
        return 0.0
    front = [inside[i] for i in pareto_front(inside)]
    return _hso(front, tuple(reference))


def _hso(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:
        volume, best_y = 0.0, reference[1]
        for x, y in sorted(set(points)):
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return volume
    volume = 0.0
    ordered = sorted(points, key=lambda p: p[-1])
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        if upper > point[-1]:
            slab = [p[:-1] for p in ordered[: i + 1]]
            volume += _hso(slab, reference[:-1]) * (upper - point[-1])
    return volume

"""Early stopping that is right for two objectives: Pareto-aware asynchronous successive halving.

At each rung (epochs ``min_epochs * reduction_factor**k``) the trials that reached it are ranked
by non-dominated sorting of (accuracy so far, parameters...), ties within a front broken by
crowding distance; a trial continues only if it is among the best ``1/reduction_factor`` of
them. Ranking by accuracy alone would stop every small model for being less accurate than a
large one; on a front, the small model survives.
"""

from __future__ import annotations

import json
import math

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from kwsearch.pareto import rank
from kwsearch.search.study import EarlyStopping


def rungs(settings: EarlyStopping, epochs: int) -> list[int]:
    """The epochs at which trials are compared (never the last: a finished trial is complete)."""
    if not settings.enabled:
        return []
    milestones, epoch = [], float(settings.min_epochs)
    while round(epoch) < epochs:
        if not milestones or round(epoch) > milestones[-1]:
            milestones.append(round(epoch))
        epoch *= settings.reduction_factor
    return milestones


class ParetoSuccessiveHalving:
    """The decisions, kept apart from Ray so they are testable and can be seeded from storage."""

    def __init__(self, settings: EarlyStopping, epochs: int) -> None:
        self.reduction_factor = settings.reduction_factor
        self.rungs = rungs(settings, epochs)
        self._recorded: dict[int, dict[str, tuple[float, ...]]] = {r: {} for r in self.rungs}
        self.stopped: set[str] = set()

    def record(self, key: str, epoch: int, point: tuple[float, ...]) -> None:
        """A finished trial's point at ``epoch`` (from storage), so later trials meet it."""
        if epoch in self._recorded:
            self._recorded[epoch][key] = point

    def decide(self, key: str, epoch: int, point: tuple[float, ...]) -> bool:
        """Record ``point`` (objectives to minimise) at ``epoch``; True if the trial continues."""
        if epoch not in self._recorded:
            return True
        recorded = self._recorded[epoch]
        recorded[key] = point
        keys = list(recorded)
        order = rank([recorded[k] for k in keys])
        position = next(i for i, index in enumerate(order) if keys[index] == key)
        keep = math.ceil(len(keys) / self.reduction_factor)
        if position < keep:
            return True
        self.stopped.add(key)
        return False


class ParetoScheduler(FIFOScheduler):
    """Ray Tune's side: asks :class:`ParetoSuccessiveHalving` at every reported epoch of a run
    with a ``cost_point`` (search trials; baselines always run to the end). A measured cost in
    the point is its name until the run's worker reports what it measured."""

    def __init__(self, halving: ParetoSuccessiveHalving) -> None:
        super().__init__()
        self.halving = halving
        self._measured: dict[str, dict[str, float]] = {}  # by run key

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        config = trial.config
        if config.get("cost_point") is None:
            return TrialScheduler.CONTINUE
        if "measured" in result:
            self._measured[config["key"]] = json.loads(result["measured"])
        if "epoch" not in result or "val_accuracy" not in result:
            return TrialScheduler.CONTINUE
        measured = self._measured.get(config["key"], {})
        costs = [measured[c] if isinstance(c, str) else c for c in config["cost_point"]]
        point = (-result["val_accuracy"], *costs)
        if self.halving.decide(config["key"], int(result["epoch"]), point):
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP

"""The Ray Tune searcher: Optuna proposes, the budget filters, Ray trains.

``suggest`` asks the Optuna study for a trial, samples the space through it and accounts the
config on the meta device; an over-budget config is told to Optuna at once as infeasible (with
its constraint values) and never becomes a Ray trial. Results are written to the Optuna storage
every epoch, so a killed driver loses nothing that was finished. A trial the scheduler stopped
is stored PRUNED with every epoch's metrics up to the stop in its history, never COMPLETE.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import Trial, TrialState
from ray.tune.search import Searcher

from kwsearch.models import ModelConfigError, parse_model_config
from kwsearch.search.budget import Costs, ResolvedBudget, costs_of
from kwsearch.search.scheduler import ParetoSuccessiveHalving
from kwsearch.search.space import Dimension, Space
from kwsearch.search.trainable import METRICS

# Consecutive over-budget configs after which the space is declared unable to meet the budget.
MAX_CONSECUTIVE_INFEASIBLE = 200


def suggest_through(trial: Trial) -> Callable[[Dimension], Any]:
    """Ask ``trial`` for a dimension's value (returns the stored value for resumed trials)."""

    def suggest(dimension: Dimension) -> Any:
        d = dimension.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(dimension.name, d.choices)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(dimension.name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(dimension.name, d.low, d.high, step=d.step, log=d.log)

    return suggest


@dataclass
class Live:
    """A trial Ray is running: where it is stored and what it has reported."""

    study: optuna.Study
    trial_id: int
    number: int
    reference: str | None
    started: float
    costs: Costs
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None


@dataclass
class SearchPlan:
    """What the searcher needs to know of the study."""

    space: Space
    objectives: list[str]
    budget: ResolvedBudget
    recipe: dict[str, Any]
    epochs: int
    trials: int | None  # trained trials wanted in all (None: no limit)
    deadline: float | None  # time.time() after which no trial starts
    gpu_seconds: float | None  # GPU budget in seconds of one GPU
    gpus_per_trial: float
    grid_seeds: list[int] | None  # grid: a trial per combination per seed
    references: dict[str, dict[str, Any]]  # reference label -> model config, still to train
    sampler_seed: int = 0


class OptunaBudgetSearcher(Searcher):
    """Ray Tune's Searcher over an Optuna study with constraints (see the module docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        reference_study: optuna.Study,
        plan: SearchPlan,
        halving: ParetoSuccessiveHalving,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        # no metric: Ray would then reject the error report of a failing trial (it has no accuracy)
        super().__init__()
        self.study = study
        self.reference_study = reference_study
        self.plan = plan
        self.halving = halving
        self.on_change = on_change
        self.live: dict[str, Live] = {}
        self._pending_references = dict(plan.references)
        self.stop_reason: str | None = None  # why the search stopped before its budget was spent
        self._rng = random.Random(plan.sampler_seed)
        self._last_was_duplicate = False
        # config + seed -> the trial that trained it, so an identical proposal is not trained twice
        # (interrupted trials, put back to WAITING, are to re-run: they are no duplicates of themselves)
        self._trained = {
            _identity(t.user_attrs["config"], t.user_attrs.get("seed", 0)): t.number
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("trained") and t.state != TrialState.WAITING
        }

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the tuner's settings to restore an experiment; this searcher's state is
        # the Optuna storage (resume goes through it), so the pickle keeps nothing of it.
        return {}

    # -- Ray Tune's Searcher API -------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.plan.deadline is not None and time.time() >= self.plan.deadline:
            return Searcher.FINISHED
        if self._pending_references:
            label = next(iter(self._pending_references))
            config = self._pending_references.pop(label)
            return self._start_reference(trial_id, label, config)
        if self._spent_budget():
            return Searcher.FINISHED
        if self.plan.grid_seeds is not None and not self._waiting():
            return Searcher.FINISHED
        explore = False
        for _ in range(MAX_CONSECUTIVE_INFEASIBLE):
            started = self._start_search_trial(trial_id, explore)
            if started is not None:
                return started
            # Samplers converging on a small categorical space keep proposing what was trained;
            # after a duplicate, the next proposal is drawn at random from the space instead.
            explore = self.plan.grid_seeds is None and self._last_was_duplicate
        self.stop_reason = (
            f"the sampler proposed {MAX_CONSECUTIVE_INFEASIBLE} configs in a row that were over budget, "
            "could not be built, or were trained already: the space's feasible configs may be exhausted; "
            "widen it, or narrow it toward what fits the budget"
        )
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        if "error" in result:
            live.error = result["error"]
            self._storage.set_trial_user_attr(live.trial_id, "traceback", result.get("traceback", ""))
            return
        if "epoch" not in result:
            return
        metrics = {k: result[k] for k in result if k in METRICS}
        if metrics["epoch"] == 1:
            live.history = []  # a retried trial starts over
        live.history.append(metrics)
        # Every epoch's metrics go to the history attribute, not to Optuna's intermediate values:
        # Optuna's multi-objective TPE raises on PRUNED trials that carry intermediate values
        # (it asks the study for its single direction).
        self._storage.set_trial_user_attr(live.trial_id, "history", live.history)
        self.on_change()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # Ray skips on_trial_result for the result its scheduler stopped a trial on
        live = self.live.get(trial_id)
        unseen = live is not None and result and "epoch" in result and "error" not in result
        if unseen and (not live.history or result["epoch"] > live.history[-1]["epoch"]):
            self.on_trial_result(trial_id, result)
        live = self.live.pop(trial_id, None)
        if live is None:
            return
        seconds = time.time() - live.started
        self._storage.set_trial_user_attr(live.trial_id, "seconds", seconds)
        key = str(live.number)
        epochs_done = len(live.history)
        if error or live.error is not None:
            self._finish(live, "failed", TrialState.FAIL, error=live.error or "the trial's worker failed")
        elif live.reference is None and key in self.halving.stopped:
            self._finish(live, "pruned", TrialState.PRUNED)
        elif epochs_done >= self.plan.epochs:
            accuracy = live.history[-1]["val_accuracy"]
            values = [
                accuracy if name == "accuracy" else getattr(live.costs, name) for name in self.plan.objectives
            ]
            self._finish(live, "complete", TrialState.COMPLETE, values=values)
        else:
            self._finish(
                live,
                "failed",
                TrialState.FAIL,
                error=f"stopped after {epochs_done} of {self.plan.epochs} epochs",
            )

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _storage(self) -> optuna.storages.BaseStorage:
        return self.study._storage

    def _finish(
        self,
        live: Live,
        status: str,
        state: TrialState,
        values: list[float] | None = None,
        error: str | None = None,
    ) -> None:
        storage = live.study._storage
        storage.set_trial_user_attr(live.trial_id, "status", status)
        if error is not None:
            storage.set_trial_user_attr(live.trial_id, "error", error)
        live.study.tell(live.number, values=values, state=state, skip_if_finished=True)
        self.on_change()

    def _waiting(self) -> bool:
        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _spent_budget(self) -> bool:
        trials = self.study.get_trials(deepcopy=False)
        # Configs that never trained (over budget, invalid) cost milliseconds: they do not count.
        # Interrupted trials wait to re-run: they count once they run again.
        trained = sum(1 for t in trials if t.user_attrs.get("trained") and t.state != TrialState.WAITING)
        if self.plan.trials is not None and trained >= self.plan.trials:
            return True
        if self.plan.gpu_seconds is not None:
            spent = sum(t.user_attrs.get("seconds", 0.0) for t in trials) * self.plan.gpus_per_trial
            return spent >= self.plan.gpu_seconds
        return False

    def _ray_config(self, live: Live, config: dict[str, Any], seed: int) -> dict[str, Any]:
        recipe = {**self.plan.recipe, "seed": seed}
        cost_point = [float(getattr(live.costs, name)) for name in self.plan.objectives[1:]]
        return {
            "key": str(live.number),
            "number": live.number,
            "reference": live.reference,
            "model": config,
            "recipe": recipe,
            "cost_point": cost_point,
        }

    def _start_reference(self, ray_id: str, label: str, config: dict[str, Any]) -> dict[str, Any]:
        costs = costs_of(parse_model_config(config))
        trial = self.reference_study.ask()
        for key, value in (("reference", label), ("config", config), ("costs", costs.as_dict())):
            trial.set_user_attr(key, value)
        trial.set_user_attr("seed", self.plan.recipe.get("seed", 0))
        live = Live(self.reference_study, trial._trial_id, trial.number, label, time.time(), costs)
        self.live[ray_id] = live
        return self._ray_config(live, config, self.plan.recipe.get("seed", 0))

    def _start_search_trial(self, ray_id: str, explore: bool = False) -> dict[str, Any] | None:
        """Ask Optuna for one config (``explore``: a random one, enqueued); None when it cannot
        train (over budget, no network can be built from it, trained already), which is told
        to Optuna at once."""
        self._last_was_duplicate = False
        if explore:
            _, params = self.plan.space.sample(lambda dimension: dimension.random(self._rng))
            self.study.enqueue_trial(params, user_attrs={"explored": True})
        trial = self.study.ask()
        seed = self.plan.recipe.get("seed", 0)
        if self.plan.grid_seeds is not None:
            seed = trial.suggest_categorical("seed", self.plan.grid_seeds)
        config, _ = self.plan.space.sample(suggest_through(trial))
        trial.set_user_attr("config", config)
        trial.set_user_attr("seed", seed)
        try:
            model_config = parse_model_config(config, self.plan.space.source)
            costs = costs_of(model_config, macs=self.plan.budget.counts_macs)
        except ModelConfigError as error:
            unbuildable = {"buildable": 1.0, **dict.fromkeys(self.plan.budget.limits, 0.0)}
            self._infeasible(trial, unbuildable, None, f"invalid config: {error}")
            return None
        constraints = {"buildable": 0.0, **self.plan.budget.constraints(costs)}
        trial.set_user_attr("costs", costs.as_dict())
        if not self.plan.budget.feasible(costs):
            self._infeasible(trial, constraints, costs, f"over budget: {self.plan.budget.describe(costs)}")
            return None
        _constrain(trial, constraints)
        if costs.macs is None:  # it will train: worth the MAC count for the record
            costs = costs_of(model_config)
            trial.set_user_attr("costs", costs.as_dict())
        identity = _identity(config, seed)
        if identity in self._trained:
            self._duplicate(trial, self._trained[identity])
            self._last_was_duplicate = True
            return None
        self._trained[identity] = trial.number
        trial.set_user_attr("trained", True)
        live = Live(self.study, trial._trial_id, trial.number, None, time.time(), costs)
        self.live[ray_id] = live
        self.on_change()
        return self._ray_config(live, config, seed)

    def _infeasible(
        self, trial: Trial, constraints: dict[str, float], costs: Costs | None, reason: str
    ) -> None:
        """Store a config that will not train. It is told COMPLETE (accuracy 0, its costs) with
        constraint values > 0, because constraint-aware samplers learn only from complete trials;
        the records say ``infeasible``, and fronts and counts read that."""
        _constrain(trial, constraints)
        trial.set_user_attr("status", "infeasible")
        trial.set_user_attr("error", reason)
        values = [
            0.0 if name == "accuracy" or costs is None else getattr(costs, name)
            for name in self.plan.objectives
        ]
        self.study.tell(trial, values=values)
        self.on_change()

    def _duplicate(self, trial: Trial, original_number: int) -> None:
        """A config (and seed) trained already: the proxy is deterministic, so training it again
        would only repeat the original. Optuna hears the original's values (if it completed)
        so the sampler learns as if it had trained."""
        original = self.study._storage.get_trial(
            self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, original_number)
        )
        trial.set_user_attr("status", "duplicate")
        trial.set_user_attr("duplicate_of", original_number)
        if original.state == TrialState.COMPLETE and original.user_attrs.get("status") == "complete":
            self.study.tell(trial, values=original.values)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        self.on_change()


def _identity(config: dict[str, Any], seed: int) -> str:
    return json.dumps([config, seed], sort_keys=True)


def _constrain(trial: Trial, constraints: dict[str, float]) -> None:
    """Set the constraint values once (a resumed trial keeps those it was given)."""
    stored = trial.storage.get_trial(trial._trial_id).constraints
    for key, value in constraints.items():
        if key not in stored:
            trial.set_constraint(key, value)

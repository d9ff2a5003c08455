"""What a search runs next: baselines first, then Optuna's proposals that fit the budget, until
the budget is spent.

Each proposal is asked of the Optuna study, sampled through its trial and built once on the meta
device; an over-budget or unbuildable config is told to Optuna at once as infeasible (with its
constraint values) and never becomes a run; a config trained already is stored a duplicate.
After a proposal that repeats an earlier one, the next is drawn at random instead, in a small
discrete space from the configs never proposed (so that none is wasted on a repeat and the
search stops when every config was proposed). Every epoch is written to the storage as it comes,
so a killed driver loses nothing that was finished; a run the scheduler stopped is stored
PRUNED, with every epoch up to the stop in its history, never COMPLETE.

Search trials and confirmation runs checkpoint every epoch in ``checkpoints/`` of the study's run
folder, so one that a killed driver left running continues from its last finished epoch when it
is run again; a run's checkpoint is removed once the run has ended (complete, pruned or failed),
so the folder holds only the running ones.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import Trial

from kwsearch.execution import WAIT, Outcome, Run
from kwsearch.models import ModelConfig, ModelConfigError, parse_model_config
from kwsearch.records import (
    MEASURED,
    Costs,
    History,
    StudyStore,
    TrialRecord,
    TrialWriter,
    spread_along_front,
)
from kwsearch.search.budget import MetaBuild, ResolvedBudget
from kwsearch.search.scheduler import ParetoSuccessiveHalving
from kwsearch.search.space import Dimension, Space, SpaceError
from kwsearch.search.study import ConfirmSettings
from kwsearch.search.trackers import LogSettings, Trackers
from kwsearch.stats import front_noise
from kwsearch.train import Recipe

# Consecutive over-budget configs after which the space is declared unable to meet the budget.
MAX_CONSECUTIVE_INFEASIBLE = 200
# A space of at most this many configs (every dimension a choice or a stepped range) is small
# enough to enumerate: what was not proposed yet is drawn from the rest.
MAX_ENUMERATED_CONFIGS = 4096


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
class SearchPlan:
    """What the policy needs to know of the study."""

    space: Space
    objectives: list[str]
    budget: ResolvedBudget
    recipe: Recipe
    trials: int | None  # trained trials wanted in all (None: no limit)
    deadline: float | None  # time.time() after which no trial starts
    gpu_seconds: float | None  # GPU budget in seconds of one GPU
    gpus_per_trial: float
    grid_seeds: list[int] | None  # grid: a trial per combination per seed
    baselines: dict[str, ModelConfig]  # baseline label -> model config, still to train
    sampler_seed: int = 0
    confirm: ConfirmSettings | None = None  # front members trained again after the budget
    checkpoints: Path | None = None  # where search trials and confirmation runs checkpoint
    # the size (height, width) of the images workers time each config on before training it, when
    # the study measures costs (kwsearch.train.timing); None: nothing is measured
    measure_size: tuple[int, int] | None = None


@dataclass
class _Trial:
    """A trial being trained: its record, its costs, and what kind of run it is."""

    writer: TrialWriter
    costs: Costs
    kind: str = "search"  # or "baseline", "confirmation"


class SearchPolicy:
    """Proposes the search's runs and writes what they report (see the module docstring)."""

    def __init__(
        self,
        store: StudyStore,
        plan: SearchPlan,
        halving: ParetoSuccessiveHalving,
        on_change: Callable[[], None] = lambda: None,
        trackers: Trackers | None = None,
    ) -> None:
        self.store = store
        self.plan = plan
        self.halving = halving
        self.on_change = on_change
        self.trackers = trackers or Trackers(LogSettings(), store.name, Path())  # none: logs nothing
        self.stop_reason: str | None = None  # why the search stopped before its budget was spent
        self._pending_baselines = dict(plan.baselines)
        self._rng = random.Random(plan.sampler_seed)
        self._last_was_repeat = False
        trials = store.trials()
        # config + seed -> the trial that trained it, so an identical proposal is not trained twice
        # (interrupted trials, put back to WAITING, are to re-run: they are no duplicates of themselves)
        self._trained = {
            _identity(t.config, t.seed or 0): t.number for t in trials if t.trained and t.status != "waiting"
        }
        # every config + seed proposed so far (trained or not), so that exploring proposes others
        self._proposed = {
            _identity(t.config, t.seed or 0) for t in trials if t.config is not None and t.status != "waiting"
        }
        self._enumerated: list[tuple[str, dict[str, Any]]] | None = None  # see _space_configs
        # config -> (what a worker measured of it, that trial's number): a config is timed once
        self._measured = {
            _identity(t.config, 0): (t.costs.measured, t.number)
            for t in trials
            if t.config is not None and t.costs is not None and t.costs.measured is not None
        }
        # what an infeasible config is told to Optuna for a cost it has none of (it could not be
        # built): the hypervolume's reference point, so that any trained config dominates it
        self._worst_costs = (store.record.reference_point or [])[1:] if store.record else []
        self._spent_seconds = sum(t.seconds or 0.0 for t in trials)
        self._searching = True  # until the budget is spent or the space exhausted
        self._live_search_trials = 0
        self._pending_confirmations: list[Run] | None = None  # planned once the search is over

    # -- what to run next ------------------------------------------------------------------------

    def next_run(self) -> Run | str | None:
        run = self._next_run()
        if isinstance(run, Run):
            self._track(run)
        return run

    def _next_run(self) -> Run | str | None:
        if self._pending_baselines:
            label = next(iter(self._pending_baselines))
            config = self._pending_baselines.pop(label)
            return self._baseline_run(label, config)
        if self._searching:
            run = self._next_search_trial()
            if run is not None:
                self._live_search_trials += 1
                return run
            self._searching = False
        return self._next_confirmation()

    def _next_search_trial(self) -> Run | None:
        """The next proposal that trains; None once the budget is spent or the space exhausted."""
        if self.plan.deadline is not None and time.time() >= self.plan.deadline:
            return None
        if self._spent_budget():
            return None
        for _ in range(MAX_CONSECUTIVE_INFEASIBLE):
            if self.plan.grid_seeds is not None and not self.store.has_waiting():
                return None  # every combination was proposed (an infeasible one never trains)
            # Samplers converging on a small categorical space keep proposing what they proposed
            # before; after such a repeat, the next proposal is drawn at random from the configs
            # not proposed yet (all of them, in a small discrete space), not asked of the sampler.
            if self.plan.grid_seeds is None and self._last_was_repeat and not self._explore():
                self.stop_reason = (
                    f"every config of the space ({len(self._enumerated)}) was proposed: "
                    "the space is exhausted; widen it to search further"
                )
                return None
            run = self._propose()
            if run is not None:
                return run
        self.stop_reason = (
            f"the sampler proposed {MAX_CONSECUTIVE_INFEASIBLE} configs in a row that were over budget, "
            "could not be built, or were trained already: the space's feasible configs may be exhausted; "
            "widen it, or narrow it toward what fits the budget"
        )
        return None

    def _next_confirmation(self) -> Run | str | None:
        """Confirmation runs start once every search trial has finished: the front is final then."""
        if self.plan.confirm is None:
            return None
        if self._live_search_trials:
            return WAIT
        if self._pending_confirmations is None:
            self._pending_confirmations = self._plan_confirmations(self.plan.confirm)
        return self._pending_confirmations.pop(0) if self._pending_confirmations else None

    def _plan_confirmations(self, confirm: ConfirmSettings) -> list[Run]:
        """``confirm.top`` members spread along the search's own front (its runs alone, so that a
        resumed search confirms the same ones), each with ``confirm.seeds`` more seeds; runs
        stored complete are not run again, a dead driver's are run again under their records."""
        trials = self.store.trials()
        noise = front_noise(trials, self.plan.objectives, images=self.store.record.proxy_val_images)
        front = [t for t in trials if t.number in noise.front]
        stored = {(c.confirms, c.seed): c for c in self.store.confirmations()}
        runs = []
        for trial in spread_along_front(front, self.plan.objectives, confirm.top):
            for seed in range((trial.seed or 0) + 1, (trial.seed or 0) + 1 + confirm.seeds):
                earlier = stored.get((trial.number, seed))
                if earlier is not None and earlier.status == "complete":
                    continue
                if earlier is not None and earlier.status == "running":
                    writer = self.store.reopen_confirmation(earlier.number)
                    history = earlier.history
                else:
                    writer = self.store.ask_confirmation()
                    writer.propose(trial.config, seed, confirms=trial.number)
                    writer.set_costs(trial.costs)
                    history = None
                runs.append(self._confirmation_run(writer, trial, seed, history))
        return runs

    # -- what runs report ------------------------------------------------------------------------

    def on_epoch(self, run: Run, history: History) -> None:
        # Every epoch goes to the history attribute, not to Optuna's intermediate values: Optuna's
        # multi-objective TPE raises on PRUNED trials that carry them.
        run.handle.writer.record_history(history)
        self.trackers.epoch(run.key, history[-1])
        self.on_change()

    def on_finish(self, run: Run, outcome: Outcome) -> None:
        trial: _Trial = run.handle
        writer = trial.writer
        if run.folder is not None:  # ended: nothing to resume
            shutil.rmtree(run.folder, ignore_errors=True)
        if trial.kind == "search":
            self._live_search_trials -= 1
            self._spent_seconds += outcome.seconds
        if outcome.measured is not None:
            self._store_measured(run, outcome.measured)
        if trial.kind == "search" and not self.plan.budget.feasible(trial.costs):
            self._over_measured_budget(run, outcome)
            return
        if outcome.traceback:
            writer.record_traceback(outcome.traceback)
        writer.record_history(outcome.history)
        epochs = len(outcome.history)
        values = error = None
        if outcome.kind == "failed":
            status, error = "failed", outcome.error
        elif trial.kind == "search" and run.key in self.halving.stopped:
            status = "pruned"
        elif outcome.kind == "finished" and epochs >= self.plan.recipe.epochs:
            status, accuracy = "complete", outcome.history[-1]["val_accuracy"]
            values = [
                accuracy if name == "accuracy" else getattr(trial.costs, name)
                for name in self.plan.objectives
            ]
        else:
            status, error = "failed", f"stopped after {epochs} of {self.plan.recipe.epochs} epochs"
        writer.finish(status, values=values, seconds=outcome.seconds, error=error)
        final = {"epochs": epochs, "seconds": outcome.seconds, **_known(trial.costs.as_dict())}
        if outcome.history:
            final["accuracy"] = outcome.history[-1]["val_accuracy"]
        self.trackers.finish(run.key, status, final)
        self.on_change()

    # -- helpers ----------------------------------------------------------------------------

    def _spent_budget(self) -> bool:
        # Configs that never trained (over budget, invalid) cost milliseconds: they do not count.
        # Interrupted trials wait to re-run: they count once they run again.
        if self.plan.trials is not None and len(self._trained) >= self.plan.trials:
            return True
        if self.plan.gpu_seconds is not None:
            return self._spent_seconds * self.plan.gpus_per_trial >= self.plan.gpu_seconds
        return False

    def _run(
        self,
        key: str,
        writer: TrialWriter,
        model: ModelConfig,
        costs: Costs,
        seed: int,
        kind: str,
        earlier: History | None = None,
    ) -> Run:
        """A run of ``model`` with ``seed``; search trials (only) are subject to early stopping.
        Search trials and confirmation runs checkpoint in a folder of their own; one that ran
        before (``earlier``: the epochs it stored) resumes from its checkpoint there, a new one
        starts from an empty folder."""
        folder = None
        if self.plan.checkpoints is not None and kind != "baseline":
            folder = self.plan.checkpoints / f"{kind}{writer.number}"
            if earlier is None:  # a study stored anew under an old name may have left one
                shutil.rmtree(folder, ignore_errors=True)
        return Run(
            key=key,
            model=model,
            recipe=self.plan.recipe.model_copy(update={"seed": seed}),
            folder=folder,
            cost_point=[
                name if getattr(costs, name) is None else float(getattr(costs, name))  # measured there
                for name in self.plan.objectives[1:]
            ]
            if kind == "search"
            else None,
            history=list(earlier or []),
            measure=self._measure_spec(kind) if costs.measured is None else None,
            handle=_Trial(writer, costs, kind),
        )

    def _measure_spec(self, kind: str) -> dict[str, Any] | None:
        """What a run's worker times before training (None: nothing); a search trial is not
        trained over a measured budget (a baseline always is)."""
        if self.plan.measure_size is None or kind == "confirmation":
            return None
        limits = self.plan.budget.measured_limits if kind == "search" else {}
        return {"image_size": list(self.plan.measure_size), "limits": limits}

    def _store_measured(self, run: Run, measured: dict[str, Any]) -> None:
        """Store what ``run``'s worker measured with its costs, and remember it for its config."""
        trial: _Trial = run.handle
        trial.costs = trial.costs.with_measured(measured)
        trial.writer.set_costs(trial.costs)
        if trial.kind == "search":
            config = self.store.trial(trial.writer.number).config
            self._measured[_identity(config, 0)] = (trial.costs.measured, trial.writer.number)
            # its constraint values wait for the measurement when a measured cost has a budget
            trial.writer.constrain({"buildable": 0.0, **self.plan.budget.constraints(trial.costs)})

    def _over_measured_budget(self, run: Run, outcome: Outcome) -> None:
        """A search trial whose worker measured a cost over its budget and did not train it:
        stored infeasible, like a config over a counted budget (it does not count as trained)."""
        trial: _Trial = run.handle
        writer = trial.writer
        config = self.store.trial(writer.number).config
        self._trained.pop(_identity(config, run.recipe.seed), None)
        writer.mark_trained(False)
        reason = f"over budget: {self.plan.budget.describe(trial.costs)} (measured on {trial.costs.device})"
        self._infeasible(
            writer,
            {"buildable": 0.0, **self.plan.budget.constraints(trial.costs)},
            trial.costs,
            reason,
            seconds=outcome.seconds,
        )
        self.trackers.finish(
            run.key, "infeasible", {"seconds": outcome.seconds, **_known(trial.costs.as_dict())}
        )

    def _track(self, run: Run) -> None:
        """Tell the trackers a run starts: its name there, its config, seed and costs."""
        trial: _Trial = run.handle
        label = {"search": f"trial {run.key}", "baseline": run.key.replace(":", " ")}.get(trial.kind)
        if label is None:  # confirm:NUMBER:SEED
            label = f"trial {run.key.split(':')[1]} seed {run.recipe.seed}"
        summary = {"seed": run.recipe.seed, **_known(trial.costs.as_dict())}
        self.trackers.start(run.key, label, run.model.model_dump(mode="json"), summary)

    def _baseline_run(self, label: str, config: ModelConfig) -> Run:
        costs = MetaBuild(config).costs()
        writer = self.store.ask_baseline()
        writer.propose(config.model_dump(mode="json"), self.plan.recipe.seed, baseline=label)
        writer.set_costs(costs)
        return self._run(f"baseline:{label}", writer, config, costs, self.plan.recipe.seed, "baseline")

    def _confirmation_run(
        self, writer: TrialWriter, trial: TrialRecord, seed: int, earlier: History | None
    ) -> Run:
        model = parse_model_config(trial.config)
        key = f"confirm:{trial.number}:{seed}"
        return self._run(key, writer, model, trial.costs, seed, "confirmation", earlier)

    def _space_configs(self) -> list[tuple[str, dict[str, Any]]] | None:
        """Every config of a small discrete space (identity, raw values); None for a space with
        a continuous dimension or more than MAX_ENUMERATED_CONFIGS configs."""
        if self._enumerated is None:
            try:
                configs = list(
                    self.plan.space.enumerate(Dimension.grid_values, limit=MAX_ENUMERATED_CONFIGS + 1)
                )
            except SpaceError:  # a continuous dimension
                configs = []
            seed = self.plan.recipe.seed
            self._enumerated = [(_identity(config, seed), params) for config, params in configs]
        return self._enumerated if 0 < len(self._enumerated) <= MAX_ENUMERATED_CONFIGS else None

    def _explore(self) -> bool:
        """Enqueue a config drawn at random: in a small discrete space one not proposed before,
        elsewhere any. False when a small space has none left."""
        configs = self._space_configs()
        if configs is None:
            _, params = self.plan.space.sample(lambda dimension: dimension.random(self._rng))
        else:
            rest = [params for identity, params in configs if identity not in self._proposed]
            if not rest:
                return False
            params = self._rng.choice(rest)
        self.store.enqueue(params, explored=True)
        return True

    def _propose(self) -> Run | None:
        """Ask Optuna for one config (a waiting one first: enqueued or interrupted); None when it
        cannot train (over budget, no network can be built from it, trained already), which is
        told to Optuna at once."""
        writer = self.store.ask()
        seed = self.plan.recipe.seed
        if self.plan.grid_seeds is not None:
            seed = writer.trial.suggest_categorical("seed", self.plan.grid_seeds)
        config, _ = self.plan.space.sample(suggest_through(writer.trial))
        writer.propose(config, seed)
        identity = _identity(config, seed)
        self._last_was_repeat = identity in self._proposed
        self._proposed.add(identity)
        original = self.store.trial(self._trained[identity]) if identity in self._trained else None
        stored = original.costs if original is not None else None
        try:
            model = parse_model_config(config, self.plan.space.source)
            if stored is not None and stored.macs is not None:  # trained already: not built again
                build, costs = None, stored
            else:
                build = MetaBuild(model)
                costs = build.costs(macs=self.plan.budget.counts_macs)
        except ModelConfigError as error:
            unbuildable = {"buildable": 1.0, **dict.fromkeys(self.plan.budget.limits, 0.0)}
            self._infeasible(writer, unbuildable, None, f"invalid config: {error}")
            return None
        measured, measured_by = self._measured.get(_identity(config, 0), (None, None))
        if measured is not None:  # timed before: not timed again
            costs = costs.with_measured(measured)
        constraints = {"buildable": 0.0, **self.plan.budget.constraints(costs)}
        writer.set_costs(costs)
        if not self.plan.budget.feasible(costs):
            reason = f"over budget: {self.plan.budget.describe(costs)}"
            if measured is not None and self.plan.budget.feasible(replace(costs, **_UNMEASURED)):
                reason += f" (measured by trial {measured_by} on {costs.device})"
            self._infeasible(writer, constraints, costs, reason)
            return None
        if measured is not None or not self.plan.budget.measured_limits:
            writer.constrain(constraints)  # else once measured (_store_measured)
        if costs.macs is None:  # it will train: worth the MAC count for the record
            costs = build.costs()
            if measured is not None:
                costs = costs.with_measured(measured)
            writer.set_costs(costs)
        if original is not None:
            writer.duplicate(original)
            self.on_change()
            return None
        earlier = writer.earlier_history()  # a dead driver's trial, run again
        writer.mark_trained()
        self._trained[identity] = writer.number
        self.on_change()
        return self._run(str(writer.number), writer, model, costs, seed, "search", earlier)

    def _infeasible(
        self,
        writer: TrialWriter,
        constraints: dict[str, float],
        costs: Costs | None,
        reason: str,
        seconds: float | None = None,
    ):
        """Store a config that will not train (accuracy 0 and its costs, constraint values > 0)."""
        writer.constrain(constraints)
        values = [
            0.0
            if name == "accuracy"
            else value
            if costs and (value := getattr(costs, name)) is not None
            else self._worst(name)
            for name in self.plan.objectives
        ]
        writer.finish("infeasible", values=values, seconds=seconds, error=reason)
        self.on_change()

    def _worst(self, cost: str) -> float:
        """What an infeasible config is told to Optuna for a cost it has none of (it could not be
        built, or was never measured): the hypervolume's reference point, so that any trained config
        dominates it; for a measured cost without a budget (whose reference point waits for the
        measurements) 10% beyond the largest measured so far."""
        worst = dict(zip(self.plan.objectives[1:], self._worst_costs, strict=False)).get(cost)
        if worst is not None:
            return worst
        measured = [m[cost] for m, _ in self._measured.values() if m.get(cost) is not None]
        return 1.1 * max(measured) if measured else 0.0


def _known(values: dict[str, Any]) -> dict[str, float]:
    """The numbers of ``values`` (what trackers log: no None, no device name)."""
    return {key: value for key, value in values.items() if isinstance(value, int | float)}


_UNMEASURED = dict.fromkeys((*MEASURED, "device"))  # Costs fields of a config not measured


def _identity(config: dict[str, Any] | None, seed: int) -> str:
    return json.dumps([config, seed], sort_keys=True)

"""Trials being written: from ``Study.ask`` to ``Study.tell``, every attribute set through
Optuna's ``Trial`` (the storage format is :mod:`kwsearch.records._trial`'s), except a trial's
constraint values: they are one list in the system attribute optuna-dashboard reads, written
on the storage (Optuna's public ``Trial.set_constraint`` stores them by name, which the
dashboard does not read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from kwsearch.records import _trial as keys
from kwsearch.records._trial import Costs, History, ReplayRecord, Status, TrialRecord

# The system attribute optuna-dashboard reads a trial's constraint values from (a list; Optuna's
# own "old format", which its samplers read too).
_CONSTRAINTS = "constraints"

# How each status is told to Optuna. Infeasible configs are COMPLETE (with constraint values > 0:
# NSGA-II and GP learn only from complete trials). A duplicate is FAIL: its config's result is
# its original's, which the samplers have; told again it would weigh twice in their models and
# stand twice on optuna-dashboard's Pareto front.
_STATES: dict[Status, TrialState] = {
    "complete": TrialState.COMPLETE,
    "infeasible": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "duplicate": TrialState.FAIL,
    "running": TrialState.RUNNING,
    "waiting": TrialState.WAITING,
}


class TrialWriter:
    """A search or baseline trial being written. ``trial`` is Optuna's, for sampling the space
    through it."""

    def __init__(
        self, study: optuna.Study, trial: optuna.Trial, backend: optuna.storages.BaseStorage
    ) -> None:
        self._study = study
        self.trial = trial
        self._backend = backend

    @property
    def number(self) -> int:
        return self.trial.number

    def propose(
        self, config: dict[str, Any], seed: int, *, baseline: str | None = None, confirms: int | None = None
    ) -> None:
        """What the trial trains: ``config`` with ``seed``; a baseline's label, or the search trial a
        confirmation run repeats with another seed."""
        self.trial.set_user_attr(keys.CONFIG, config)
        self.trial.set_user_attr(keys.SEED, seed)
        if baseline is not None:
            self.trial.set_user_attr(keys.BASELINE_LABEL, baseline)
        if confirms is not None:
            self.trial.set_user_attr(keys.CONFIRMS, confirms)

    def set_costs(self, costs: Costs) -> None:
        self.trial.set_user_attr(keys.COSTS, costs.as_dict())

    def constrain(self, constraints: dict[str, float]) -> None:
        """Optuna's constraint values (<= 0 feasible), by name. A trial keeps the values it was
        first given (a resumed trial, those of its first run)."""
        if self.trial.constraints:
            return
        self.trial.set_user_attr(keys.CONSTRAINT_NAMES, list(constraints))
        study_id = self._backend.get_study_id_from_name(self._study.study_name)
        trial_id = self._backend.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self._backend.set_trial_system_attr(
            trial_id, _CONSTRAINTS, [float(value) for value in constraints.values()]
        )

    def mark_trained(self, trained: bool = True) -> None:
        """Handed to a trainer; ``trained`` False takes it back (a worker measured the config over a
        measured budget and did not train it)."""
        self.trial.set_user_attr(keys.TRAINED, trained)

    def earlier_history(self) -> History | None:
        """The epochs stored by an earlier run of this trial that a dead driver left unfinished
        (it is run again under its record); None for a trial that never trained."""
        attrs = self.trial.user_attrs
        return attrs.get(keys.HISTORY, []) if attrs.get(keys.TRAINED) else None

    def record_history(self, history: History) -> None:
        self.trial.set_user_attr(keys.HISTORY, history)

    def record_traceback(self, text: str) -> None:
        self.trial.set_user_attr(keys.TRACEBACK, text)

    def finish(
        self,
        status: Status,
        *,
        values: list[float] | None = None,
        seconds: float | None = None,
        error: str | None = None,
    ) -> None:
        """Store how the trial ended and tell Optuna (``values`` for complete and infeasible)."""
        if seconds is not None:
            self.trial.set_user_attr(keys.SECONDS, seconds)
        if error is not None:
            self.trial.set_user_attr(keys.ERROR, error)
        self.trial.set_user_attr(keys.STATUS, status)
        state = _STATES[status]
        self._study.tell(self.trial, values=values if state == TrialState.COMPLETE else None, state=state)

    def duplicate(self, original: TrialRecord) -> None:
        """A repeat of ``original`` (same config and seed), never trained (see ``_STATES``)."""
        self.trial.set_user_attr(keys.STATUS, "duplicate")
        self.trial.set_user_attr(keys.DUPLICATE_OF, original.number)
        self._study.tell(self.trial, state=_STATES["duplicate"])


class _RunWriter:
    """A run of a companion study being written (a replay, a calibration run): its history as
    epochs finish, then how it ended."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self._study = study
        self._trial = trial

    @property
    def number(self) -> int:
        return self._trial.number

    def record_history(self, history: History) -> None:
        self._trial.set_user_attr(keys.HISTORY, history)

    def record_traceback(self, text: str) -> None:
        self._trial.set_user_attr(keys.TRACEBACK, text)

    def complete(
        self, history: History, *, seconds: float, resumed_from_epoch: int, values: list[float]
    ) -> None:
        last = history[-1]
        for key, value in (
            (keys.HISTORY, history),
            (keys.SECONDS, seconds),
            (keys.VAL_ACCURACY, last["val_accuracy"]),
            (keys.TEST_ACCURACY, last.get("test_accuracy")),
            (keys.RESUMED_FROM_EPOCH, resumed_from_epoch),
            (keys.STATUS, "complete"),
        ):
            self._trial.set_user_attr(key, value)
        self._study.tell(self._trial, values=values)

    def fail(self, error: str, *, seconds: float) -> None:
        self._trial.set_user_attr(keys.SECONDS, seconds)
        self._trial.set_user_attr(keys.ERROR, error)
        self._trial.set_user_attr(keys.STATUS, "failed")
        self._study.tell(self._trial, state=TrialState.FAIL)

    def _describe(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self._trial.set_user_attr(key, value)


class ReplayWriter(_RunWriter):
    """A replay being written: one proxy trial's config trained by the full recipe, one seed."""

    def start(
        self,
        *,
        proxy_trial: int,
        seed: int,
        config: dict[str, Any],
        costs: Costs | None,
        recipe: dict[str, Any],
        export: Path,
    ) -> None:
        self._describe(
            {
                keys.PROXY_TRIAL: proxy_trial,
                keys.SEED: seed,
                keys.CONFIG: config,
                keys.COSTS: costs.as_dict() if costs else {},
                keys.RECIPE: recipe,
                keys.EXPORT: str(export),
            }
        )


class CalibrationWriter(_RunWriter):
    """A calibration run being written: one config trained by the proxy or the full recipe, one
    seed."""

    def start(
        self,
        *,
        kind: str,
        seed: int,
        config: dict[str, Any],
        costs: Costs,
        recipe: dict[str, Any],
        export: Path,
    ) -> None:
        self._describe(
            {
                keys.KIND: kind,
                keys.SEED: seed,
                keys.CONFIG: config,
                keys.COSTS: costs.as_dict(),
                keys.RECIPE: recipe,
                keys.EXPORT: str(export),
            }
        )


def frozen_trial(trial: TrialRecord, objectives: list[str]) -> FrozenTrial:
    """``trial`` as Optuna's FrozenTrial, to add to a study whole."""
    state = _STATES[trial.status]
    values = trial.objectives(objectives)
    if trial.status == "infeasible" and trial.costs is not None:
        # a cost never measured (over a budget counted at birth) is told as 0
        values = {"accuracy": 0.0, **{k: v or 0.0 for k, v in trial.costs.as_dict().items()}}
    attrs = trial.attributes()
    if not state.is_finished():
        del attrs[keys.STATUS]  # Optuna's state says it
    frozen = create_trial(
        state=state,
        values=[float(values[name]) for name in objectives] if state == TrialState.COMPLETE else None,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=attrs,
        system_attrs={_CONSTRAINTS: list(trial.constraints.values())} if trial.constraints else None,
    )
    # create_trial stamps both with now; a record's own times win
    frozen.datetime_start = trial.started or frozen.datetime_start
    if trial.finished is not None or not state.is_finished():
        frozen.datetime_complete = trial.finished
    return frozen


def frozen_replay(replay: ReplayRecord, objectives: list[str]) -> FrozenTrial:
    """``replay`` as Optuna's FrozenTrial, to add to a study whole."""
    state = _STATES[replay.status]
    values = None
    if state == TrialState.COMPLETE:
        costs = replay.costs.as_dict() if replay.costs else {}
        values = [float(replay.test_accuracy)] + [float(costs.get(name) or 0) for name in objectives[1:]]
    attrs = replay.attributes()
    if not state.is_finished():
        del attrs[keys.STATUS]
    return create_trial(state=state, values=values, user_attrs=attrs)

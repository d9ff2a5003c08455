"""One study in one Optuna storage: its record, its search trials, the baselines trained beside
them, the confirmation runs of its front, the replays of its winners and its calibration.

They are Optuna studies in the same storage: ``NAME`` (the search, which the sampler learns
from), ``NAME.references`` (the baselines: configs outside the space, kept apart so that samplers
never learn from them), ``NAME.confirmations`` (front members trained again with more proxy
seeds), ``NAME.replays`` and ``NAME.calibration`` (its plan and runs). Everything goes through
Optuna's public ``Study`` and ``Trial``, except three things Optuna offers no public call for,
done on the storage this module opened itself: putting a dead driver's RUNNING trials back to
WAITING, reopening a RUNNING trial by its number to continue it, and storing a trial's constraint
values where optuna-dashboard reads them (:meth:`TrialWriter.constrain`).

Each study names its objectives (Optuna's metric names: what optuna-dashboard shows them as).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState

from kwsearch.records._access import Storage, StoreError, describe_error, open_storage, storage_name
from kwsearch.records._study import CalibrationPlan, StudyRecord
from kwsearch.records._trial import KIND, PROXY_TRIAL, CalibrationRecord, ReplayRecord, TrialRecord
from kwsearch.records._write import (
    CalibrationWriter,
    ReplayWriter,
    TrialWriter,
    frozen_replay,
    frozen_trial,
)

BASELINES_SUFFIX = ".references"  # the name schema 1 gave the baselines' study
REPLAYS_SUFFIX = ".replays"
CONFIRMATIONS_SUFFIX = ".confirmations"
CALIBRATION_SUFFIX = ".calibration"
_REPLAY_RECIPE = "recipe"
_EXPLORED = "explored"


def _name_objectives(study: optuna.Study, names: list[str]) -> None:
    """Make ``names`` the study's metric names (optuna-dashboard's objective names)."""
    if study.metric_names != names:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def is_companion(name: str) -> bool:
    """True for the names of the baselines', confirmations', replays' and calibration's studies
    (not studies of their own)."""
    return name.endswith((BASELINES_SUFFIX, REPLAYS_SUFFIX, CONFIRMATIONS_SUFFIX, CALIBRATION_SUFFIX))


class StudyStore:
    """A stored study: read its record and trials, write new ones. Open one with :meth:`open`
    (an existing study) or :meth:`create` (a study starting, or continuing)."""

    def __init__(self, url: str, backend: optuna.storages.BaseStorage, search: optuna.Study) -> None:
        self.url = url  # where it is stored, for messages
        self._backend = backend
        self.search = search  # the sampler's study: ask() and enqueue() go through it
        self._companions: dict[str, optuna.Study] = {}

    @classmethod
    def open(
        cls, url: Storage, name: str, *, sampler: optuna.samplers.BaseSampler | None = None
    ) -> StudyStore:
        """The study ``name`` in the storage at ``url``. Never creates anything. Raises StoreError
        for a storage that cannot be opened or holds no study of that name."""
        backend = open_storage(url, create=False)
        url = storage_name(url)
        try:
            names = optuna.study.get_all_study_names(backend)
        except Exception as error:  # a database that is not an Optuna storage
            raise StoreError(f"{url}: cannot read the storage ({describe_error(error)})") from None
        if name not in names:
            known = ", ".join(n for n in names if not is_companion(n)) or "none"
            raise StoreError(f"unknown study {name!r} in {url} (studies there: {known})")
        return cls(url, backend, optuna.load_study(study_name=name, storage=backend, sampler=sampler))

    @classmethod
    def create(
        cls, url: Storage, name: str, *, directions: list[str], sampler: optuna.samplers.BaseSampler
    ) -> StudyStore:
        """The study ``name`` at ``url``, created when it does not exist (its record is then
        None until :meth:`write_record`)."""
        backend = open_storage(url)
        search = optuna.create_study(
            storage=backend, study_name=name, directions=directions, sampler=sampler, load_if_exists=True
        )
        return cls(storage_name(url), backend, search)

    @property
    def name(self) -> str:
        return self.search.study_name

    # -- the study's record -------------------------------------------------------------------

    @property
    def record(self) -> StudyRecord | None:
        """The study's record; None for a study created but not yet started."""
        attrs = self.search.user_attrs
        if not attrs:
            return None
        record = StudyRecord.from_attributes(self.name, attrs)
        if record.baseline_config is None:  # schema 1: the static baseline trial has it
            static = next((t for t in self.baselines() if t.baseline == "static" and t.config), None)
            if static is not None:
                record = replace(record, baseline_config=static.config)
        return record

    def write_record(self, record: StudyRecord) -> None:
        for key, value in record.attributes().items():
            self.search.set_user_attr(key, value)
        _name_objectives(self.search, record.objectives)  # studies of schema 1 and 2 named none

    def set_gpus_per_trial(self, gpus: float) -> None:
        self.write_record(replace(self.record, gpus_per_trial=gpus))

    def set_trial_budget(self, trials: int | None) -> None:
        """The trained trials this run of the search wants (None: no trial budget)."""
        self.write_record(replace(self.record, trial_budget=trials))

    # -- reading trials ------------------------------------------------------------------------

    def trials(self) -> list[TrialRecord]:
        """The search trials, by number."""
        return [TrialRecord.from_frozen(t) for t in self.search.get_trials(deepcopy=False)]

    def trial(self, number: int) -> TrialRecord:
        """The search trial ``number``. Raises IndexError when there is none."""
        return TrialRecord.from_frozen(self.search.get_trials(deepcopy=False)[number])

    def baselines(self) -> list[TrialRecord]:
        study = self._companion(BASELINES_SUFFIX, create=False)
        trials = study.get_trials(deepcopy=False) if study is not None else []
        return [TrialRecord.from_frozen(t, baseline=True) for t in trials]

    def confirmations(self) -> list[TrialRecord]:
        """Confirmation runs: front members trained again with more proxy seeds (``confirms``)."""
        study = self._companion(CONFIRMATIONS_SUFFIX, create=False)
        return [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)] if study else []

    def replays(self) -> list[ReplayRecord]:
        """Every replay (a run killed before it was described is left out)."""
        study = self._companion(REPLAYS_SUFFIX, create=False)
        trials = study.get_trials(deepcopy=False) if study is not None else []
        return [ReplayRecord.from_frozen(t) for t in trials if PROXY_TRIAL in t.user_attrs]

    # -- writing search and baseline trials ------------------------------------------------------

    def ask(self) -> TrialWriter:
        """The next search trial: a waiting one (enqueued, or a dead driver's) or the sampler's."""
        return TrialWriter(self.search, self.search.ask(), self._backend)

    def has_waiting(self) -> bool:
        """Whether :meth:`ask` will return a waiting trial rather than the sampler's."""
        return bool(self.search.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def enqueue(self, params: dict[str, Any], *, explored: bool = False) -> None:
        """Make ``params`` the next trial :meth:`ask` returns (``explored``: drawn at random)."""
        self.search.enqueue_trial(params, user_attrs={_EXPLORED: True} if explored else None)

    def ask_baseline(self) -> TrialWriter:
        study = self._companion(BASELINES_SUFFIX, create=True)
        return TrialWriter(study, study.ask(), self._backend)

    def ask_confirmation(self) -> TrialWriter:
        study = self._companion(CONFIRMATIONS_SUFFIX, create=True)
        return TrialWriter(study, study.ask(), self._backend)

    def reopen_confirmation(self, number: int) -> TrialWriter:
        """The RUNNING confirmation run ``number`` (a dead driver's), to run it again."""
        study = self._companion(CONFIRMATIONS_SUFFIX, create=True)
        return TrialWriter(study, optuna.trial.Trial(study, self._id_of(study, number)), self._backend)

    def requeue_interrupted(self) -> int:
        """Put the search and baseline trials a dead driver left RUNNING back to WAITING, to run
        again under their own numbers; return how many."""
        count = self._requeue(self.search)
        baselines = self._companion(BASELINES_SUFFIX, create=False)
        return count + (self._requeue(baselines) if baselines is not None else 0)

    # -- writing replays ------------------------------------------------------------------------

    def replay_recipe(self) -> dict[str, Any] | None:
        """The recipe the study's replays were trained with (None before the first replay)."""
        study = self._companion(REPLAYS_SUFFIX, create=False)
        return study.user_attrs.get(_REPLAY_RECIPE) if study is not None else None

    def set_replay_recipe(self, recipe: dict[str, Any]) -> None:
        self._companion(REPLAYS_SUFFIX, create=True).set_user_attr(_REPLAY_RECIPE, recipe)

    def ask_replay(self) -> ReplayWriter:
        study = self._companion(REPLAYS_SUFFIX, create=True)
        return ReplayWriter(study, study.ask())

    def reopen_replay(self, number: int) -> ReplayWriter:
        """The RUNNING replay ``number`` (a dead driver's), to continue writing it."""
        study = self._companion(REPLAYS_SUFFIX, create=True)
        return ReplayWriter(study, optuna.trial.Trial(study, self._id_of(study, number)))

    # -- the calibration ------------------------------------------------------------------------

    def calibration_plan(self) -> CalibrationPlan | None:
        """What the study's calibration measures (None before the first calibration)."""
        study = self._companion(CALIBRATION_SUFFIX, create=False)
        return CalibrationPlan.from_attributes(study.user_attrs) if study is not None else None

    def write_calibration_plan(self, plan: CalibrationPlan) -> None:
        study = self._companion(CALIBRATION_SUFFIX, create=True)
        for key, value in plan.attributes().items():
            study.set_user_attr(key, value)

    def calibration_runs(self) -> list[CalibrationRecord]:
        """Every calibration run (a run killed before it was described is left out)."""
        study = self._companion(CALIBRATION_SUFFIX, create=False)
        trials = study.get_trials(deepcopy=False) if study is not None else []
        return [CalibrationRecord.from_frozen(t) for t in trials if KIND in t.user_attrs]

    def ask_calibration(self) -> CalibrationWriter:
        study = self._companion(CALIBRATION_SUFFIX, create=True)
        return CalibrationWriter(study, study.ask())

    def reopen_calibration(self, number: int) -> CalibrationWriter:
        """The RUNNING calibration run ``number`` (a dead driver's), to continue writing it."""
        study = self._companion(CALIBRATION_SUFFIX, create=True)
        return CalibrationWriter(study, optuna.trial.Trial(study, self._id_of(study, number)))

    # -- records written whole (imports, benchmarks, tests) --------------------------------------

    def add(self, trials: list[TrialRecord]) -> None:
        """Store ``trials`` as they are: search trials, and baselines (``baseline`` set)."""
        objectives = self.record.objectives
        search = [frozen_trial(t, objectives) for t in trials if t.baseline is None]
        baselines = [frozen_trial(t, objectives) for t in trials if t.baseline is not None]
        if search:
            self.search.add_trials(search)
        if baselines:
            self._companion(BASELINES_SUFFIX, create=True).add_trials(baselines)

    def add_replays(self, replays: list[ReplayRecord]) -> None:
        """Store ``replays`` as they are."""
        objectives = self.record.objectives
        self._companion(REPLAYS_SUFFIX, create=True).add_trials(
            [frozen_replay(r, objectives) for r in replays]
        )

    # -- helpers ----------------------------------------------------------------------------

    def _companion(self, suffix: str, *, create: bool) -> optuna.Study | None:
        name = self.name + suffix
        if name not in self._companions:
            if create:
                directions = [d.name.lower() for d in self.search.directions]
                study = optuna.create_study(
                    storage=self._backend, study_name=name, directions=directions, load_if_exists=True
                )
                if self.search.metric_names:
                    _name_objectives(study, self.search.metric_names)
            elif name in optuna.study.get_all_study_names(self._backend):
                study = optuna.load_study(study_name=name, storage=self._backend)
            else:
                return None
            self._companions[name] = study
        return self._companions[name]

    def _id_of(self, study: optuna.Study, number: int) -> int:
        study_id = self._backend.get_study_id_from_name(study.study_name)
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, number)

    def _requeue(self, study: optuna.Study) -> int:
        interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in interrupted:
            self._backend.set_trial_state_values(self._id_of(study, trial.number), TrialState.WAITING)
        return len(interrupted)

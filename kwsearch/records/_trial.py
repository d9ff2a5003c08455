"""What one stored trial holds: a search or baseline trial (:class:`TrialRecord`), a replay
(:class:`ReplayRecord`) or a calibration run (:class:`CalibrationRecord`), read from Optuna's
``FrozenTrial``.

The attribute names below are the storage format; nothing outside this package spells them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

Status = Literal["complete", "pruned", "failed", "infeasible", "duplicate", "running", "waiting"]
# the statuses a study's trial count counts (a duplicate repeats a trial; running ones are not done)
FINISHED: tuple[Status, ...] = ("complete", "pruned", "failed", "infeasible")
History = list[dict[str, float]]

# Trial user attributes, as stored since the first release (schema 1).
STATUS = "status"
CONFIG = "config"
COSTS = "costs"
HISTORY = "history"
SEED = "seed"
SECONDS = "seconds"
ERROR = "error"
TRACEBACK = "traceback"
TRAINED = "trained"
DUPLICATE_OF = "duplicate_of"
EXPLORED = "explored"
BASELINE_LABEL = "reference"  # schema 1 called baseline trials "references"
CONFIRMS = "confirms"
PROXY_TRIAL = "proxy_trial"
RECIPE = "recipe"
EXPORT = "export"
VAL_ACCURACY = "val_accuracy"
TEST_ACCURACY = "test_accuracy"
RESUMED_FROM_EPOCH = "resumed_from_epoch"
KIND = "kind"  # a calibration run's recipe: proxy or full
# Since schema 3 a trial's constraint values are stored as one list, in Optuna's system attribute
# "constraints" (what optuna-dashboard reads; Optuna reads it as constraints "0", "1", ...), and
# their names, in the same order, in this user attribute. Schema 1 and 2 stored them by name
# (Optuna's ``Trial.set_constraint``).
CONSTRAINT_NAMES = "constraint_names"


# What a config costs as measured by the worker that trains it, before training (the same
# config costs differently on another device: ``Costs.device`` says where each was measured):
# train_ms_per_image, a training step (forward and backward) at the recipe's batch per image;
# latency_ms, inference of one image (batch 1); latency_batch_ms, inference of the recipe's batch.
MEASURED = ("train_ms_per_image", "latency_ms", "latency_batch_ms")


@dataclass(frozen=True)
class Costs:
    """What a config costs: every quantity a budget or an objective may name. The counts are
    known at birth; the measured ones once a worker timed the config (None until then, and in
    studies that measure nothing)."""

    params: int
    effective_params: int
    macs: int | None  # None when not counted
    train_ms_per_image: float | None = None
    latency_ms: float | None = None
    latency_batch_ms: float | None = None
    device: str | None = None  # where the measured costs were measured

    def as_dict(self) -> dict[str, Any]:
        """The counts, and the measured costs with their device where measured (a study that
        measures nothing stores what it stored before they existed)."""
        counts = {"params": self.params, "effective_params": self.effective_params, "macs": self.macs}
        if self.device is None:
            return counts
        return {**counts, **{name: getattr(self, name) for name in MEASURED}, "device": self.device}

    def with_measured(self, measured: dict[str, Any]) -> Costs:
        """These costs with a worker's measurement (``MEASURED`` and ``device``)."""
        return replace(
            self, **{name: float(measured[name]) for name in MEASURED}, device=str(measured["device"])
        )

    @property
    def measured(self) -> dict[str, Any] | None:
        """The measured costs and their device; None when not measured."""
        if self.device is None:
            return None
        return {**{name: getattr(self, name) for name in MEASURED}, "device": self.device}

    @classmethod
    def from_dict(cls, stored: dict[str, Any] | None) -> Costs | None:
        if not stored:
            return None
        params = int(stored["params"])
        macs = stored.get("macs")
        costs = cls(params, int(stored.get("effective_params", params)), None if macs is None else int(macs))
        return costs.with_measured(stored) if stored.get("device") is not None else costs


def _status(trial: FrozenTrial) -> Status:
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "waiting"
    stored = trial.user_attrs.get(STATUS)
    if stored:
        return stored
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}[
        trial.state
    ]


def _named_constraints(values: dict[str, float], names: list[str] | None) -> dict[str, float]:
    """Optuna's constraints of a trial by their names (schema 3 stores them as a list, which
    Optuna reads back as "0", "1", ...; earlier schemas by name)."""
    if names is None:
        return dict(values)
    return {names[int(key)]: value for key, value in values.items()}


@dataclass(frozen=True)
class TrialRecord:
    """A stored search trial, or a baseline trial trained beside the search (``baseline`` is its
    label). Infeasible configs are stored COMPLETE in Optuna (so that constraint-aware samplers
    learn from them) and a duplicate FAIL (schema 1 and 2: COMPLETE with its original's values):
    ``status`` says what the trial really is, and everything downstream reads that."""

    number: int
    status: Status
    params: dict[str, Any] = field(default_factory=dict)  # the sampled values, by dimension name
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    costs: Costs | None = None
    constraints: dict[str, float] = field(default_factory=dict)  # buildable, one per limit; <= 0 ok
    history: History = field(default_factory=list)  # one entry per finished epoch
    seed: int | None = None
    seconds: float | None = None  # wall time of the trial (all attempts)
    error: str | None = None
    traceback: str | None = None
    trained: bool = False  # handed to a trainer (never for infeasible configs and duplicates)
    duplicate_of: int | None = None
    explored: bool = False  # proposed at random after a duplicate, not by the sampler
    baseline: str | None = None  # a baseline trial's label (None for search trials)
    confirms: int | None = None  # a confirmation run's search trial (its config, another seed)
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None

    @classmethod
    def from_frozen(cls, trial: FrozenTrial, *, baseline: bool = False) -> TrialRecord:
        """``baseline``: the trial is a baseline's (its label is read)."""
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            status=_status(trial),
            params=dict(trial.params),
            distributions=dict(trial.distributions),
            config=attrs.get(CONFIG),
            costs=Costs.from_dict(attrs.get(COSTS)),
            constraints=_named_constraints(trial.constraints, attrs.get(CONSTRAINT_NAMES)),
            history=list(attrs.get(HISTORY) or []),
            seed=attrs.get(SEED),
            seconds=attrs.get(SECONDS),
            error=attrs.get(ERROR),
            traceback=attrs.get(TRACEBACK),
            trained=baseline or bool(attrs.get(TRAINED)),
            duplicate_of=attrs.get(DUPLICATE_OF),
            explored=bool(attrs.get(EXPLORED)),
            baseline=attrs.get(BASELINE_LABEL) if baseline else None,
            confirms=attrs.get(CONFIRMS),
            started=trial.datetime_start,
            finished=trial.datetime_complete,
        )

    def attributes(self) -> dict[str, Any]:
        """The trial user attributes this record is stored as (unset ones left out)."""
        attrs = {
            STATUS: self.status,
            CONFIG: self.config,
            COSTS: self.costs.as_dict() if self.costs else None,
            HISTORY: self.history or None,
            SEED: self.seed,
            SECONDS: self.seconds,
            ERROR: self.error,
            TRACEBACK: self.traceback,
            TRAINED: self.trained or None,
            DUPLICATE_OF: self.duplicate_of,
            EXPLORED: self.explored or None,
            BASELINE_LABEL: self.baseline,
            CONFIRMS: self.confirms,
            CONSTRAINT_NAMES: list(self.constraints) or None,
        }
        return {key: value for key, value in attrs.items() if value is not None}

    @property
    def accuracy(self) -> float | None:
        """The last epoch's validation accuracy (where a pruned trial stopped); None before one."""
        return self.history[-1]["val_accuracy"] if self.history else None

    @property
    def replayable(self) -> bool:
        """Trained with a config that builds and fits the budget (complete, pruned or failed):
        what `kwsearch replay` can train again."""
        return self.status in ("complete", "pruned", "failed") and self.config is not None

    @property
    def train_seconds(self) -> float | None:
        return sum(h.get("train_seconds", 0.0) for h in self.history) if self.history else None

    def objectives(self, names: list[str]) -> dict[str, float] | None:
        """The objective values of a complete trial (None for any other)."""
        if self.status != "complete" or not self.history or self.costs is None:
            return None
        values = {"accuracy": self.accuracy, **self.costs.as_dict()}
        if any(values.get(name) is None for name in names):
            return None  # a measured objective of a trial stored before it was measured
        return {name: values[name] for name in names}


@dataclass(frozen=True)
class ReplayRecord:
    """A stored replay: one proxy trial's config trained by the full recipe with one seed."""

    number: int
    status: Status  # complete, failed, running
    proxy_trial: int
    seed: int
    config: dict[str, Any] | None
    costs: Costs | None
    recipe: dict[str, Any] | None
    history: History = field(default_factory=list)
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    seconds: float = 0.0  # wall time, summed over interrupted attempts
    export: Path | None = None  # the folder with the checkpoint and the run's files
    error: str | None = None
    traceback: str | None = None
    resumed_from_epoch: int | None = None

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> ReplayRecord:
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            status=_status(trial),
            proxy_trial=int(attrs[PROXY_TRIAL]),
            seed=int(attrs[SEED]),
            config=attrs.get(CONFIG),
            **_run_fields(attrs),
        )

    def attributes(self) -> dict[str, Any]:
        """The trial user attributes this record is stored as (unset ones left out)."""
        attrs = {
            STATUS: self.status,
            PROXY_TRIAL: self.proxy_trial,
            SEED: self.seed,
            CONFIG: self.config,
            COSTS: self.costs.as_dict() if self.costs else None,
            RECIPE: self.recipe,
            HISTORY: self.history or None,
            VAL_ACCURACY: self.val_accuracy,
            TEST_ACCURACY: self.test_accuracy,
            SECONDS: self.seconds,
            EXPORT: str(self.export) if self.export else None,
            ERROR: self.error,
            TRACEBACK: self.traceback,
            RESUMED_FROM_EPOCH: self.resumed_from_epoch,
        }
        return {key: value for key, value in attrs.items() if value is not None}


@dataclass(frozen=True)
class CalibrationRecord:
    """A stored calibration run: one config of a calibration trained by the study's proxy recipe
    (``kind`` proxy) or its full recipe (``kind`` full) with one seed."""

    number: int
    status: Status  # complete, failed, running
    kind: Literal["proxy", "full"]
    seed: int
    config: dict[str, Any]  # as sampled from the space (what search trials store)
    costs: Costs | None
    recipe: dict[str, Any] | None
    history: History = field(default_factory=list)
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    seconds: float = 0.0  # wall time, summed over interrupted attempts
    export: Path | None = None  # the run's folder (its checkpoint)
    error: str | None = None
    traceback: str | None = None
    resumed_from_epoch: int | None = None

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> CalibrationRecord:
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            status=_status(trial),
            kind=attrs[KIND],
            seed=int(attrs[SEED]),
            config=attrs[CONFIG],
            **_run_fields(attrs),
        )


def _run_fields(attrs: dict[str, Any]) -> dict[str, Any]:
    """What a stored replay or calibration run holds beside its identity: costs, recipe,
    history, accuracies, time, folder, error and the epoch it resumed from."""
    export = attrs.get(EXPORT)
    return {
        "costs": Costs.from_dict(attrs.get(COSTS)),
        "recipe": attrs.get(RECIPE),
        "history": list(attrs.get(HISTORY) or []),
        "val_accuracy": attrs.get(VAL_ACCURACY),
        "test_accuracy": attrs.get(TEST_ACCURACY),
        "seconds": float(attrs.get(SECONDS) or 0.0),
        "export": Path(export) if export else None,
        "error": attrs.get(ERROR),
        "traceback": attrs.get(TRACEBACK),
        "resumed_from_epoch": attrs.get(RESUMED_FROM_EPOCH),
    }

"""What a stored study holds besides its trials: the settings it runs by and what was fixed when
it started (:class:`StudyRecord`), and what its calibration measures (:class:`CalibrationPlan`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kwsearch.records._trial import Costs

# The version of the storage format this release writes. Schema 1 (the first release) stored no
# version and no baseline config; schema 2 stored constraint values by name and duplicates
# COMPLETE; schema 3 stores constraint values as the list optuna-dashboard reads (their names
# beside them), duplicates FAIL, and the objectives as the study's metric names. Records of every
# earlier schema are read.
SCHEMA = 3

# Study user attributes.
_SCHEMA = "schema"
_SETTINGS = "settings"
_SOURCE = "source"
_OBJECTIVES = "objectives"
_BUDGET = "budget"
_BASELINE_COSTS = "baseline"
_BASELINE_CONFIG = "baseline_config"
_REFERENCE_POINT = "reference_point"
_STARTED = "started"
_SOFTWARE = "software"
_FINGERPRINT = "fingerprint"
_GPUS_PER_TRIAL = "gpus_per_trial"
_TRIAL_BUDGET = "trial_budget"


@dataclass(frozen=True)
class StudyRecord:
    """A study's settings and what was fixed when it started.

    ``settings`` is the study file as validated (JSON), ``fingerprint`` the part of it that must
    not change while the study continues; ``budget`` the absolute limits, resolved against the
    static baseline (``baseline_config`` with ``baseline_costs``); ``reference_point`` the
    hypervolume's, in objective space with accuracy negated (None for a measured cost without a
    budget: see :func:`kwsearch.records.resolved_reference_point`); ``trial_budget`` the trained trials
    the last search run wanted (``--trials`` raises the study file's ``budget.trials``)."""

    name: str
    settings: dict[str, Any]
    objectives: list[str]
    budget: dict[str, float]
    baseline_config: dict[str, Any] | None
    baseline_costs: Costs | None
    reference_point: list[float | None] | None
    fingerprint: dict[str, Any] | None = None
    source: str | None = None
    started: float | None = None
    software: dict[str, str] | None = None
    gpus_per_trial: float = 0.0
    trial_budget: int | None = None
    schema: int = SCHEMA

    def attributes(self) -> dict[str, Any]:
        """The study user attributes this record is stored as."""
        return {
            _SCHEMA: self.schema,
            _SETTINGS: self.settings,
            _SOURCE: self.source,
            _OBJECTIVES: self.objectives,
            _BUDGET: self.budget,
            _BASELINE_CONFIG: self.baseline_config,
            _BASELINE_COSTS: self.baseline_costs.as_dict() if self.baseline_costs else None,
            _REFERENCE_POINT: self.reference_point,
            _STARTED: self.started,
            _SOFTWARE: self.software,
            _FINGERPRINT: self.fingerprint,
            _GPUS_PER_TRIAL: self.gpus_per_trial,
            _TRIAL_BUDGET: self.trial_budget,
        }

    @classmethod
    def from_attributes(cls, name: str, attrs: dict[str, Any]) -> StudyRecord:
        return cls(
            name=name,
            settings=attrs.get(_SETTINGS) or {},
            objectives=list(attrs.get(_OBJECTIVES) or ["accuracy", "params"]),
            budget=dict(attrs.get(_BUDGET) or {}),
            baseline_config=attrs.get(_BASELINE_CONFIG),
            baseline_costs=Costs.from_dict(attrs.get(_BASELINE_COSTS)),
            reference_point=attrs.get(_REFERENCE_POINT),
            fingerprint=attrs.get(_FINGERPRINT),
            source=attrs.get(_SOURCE),
            started=attrs.get(_STARTED),
            software=attrs.get(_SOFTWARE),
            gpus_per_trial=float(attrs.get(_GPUS_PER_TRIAL) or 0.0),
            trial_budget=attrs.get(_TRIAL_BUDGET),
            schema=int(attrs.get(_SCHEMA, 1)),
        )

    @property
    def sampler(self) -> dict[str, Any]:
        return self.settings.get("sampler") or {}

    @property
    def proxy_val_images(self) -> int | None:
        """The proxy's validation images when the settings fix their number (an integer
        ``val_size``): what an accuracy's interval rests on for trials stored before their
        history carried ``val_images``."""
        size = (self.settings.get("proxy") or {}).get("val_size")
        return size if isinstance(size, int) else None


# User attributes of a study's calibration (the Optuna study NAME.calibration).
_CONFIGS = "configs"
_SEEDS = "seeds"
_FULL_SEEDS = "full_seeds"
_PROXY_RECIPE = "proxy_recipe"
_FULL_RECIPE = "full_recipe"
_TARGET = "target"
_SAMPLE_SEED = "sample_seed"
_CREATED = "created"


@dataclass(frozen=True)
class CalibrationConfig:
    """One config a calibration measures: ``config`` as sampled from the space (what search trials
    and replays store), ``model`` the model config it parses to (what baselines store), its
    costs, and the search trial it is (a member of the front) or None (sampled)."""

    config: dict[str, Any]
    model: dict[str, Any]
    costs: Costs
    trial: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "model": self.model,
            "costs": self.costs.as_dict(),
            "trial": self.trial,
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> CalibrationConfig:
        return cls(stored["config"], stored["model"], Costs.from_dict(stored["costs"]), stored.get("trial"))


@dataclass(frozen=True)
class CalibrationPlan:
    """What a study's calibration measures, fixed by its first run so that a resumed calibration
    measures the same: the configs, the proxy seeds and the full seeds, and the two recipes (as
    dumped, with the base seed; each run sets its own). ``target`` is the Spearman a cheaper
    proxy must reach (the last one asked for)."""

    configs: list[CalibrationConfig]
    seeds: list[int]
    full_seeds: list[int]
    proxy_recipe: dict[str, Any]
    full_recipe: dict[str, Any]
    target: float
    sample_seed: int
    created: float | None = None

    def attributes(self) -> dict[str, Any]:
        """The study user attributes this plan is stored as."""
        return {
            _CONFIGS: [c.as_dict() for c in self.configs],
            _SEEDS: self.seeds,
            _FULL_SEEDS: self.full_seeds,
            _PROXY_RECIPE: self.proxy_recipe,
            _FULL_RECIPE: self.full_recipe,
            _TARGET: self.target,
            _SAMPLE_SEED: self.sample_seed,
            _CREATED: self.created,
        }

    @classmethod
    def from_attributes(cls, attrs: dict[str, Any]) -> CalibrationPlan | None:
        """The plan stored as ``attrs``; None when there is none."""
        if _CONFIGS not in attrs:
            return None
        return cls(
            configs=[CalibrationConfig.from_dict(c) for c in attrs[_CONFIGS]],
            seeds=list(attrs[_SEEDS]),
            full_seeds=list(attrs[_FULL_SEEDS]),
            proxy_recipe=attrs[_PROXY_RECIPE],
            full_recipe=attrs[_FULL_RECIPE],
            target=float(attrs[_TARGET]),
            sample_seed=int(attrs[_SAMPLE_SEED]),
            created=attrs.get(_CREATED),
        )

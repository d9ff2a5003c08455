"""Study files: what to search (the space), on what data, with which proxy recipe, objectives,
budgets, sampler, early stopping, resources and storage, and how winners are replayed.

Every study file is validated completely before anything runs; :class:`StudyError` names the
file and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from optuna.distributions import CategoricalDistribution
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kwsearch.data import DataShape, DataSourceError, dataset_names, dataset_shape
from kwsearch.models import ModelConfig, ModelConfigError, backbone_names, parse_model_config
from kwsearch.models.presets import kw_preset
from kwsearch.nn import family_names
from kwsearch.records import MEASURED, is_companion
from kwsearch.search.samplers import SamplerError, SamplerSettings, make_sampler
from kwsearch.search.space import Dimension, Space, SpaceError
from kwsearch.search.trackers import LogSettings
from kwsearch.train import Recipe
from kwsearch.validation import describe
from kwsearch.yaml_file import YamlFileError, read_yaml

# accuracy maximised, the rest minimised: the counts (known when a config is born) and the costs
# a worker measures on its device before training (kwsearch.records.MEASURED)
COUNTED = ("params", "effective_params", "macs")
OBJECTIVES = ("accuracy", *COUNTED, *MEASURED)
Objective = Literal[OBJECTIVES]  # a tuple subscript: each name one literal
SAMPLERS = ("tpe", "nsga2", "gp", "random", "grid")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*x\s*$", re.IGNORECASE)


class StudyError(ValueError):
    """A study that cannot run; the message names the file and the field."""


_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study, or None. One rule for a study's name wherever it comes
    from (``--name``, the ``name:`` field, the file's name): it names the study's folder under
    runs/, so that every file the study writes stays inside it, and its studies in the storage."""
    if not _NAME.fullmatch(name):
        return (
            "1 to 128 letters, digits, '_', '.', '-', not starting with '.' (it names a folder under runs/)"
        )
    if is_companion(name):
        return (
            "ends like the studies kept beside a study (.references, .replays, .confirmations, .calibration)"
        )
    return None


def _strict() -> ConfigDict:
    return ConfigDict(extra="forbid", frozen=True)


class Limit(BaseModel):
    """A parameter or MAC budget: absolute (``2.5e6``) or relative to the static baseline (``0.5x``);
    a measured cost's budget, in milliseconds (absolute only)."""

    model_config = _strict()
    value: float = Field(gt=0)
    relative: bool = False

    def resolve(self, baseline: int) -> float:
        return self.value * baseline if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}x the static baseline" if self.relative else f"{self.value:,.0f}"


def _parse_limit(value: Any) -> Any:
    if isinstance(value, str):
        match = _RELATIVE.match(value)
        if match:
            return {"value": float(match.group(1)), "relative": True}
        try:
            return {"value": float(value)}
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a number (2.5e6) nor a factor of the baseline (0.5x)"
            ) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"value": value}
    return value


class Budget(BaseModel):
    model_config = _strict()
    params: Limit | None = None
    effective_params: Limit | None = None
    macs: Limit | None = None
    # measured by the worker before training, in milliseconds on its device (absolute only: the
    # static baseline's own are measured by a worker too, after the budget is needed)
    train_ms_per_image: Limit | None = None
    latency_ms: Limit | None = None
    latency_batch_ms: Limit | None = None
    trials: int | None = Field(default=None, ge=1)  # trained trials (infeasible configs cost nothing)
    wall_clock: float | None = Field(default=None, gt=0)  # seconds; no trial starts after it
    gpu_hours: float | None = Field(default=None, gt=0)

    @field_validator("params", "effective_params", "macs", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Any:
        return _parse_limit(value)

    @field_validator(*MEASURED, mode="before")
    @classmethod
    def _measured_limit(cls, value: Any) -> Any:
        limit = _parse_limit(value)
        if isinstance(limit, dict) and limit.get("relative"):
            raise ValueError(
                f"{value!r}: a measured cost's budget is in milliseconds (a number); a factor of the static "
                "baseline cannot be judged before a worker measures the baseline"
            )
        return limit

    @field_validator("wall_clock", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if not match:
                raise ValueError(f"{value!r} is not a duration (seconds, or e.g. 90s, 30m, 2h)")
            return float(match.group(1)) * _SECONDS[match.group(2)]
        return value

    def limits(self) -> dict[str, Limit]:
        """The constrained quantities (counted and measured) and their limits."""
        return {k: v for k in (*COUNTED, *MEASURED) if (v := getattr(self, k)) is not None}


class EarlyStopping(BaseModel):
    """Pareto-aware successive halving: at epochs ``min_epochs * reduction_factor**k`` a trial
    continues only if it ranks in the best ``1/reduction_factor`` of the trials that reached
    that epoch, ranked by non-dominated sorting of (accuracy so far, parameters)."""

    model_config = _strict()
    enabled: bool = True
    min_epochs: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=3.0, gt=1)


class Resources(BaseModel):
    model_config = _strict()
    cpu: float = Field(default=1.0, gt=0)
    # GPUs per trial: fractions let several proxy trials share one GPU; "auto" takes a quarter
    # GPU where the Ray cluster has GPUs and none elsewhere
    gpu: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"
    max_concurrent: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1)  # torch threads per trial (default: its CPUs)

    @property
    def torch_threads(self) -> int:
        return self.threads or max(1, int(self.cpu))


class Baseline(BaseModel):
    """A model trained beside the search to read the front against: the static baseline, a
    KernelWarehouse preset, or any model (overrides of the space's fixed values)."""

    model_config = _strict()
    label: str
    model: dict[str, Any] = Field(default_factory=dict)


class DataSettings(BaseModel):
    model_config = _strict()
    name: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        # checked here: in the workers an unknown name would fail every trial
        if name.strip().lower() not in dataset_names():
            raise ValueError(f"{name!r} is not one of {', '.join(dataset_names())}")
        return name

    @model_validator(mode="after")
    def _has_root(self) -> DataSettings:
        name = self.name.strip().lower()
        if name == "folder" and self.root is None:
            raise ValueError("root: the folder data set needs a root (a folder of class folders of images)")
        if name == "prepared" and self.root is None:
            raise ValueError("root: the prepared data set needs a root (a folder `kwsearch prepare` wrote)")
        return self


class ConfirmSettings(BaseModel):
    """After the budget is spent, train ``top`` members of the front (spread along it) again with
    ``seeds`` more proxy seeds each, and read the front on their mean accuracy. These runs are
    counted apart from the budget."""

    model_config = _strict()
    top: int = Field(ge=1)
    seeds: int = Field(default=2, ge=1)


class ReplaySettings(BaseModel):
    model_config = _strict()
    recipe: Recipe = Field(default_factory=lambda: Recipe(evaluate_test=True))
    seeds: list[int] = Field(default_factory=lambda: [0])


class StudySettings(BaseModel):
    model_config = _strict()
    name: str | None = None
    space: str | dict[str, Any]
    data: DataSettings
    proxy: Recipe = Field(default_factory=Recipe)
    objectives: list[Objective] = Field(default_factory=lambda: ["accuracy", "params"])
    budget: Budget = Field(default_factory=Budget)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    resources: Resources = Field(default_factory=Resources)
    storage: str | None = None
    retries: int = Field(default=0, ge=0)
    # `references` is the name of the first release (and of studies stored by it)
    baselines: list[Baseline] = Field(
        default_factory=lambda: [Baseline(label="static")],
        validation_alias=AliasChoices("baselines", "references"),
    )
    confirm: ConfirmSettings | None = None
    # time each config on its worker before training (kwsearch.train.timing) even when no
    # objective or budget names a measured cost (they are measured then anyway)
    measure: bool = False
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    log: LogSettings = Field(default_factory=LogSettings)  # experiment trackers the runs stream to

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        problem = None if name is None else name_problem(name)
        if problem:
            raise ValueError(f"{name!r}: {problem}")
        return name

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("baselines", mode="before")
    @classmethod
    def _baselines(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"label": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, names: list[str]) -> list[str]:
        if not names or names[0] != "accuracy" or len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(
                f"start with accuracy, then one or more of {', '.join(OBJECTIVES[1:])} (no repeats)"
            )
        return names

    @model_validator(mode="after")
    def _consistent(self) -> StudySettings:
        if self.proxy.evaluate_test:
            raise ValueError("proxy.evaluate_test: the proxy never looks at the test set (replay does)")
        return self


class Study:
    """A validated study: its settings, its space, and the file it came from."""

    def __init__(self, settings: StudySettings, space: Space, source: Path | None) -> None:
        self.settings = settings
        self.space = space
        self.source = source
        self.name = settings.name or (source.stem if source else "study")
        self.warnings: list[str] = []  # what runs but not as a researcher would expect

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "study"

    @property
    def measures(self) -> bool:
        """Whether workers time each config before training: asked for, or a measured cost is an
        objective or has a budget."""
        s = self.settings
        return s.measure or any(name in MEASURED for name in [*s.objectives, *s.budget.limits()])

    def baseline_configs(self) -> dict[str, dict[str, Any]]:
        """Each baseline's model config: the space's lowest values, the preset's conv spec (or
        ``static``), and the baseline's own overrides."""
        base, _ = self.space.sample(Dimension.lowest)
        configs = {}
        for baseline in self.settings.baselines:
            config = dict(base)
            if baseline.label == "static":
                config["conv"] = {"family": "static"}
            elif baseline.label.startswith("kw_"):
                config["conv"] = kw_preset(config["backbone"], baseline.label)
            config.update(baseline.model)
            configs[baseline.label] = config
        return configs


def parse_study(data: Any, source: Path | None = None, name: str | None = None) -> Study:
    """Validate a study mapping (and its space). Raises StudyError naming ``source`` and the field."""
    where = str(source) if source else "study"
    if not isinstance(data, dict):
        raise StudyError(f"{where}: a study is a mapping, got {type(data).__name__}")
    try:
        settings = StudySettings.model_validate(data)
    except ValidationError as error:
        raise StudyError(f"{where}: {describe(error, empty='<study>')}") from None
    if name is not None:
        problem = name_problem(name)
        if problem:
            raise StudyError(f"--name {name!r}: {problem}")
        settings = settings.model_copy(update={"name": name})
    elif settings.name is None and source is not None and name_problem(source.stem):
        raise StudyError(
            f"{where}: the study is named after its file, {source.stem!r}: {name_problem(source.stem)}; "
            "give it a `name:` or --name"
        )
    for tracker, package in settings.log.missing().items():
        raise StudyError(
            f"{where}: log: {tracker}: the {package} package is not installed (pip install 'kwsearch[track]')"
        )
    space = _load_space(settings.space, source)
    study = Study(settings, space, source)
    if settings.sampler.name == "grid":
        try:
            space.grid()
        except SpaceError as error:
            raise StudyError(f"{where}: sampler: grid: {error}") from None
    _check_space_and_baselines(study)
    try:
        make_sampler(settings.sampler)
    except SamplerError as error:
        raise StudyError(f"{where}: {error}") from None
    return study


def load_study(path: str | Path, name: str | None = None) -> Study:
    """Read and validate a study file. Raises StudyError naming the file and the field."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except YamlFileError as error:
        raise StudyError(str(error)) from None
    return parse_study(data, path, name)


def _load_space(space: str | dict[str, Any], source: Path | None) -> Space:
    if isinstance(space, dict):
        where = f"{source}: space" if source else "space"
        tree = space
    else:
        path = Path(space)
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        where = str(path)
        try:
            tree = read_yaml(path)
        except YamlFileError as error:
            raise StudyError(f"{source}: space: {error}") from None
    try:
        return Space(tree, where, family_names())
    except SpaceError as error:
        raise StudyError(str(error)) from None


def cover(space: Space) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Configs that together take every choice of the space at least once, under every conv
    family (other values lowest), so that a misspelt option on any branch is found up front; each
    with the choices it was made for (dimension name -> label)."""
    dimensions = space.dimensions
    families = dimensions.get("conv.family")
    choices = [d for d in dimensions.values() if isinstance(d.distribution, CategoricalDistribution)]
    configs = {}
    for family in families.distribution.choices if families is not None else [None]:
        for dimension in choices or [None]:
            for label in dimension.distribution.choices if dimension is not None else [None]:
                fixed = {} if family is None else {"conv.family": family}
                if dimension is not None:
                    fixed[dimension.name] = label

                def suggest(d: Dimension, fixed=fixed) -> Any:
                    return fixed.get(d.name, d.lowest())

                config, _ = space.sample(suggest)
                configs.setdefault(json.dumps(config, sort_keys=True, default=str), (config, fixed))
    return list(configs.values())


def _check_space_and_baselines(study: Study) -> None:
    """Every choice of the space (under every family) and every baseline must be valid model
    configs, and the data options valid. (Numbers are checked at their lowest; whether the
    networks fit the data and build is checked before a study runs:
    :func:`kwsearch.search.preflight.check_networks`.)"""
    space = study.space
    try:
        config, _ = space.sample(Dimension.lowest)
        covering = cover(space)
    except SpaceError as error:
        raise StudyError(str(error)) from None
    if config.get("backbone") not in backbone_names():
        raise StudyError(
            f"{space.source}: backbone: {config.get('backbone')!r} is not one of "
            + ", ".join(backbone_names())
        )
    try:
        models = [(_temperature_field(space, c), parse_model_config(c, space.source)) for c, _ in covering]
    except ModelConfigError as error:
        raise StudyError(str(error)) from None
    try:
        baselines = study.baseline_configs()
    except KeyError as error:
        raise StudyError(f"{study.where}: baselines: {error.args[0]}") from None
    data_shape(study)  # options the data set does not take
    for label, baseline in baselines.items():
        where = f"{study.where}: baselines.{label}"
        try:
            models.append((where, parse_model_config(baseline, where)))
        except ModelConfigError as error:
            raise StudyError(str(error)) from None
    study.warnings = _unfinished_schedules(models, study.settings.proxy.epochs)


def data_shape(study: Study) -> DataShape:
    """The images the proxy trains on. Raises StudyError for options the data set does not take."""
    data = study.settings.data
    try:
        return dataset_shape(data.name, study.settings.proxy.resolution, data.root, **data.options)
    except ValueError as error:
        raise StudyError(f"{study.where}: data.options: {error}") from None
    except DataSourceError as error:  # a prepared cache that is not there (or damaged)
        raise StudyError(f"{study.where}: data.root: {error}") from None


def _temperature_field(space: Space, config: dict[str, Any]) -> str:
    """Where a config's temperature schedule is written in the space: under the family's own
    options when the family is searched (``conv.kw.temperature``), else ``conv.temperature``."""
    family = (config.get("conv") or {}).get("family")
    conv = space.tree.get("conv")
    own = isinstance(conv, dict) and isinstance(conv.get(family), dict) and "temperature" in conv[family]
    return f"{space.source}: conv.{family + '.' if own else ''}temperature"


def _unfinished_schedules(models: list[tuple[str, ModelConfig]], epochs: int) -> list[str]:
    """A warning per absolute temperature schedule that outlasts the proxy: such a proxy trains
    its attention at a temperature its replay leaves behind early, unlike a ``fraction``."""
    warnings: dict[str, None] = {}
    for where, model in models:
        schedule = model.temperature_schedule()
        if schedule is not None and not schedule.finishes_within(epochs):
            warnings[
                f"{where}: {schedule.epochs:g} epochs of temperature annealing outlast the proxy's {epochs} "
                f"(proxy.epochs): the proxy ends at temperature {schedule.final_value(epochs):.3g}, not "
                f"{schedule.end:g}; a `fraction` anneals a proxy and its replay alike"
            ] = None
    return list(warnings)

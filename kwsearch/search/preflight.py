"""Everything that can refuse a study before anything is written or started: the networks it
trains, its budget, its storage and the study stored there under its name. Nothing here creates
a file, a lock, a storage or a Ray session, so a refused study leaves nothing behind; what needs
the Ray cluster to judge (the resources a trial holds) is checked after the driver's lock is
taken and before the study is created (:mod:`kwsearch.search.runner`)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from optuna.distributions import CategoricalDistribution

from kwsearch.data import DataShape
from kwsearch.models import ModelConfig, ModelConfigError, build_model, check_input, parse_model_config
from kwsearch.records import Costs, StoreError, StudyRecord, StudyStore, check_storage, default_storage
from kwsearch.search.budget import ResolvedBudget, costs_of
from kwsearch.search.space import Dimension, Space
from kwsearch.search.study import Study, StudyError, cover, data_shape

# How many configs of the space (every choice, numbers at their lowest) are accounted before the
# study starts to tell whether any can meet the budget.
FEASIBILITY_PROBES = 64
# Configs drawn for a covered choice whose own config makes no usable network, before the choice
# is declared unable to make any (it may need other values: a larger warehouse, a range's top).
REDRAWS = 8


@dataclass(frozen=True)
class SearchSetup:
    """A study that passed every check that needs no Ray cluster, and where it is to be stored."""

    study: Study
    run_dir: Path  # runs/NAME: the driver's lock, Ray's scratch, the default storage
    storage: str
    budget: ResolvedBudget
    baseline: Costs  # the static baseline's costs, which relative budgets are resolved against


def prepare_search(study: Study, *, storage: str | None = None, runs_dir: Path = Path("runs")) -> SearchSetup:
    """Check ``study`` completely without writing anything: its space makes networks that take
    the proxy's images (a choice that makes none adds a warning to ``study.warnings``), its budget
    can be met, its storage can be opened, and a study stored under its name there is this one.
    Raises StudyError naming the file and field (or option)."""
    study.warnings += check_networks(study)
    budget, baseline = resolve_budget(study)
    check_feasible(study, budget)
    run_dir = runs_dir / study.name
    url = storage or study.settings.storage or default_storage(run_dir)
    if storage or study.settings.storage:  # the default's folder is created with the study
        try:
            check_storage(url)
        except StoreError as error:
            raise StudyError(f"{'--storage' if storage else study.where + ': storage'}: {error}") from None
    try:
        stored = StudyStore.open(url, study.name).record
    except StoreError:
        stored = None  # no study of this name stored yet
    if stored is not None:
        check_same_study(study, stored, url)
    return SearchSetup(study, run_dir, url, budget, baseline)


def check_networks(study: Study) -> list[str]:
    """The space must make a network that fits the data's classes and channels and takes the
    images the proxy trains on, and every baseline must be one: else every trial (or the
    baseline's) fails. Each choice of the space, under every conv family, is built with the
    other values at their lowest, then, when that makes no usable network, with other values
    drawn at random. Raises StudyError (with the first reason) when no choice makes one; returns
    a warning per choice that makes none (the search stores such configs infeasible, or they
    fail). Built on the meta device: no weights, no arithmetic."""
    shape = data_shape(study)
    space = study.space
    covering, failures = cover(space), []
    for config, fixed in covering:
        model = parse_model_config(config, space.source)
        problem = _unusable(study, shape, str(space.source), model, _redrawn(space, fixed))
        if problem is not None:
            failures.append((fixed, problem))
    if failures and len(failures) == len(covering):
        raise StudyError(failures[0][1])
    for label, config in study.baseline_configs().items():
        where = f"{study.where}: baselines.{label}"
        problem = _unusable(study, shape, where, parse_model_config(config, where), iter(()))
        if problem is not None:
            raise StudyError(problem)
    return [
        f"{', '.join(f'{k}={v}' for k, v in fixed.items())}: no config with it makes a network that trains; "
        f"{problem}"
        for fixed, problem in failures
    ]


def _redrawn(space: Space, fixed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Distinct configs with the choices ``fixed`` and every other value drawn at random (seeded)."""
    rng = random.Random(0)

    def suggest(dimension: Dimension) -> Any:
        return fixed[dimension.name] if dimension.name in fixed else dimension.random(rng)

    seen = set()
    for _ in range(REDRAWS):
        config = space.sample(suggest)[0]
        if json.dumps(config, sort_keys=True, default=str) not in seen:
            seen.add(json.dumps(config, sort_keys=True, default=str))
            yield config


class _DoesNotPass(Exception):
    """The proxy's images do not pass through a network (the message says why)."""


def _unusable(
    study: Study, shape: DataShape, where: str, config: ModelConfig, redrawn: Iterator[dict[str, Any]]
) -> str | None:
    """None when ``config`` (described at ``where``) has the data's classes and channels, builds
    and takes images of ``shape``, or one of the ``redrawn`` configs does; else why ``config``
    does not, naming the file and field."""
    data = study.settings.data.name
    if shape.num_classes is not None and config.num_classes != shape.num_classes:
        return f"{where}: num_classes: {config.num_classes}, but {data} has {shape.num_classes} classes"
    if shape.in_chans is not None and config.in_chans != shape.in_chans:
        return f"{where}: in_chans: {config.in_chans}, but {data} images have {shape.in_chans} channels"
    try:
        _build_and_pass(config, where, shape)
        return None
    except (ModelConfigError, _DoesNotPass) as error:
        first = error
    for other in redrawn:
        try:
            _build_and_pass(parse_model_config(other, where), where, shape)
            return None
        except (ModelConfigError, _DoesNotPass):
            continue
    if not isinstance(first, _DoesNotPass):
        return str(first)
    resolution = study.settings.proxy.resolution
    if resolution is not None:
        return f"{study.where}: proxy.resolution: {list(resolution)}: {first} (a network of {where})"
    size = "x".join(map(str, shape.image_size))
    return f"{where}: the network does not take {data}'s {size} images: {first}"


def _build_and_pass(config: ModelConfig, where: str, shape: DataShape) -> None:
    """Build ``config`` on the meta device (ModelConfigError naming ``where``) and pass one image
    of ``shape`` through it (_DoesNotPass)."""
    with torch.device("meta"):
        model = build_model(config, where)
    try:
        check_input(model, (config.in_chans, *shape.image_size))
    except ModelConfigError as error:
        raise _DoesNotPass(str(error)) from None


def static_baseline_config(study: Study) -> dict[str, Any]:
    config, _ = study.space.sample(Dimension.lowest)
    return {**config, "conv": {"family": "static"}}


def resolve_budget(study: Study) -> tuple[ResolvedBudget, Costs]:
    """The budget's absolute limits and the static baseline's costs they are relative to."""
    try:
        baseline = costs_of(parse_model_config(static_baseline_config(study)))
    except ModelConfigError as error:
        raise StudyError(f"{study.space.source}: the static baseline: {error}") from None
    limits = {
        name: limit.resolve(getattr(baseline, name)) for name, limit in study.settings.budget.limits().items()
    }
    return ResolvedBudget(limits), baseline


def check_feasible(study: Study, budget: ResolvedBudget) -> None:
    """Raise StudyError when no probed config of the space meets the budget."""
    if not budget.limits:
        return

    def every_choice_lowest_number(dimension: Dimension) -> list[Any]:
        d = dimension.distribution
        return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low]

    smallest: Costs | None = None
    invalid: ModelConfigError | None = None
    for config, _ in study.space.enumerate(every_choice_lowest_number, limit=FEASIBILITY_PROBES):
        try:
            costs = costs_of(parse_model_config(config, study.space.source), macs=budget.counts_macs)
        except ModelConfigError as error:
            invalid = invalid or error
            continue
        if budget.feasible(costs):
            return
        if smallest is None or costs.params < smallest.params:
            smallest = costs
    found = (
        f"the smallest config found: {budget.describe(smallest)}"
        if smallest
        else f"no probed config builds a network; the first: {invalid}"
    )
    raise StudyError(f"{study.where}: budget: no config of the space can meet it ({found})")


def fingerprint(study: Study) -> dict[str, Any]:
    """What must not change between runs of one stored study."""
    s = study.settings
    return json.loads(
        json.dumps(
            {
                "space": study.space.tree,
                "data": s.data.model_dump(),
                "proxy": s.proxy.model_dump(mode="json"),
                "objectives": s.objectives,
                "limits": {k: v.model_dump() for k, v in s.budget.limits().items()},
                "sampler": s.sampler.name,
            },
            default=str,
        )
    )


def check_same_study(study: Study, stored: StudyRecord, storage: str) -> None:
    """Raise StudyError when the study stored under ``study``'s name differs from it."""
    wanted = fingerprint(study)
    if stored.fingerprint == wanted:
        return
    changed = sorted(k for k in wanted if wanted[k] != (stored.fingerprint or {}).get(k))
    raise StudyError(
        f"{study.where}: {', '.join(changed)}: differ from study {study.name!r} stored in {storage}; "
        "give the search another --name to start a new study"
    )

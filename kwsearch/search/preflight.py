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
    """Check ``study`` completely without writing anything: its networks build and take the
    proxy's images, its budget can be met, its storage can be opened, and a study stored under
    its name there is this one. Raises StudyError naming the file and field (or option)."""
    check_networks(study)
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


def check_networks(study: Study) -> None:
    """Every choice of the space (under every conv family) and every baseline must build a
    network that takes the images the proxy trains on: else every trial of it fails. A choice
    whose config (other values lowest) does not is tried with other values drawn at random
    before it is refused. Built on the meta device: no weights, no arithmetic. Raises StudyError."""
    shape = data_shape(study)
    space = study.space
    for config, fixed in cover(space):
        model = parse_model_config(config, space.source)
        _check_network(study, shape, str(space.source), model, _redrawn(space, fixed))
    for label, config in study.baseline_configs().items():
        where = f"{study.where}: baselines.{label}"
        _check_network(study, shape, where, parse_model_config(config, where), iter(()))


def _redrawn(space: Space, fixed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Configs with the choices ``fixed`` and every other value drawn at random (seeded)."""
    rng = random.Random(0)

    def suggest(dimension: Dimension) -> Any:
        return fixed[dimension.name] if dimension.name in fixed else dimension.random(rng)

    for _ in range(REDRAWS):
        yield space.sample(suggest)[0]


class _DoesNotPass(Exception):
    """The proxy's images do not pass through a network (the message says why)."""


def _check_network(
    study: Study, shape: DataShape, where: str, config: ModelConfig, redrawn: Iterator[dict[str, Any]]
) -> None:
    """``config`` (described at ``where``) builds and takes images of ``shape``, or one of the
    ``redrawn`` configs does; else StudyError with the first config's reason."""
    try:
        _build_and_pass(config, where, shape)
        return
    except (ModelConfigError, _DoesNotPass) as error:
        first = error
    for other in redrawn:
        try:
            _build_and_pass(parse_model_config(other, where), where, shape)
            return
        except (ModelConfigError, _DoesNotPass):
            continue
    if not isinstance(first, _DoesNotPass):
        raise StudyError(str(first))
    resolution = study.settings.proxy.resolution
    if resolution is not None:
        raise StudyError(
            f"{study.where}: proxy.resolution: {list(resolution)}: {first} (a network of {where})"
        )
    size = "x".join(map(str, shape.image_size))
    data = study.settings.data.name
    raise StudyError(f"{where}: the network does not take {data}'s {size} images: {first}")


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

"""Which configs a calibration measures: the members of the study's front (spread along it when
there are more than asked for), then configs drawn from the space at random with a fixed
seed, accounted on the meta device, kept when they fit the budget and picked at evenly spaced
quantiles of the first cost objective, so that they cover the space's cost range from its
cheapest feasible config to its most expensive one.
"""

from __future__ import annotations

import random

from kwsearch.calibrate.results import key
from kwsearch.models import ModelConfigError, parse_model_config
from kwsearch.records import MEASURED, CalibrationConfig, TrialRecord, spread_along_front
from kwsearch.search.budget import MetaBuild, ResolvedBudget
from kwsearch.search.space import Space

CANDIDATES = 64  # configs drawn from the space at least (8 per config asked for when that is more)
MIN_CONFIGS = 3  # fewer configs rank nothing


class CalibrationError(ValueError):
    """A calibration that cannot run (a bad option, too few configs, a recipe that changed since
    the study was calibrated); exit code 2."""


def spread_by_cost(count: int, wanted: int) -> list[int]:
    """``wanted`` positions of ``count`` items sorted by cost, at evenly spaced quantiles: the
    first and the last, and the rest evenly between (all of them when ``wanted`` covers them)."""
    if wanted <= 0:
        return []
    if wanted >= count:
        return list(range(count))
    if wanted == 1:
        return [count // 2]
    step = (count - 1) / (wanted - 1)  # > 1, so the positions are distinct
    return [int(j * step + 0.5) for j in range(wanted)]


def choose_configs(
    space: Space,
    budget: ResolvedBudget,
    objectives: list[str],
    count: int,
    front: list[TrialRecord],
    seed: int,
) -> list[CalibrationConfig]:
    """``count`` distinct feasible configs (see the module docstring), ordered by cost. Raises
    CalibrationError when the space gives fewer than 3."""
    # configs are spread along a counted cost: a drawn config has no measured one (no worker timed it)
    cost = next((name for name in objectives[1:] if name not in MEASURED), "params")
    members = spread_along_front(front, objectives, count) if front else []
    chosen = [
        CalibrationConfig(t.config, parse_model_config(t.config).model_dump(mode="json"), t.costs, t.number)
        for t in members
    ]
    seen = {key(c.config) for c in chosen}
    rng = random.Random(seed)
    draws = max(CANDIDATES, 8 * count)
    candidates = []  # (cost, config, build), in the order drawn
    for _ in range(draws):
        config, _ = space.sample(lambda dimension: dimension.random(rng))
        if key(config) in seen:
            continue
        seen.add(key(config))
        try:
            build = MetaBuild(parse_model_config(config, space.source))
            costs = build.costs(macs=budget.counts_macs or cost == "macs")
        except ModelConfigError:
            continue  # no network has this config: the search stores such configs infeasible
        if budget.feasible(costs):
            candidates.append((getattr(costs, cost), config, build))
    candidates.sort(key=lambda c: c[0])  # stable: equal costs keep the order drawn
    for position in spread_by_cost(len(candidates), count - len(chosen)):
        _, config, build = candidates[position]
        chosen.append(CalibrationConfig(config, build.config.model_dump(mode="json"), build.costs()))
    if len(chosen) < MIN_CONFIGS:
        raise CalibrationError(
            f"{space.source or 'space'}: {len(chosen)} distinct config(s) within the budget in {draws} draws "
            f"from the space (and the front); a calibration ranks {MIN_CONFIGS} or more"
        )
    return sorted(chosen, key=lambda c: (getattr(c.costs, cost), key(c.config)))

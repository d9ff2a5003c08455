"""Search spaces: a model config whose values may be distributions.

::

    backbone: resnet18_cifar
    width: {choice: [0.25, 0.5]}
    conv:
      family: {choice: [static, odconv, kw]}
      kw:                                   # sampled only when family is kw
        cell_num_ratio: {float: [0.25, 4], log: true}
        temperature: {shape: {choice: [linear, cosine]}, start: 1, end: 0, epochs: {int: [5, 20]}}
      odconv: {kernel_num: {int: [1, 4]}}
    sharing:                                # a named dimension: the chosen mapping merges in
      merge:
        per_stage: {conv: {sharing_range: [layer, conv]}}
        across_stages: {conv: {sharing_range: [stage, layer, conv]}}

Distributions: ``{choice: [...]}`` (values, or a mapping of label -> value), ``{int: [lo, hi]}``
and ``{float: [lo, hi]}`` with optional ``log: true`` and ``step``. Lists hold values or
distributions (per-warehouse or per-stage values). A key holding ``{merge: {label: mapping}}``
is a dimension whose chosen mapping is merged into the mapping the key sits in, so one choice
can set several keys at once. Every dimension is named by its path (``conv.kw.cell_num_ratio``,
``width``, ``cell_num_ratio[1]``); those names are the Optuna parameter names.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

DISTRIBUTION_KEYS = ("choice", "int", "float", "merge")
_OPTIONS = {"choice": set(), "merge": set(), "int": {"log", "step"}, "float": {"log", "step"}}
# a grid over an int range larger than this is almost certainly a mistake in the space
MAX_GRID_VALUES = 1000


class SpaceError(ValueError):
    """A space that cannot be sampled; the message names the file (when known) and the key."""


@dataclass(frozen=True)
class Dimension:
    """One searched value: its name (path), Optuna distribution and, for choices, the values
    behind the labels Optuna stores."""

    name: str
    distribution: BaseDistribution
    values: Mapping[Any, Any] | None = None  # label -> value, for choices

    def decode(self, raw: Any) -> Any:
        return self.values[raw] if self.values is not None else raw

    def grid_values(self) -> list[Any]:
        """Every value of this dimension, for grid searches. Raises SpaceError for continuous ones."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, IntDistribution):
            values = list(range(d.low, d.high + 1, d.step))
        elif d.step is not None:
            count = round((d.high - d.low) / d.step)
            values = [d.low + i * d.step for i in range(count + 1)]
        else:
            raise SpaceError(f"{self.name}: a grid needs a choice, an int range or a float with 'step'")
        if len(values) > MAX_GRID_VALUES:
            raise SpaceError(f"{self.name}: {len(values)} grid values (more than {MAX_GRID_VALUES})")
        return values

    def random(self, rng: random.Random) -> Any:
        """A value drawn uniformly (log-uniformly for ``log``) from the distribution."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return rng.choice(d.choices)
        if isinstance(d, IntDistribution):
            if d.log:
                return min(
                    d.high, max(d.low, round(math.exp(rng.uniform(math.log(d.low), math.log(d.high)))))
                )
            return rng.randrange(d.low, d.high + 1, d.step)
        if d.log:
            return math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
        if d.step is not None:
            return d.low + d.step * rng.randint(0, round((d.high - d.low) / d.step))
        return rng.uniform(d.low, d.high)

    def lowest(self) -> Any:
        d = self.distribution
        return d.choices[0] if isinstance(d, CategoricalDistribution) else d.low


# Called for each dimension as the space is walked; returns the raw value (a label for choices).
Suggest = Callable[[Dimension], Any]


def _label(value: Any) -> Any:
    """Optuna stores choices as None/bool/int/float/str; other values get a JSON label."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _is_distribution(node: Any) -> bool:
    return isinstance(node, Mapping) and any(k in node for k in DISTRIBUTION_KEYS)


def _contains_distribution(node: Any) -> bool:
    if _is_distribution(node):
        return True
    if isinstance(node, Mapping):
        return any(_contains_distribution(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_distribution(v) for v in node)
    return False


def _numeric_bounds(name: str, kind: str, spec: Mapping[str, Any]) -> tuple[Any, Any]:
    bounds = spec[kind]
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        raise SpaceError(f"{name}: '{kind}' takes [low, high] ({kind} numbers), got {bounds!r}")
    low, high = bounds
    if low > high:
        raise SpaceError(f"{name}: low {low} exceeds high {high}")
    return low, high


def _dimension(name: str, spec: Mapping[str, Any]) -> Dimension:
    kinds = [k for k in DISTRIBUTION_KEYS if k in spec]
    if len(kinds) != 1:
        raise SpaceError(f"{name}: a distribution has exactly one of {', '.join(DISTRIBUTION_KEYS)}")
    kind = kinds[0]
    unknown = set(spec) - {kind} - _OPTIONS[kind]
    if unknown:
        raise SpaceError(f"{name}: unknown option(s) {', '.join(sorted(unknown))} of a '{kind}' distribution")
    if kind in ("choice", "merge"):
        options = spec[kind]
        if kind == "merge" and not (
            isinstance(options, Mapping) and options and all(isinstance(v, Mapping) for v in options.values())
        ):
            raise SpaceError(f"{name}: 'merge' takes a mapping of label -> mapping to merge in")
        if isinstance(options, Mapping):
            values = {str(label): value for label, value in options.items()}
        elif isinstance(options, list):
            for option in options:
                if _contains_distribution(option):
                    raise SpaceError(
                        f"{name}: a list choice holds plain values; "
                        "give labels (a mapping) to nest distributions"
                    )
            values = {_label(v): v for v in options}
            if len(values) != len(options):
                raise SpaceError(f"{name}: the choice lists a value twice")
        else:
            values = None
        if not values:
            raise SpaceError(f"{name}: '{kind}' needs a non-empty list or mapping of options")
        return Dimension(name, CategoricalDistribution(list(values)), values)
    low, high = _numeric_bounds(name, kind, spec)
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{name}: 'log' is true or false")
    if log and low <= 0:
        raise SpaceError(f"{name}: a log distribution needs low > 0")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int if kind == "int" else (int, float)) or step <= 0
    ):
        raise SpaceError(f"{name}: 'step' must be a positive {kind}")
    if log and step not in (None, 1):
        raise SpaceError(f"{name}: 'log' and 'step' cannot be combined")
    try:
        if kind == "int":
            return Dimension(name, IntDistribution(low, high, log=log, step=step or 1))
        return Dimension(name, FloatDistribution(float(low), float(high), log=log, step=step))
    except ValueError as error:
        raise SpaceError(f"{name}: {error}") from None


def _path(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _deep_merge(base: dict, overlay: Mapping) -> dict:
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping) and not _is_distribution(value):
            base[key] = _deep_merge(dict(base[key]), value)
        else:
            base[key] = copy.deepcopy(value)
    return base


class Space:
    """A parsed search space. :meth:`sample` turns suggestions into one model config (a plain
    mapping to validate with :func:`kwsearch.models.parse_model_config`)."""

    def __init__(self, tree: Mapping[str, Any], source: str | None = None, family_names=()) -> None:
        if not isinstance(tree, Mapping):
            raise SpaceError(
                f"{source or 'space'}: a space is a mapping (a model config), got {type(tree).__name__}"
            )
        self.tree = dict(tree)
        self.source = source
        self._families = set(family_names)
        self._dimensions: dict[str, Dimension] = {}
        # Check every branch once (each option, not each combination) so that a malformed
        # distribution fails now, not mid-study.
        try:
            self._check(self.tree, "")
        except SpaceError as error:
            raise SpaceError(f"{source}: {error}" if source else str(error)) from None

    @property
    def dimensions(self) -> dict[str, Dimension]:
        """Every dimension of every branch, by name."""
        return dict(self._dimensions)

    def sample(self, suggest: Suggest) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model config, raw parameter values by dimension name), asking ``suggest`` for every
        dimension on the active branch only."""
        chosen: dict[str, Any] = {}

        def ask(dimension: Dimension) -> Any:
            self._dimensions.setdefault(dimension.name, dimension)
            raw = suggest(dimension)
            chosen[dimension.name] = raw
            return dimension.decode(raw)

        return self._resolve(self.tree, "", ask), chosen

    def enumerate(
        self, values_of: Callable[[Dimension], list[Any]], limit: int | None
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Every (config, raw values) combination, taking for each dimension the values that
        ``values_of`` gives (a grid: all of them; a corner: the lowest). Stops after ``limit``."""
        pending: list[list[Any]] = [[]]  # stacks of decisions still to explore
        produced = 0
        while pending:
            decisions = pending.pop()
            position = 0

            def suggest(dimension: Dimension, decisions=decisions) -> Any:
                nonlocal position
                if position == len(decisions):
                    options = values_of(dimension)
                    # explore the first option now and queue the others (depth first, in order)
                    for option in reversed(options[1:]):
                        pending.append([*decisions, option])
                    decisions.append(options[0])
                value = decisions[position]
                position += 1
                return value

            yield self.sample(suggest)
            produced += 1
            if limit is not None and produced >= limit:
                return

    def grid(self) -> list[dict[str, Any]]:
        """The raw parameter values of every combination (for grid searches)."""
        try:
            return [chosen for _, chosen in self.enumerate(Dimension.grid_values, limit=None)]
        except SpaceError as error:
            raise SpaceError(f"{self.source}: {error}" if self.source else str(error)) from None

    def _check(self, node: Any, path: str) -> None:
        """Parse every distribution in every branch of ``node``, recording its dimension."""
        if _is_distribution(node):
            dimension = _dimension(path, node)
            self._dimensions.setdefault(dimension.name, dimension)
            for option in dimension.values.values() if dimension.values else ():
                self._check(option, path)
            return
        if isinstance(node, list):
            for i, value in enumerate(node):
                self._check(value, f"{path}[{i}]")
            return
        if not isinstance(node, Mapping):
            return
        for key, value in node.items():
            if isinstance(value, Mapping) and "merge" in value:
                dimension = _dimension(_path(path, key), value)
                self._dimensions.setdefault(dimension.name, dimension)
                for overlay in dimension.values.values():
                    self._check(overlay, path)  # merged into this mapping
            else:
                self._check(value, _path(path, key))  # family blocks too: conv.kw.<option>

    def _resolve(self, node: Any, path: str, ask: Callable[[Dimension], Any]) -> Any:
        if _is_distribution(node):
            return self._resolve(ask(_dimension(path, node)), path, ask)
        if isinstance(node, list):
            return [self._resolve(v, f"{path}[{i}]", ask) for i, v in enumerate(node)]
        if not isinstance(node, Mapping):
            return node
        node = dict(node)
        # merge dimensions first: what they merge in is then resolved like any other key
        for key in [k for k, v in node.items() if isinstance(v, Mapping) and "merge" in v]:
            spec = node.pop(key)
            node = _deep_merge(node, ask(_dimension(_path(path, key), spec)))
        result = {}
        family = None
        if path.split(".")[-1] == "conv" and "family" in node:
            family = self._resolve(node["family"], _path(path, "family"), ask)
            result["family"] = family
        for key, value in node.items():
            if key == "family" and family is not None:
                continue
            if family is not None and key in self._families and isinstance(value, Mapping):
                if key == family:  # per-family options: sampled only when that family is chosen
                    for option, option_value in value.items():
                        result[option] = self._resolve(option_value, _path(_path(path, key), option), ask)
                continue
            result[key] = self._resolve(value, _path(path, key), ask)
        return result

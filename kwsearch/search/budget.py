"""Budgets are checked where configs are born: each sampled config is built once on the meta
device (milliseconds, no weights), accounted, and its constraint values tell Optuna whether it is
feasible."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kwsearch.formats import format_cost
from kwsearch.models import ModelConfig, ModelConfigError, build_model, count_macs
from kwsearch.models.accounting import effective_parameters
from kwsearch.records import MEASURED, Costs


class MetaBuild:
    """A config built once on the meta device. Building costs ~40 ms for a small ResNet and
    counting its MACs ~100 ms more, so MACs are counted only when asked (a config rejected on its
    parameters never needs them). Raises ModelConfigError for a config no network satisfies."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        with torch.device("meta"):
            self.model: nn.Module = build_model(config)
        self._macs: int | None = None

    def costs(self, macs: bool = True) -> Costs:
        if macs and self._macs is None:
            try:
                self._macs = count_macs(self.model, (self.config.in_chans, *self.config.input_size))
            except ModelConfigError as error:
                raise ModelConfigError(f"input_size: {list(self.config.input_size)}: {error}") from None
        return Costs(
            sum(p.numel() for p in self.model.parameters()),
            effective_parameters(self.model),
            self._macs if macs else None,
        )


def costs_of(config: ModelConfig, macs: bool = True) -> Costs:
    """Account ``config`` on the meta device. Raises ModelConfigError for impossible configs."""
    return MetaBuild(config).costs(macs)


@dataclass(frozen=True)
class ResolvedBudget:
    """Absolute limits (relative ones resolved against the static baseline's costs). A count's
    limit is judged when a config is born; a measured cost's (``MEASURED``) once its worker
    measured it: until then it counts as met."""

    limits: dict[str, float]

    @property
    def counts_macs(self) -> bool:
        return "macs" in self.limits

    @property
    def measured_limits(self) -> dict[str, float]:
        """The limits a worker judges after timing a config, before training it."""
        return {name: limit for name, limit in self.limits.items() if name in MEASURED}

    def constraints(self, costs: Costs) -> dict[str, float]:
        """Optuna's constraint values: <= 0 is feasible. Relative overshoot, so 0.1 = 10% over; 0 for
        a measured cost not measured yet."""
        return {
            name: 0.0 if (value := getattr(costs, name)) is None else value / limit - 1.0
            for name, limit in self.limits.items()
        }

    def feasible(self, costs: Costs) -> bool:
        return all(c <= 0 for c in self.constraints(costs).values())

    def describe(self, costs: Costs) -> str:
        over = [
            f"{name} {format_cost(value, name)} > {format_cost(limit, name)}"
            for name, limit in self.limits.items()
            if (value := getattr(costs, name)) is not None and value > limit
        ]
        return ", ".join(over) or "within budget"

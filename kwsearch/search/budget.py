"""Budgets are checked where configs are born: each sampled config is accounted on the meta device
(milliseconds, no weights) and its constraint values tell Optuna whether it is feasible."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kwsearch.models import ModelConfig, ModelConfigError, build_model, count_macs
from kwsearch.models.accounting import effective_parameters


@dataclass(frozen=True)
class Costs:
    """What a config costs: every quantity a budget or an objective may name."""

    params: int
    effective_params: int
    macs: int | None  # None when not counted (see costs_of)

    def as_dict(self) -> dict[str, int | None]:
        return {"params": self.params, "effective_params": self.effective_params, "macs": self.macs}


def costs_of(config: ModelConfig, macs: bool = True) -> Costs:
    """Account ``config`` on the meta device. Raises ModelConfigError for impossible configs.

    Building costs ~40 ms for a small ResNet, counting MACs ~100 ms more: the searcher skips the
    MACs of configs it rejects on parameters alone."""
    with torch.device("meta"):
        model = build_model(config)
    try:
        counted = count_macs(model, (config.in_chans, *config.input_size)) if macs else None
    except RuntimeError as error:  # raised by the meta forward: the input is too small for the network
        raise ModelConfigError(
            f"input_size: {list(config.input_size)} does not pass through the network ({error})"
        ) from None
    return Costs(sum(p.numel() for p in model.parameters()), effective_parameters(model), counted)


@dataclass(frozen=True)
class ResolvedBudget:
    """Absolute limits (relative ones resolved against the static baseline's costs)."""

    limits: dict[str, float]

    @property
    def counts_macs(self) -> bool:
        return "macs" in self.limits

    def constraints(self, costs: Costs) -> dict[str, float]:
        """Optuna's constraint values: <= 0 is feasible. Relative overshoot, so 0.1 = 10% over."""
        return {name: getattr(costs, name) / limit - 1.0 for name, limit in self.limits.items()}

    def feasible(self, costs: Costs) -> bool:
        return all(c <= 0 for c in self.constraints(costs).values())

    def describe(self, costs: Costs) -> str:
        over = [
            f"{name} {getattr(costs, name):,} > {limit:,.0f}"
            for name, limit in self.limits.items()
            if getattr(costs, name) > limit
        ]
        return ", ".join(over) or "within budget"

"""Budgets are checked where configs are born: each sampled config is accounted on the meta device
(milliseconds, no weights) and its constraint values tell Optuna whether it is feasible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kwsearch.models import ModelConfig, account, build_model, parse_model_config


@dataclass(frozen=True)
class Costs:
    """What a config costs: every quantity a budget or an objective may name."""

    params: int
    effective_params: int
    macs: int

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "effective_params": self.effective_params, "macs": self.macs}


def costs_of(config: ModelConfig) -> Costs:
    """Account ``config`` on the meta device. Raises ModelConfigError for impossible configs."""
    with torch.device("meta"):
        model = build_model(config)
    report = account(model, (config.in_chans, *config.input_size))
    # families without masks have every parameter effective
    return Costs(report.params, getattr(report, "effective_params", report.params), report.macs)


def costs_of_mapping(config: dict[str, Any], source: str | None = None) -> Costs:
    return costs_of(parse_model_config(config, source))


@dataclass(frozen=True)
class ResolvedBudget:
    """Absolute limits (relative ones resolved against the static baseline's costs)."""

    limits: dict[str, float]

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

"""The Optuna sampler a study names, seeded. TPE, NSGA-II and GP read the constraint values the
search policy sets on each trial (``Trial.set_constraint``) and learn which configs are infeasible."""

from __future__ import annotations

from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field


class SamplerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int = 0
    seeds: list[int] = Field(default_factory=lambda: [0])  # grid: train every combination once per seed
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the Optuna sampler


class SamplerError(ValueError):
    """Sampler options Optuna does not accept; the message names the option."""


def make_sampler(settings: SamplerSettings) -> optuna.samplers.BaseSampler:
    """The sampler ``settings`` name. Grid studies get a random sampler: their combinations are
    enqueued up front (conditional spaces defeat Optuna's GridSampler), so it never samples."""
    options = dict(settings.options)
    kinds = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=settings.seed, **options),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=settings.seed, **options),
        "gp": lambda: optuna.samplers.GPSampler(seed=settings.seed, **options),
        "random": lambda: optuna.samplers.RandomSampler(seed=settings.seed, **options),
        "grid": lambda: optuna.samplers.RandomSampler(seed=settings.seed, **options),
    }
    try:
        return kinds[settings.name]()
    except (TypeError, ValueError) as error:  # an unknown option, a value Optuna refuses
        raise SamplerError(f"sampler.options: {error}") from None

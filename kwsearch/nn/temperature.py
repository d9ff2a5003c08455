"""Attention temperatures: the layer-side buffer and the schedules that drive it.

Every dynamic layer keeps its temperature in a 0-dim buffer on its own device, so the trainer can
change it every iteration without a host-device copy in forward, and a checkpoint carries it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class TemperatureControlled(nn.Module):
    """Base of layers whose attention is shaped by a temperature."""

    temperature: torch.Tensor

    def __init__(self, initial: float) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.tensor(float(initial)))

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(value)


def set_temperature(model: nn.Module, value: float) -> int:
    """Set the temperature of every dynamic layer in ``model``; return how many were set."""
    layers = [m for m in model.modules() if isinstance(m, TemperatureControlled)]
    for layer in layers:
        layer.set_temperature(value)
    return len(layers)


class TemperatureSchedule(BaseModel):
    """Temperature as a function of training progress, evaluated per iteration.

    The value moves from ``start`` to ``end`` over the first ``epochs`` epochs (or the first
    ``fraction`` of training) and stays at ``end`` afterwards. ``shape``:

    - ``linear``: straight line; ``cosine``: half cosine (slow, fast, slow);
    - ``exponential``: geometric interpolation (both ends must be > 0);
    - ``step``: ``steps`` equal drops, the value held constant between them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Literal["linear", "cosine", "exponential", "step"] = "linear"
    start: float = 1.0
    end: float = 0.0
    epochs: float | None = Field(default=None, gt=0)
    fraction: float | None = Field(default=None, gt=0, le=1)
    steps: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TemperatureSchedule:
        if (self.epochs is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'epochs' and 'fraction' for the schedule's duration")
        if self.shape == "exponential" and (self.start <= 0 or self.end <= 0):
            raise ValueError("an exponential schedule needs 'start' and 'end' > 0")
        return self

    def duration(self, total_epochs: float) -> float:
        """The schedule's length in epochs, for a run of ``total_epochs``."""
        return self.epochs if self.epochs is not None else self.fraction * total_epochs

    def value(self, epoch: float, total_epochs: float) -> float:
        """Temperature at fractional ``epoch`` (e.g. 2.5 = halfway through the third epoch)."""
        t = min(max(epoch / self.duration(total_epochs), 0.0), 1.0)
        if self.shape == "linear":
            w = t
        elif self.shape == "cosine":
            w = 0.5 * (1.0 - math.cos(math.pi * t))
        elif self.shape == "step":
            w = math.floor(t * self.steps) / self.steps
        else:  # exponential
            return self.start * (self.end / self.start) ** t
        return self.start + (self.end - self.start) * w


# The published defaults: KernelWarehouse 1 -> 0 over 20 epochs; DY-CNN and ODConv 30 -> 1 over 10.
KW_DEFAULT_SCHEDULE = TemperatureSchedule(shape="linear", start=1.0, end=0.0, epochs=20)
SOFTMAX_DEFAULT_SCHEDULE = TemperatureSchedule(shape="linear", start=30.0, end=1.0, epochs=10)

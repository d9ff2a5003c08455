"""Attention temperatures: the layer-side buffer and the schedules that drive it.

Every dynamic layer keeps its temperature in a 0-dim buffer on its own device, so the trainer can
change it every iteration without a host-device copy in forward, and a checkpoint carries it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
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

    The value moves from ``start`` to ``end`` over the first ``fraction`` of training (or the
    first ``epochs`` epochs, whatever the run's length) and stays at ``end`` afterwards; a fraction
    anneals a 3-epoch proxy and its 300-epoch replay alike. ``shape``:

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

    def final_value(self, total_epochs: float) -> float:
        """The temperature a run of ``total_epochs`` ends with (``end`` if the schedule finishes)."""
        return self.value(total_epochs, total_epochs)

    def finishes_within(self, total_epochs: float) -> bool:
        """Whether a run of ``total_epochs`` reaches the schedule's end. Always true for a
        ``fraction``; false for ``epochs`` longer than the run, which then trains its attention
        at :meth:`final_value` rather than ``end``."""
        return self.duration(total_epochs) <= total_epochs


def completed_from(default: TemperatureSchedule) -> BeforeValidator:
    """The validator of a family's ``temperature`` option: a schedule given in part takes its
    other fields from the published one, so ``{epochs: 5}`` keeps the family's start and end (an
    ODConv schedule completed with the class defaults would divide its logits by 0).

    A backbone whose reference publishes another schedule passes it as ``temperature`` in the
    validation context (:func:`kwsearch.nn.factory.parse_spec`'s ``defaults``); it then replaces
    ``default``. A duration given (``epochs`` or ``fraction``) replaces the published duration."""

    def complete(value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, Mapping):
            return value
        published = TemperatureSchedule.model_validate((info.context or {}).get("temperature", default))
        fields = published.model_dump(exclude_none=True)
        if "epochs" in value or "fraction" in value:
            fields.pop("epochs", None)
            fields.pop("fraction", None)
        return {**fields, **value}

    return BeforeValidator(complete)


# The published schedules, as fractions of the run so that a short proxy anneals like its replay.
#
# KernelWarehouse: linear 1 -> 0 over 20 of 300 epochs. OSVAI/KernelWarehouse main.py defaults to
# --temp_epoch 20 and --epochs 300, which its ResNet and ConvNeXt configs (configs/resnet*/,
# configs/convnext/) keep; its MobileNetV2 configs set 15 of 150 (1/10: the MobileNetV2 backbone
# carries that).
KW_DEFAULT_SCHEDULE = TemperatureSchedule(shape="linear", start=1.0, end=0.0, fraction=20 / 300)
# DY-CNN and ODConv: linear 30 -> 1 over the first 10 epochs (DY-CNN's temperature annealing, which
# OSVAI/ODConv main.py keeps: --temp_epoch 10 --temp_init 30) of ODConv's 100-epoch ResNet recipe
# (its README's training command, --epochs 100). Its MobileNetV2 recipe runs 150 epochs (1/15: the
# MobileNetV2 backbone carries that). DY-CNN published no code, and the run length its 10 epochs
# belong to was not verified here: its family takes ODConv's recipes.
SOFTMAX_DEFAULT_SCHEDULE = TemperatureSchedule(shape="linear", start=30.0, end=1.0, fraction=10 / 100)

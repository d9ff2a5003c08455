"""A training recipe: everything about how a model is trained, apart from the model and the data.

Proxy trials, ``kwsearch train`` and replay use the same trainer with different recipes. A recipe
may start from a published one (``preset``, :mod:`kwsearch.train.presets`); the fields it gives
replace the preset's.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kwsearch.train.presets import RECIPE_PRESETS


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = None  # a published recipe these fields start from
    epochs: int = Field(default=10, ge=1)
    # The whole step's batch: with several workers each trains batch_size / workers images, so a
    # recipe means the same optimisation (and lr) on any number of workers.
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=512, ge=1)
    workers: int = Field(default=1, ge=1)  # data-parallel processes (GPUs), through Ray Train
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)  # for the whole step's batch
    momentum: float = Field(default=0.9, ge=0, lt=1)  # SGD momentum
    nesterov: bool = True  # SGD: Nesterov momentum (plain momentum when false)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = Field(default=5e-4, ge=0)  # off for norms, biases and attention
    warmup_epochs: float = Field(default=1.0, ge=0)
    # after warmup: cosine down to min_lr, or steps (lr times lr_gamma at each fraction of the run)
    lr_schedule: Literal["cosine", "step"] = "cosine"
    lr_steps: tuple[float, ...] = (0.3, 0.6, 0.9)
    lr_gamma: float = Field(default=0.1, gt=0, le=1)
    min_lr: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    grad_clip: float | None = Field(default=None, gt=0)  # max global gradient norm
    # "auto": bf16 autocast and channels_last on CUDA, neither on CPU.
    amp: Literal["auto", "off", "bf16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    seed: int = 0
    # data controls of a proxy
    train_subset: int | None = Field(default=None, ge=1)  # stratified subset of the training split
    val_size: int | float = Field(default=0.1, gt=0)  # held out of the training set (count or fraction)
    resolution: tuple[int, int] | None = None
    augment: bool = True
    evaluate_test: bool = False  # only replay reports the test set
    # where the images live: memory (tensors on the device), stream (a prepared image cache read
    # from disk while training), auto (memory unless a prepared cache would fill over half of it)
    data_loading: Literal["auto", "memory", "stream"] = "auto"

    def uses_bf16(self, device: torch.device) -> bool:
        return self.amp == "bf16" or (self.amp == "auto" and device.type == "cuda")

    def uses_channels_last(self, device: torch.device) -> bool:
        return self.channels_last == "on" or (self.channels_last == "auto" and device.type == "cuda")

    @field_validator("resolution")
    @classmethod
    def _positive_resolution(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 1:
            raise ValueError(f"both sides must be >= 1, got {list(size)}")
        return size

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        preset = RECIPE_PRESETS.get(data.get("preset")) if isinstance(data, dict) else None
        return data if preset is None else {**preset.recipe, **data}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        if name is not None and name not in RECIPE_PRESETS:
            raise ValueError(f"{name!r} is not one of {', '.join(RECIPE_PRESETS)}")
        return name

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.min_lr > self.lr:
            raise ValueError("min_lr must not exceed lr")
        if isinstance(self.val_size, float) and self.val_size >= 1:
            raise ValueError("val_size as a fraction must be < 1 (or give a count)")
        if self.warmup_epochs > self.epochs:
            raise ValueError("warmup_epochs must not exceed epochs")
        if self.batch_size % self.workers:
            raise ValueError(
                f"batch_size {self.batch_size} does not split over {self.workers} workers (it is the whole "
                "step's batch: each worker trains batch_size / workers images)"
            )
        if list(self.lr_steps) != sorted(self.lr_steps) or not all(0 < f < 1 for f in self.lr_steps):
            raise ValueError("lr_steps must be increasing fractions of the run, each between 0 and 1")
        return self

"""A training recipe: everything about how a model is trained, apart from the model and the data.

Proxy trials, ``kwsearch train`` and replay use the same trainer with different recipes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=512, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)  # SGD (Nesterov) momentum
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = Field(default=5e-4, ge=0)  # off for norms, biases and attention
    warmup_epochs: float = Field(default=1.0, ge=0)
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

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.min_lr > self.lr:
            raise ValueError("min_lr must not exceed lr")
        if isinstance(self.val_size, float) and self.val_size >= 1:
            raise ValueError("val_size as a fraction must be < 1 (or give a count)")
        if self.warmup_epochs > self.epochs:
            raise ValueError("warmup_epochs must not exceed epochs")
        return self

"""Optimizer with the weight-decay split, and the per-iteration learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from kwsearch.nn import TemperatureControlled
from kwsearch.train.recipe import Recipe


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Norm parameters, biases, and everything a dynamic layer owns besides its kernels
    (attention), which the references train without weight decay."""
    ids = set()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
            ids.update(id(p) for p in module.parameters(recurse=False))
        if isinstance(module, TemperatureControlled):
            for name, p in module.named_parameters():
                if not (name == "weight" or name.startswith("warehouse_manager.")):
                    ids.add(id(p))
    for name, p in model.named_parameters():
        if name.endswith("bias") or p.dim() <= 1:
            ids.add(id(p))
    return ids


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    skip = _no_decay_ids(model)
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in skip], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = parameter_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        nesterov = recipe.nesterov and recipe.momentum > 0
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=nesterov)
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas)


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Linear warmup from 0 to ``lr`` over ``warmup_epochs``, then cosine down to ``min_lr``, or
    (``lr_schedule: step``) ``lr`` times ``lr_gamma`` for each of ``lr_steps`` (fractions of the
    whole run) already passed."""
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    if recipe.lr_schedule == "step":
        return recipe.lr * recipe.lr_gamma ** sum(1 for f in recipe.lr_steps if step >= round(f * total))
    progress = (step - warmup) / max(total - warmup, 1)
    return recipe.min_lr + (recipe.lr - recipe.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

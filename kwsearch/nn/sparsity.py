"""Sparse-training settings and layer densities, as pure functions of the weight shapes.

A family that trains sparse (SLaK) attaches its :class:`SparseTraining` settings to the model it
finalizes; the trainer reads them to mask and rewire the weights (``kwsearch.train.sparse``), and
accounting reads them to count the parameters a sparse model keeps. How the overall density is
shared among layers by ``erk`` and ``uniform`` depends on the shapes only, so it is exact on the
meta device; ``snip`` needs data for the shares, but not for the total.

Masks live on the model, as a bool buffer :data:`MASK_BUFFER` beside each masked weight, so they
travel with ``state_dict`` (checkpoints) and accounting can count what a trained model keeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

MASK_BUFFER = "sparsity_mask"
_SETTINGS_ATTRIBUTE = "sparse_training"


class SparseTraining(BaseModel):
    """Dynamic sparse training as SLaK trains (VITA-Group/SLaK ``sparse_core.py``); conv spec keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparsity: float = Field(default=0.4, ge=0, lt=1)  # fraction of the target weights that are zero
    sparse_init: Literal["snip", "erk", "uniform"] = "snip"  # how the layers share the density
    prune_rate: float = Field(default=0.5, ge=0, le=1)  # fraction of live weights rewired, decays by cosine
    update_frequency: int = Field(default=100, ge=1)  # optimizer steps between rewirings
    growth: Literal["random", "gradient"] = "random"  # where the pruned weights regrow
    sparse_targets: Literal["all", "large_kernels"] = "all"  # every conv and linear weight, or SLaK's M x N

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity


class LargeKernelConv2d(nn.Conv2d):
    """A large-kernel branch of a decomposed convolution (SLaK's M x N and N x M): a plain Conv2d
    whose type tells ``sparse_targets: large_kernels`` which weights to mask."""


def attach_sparse_training(model: nn.Module, settings: SparseTraining) -> None:
    """Record on ``model`` that it trains sparse by ``settings`` (nothing for sparsity 0)."""
    if settings.sparsity > 0:
        setattr(model, _SETTINGS_ATTRIBUTE, settings)


def sparse_training(model: nn.Module) -> SparseTraining | None:
    """The sparse-training settings attached to ``model``, or None for a dense model."""
    return getattr(model, _SETTINGS_ATTRIBUTE, None)


def sparse_targets(model: nn.Module, which: str) -> dict[str, nn.Module]:
    """The modules whose ``weight`` sparse training masks, by dotted name, in ``modules()`` order:
    every conv and linear layer (``all``, as the reference masks every 2-d and 4-d weight), or
    only the large-kernel branches (``large_kernels``, the reference's ``--only-L``)."""
    kinds = (LargeKernelConv2d,) if which == "large_kernels" else (nn.Linear, nn.modules.conv._ConvNd)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def erk_densities(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities whose size-weighted mean is ``density``: each layer's density is
    proportional to ``sum(shape) / prod(shape)``; a layer that would exceed 1 is made dense and the
    others rescaled (repeatedly), as the reference (and RigL) allocate."""
    if not shapes:
        return {}
    numels = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numels[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        # live weights the sparse layers must hold once the dense ones are counted in full
        budget = density * sum(numels.values()) - sum(numels[name] for name in dense)
        scale = budget / sum(raw[name] * numels[name] for name in sparse)
        saturated = [name for name in sparse if raw[name] * scale > 1]
        if not saturated:
            return {name: 1.0 if name in dense else raw[name] * scale for name in shapes}
        top = max(raw[name] for name in saturated)
        dense.update(name for name in saturated if raw[name] == top)


def layer_densities(settings: SparseTraining, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, float]:
    """Each target's density under ``erk`` or ``uniform`` (``snip`` needs data: ValueError)."""
    if settings.sparse_init == "erk":
        return erk_densities(shapes, settings.density)
    if settings.sparse_init == "uniform":
        return {name: settings.density for name in shapes}
    raise ValueError(f"sparse_init {settings.sparse_init!r} allocates densities from data, not shapes")


def nonzero_counts(shapes: Mapping[str, tuple[int, ...]], densities: Mapping[str, float]) -> dict[str, int]:
    """The live weights of each layer: its density times its size, rounded to the nearest whole
    weight (the trainer draws exactly this many)."""
    return {name: round(densities[name] * math.prod(shape)) for name, shape in shapes.items()}


def planned_nonzeros(settings: SparseTraining, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Live target weights a model starts training with (and keeps: rewiring preserves each
    layer's count). Exact for ``erk`` and ``uniform``; for ``snip`` the layer shares come from
    data, but the trainer keeps exactly ``round(density * targets)`` in total."""
    if settings.sparse_init == "snip":
        return round(settings.density * sum(math.prod(shape) for shape in shapes.values()))
    return sum(nonzero_counts(shapes, layer_densities(settings, shapes)).values())

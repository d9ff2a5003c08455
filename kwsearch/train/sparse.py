"""Dynamic sparse training as SLaK trains (VITA-Group/SLaK ``sparse_core.py``), run by the trainer.

Each target weight gets a bool mask, a buffer on its module (so checkpoints carry it). The masks
start at the planned density: every layer at its ``erk`` or ``uniform`` share, or (``snip``) at the
share of the layer's weights among the globally most salient ``|w * dL/dw|`` on one training
batch; within a layer the live positions are drawn at random, as the reference re-samples them.
After every optimizer step the masked weights are set to exactly zero. Every ``update_frequency``
steps each layer prunes its ``ceil(rate * live)`` smallest-magnitude live weights and regrows as
many among the weights that were dead before (at random, or where the gradient is largest), so
its count never changes; ``rate`` falls from ``prune_rate`` to 0 by a cosine over training.
Regrown weights start at zero with fresh optimizer state.

The trainer has no weight EMA; there is nothing else to mask.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from kwsearch.nn.sparsity import (
    MASK_BUFFER,
    SparseTraining,
    layer_densities,
    nonzero_counts,
    sparse_targets,
    sparse_training,
)


class DynamicSparsity:
    """Masks the target weights of ``model`` (registering one mask buffer per target, all true
    until :meth:`initialize` or a checkpoint sets them) and rewires them during training.

    ``total_steps`` is the length of training, over which the prune rate decays. ``share`` makes the
    masks equal on every data-parallel worker (to rank 0's, whose SNIP batch and random draws then
    decide, as SLaK broadcasts its masks from rank 0), after they are drawn and after each rewiring.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: SparseTraining,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        share: Callable[[Iterable[torch.Tensor]], None] = lambda tensors: None,
    ) -> None:
        self.settings = settings
        self.share = share
        self.optimizer = optimizer
        self.total_steps = total_steps
        modules = sparse_targets(model, settings.sparse_targets)
        if not modules:
            which = settings.sparse_targets
            raise ValueError(f"conv.sparse_targets: the model has no {which!r} layer to sparsify")
        self.weights: dict[str, nn.Parameter] = {name: m.weight for name, m in modules.items()}
        for module in modules.values():
            module.register_buffer(MASK_BUFFER, torch.ones_like(module.weight, dtype=torch.bool))
        self.masks: dict[str, torch.Tensor] = {name: getattr(m, MASK_BUFFER) for name, m in modules.items()}
        # Loading a checkpoint copies into these tensors, so the lists stay valid.
        self._weight_list, self._mask_list = list(self.weights.values()), list(self.masks.values())

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        share: Callable[[Iterable[torch.Tensor]], None] = lambda tensors: None,
    ) -> DynamicSparsity | None:
        """The sparse training ``model``'s conv family asked for, or None for a dense model."""
        settings = sparse_training(model)
        return None if settings is None else cls(model, settings, optimizer, total_steps, share)

    # -- initial masks -------------------------------------------------------------------------

    def initialize(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Draw the initial masks (``snip`` reads the first batch of ``batches``) and zero the
        masked weights."""
        shapes = {name: tuple(w.shape) for name, w in self.weights.items()}
        if self.settings.sparse_init == "snip":
            counts = self._snip_counts(model, next(iter(batches)))
        else:
            counts = nonzero_counts(shapes, layer_densities(self.settings, shapes))
        with torch.no_grad():
            for name, mask in self.masks.items():
                live = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
                live[torch.randperm(mask.numel(), device=mask.device)[: counts[name]]] = True
                mask.copy_(live.view(mask.shape))
        self.share(self._mask_list)
        self.apply()

    def _snip_counts(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, int]:
        """Each layer's share of the ``round(density * targets)`` weights with the largest
        ``|w * dL/dw|`` on ``batch``, computed on a copy (the model's BN statistics stay as they are)."""
        probe = copy.deepcopy(model)
        probe.train()
        x, y = batch
        F.cross_entropy(probe(x).float(), y).backward()
        probed = {name: probe.get_submodule(name).weight for name in self.weights}
        scores = torch.cat([(w * w.grad).abs().flatten() for w in probed.values()])
        chosen = torch.zeros_like(scores, dtype=torch.bool)
        chosen[torch.topk(scores, round(self.settings.density * scores.numel()), sorted=False).indices] = True
        sizes = [w.numel() for w in probed.values()]
        return {name: int(part.sum()) for name, part in zip(probed, chosen.split(sizes), strict=True)}

    # -- every step ----------------------------------------------------------------------------

    def apply(self) -> None:
        """Set every masked weight to zero."""
        with torch.no_grad():
            torch._foreach_mul_(self._weight_list, self._mask_list)

    def prune_rate(self, step: int) -> float:
        """The fraction of live weights rewired at ``step``: ``prune_rate`` decayed by a cosine to
        0 at the end of training."""
        progress = min(step / self.total_steps, 1.0)
        return self.settings.prune_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self, step: int) -> None:
        """After optimizer step ``step`` (1-based): zero the masked weights and, every
        ``update_frequency`` steps, rewire."""
        self.apply()
        if step % self.settings.update_frequency == 0 and step < self.total_steps:
            self.rewire(self.prune_rate(step))

    def rewire(self, rate: float) -> dict[str, int]:
        """Prune ``ceil(rate * live)`` weights of each layer and regrow as many; returns the count
        moved per layer (fewer when a layer has fewer dead weights to regrow into)."""
        moved, was_dead = {}, {}
        with torch.no_grad():
            for name, mask in self.masks.items():
                weight = self.weights[name]
                live = int(mask.sum())
                count = min(math.ceil(rate * live), mask.numel() - live)
                moved[name] = count
                if count == 0:
                    continue
                was_dead[name] = ~mask
                # smallest magnitudes among the live weights (dead ones rank last)
                magnitude = weight.abs().masked_fill(was_dead[name], math.inf)
                pruned = torch.topk(magnitude.flatten(), count, largest=False, sorted=False).indices
                grown = self._growth_positions(weight, was_dead[name], count)
                flat = mask.flatten()
                flat[pruned] = False
                flat[grown] = True
                mask.copy_(flat.view_as(mask))
            self.share(self._mask_list)
            for name, dead in was_dead.items():
                self._reset_state(self.weights[name], dead | ~self.masks[name])
        self.apply()
        return moved

    def _growth_positions(self, weight: nn.Parameter, dead: torch.Tensor, count: int) -> torch.Tensor:
        """Flat indices of ``count`` weights among ``dead`` to bring back."""
        if self.settings.growth == "gradient" and weight.grad is not None:
            score = weight.grad.abs()
        else:
            score = torch.rand(weight.shape, device=weight.device)
        score = score.masked_fill(~dead, -1.0)  # scores are >= 0, so only dead weights are chosen
        return torch.topk(score.flatten(), count, sorted=False).indices

    def _reset_state(self, weight: nn.Parameter, where: torch.Tensor) -> None:
        """Zero the optimizer's per-weight state (momentum, Adam moments) at ``where``, so regrown
        weights start fresh rather than from updates they never took."""
        for value in self.optimizer.state.get(weight, {}).values():
            if torch.is_tensor(value) and value.shape == weight.shape:
                value.masked_fill_(where, 0)

"""The one trainer: proxy trials, ``kwsearch train`` and replay all run :func:`fit`.

The hot loop is direct (airbench's lesson): batches come from tensors already on the device, the
learning rate and the attention temperature are set every iteration from the step count, and the
only host-device synchronisations are the divergence check and the end-of-epoch metrics.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kwsearch.nn import LayerPaths, TemperatureSchedule, choose_paths, set_temperature
from kwsearch.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from kwsearch.train.optim import learning_rate, make_optimizer
from kwsearch.train.parallel import ONE, Workers
from kwsearch.train.recipe import Recipe
from kwsearch.train.sparse import DynamicSparsity


class BatchSource(Protocol):
    """What the trainer needs of a data loader: batches of (images, labels) already on the
    device, an epoch-dependent order (``set_epoch``), and the number of batches."""

    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class TrainingDiverged(RuntimeError):
    """A loss diverged (:func:`check_loss`); the message says which, when, and what to change."""


# A training loss this many times that of a uniform guess, ln(classes), is divergence: it means the
# true class gets probability classes**-100 on average, far beyond any network that is still
# learning (runs at lr 1e4 reached training losses of 5e16 with the validation loss NaN).
DIVERGED_LOSS_FACTOR = 100


def check_loss(name: str, loss: float, num_classes: int, epoch: int, lr: float) -> None:
    """Raise TrainingDiverged when an epoch's ``name`` mean loss is not finite, or, for the
    training loss, exceeds DIVERGED_LOSS_FACTOR * ln(num_classes). A finite validation or test
    loss is no divergence however large: a network that trains well can evaluate with a loss in
    the tens of thousands after its first epoch, its normalisation statistics not settled yet."""
    bound = DIVERGED_LOSS_FACTOR * math.log(max(num_classes, 2))
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the {name} loss became {loss} in epoch {epoch} (lr {lr:.3g}); lower the learning rate "
            "or set grad_clip"
        )
    if name == "training" and loss > bound:
        raise TrainingDiverged(
            f"the training loss became {loss:.4g} in epoch {epoch} (the bound is {bound:.4g}: "
            f"{DIVERGED_LOSS_FACTOR}x the {math.log(max(num_classes, 2)):.3g} of a uniform guess over "
            f"{num_classes} classes; lr {lr:.3g}); lower the learning rate or set grad_clip"
        )


class OutOfMemory(RuntimeError):
    """The device ran out of memory; the message names the batch size and the model size."""


StepHook = Callable[[nn.Module, int], None]  # (model, step) after every optimizer step


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    params: int
    epochs: int
    seconds: float
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1]


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 4-d parameters and buffers channels-last (NHWC), in place.

    ``Module.to(memory_format=...)`` refuses models holding tensors of other ranks, and every
    dynamic family does: warehouse cells, 5-d kernel banks, attention vectors."""
    for module in model.modules():
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def _autocast_dtype(device: torch.device, recipe: Recipe) -> torch.dtype | None:
    return torch.bfloat16 if recipe.uses_bf16(device) else None


def _autocast(device: torch.device, recipe: Recipe):
    dtype = _autocast_dtype(device, recipe)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def choose_training_paths(
    model: nn.Module, example: torch.Tensor, recipe: Recipe, steps: int | None = None
) -> list[LayerPaths]:
    """Choose the execution path of every dynamic layer of ``model`` (on ``example``'s device, in
    the recipe's memory layout) for training batches like ``example`` under ``recipe``'s autocast
    (:func:`kwsearch.nn.choose_paths`) for a run of ``steps`` training steps (None: of no known
    length; a short run takes the cost model's paths where no timing is cached); returns the choices."""
    device = example.device
    if recipe.uses_channels_last(device):
        example = example.contiguous(memory_format=torch.channels_last)
    return choose_paths(model, example, autocast_dtype=_autocast_dtype(device, recipe), steps=steps)


def _progress(iterable: Iterable, total: int, description: str, enabled: bool | None):
    """A rich progress bar when writing to a terminal; the plain iterable otherwise."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        yield from iterable
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


def evaluate(
    model: nn.Module, batches: BatchSource, device: torch.device, recipe: Recipe, workers: Workers = ONE
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` over every batch of ``batches`` (each worker's share,
    summed over the ``workers``)."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    with torch.no_grad(), _autocast(device, recipe):
        for x, y in batches:
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
    loss_sum, correct, total = workers.sum(loss_sum, correct, torch.tensor(seen, device=device))
    return loss_sum.item() / max(total.item(), 1), correct.item() / max(total.item(), 1)


def fit(
    model: nn.Module,
    train: BatchSource,
    val: BatchSource,
    recipe: Recipe,
    device: torch.device,
    *,
    temperature: TemperatureSchedule | None = None,
    test: BatchSource | None = None,
    checkpoint_dir: Path | None = None,
    run_info: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    step_hooks: Sequence[StepHook] = (),
    progress: bool | None = None,
    workers: Workers = ONE,
    started_at: float | None = None,
) -> TrainResult:
    """Train ``model`` by ``recipe``; evaluate on ``val`` (and ``test`` if given) every epoch.

    With ``checkpoint_dir`` a checkpoint is written after every epoch and an existing one is
    resumed from (it must have been made with the same ``run_info``, e.g. model config and recipe;
    otherwise ValueError). A model whose conv family trains sparse (SLaK) is masked and rewired by
    :class:`kwsearch.train.sparse.DynamicSparsity`; its masks are model buffers, so checkpoints
    carry them. Before the first step every dynamic layer's execution path is chosen for the
    training batch (:func:`choose_training_paths`: timed on the device where the run is long
    enough to pay for it, read from the path cache, or the cost model's). ``on_epoch`` receives
    each epoch's metrics. With data-parallel ``workers`` every worker calls ``fit`` with its
    share of the batches (the loaders' shard): gradients, metrics and SLaK's masks are shared,
    rank 0 writes the checkpoint and every worker resumes from it.
    Raises TrainingDiverged when a loss it computes diverges (:func:`check_loss`: the training
    loss as it goes and every epoch's training, validation and test mean losses, all summed over
    the workers), and OutOfMemory when the device runs out of memory.

    Each epoch's metrics say where its time went: ``ended_at`` (wall clock, once evaluated) and
    ``process`` (the id of the process that trained it); the first epoch of this call also
    ``started_at`` (wall clock: ``started_at``, or when ``fit`` was called) and ``setup_seconds``
    (from then to the first training step: the caller's data and model, path choice, compiling).
    """
    started = time.perf_counter()
    started_at = time.time() if started_at is None else started_at
    run_info = run_info or {}
    model.to(device)
    if recipe.uses_channels_last(device):
        to_channels_last(model)
    optimizer = make_optimizer(model, recipe)
    steps_per_epoch = len(train)
    # Before a checkpoint is loaded: the masks are buffers it restores.
    sparsity = DynamicSparsity.for_model(model, optimizer, recipe.epochs * steps_per_epoch, workers.share)
    history: list[dict[str, float]] = []
    first_epoch, step = 0, 0
    saved = load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if saved is not None:
        if saved.get("run") != run_info:
            raise ValueError(
                f"{checkpoint_dir}: holds a checkpoint of a different run (model config, data or recipe "
                "differ); remove it or choose another checkpoint directory"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        first_epoch, step, history = saved["epoch"], saved["step"], saved["history"]
        restore_rng_state(saved.get("worker_rng", [saved["rng"]])[workers.rank])
    elif sparsity is not None:
        train.set_epoch(0)
        sparsity.initialize(model, train)
    # Once, before the first step (and before compiling, so the graph takes the chosen paths):
    # every dynamic layer times its exact paths on a batch of this shape where the steps left pay
    # for it, or reads an earlier timing.
    train.set_epoch(first_epoch)
    steps_left = (recipe.epochs - first_epoch) * steps_per_epoch
    choose_training_paths(model, next(iter(train))[0], recipe, steps=steps_left)
    # Static shapes: training batches never change size (the loader drops a short last batch).
    network = torch.compile(workers.wrap(model), dynamic=False) if recipe.compile else workers.wrap(model)
    # A NaN check is a host-device synchronisation: every step on CPU, every 50 on a GPU.
    check_every = 1 if device.type == "cpu" else 50
    params = sum(p.numel() for p in model.parameters())
    setup = {"started_at": started_at, "setup_seconds": time.time() - started_at}
    try:
        for epoch in range(first_epoch, recipe.epochs):
            epoch_started = time.perf_counter()
            model.train()
            train.set_epoch(epoch)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for x, y in _progress(train, steps_per_epoch, f"epoch {epoch + 1}/{recipe.epochs}", progress):
                lr = learning_rate(recipe, step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if temperature is not None:
                    # As the references set it: from the step count after this step (their
                    # get_temperature(iteration + 1, ...)), so the first step already anneals and the
                    # last step of the schedule trains at its end value.
                    set_temperature(model, temperature.value((step + 1) / steps_per_epoch, recipe.epochs))
                with _autocast(device, recipe):
                    logits = network(x).float()
                loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                optimizer.step()
                step += 1
                if sparsity is not None:
                    sparsity.step(step)
                for hook in step_hooks:
                    hook(model, step)
                loss_sum += loss.detach() * y.numel()
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.numel()
                if step % check_every == 0 and not torch.isfinite(loss_sum):
                    raise TrainingDiverged(
                        f"the training loss became {loss_sum.item()} at epoch {epoch + 1}, step {step} "
                        f"(lr {lr:.3g}); lower the learning rate or set grad_clip"
                    )
            loss_sum, correct, total = workers.sum(loss_sum, correct, torch.tensor(seen, device=device))
            seen = int(total.item())
            train_loss = loss_sum.item() / max(seen, 1)  # synchronises: the pass has finished
            train_seconds = time.perf_counter() - epoch_started
            num_classes = logits.shape[-1]
            check_loss("training", train_loss, num_classes, epoch + 1, lr)
            workers.share(model.buffers())  # every worker evaluates (and saves) rank 0's BN statistics
            val_loss, val_accuracy = evaluate(network, val, device, recipe, workers)
            check_loss("validation", val_loss, num_classes, epoch + 1, lr)
            metrics = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": train_loss,
                "train_accuracy": correct.item() / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "val_images": getattr(val, "num_samples", None),  # what the accuracy's interval rests on
                "lr": lr,
                # the value the epoch's last step trained with
                "temperature": temperature.value(step / steps_per_epoch, recipe.epochs)
                if temperature
                else None,
                "train_seconds": train_seconds,
                "epoch_seconds": time.perf_counter() - epoch_started,
                **(setup if epoch == first_epoch else {}),
                "ended_at": time.time(),
                "process": os.getpid(),
            }
            if test is not None:
                metrics["test_loss"], metrics["test_accuracy"] = evaluate(
                    network, test, device, recipe, workers
                )
                metrics["test_images"] = getattr(test, "num_samples", None)
                check_loss("test", metrics["test_loss"], num_classes, epoch + 1, lr)
            history.append(metrics)
            random_states = workers.gather(rng_state())
            if checkpoint_dir is not None and workers.is_main:
                save_checkpoint(
                    checkpoint_dir,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch + 1,
                        "step": step,
                        "history": history,
                        "rng": random_states[0],
                        **({"worker_rng": random_states} if workers.size > 1 else {}),
                        "run": run_info,
                    },
                )
            if on_epoch is not None:
                on_epoch(metrics)
    except torch.OutOfMemoryError as error:
        raise OutOfMemory(
            f"{device} ran out of memory training a {params:,}-parameter model at batch size "
            f"{recipe.batch_size}; lower batch_size or the model's width ({error})"
        ) from None
    return TrainResult(history, params, len(history), time.perf_counter() - started, first_epoch)

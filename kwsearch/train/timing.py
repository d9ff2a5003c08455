"""What a config really costs on the device at hand: a training step's time per image at the
recipe's batch and the inference latency at batch 1 and at the recipe's batch, timed once before
training by the worker that trains it (``kwsearch search`` stores them as the trial's measured
costs).

Each is the median of a few repetitions after warm-up, with the recipe's memory layout and
autocast and the execution paths the trainer would choose, on random images (time does not
depend on their values); on CUDA every repetition ends with ``torch.cuda.synchronize``. A number
measured on one device says nothing about another: the device's name is returned with them.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kwsearch.models import ModelConfig, build_model
from kwsearch.train.recipe import Recipe
from kwsearch.train.trainer import _autocast, choose_training_paths, to_channels_last

# Repetitions timed after the warm-up ones: few, so that timing a tiny model on a CPU costs
# little next to training it; the median keeps one slow repetition out.
WARMUP = 1
REPEATS = 3


def device_name(device: torch.device) -> str:
    """The device as a researcher would name it: ``cuda: NVIDIA H200``, ``cpu: <model>, 2
    threads`` (torch's threads: a CPU's speed depends on them)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu: {_cpu_model()}, {torch.get_num_threads()} threads"
    return device.type


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _median_ms(step: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """The median wall time of ``step`` in milliseconds, after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure_costs(
    config: ModelConfig,
    image_shape: tuple[int, int, int],
    recipe: Recipe,
    device: torch.device,
    *,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """Time ``config`` on ``device`` for images of ``image_shape`` (channels, height, width) under
    ``recipe`` (its batch, memory layout, autocast). Returns ``train_ms_per_image`` (a forward and
    backward pass at the recipe's batch, in training mode, per image), ``latency_ms`` (a forward
    pass of one image under no_grad in evaluation mode), ``latency_batch_ms`` (the same at the
    recipe's batch) and ``device`` (:func:`device_name`). The model is a fresh one, thrown away
    after; the random number generator is left as it was, so the run trains as it would have
    untimed."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_model(config).to(device)
        channels_last = recipe.uses_channels_last(device)
        if channels_last:
            to_channels_last(model)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        batch = torch.randn(recipe.batch_size, *image_shape, device=device).contiguous(
            memory_format=memory_format
        )
        labels = torch.randint(0, config.num_classes, (recipe.batch_size,), device=device)
        choose_training_paths(model, batch, recipe)
        loss_of = nn.CrossEntropyLoss()

        def train_step() -> None:
            with _autocast(device, recipe):
                loss = loss_of(model(batch), labels)
            loss.backward()
            model.zero_grad(set_to_none=True)

        model.train()
        train_ms = _median_ms(train_step, device, warmup, repeats)
        model.eval()
        one = batch[:1]

        def infer(images: torch.Tensor) -> Callable[[], Any]:
            def step() -> None:
                with torch.no_grad(), _autocast(device, recipe):
                    model(images)

            return step

        latency = _median_ms(infer(one), device, warmup, repeats)
        latency_batch = _median_ms(infer(batch), device, warmup, repeats)
    return {
        "train_ms_per_image": train_ms / recipe.batch_size,
        "latency_ms": latency,
        "latency_batch_ms": latency_batch,
        "device": device_name(device),
    }

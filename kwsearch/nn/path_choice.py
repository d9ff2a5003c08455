"""Each dynamic layer's execution path, chosen by timing the exact paths on the device at hand.

:func:`choose_paths` runs a model once on an example input (without gradients, in evaluation mode,
so nothing in the model changes) to see which input each multi-path layer gets. For each layer and
input it then takes the path that ran fastest forward + backward in training mode under the
training's autocast, and keeps the choice in the layer (``layer.chosen_paths``). A choice timed
before on this device and torch version comes from the cache file (:mod:`kwsearch.nn.path_cache`);
layers with the same signature and input share one timing. With timing off (``measure=False``, or
``KWSEARCH_MEASURE_PATHS=0``), on the meta device, and for a run too short to pay for timing (the
passes would cost more than ``_TIMING_SHARE`` of the layer's modelled time over the run's
``steps``: a proxy of a few dozen steps), the cost model decides; a choice cached earlier is used
whatever the run's length.

The trainer calls it once before the first step and ``kwsearch inspect --paths`` shows what it
chose. Nothing else does: building a model, and the meta-device accounting, never time anything.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kwsearch.nn.cost import PathCost, cheapest
from kwsearch.nn.path_cache import PathCache
from kwsearch.nn.paths import InputSpec, MultiPathLayer, PathChoice, published_paths, recording_inputs

MEASURE_ENV = "KWSEARCH_MEASURE_PATHS"
_REPEATS = 3  # timed runs per path after one warm-up run; the fastest counts
# A path whose first timed run takes this many times the best path's is not run again: at a late
# ResNet stage on a CPU the per-sample kernels take seconds a run.
_GIVE_UP = 3.0
_HOPELESS = 10.0  # a path the cost model estimates at this many times its cheapest is not timed
# Timing a layer's paths takes (1 + _REPEATS) passes of each: a short run would spend more on it
# than a better path can save (the cost model's worst error seen is 4x), so a layer is timed only
# where its modelled timing costs at most this share of its modelled time over the run.
_TIMING_SHARE = 0.05


@dataclass(frozen=True)
class LayerPaths:
    """The path one layer of a model takes for one input."""

    name: str  # the layer's name in the model
    input: InputSpec
    choice: PathChoice


def measuring_enabled() -> bool:
    """False when ``KWSEARCH_MEASURE_PATHS`` is 0, off, false or no."""
    return os.environ.get(MEASURE_ENV, "1").strip().lower() not in {"0", "off", "false", "no"}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(step: Callable[[], None], device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    step()
    _synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _timing(layer: MultiPathLayer) -> Iterator[None]:
    """Training mode for the block; afterwards the layer's mode, forced path and buffers (the
    attention's batch-norm statistics) are as before."""
    forced, training = layer.path, layer.training
    buffers = [(b, b.clone()) for b in layer.buffers()]
    layer.train()
    try:
        yield
    finally:
        layer.path = forced
        layer.train(training)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def _worth_timing(costs: dict[str, PathCost], device: torch.device) -> list[str]:
    """The paths among ``costs`` that the cost model does not put far behind its favourite: its
    worst error seen is 4x (a CPU, 256x7x7: input_mixing modelled at 2.7x grouped_conv, measured
    at 0.7x), while such a path can take seconds a pass (cell_conv at 64x28x28)."""
    modelled = {path: cost.time(device.type) for path, cost in costs.items()}
    return [path for path, t in modelled.items() if t <= _HOPELESS * min(modelled.values())]


def _timing_pays(
    costs: dict[str, PathCost], candidates: Sequence[str], device: torch.device, steps: int
) -> bool:
    """Whether timing ``candidates`` costs at most ``_TIMING_SHARE`` of what the layer spends on
    its modelled fastest path over ``steps`` training steps (timing passes and steps alike are a
    forward and a backward pass). Every candidate runs a warm-up and one timed pass; only those
    within ``_GIVE_UP`` of the fastest (as modelled) run the other rounds."""
    modelled = [costs[path].time(device.type) for path in candidates]
    fastest = min(modelled)
    passes = 2 * sum(modelled) + (_REPEATS - 1) * sum(t for t in modelled if t < _GIVE_UP * fastest)
    return passes <= _TIMING_SHARE * steps * fastest


def _time_paths(
    layer: MultiPathLayer,
    spec: InputSpec,
    paths: Sequence[str],
    parameters: Sequence[nn.Parameter],
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Milliseconds of a forward + backward pass (gradients of the input and of ``parameters``,
    which must include everything the layer trains, shared warehouses too) of each of ``paths``
    for an input like ``spec``; a path that runs out of memory or raises is left out (with a
    warning), so a kernel that fails to compile or launch on this device is never chosen.

    Inputs come from a private generator and gradients are returned, not accumulated, so the
    model's random stream, gradients and state are as before.
    """
    device = next(layer.parameters()).device  # the example's: choose_paths ran the model on it
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(spec.shape, generator=generator, device=device, dtype=spec.dtype)
    if spec.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    inputs = [x, *(p for p in parameters if p.requires_grad)]

    def step() -> None:
        with _autocast(device, autocast_dtype):
            out = layer(x)
        torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)

    def run(path: str) -> float | None:
        """Seconds of one pass of ``path``; None when it runs out of memory or raises."""
        layer.path = path
        try:
            return _seconds(step, device)
        except torch.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None
        except Exception as error:  # e.g. a Triton kernel that does not compile for this device
            warnings.warn(
                f"path {path!r} of {layer.path_signature()} raised {type(error).__name__}: {error}; "
                "it is left out of the choice",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    seconds: dict[str, float] = {}
    with _timing(layer):
        # One warm-up pass each (allocations, kernel selection, set-up of new shapes), then rounds
        # over all paths, so a spell of load from other processes slows every path alike.
        running = [path for path in paths if run(path) is not None]
        for round_ in range(_REPEATS):
            for path in running:
                elapsed = run(path)
                seconds[path] = min(seconds.get(path, math.inf), math.inf if elapsed is None else elapsed)
            if round_ == 0 and seconds:
                best = min(seconds.values())
                running = [path for path in running if seconds[path] < _GIVE_UP * best]
    return {path: t * 1e3 for path, t in seconds.items() if math.isfinite(t)}


def _cache_key(layer: MultiPathLayer, spec: InputSpec, autocast_dtype: torch.dtype | None) -> str:
    autocast = str(autocast_dtype).removeprefix("torch.") if autocast_dtype is not None else "off"
    return f"{layer.path_signature()} @ {spec.describe()}, autocast {autocast}"


def _recorded_inputs(
    model: nn.Module, example: torch.Tensor, autocast_dtype: torch.dtype | None
) -> list[tuple[MultiPathLayer, InputSpec]]:
    """Each (multi-path layer, input) ``model`` meets running on ``example``, in call order, once.

    The model runs on the paths its layers would take (the cost model's, where nothing was chosen
    yet). Where one of those raises (a Triton kernel that does not compile for this device), it
    runs again on the published algorithms, so that the timing leaves that path out instead of
    the training ending here; an error they raise too is the model's own."""
    training = model.training
    model.eval()
    try:
        try:
            recorded = _run_recording(model, example, autocast_dtype)
        except Exception:
            free = [m for m in model.modules() if isinstance(m, MultiPathLayer) and m.path is None]
            with published_paths(free):  # forced paths stand
                recorded = _run_recording(model, example, autocast_dtype)
    finally:
        model.train(training)
    seen: dict[tuple[int, InputSpec], tuple[MultiPathLayer, InputSpec]] = {}
    for layer, spec in recorded:
        seen.setdefault((id(layer), spec), (layer, spec))
    return list(seen.values())


def _run_recording(
    model: nn.Module, example: torch.Tensor, autocast_dtype: torch.dtype | None
) -> list[tuple[MultiPathLayer, InputSpec]]:
    with recording_inputs() as recorded, torch.no_grad(), _autocast(example.device, autocast_dtype):
        model(example)
    return recorded


def choose_paths(
    model: nn.Module,
    example: torch.Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    measure: bool | None = None,
    cache_file: Path | None = None,
    steps: int | None = None,
) -> list[LayerPaths]:
    """Choose the path of every multi-path layer of ``model`` for the inputs it meets on
    ``example`` (a batch as training feeds it: shape, dtype, device, memory layout), timing the
    paths under ``autocast_dtype`` (None: no autocast) unless ``measure`` is False (None: on
    unless ``KWSEARCH_MEASURE_PATHS`` turns it off). ``steps`` is how many training steps the
    choice serves: a layer whose timing would not pay over them (:func:`_timing_pays`) takes the
    cost model's path unless the cache holds a timing; None times whatever is worth timing.
    Layers with a forced ``path`` keep it.

    Returns one :class:`LayerPaths` per layer and input, in the order the model calls them.
    """
    layers = [m for m in model.modules() if isinstance(m, MultiPathLayer)]
    if not layers:
        return []
    device = example.device
    measure = (measuring_enabled() if measure is None else measure) and device.type != "meta"
    cache = PathCache(device, cache_file) if measure else None
    parameters = list(model.parameters())
    names = {id(m): name for name, m in model.named_modules()}
    decided: dict[str, PathChoice] = {}  # by cache key: layers alike share a timing
    timed: dict[str, tuple[str, dict[str, float]]] = {}
    report = []
    for layer, spec in _recorded_inputs(model, example, autocast_dtype):
        if layer.path is not None:
            report.append(LayerPaths(names[id(layer)], spec, PathChoice(layer.path, "forced")))
            continue
        key = _cache_key(layer, spec, autocast_dtype)
        if key not in decided:
            decided[key] = _decide(layer, spec, key, device, cache, parameters, autocast_dtype, timed, steps)
        layer.chosen_paths[spec.shape] = decided[key]
        report.append(LayerPaths(names[id(layer)], spec, decided[key]))
    if cache is not None:
        cache.store(timed)
    return report


def _decide(
    layer: MultiPathLayer,
    spec: InputSpec,
    key: str,
    device: torch.device,
    cache: PathCache | None,
    parameters: Sequence[nn.Parameter],
    autocast_dtype: torch.dtype | None,
    timed: dict[str, tuple[str, dict[str, float]]],
    steps: int | None,
) -> PathChoice:
    """One layer's choice for one input; a new timing is added to ``timed``."""
    costs = layer.path_costs(torch.empty(spec.shape, device="meta"))
    if len(costs) == 1:
        return PathChoice(next(iter(costs)), "only")
    candidates = _worth_timing(costs, device) if cache is not None else []
    if len(candidates) < 2:  # timing off, or one path clearly ahead
        return PathChoice(cheapest(costs, device), "modelled")
    stored = cache.lookup(key)
    if stored is not None and stored[0] in costs:  # a path renamed since is timed again
        return PathChoice(stored[0], "cached", stored[1])
    if steps is not None and not _timing_pays(costs, candidates, device, steps):
        return PathChoice(cheapest(costs, device), "modelled")
    milliseconds = _time_paths(layer, spec, candidates, parameters, autocast_dtype)
    if not milliseconds:  # every path ran out of memory: training will too, with its own message
        return PathChoice(cheapest(costs, device), "modelled")
    fastest = min(milliseconds, key=milliseconds.__getitem__)
    timed[key] = (fastest, milliseconds)
    return PathChoice(fastest, "measured", milliseconds)

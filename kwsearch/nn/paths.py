"""Layers with several exact execution paths, and which path runs for an input.

A dynamic layer (KernelWarehouse, DY-CNN, ODConv) computes the same output several exact ways
whose speed depends on the shapes and the device. For each call a layer takes, in this order:

1. its forced ``path`` (tests, benchmarks, the published algorithm for MAC counts);
2. the path :func:`kwsearch.nn.choose_paths` chose for this input shape (timed on the device, or
   the cost model's when timing is off), kept in ``chosen_paths``;
3. the cost model's cheapest (:mod:`kwsearch.nn.cost`), for inputs no choice was made for (an
   evaluation batch of another size, a model never given to ``choose_paths``).

Everything here is plain Python on shapes, so ``torch.compile`` traces through it without a
graph break.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn

from kwsearch.nn.cost import PathCost, cheapest

ChoiceSource = Literal["measured", "cached", "modelled", "only", "forced"]


@dataclass(frozen=True)
class PathChoice:
    """The path a layer takes for one input shape, and how it was decided: ``measured`` (timed
    now), ``cached`` (timed earlier on this device and torch version), ``modelled`` (the cost
    model: timing off, or a run too short to pay for it), ``only`` (one path applies) or
    ``forced`` (the layer's ``path``)."""

    path: str
    source: ChoiceSource
    milliseconds: Mapping[str, float] = field(default_factory=dict)  # forward + backward, when timed


@dataclass(frozen=True)
class InputSpec:
    """What of a layer's input decides its paths' speed: shape, dtype, memory layout."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    channels_last: bool

    @classmethod
    def of(cls, x: torch.Tensor) -> InputSpec:
        # A 1x1 map is contiguous in both layouts; it counts as contiguous.
        channels_last = (
            x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        )
        return cls(tuple(x.shape), x.dtype, channels_last)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{'x'.join(map(str, self.shape))} {str(self.dtype).removeprefix('torch.')} {layout}"


# Set while choose_paths runs its recording pass: every layer appends the inputs it selects a path for.
_recorded: list[tuple[MultiPathLayer, InputSpec]] | None = None


@contextlib.contextmanager
def recording_inputs() -> Iterator[list[tuple[MultiPathLayer, InputSpec]]]:
    """Collect (layer, input) for every path selection made inside the ``with`` block."""
    global _recorded
    outer, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = outer


@contextlib.contextmanager
def published_paths(layers: Iterable[MultiPathLayer]) -> Iterator[None]:
    """Inside the block each of ``layers`` takes its published path; after it, its own again."""
    layers = list(layers)
    own = [layer.path for layer in layers]
    for layer in layers:
        layer.path = layer.published_path
    try:
        yield
    finally:
        for layer, path in zip(layers, own, strict=True):
            layer.path = path


class MultiPathLayer(nn.Module):
    """Base of layers with several exact execution paths (``paths``, all names the class knows).

    Subclasses give the cost of each path that applies to an input (:meth:`path_costs`), why a
    path does not apply (:meth:`path_unavailable`) and what decides the paths' speed besides the
    input (:meth:`path_signature`, a cache key), and call :meth:`select_path` in ``forward``.
    """

    paths: ClassVar[tuple[str, ...]] = ()
    # The path of the published algorithm: MAC counts use it, so they describe the config, not
    # whichever exact path a device happens to pick; it runs wherever torch runs.
    published_path: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.path: str | None = None  # forces one path; None: the chosen or the cheapest one
        self.chosen_paths: dict[tuple[int, ...], PathChoice] = {}  # by input shape

    def path_costs(self, x: torch.Tensor) -> dict[str, PathCost]:
        """The estimated cost of each path that applies to input ``x``."""
        raise NotImplementedError

    def path_unavailable(self, path: str) -> str | None:
        """Why ``path`` cannot compute this layer (a phrase), or None when it can."""
        return None

    def path_signature(self) -> str:
        """Everything about this layer, besides its input, that decides how fast each path runs."""
        raise NotImplementedError

    def select_path(self, x: torch.Tensor) -> str:
        """The path for input ``x``: forced, chosen for its shape, or the cost model's cheapest.

        Raises ValueError for a forced path the class does not know or this layer cannot take.
        """
        if _recorded is not None:
            _recorded.append((self, InputSpec.of(x)))
        if self.path is not None:
            self.check_forced_path()
            return self.path
        choice = self.chosen_paths.get(tuple(x.shape))
        return choice.path if choice is not None else cheapest(self.path_costs(x), x.device)

    def check_forced_path(self) -> None:
        """Raises ValueError when the forced ``path`` is unknown or does not apply to this layer."""
        name = type(self).__name__
        if self.path not in self.paths:
            raise ValueError(f"{name}.path must be one of {self.paths} or None, got {self.path!r}")
        reason = self.path_unavailable(self.path)
        if reason is not None:
            raise ValueError(f"{name}.path {self.path!r} {reason}")

"""Small layers the backbones share."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from kwsearch.nn import TemperatureControlled


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, rescaling the kept ones."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def nearest_multiple(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, at least ``divisor``."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def scaled(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``), so that
    narrow proxies keep channel counts with common divisors for KernelWarehouse cells."""
    if width == 1.0:
        return channels
    return nearest_multiple(channels * width, divisor)


def static_modules(module: nn.Module) -> Iterator[nn.Module]:
    """Descendants of ``module`` outside dynamic layers: what a backbone's own weight init may touch
    (a dynamic layer's attention has its family's init)."""
    for child in module.children():
        if isinstance(child, TemperatureControlled):
            continue
        yield child
        yield from static_modules(child)

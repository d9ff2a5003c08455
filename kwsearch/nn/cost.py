"""A small cost model to choose between exact execution paths of a dynamic layer.

Each path states the floating-point operations and the bytes it moves per forward call; the
estimated time is ``flops + balance * bytes``, where ``balance`` is the machine's ratio of
arithmetic rate to memory bandwidth (flops a byte of traffic costs in time). The figures are
orders of magnitude for the device kinds we run on, which is all the choice needs: the paths'
costs usually differ by integer factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# FLOP/s divided by bytes/s: ~1e11 / 2e10 on a laptop/server CPU core set; ~5e14 / 3e12 on H100.
_MACHINE_BALANCE = {"cpu": 5.0, "cuda": 150.0}
_FLOAT_BYTES = 4


@dataclass(frozen=True)
class PathCost:
    flops: float
    elements_moved: float  # tensor elements written and read beyond the inputs and outputs

    def time(self, device_type: str) -> float:
        balance = _MACHINE_BALANCE.get(device_type, _MACHINE_BALANCE["cuda"])
        return self.flops + balance * _FLOAT_BYTES * self.elements_moved


def cheapest(costs: dict[str, PathCost], device: torch.device) -> str:
    """Name of the path with the lowest estimated time on ``device`` (ties: first listed)."""
    return min(costs, key=lambda name: costs[name].time(device.type))

"""A small cost model to choose between exact execution paths of a dynamic layer where they are not
timed (:mod:`kwsearch.nn.path_choice`: timing off, inputs no choice was made for), and to decide
which paths are worth timing.

Each path states the floating-point operations and the tensor elements it moves per forward call
(beyond its inputs and outputs); the estimated time is ``flops + balance * bytes``, where
``balance`` is the device's ratio of arithmetic rate to memory bandwidth: how many FLOPs one byte
of traffic costs in time. The traffic that matters is the permuted, strided kind (per-sample
kernels, unfolded inputs), so the CPU figure is GEMM FLOP/s over strided-copy bytes/s, measured by
``bench/ops.py --balance`` (161 GFLOP/s over 4.5 GB/s = 36 on our 2-core machines). The CUDA
figure is the H100's bf16 dense rate over its HBM bandwidth (990 TFLOP/s / 3.35 TB/s).

A path that multiplies each sample by a kernel of its own (a convolution grouped over the batch,
a batched matmul) also says how many such kernel elements it uses: on a CPU the product passes
over them more often than the one write and read its ``elements_moved`` counts, which decides
between a per-sample path and a batch-shared GEMM in the late layers of a network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_MACHINE_BALANCE = {"cpu": 36.0, "cuda": 300.0}
_FLOAT_BYTES = 4
# Extra passes over the per-sample kernels a product by them makes, beyond writing and reading
# them once. On a CPU, oneDNN reorders every call's kernels into its blocked layout, and the
# backward pass writes a kernel gradient per sample. 2 is fitted to the timed paths of every
# family in path caches of ResNet18 layers and the quick start's (`bench/path_model.py`: from
# 1.5 to 3 every DY-CNN and ODConv layer takes its timed path). GPUs: not measured, none counted.
_PER_SAMPLE_KERNEL_PASSES = {"cpu": 2.0}


@dataclass(frozen=True)
class PathCost:
    flops: float
    elements_moved: float  # tensor elements written and read beyond the inputs and outputs
    per_sample_kernels: float = 0.0  # elements of the kernels of each sample's own it multiplies by

    def time(self, device_type: str) -> float:
        balance = _MACHINE_BALANCE.get(device_type, _MACHINE_BALANCE["cuda"])
        passes = _PER_SAMPLE_KERNEL_PASSES.get(device_type, 0.0)
        return self.flops + balance * _FLOAT_BYTES * (self.elements_moved + passes * self.per_sample_kernels)


def cheapest(costs: dict[str, PathCost], device: torch.device) -> str:
    """Name of the path with the lowest estimated time on ``device`` (ties: first listed)."""
    # A loop, not min(key=...): torch.compile traces this one without a graph break.
    best, best_time = "", math.inf
    for name, cost in costs.items():
        time = cost.time(device.type)
        if time < best_time:
            best, best_time = name, time
    return best

"""Who trains one model: one process (`ONE`), or the ranks of a data-parallel group
(`DataParallel`, inside a `torch.distributed` group such as the one Ray Train sets up).

The trainer asks the same five things of either, so one loop serves both: wrap the network for
the training step, sum the metrics' counters over the workers, make tensors equal to rank 0's
(SLaK's masks, normalisation statistics), gather every worker's random state for a checkpoint,
and whether this worker writes files.

Under DDP every worker takes the same batches as one worker would, split (the loaders' ``shard``),
and averages its gradients with the others', so the parameters stay equal on every worker and a
run means the same optimisation on any number of workers. BatchNorm statistics are each worker's
own, as in the references (none of KernelWarehouse, ODConv or SLaK converts to SyncBatchNorm, and
torch's runs on GPUs only); the running statistics evaluated and saved are rank 0's.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Workers:
    """One process training alone: nothing to share."""

    rank = 0
    size = 1

    @property
    def is_main(self) -> bool:
        """Whether this worker writes the run's files (checkpoints)."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, size): which share of every batch this worker's loaders yield."""
        return self.rank, self.size

    def wrap(self, network: nn.Module) -> nn.Module:
        """The module the training step calls."""
        return network

    def sum(self, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``values`` summed over the workers."""
        return values

    def share(self, tensors: Iterable[torch.Tensor]) -> None:
        """Make ``tensors`` equal to rank 0's, in place."""

    def gather(self, value: Any) -> list[Any]:
        """Every worker's ``value``, by rank."""
        return [value]


ONE = Workers()


def worker_seed(seed: int, rank: int) -> int:
    """The torch seed of data-parallel worker ``rank`` (> 0) in a run seeded ``seed``: its own,
    so that dropout and SLaK's random regrowth differ between workers, as in the references
    (which seed rank r with seed + r)."""
    digest = hashlib.sha256(f"kwsearch-worker:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DataParallel(Workers):
    """This process's rank in the initialised default `torch.distributed` process group (gloo on
    CPUs, NCCL on GPUs)."""

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DataParallel needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    def wrap(self, network: nn.Module) -> nn.Module:
        # Buffers are not broadcast in every forward: that would be a collective in evaluation
        # too, whose shares of a short last batch differ between workers. `share` makes the
        # normalisation statistics rank 0's before they are used.
        device = next(network.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        with warnings.catch_warnings():  # torch 2.13 renames it; older releases know only this name
            warnings.simplefilter("ignore", FutureWarning)
            return DistributedDataParallel(network, device_ids=ids, broadcast_buffers=False)

    def sum(self, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        summed = torch.stack([v.to(torch.float64) for v in values])
        dist.all_reduce(summed)
        return tuple(s.to(v.dtype) for s, v in zip(summed, values, strict=True))

    def share(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            # masks go as bytes: not every backend sends bool tensors
            dist.broadcast(tensor.view(torch.uint8) if tensor.dtype == torch.bool else tensor, src=0)

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

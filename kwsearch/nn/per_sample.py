"""Convolution with a different kernel for every sample of the batch.

Two exact ways: one grouped convolution over the batch folded into channels (any kernel, any
groups), or a batched matrix multiply when the kernel is pointwise and ungrouped. Which is used
is decided by the caller's cost model, so both are public.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def output_size(
    spatial: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Spatial size of a convolution's output for an input of spatial size ``spatial``."""
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(spatial, kernel_size, stride, padding, dilation, strict=True)
    )


def is_pointwise(kernel_size: Sequence[int], padding: Sequence[int], groups: int) -> bool:
    """True when a convolution is a per-position matrix multiply (1x1, unpadded, ungrouped)."""
    return all(k == 1 for k in kernel_size) and all(p == 0 for p in padding) and groups == 1


def grouped_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """``x`` (B, C, *S) convolved sample by sample with ``weight`` (B, O, C/groups, *K).

    ``bias`` is (B, O) or None. The batch is folded into the channel axis and run as one
    convolution with ``groups * B`` groups.
    """
    batch = x.shape[0]
    out_channels = weight.shape[1]
    folded = weight.reshape(batch * out_channels, *weight.shape[2:])
    y = _CONV[x.dim() - 2](
        x.reshape(1, -1, *x.shape[2:]),
        folded,
        None,
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        groups * batch,
    )
    y = y.view(batch, out_channels, *y.shape[2:])
    if bias is not None:
        y = y + bias.view(batch, out_channels, *([1] * (x.dim() - 2)))
    return y


def pointwise_bmm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int]
) -> torch.Tensor:
    """Pointwise per-sample convolution as a batched matrix multiply.

    ``weight`` is (B, O, C) or (B, O, C, 1, ...); a stride just subsamples the input.
    """
    if any(s != 1 for s in stride):
        x = x[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    batch, channels, *spatial = x.shape
    weight = weight.reshape(batch, -1, channels)
    y = (
        torch.baddbmm(bias.unsqueeze(-1), weight, x.reshape(batch, channels, -1))
        if bias is not None
        else (torch.bmm(weight, x.reshape(batch, channels, -1)))
    )
    return y.view(batch, -1, *spatial)

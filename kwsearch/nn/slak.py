"""SLaK: sparse large kernels (Liu et al., ICLR 2023), as VITA-Group/SLaK builds them.

A large depthwise M x M convolution is decomposed into an M x N and an N x M kernel in parallel,
plus an N x N kernel (N = ``small_kernel`` < M), each followed by BatchNorm, and summed (the
reference's ``ReparamLargeKernelConv`` with ``Decom=True``). Every branch pads to keep the
feature map's size. In evaluation the three branches equal one M x M convolution with a bias (BN
folded in): :meth:`SLaKConv2d.merged_conv` returns it and :meth:`SLaKConv2d.reparameterize`
switches the layer to it.

The family decides per layer: a 2-d depthwise convolution with a square odd kernel larger than
``small_kernel``, stride 1 and "same" padding becomes a SLaK layer; every other layer (stems,
pointwise convs, classifiers, small depthwise kernels) is a plain one. The kernel size comes from
the backbone (``slak_*`` backbones take per-stage ``kernel_size``). The family also carries the
dynamic sparse-training settings (:class:`kwsearch.nn.sparsity.SparseTraining`), which the
trainer applies to the finalized model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn

from kwsearch.nn.factory import LayerBuilder, LayerShape, register_family, static_layer
from kwsearch.nn.sparsity import LargeKernelConv2d, SparseTraining, attach_sparse_training


class SLaKOptions(SparseTraining):
    """Options of the ``slak`` family: the small kernel and the sparse-training settings."""

    small_kernel: int = 5

    @field_validator("small_kernel")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size < 1 or size % 2 == 0:
            raise ValueError(f"must be a positive odd number (it is centred in the large kernel), got {size}")
        return size


class _ConvBN(nn.Module):
    """A bias-free depthwise conv with "same" padding, then BatchNorm."""

    def __init__(self, channels: int, kernel_size: tuple[int, int], conv: type[nn.Conv2d]) -> None:
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.conv = conv(channels, channels, kernel_size, padding=padding, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel, bias) of the conv with the BN's running statistics folded in (evaluation)."""
        scale = self.bn.weight / (self.bn.running_var + self.bn.eps).sqrt()
        return self.conv.weight * scale.view(-1, 1, 1, 1), self.bn.bias - self.bn.running_mean * scale


def _centred(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """``kernel`` (C, 1, h, w) zero-padded to (C, 1, size, size) around its centre."""
    rows, cols = (size - kernel.shape[2]) // 2, (size - kernel.shape[3]) // 2
    return F.pad(kernel, (cols, cols, rows, rows))


class SLaKConv2d(nn.Module):
    """A depthwise M x M convolution as BN(M x N) + BN(N x M) + BN(N x N) over ``channels``.

    Raises ValueError unless M > N and both are odd (each kernel is centred on the output pixel).
    """

    def __init__(self, channels: int, kernel_size: int, small_kernel: int) -> None:
        super().__init__()
        if kernel_size <= small_kernel or kernel_size % 2 == 0 or small_kernel % 2 == 0:
            raise ValueError(
                "SLaK needs odd kernel sizes with kernel_size > small_kernel, "
                f"got {kernel_size} and {small_kernel}"
            )
        self.channels = channels
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.vertical = _ConvBN(channels, (kernel_size, small_kernel), LargeKernelConv2d)
        self.horizontal = _ConvBN(channels, (small_kernel, kernel_size), LargeKernelConv2d)
        self.small = _ConvBN(channels, (small_kernel, small_kernel), nn.Conv2d)
        self.merged: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged is not None:
            return self.merged(x)
        return self.vertical(x) + self.horizontal(x) + self.small(x)

    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel (C, 1, M, M), bias (C,)) of the one convolution equal to the branches in
        evaluation (BN with running statistics)."""
        folded = [branch.folded() for branch in (self.vertical, self.horizontal, self.small)]
        kernel = sum(_centred(k, self.kernel_size) for k, _ in folded)
        bias = sum(b for _, b in folded)
        return kernel, bias

    def merged_conv(self) -> nn.Conv2d:
        """A plain M x M depthwise conv with bias that computes what this layer does in evaluation."""
        if self.merged is not None:
            return self.merged
        conv = nn.Conv2d(
            self.channels,
            self.channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            groups=self.channels,
            bias=True,
        ).to(device=self.small.conv.weight.device, dtype=self.small.conv.weight.dtype)
        with torch.no_grad():
            kernel, bias = self.merged_kernel()
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
        return conv

    def reparameterize(self) -> None:
        """Replace the branches by their merged convolution (for inference: the BN statistics are
        frozen into it, so train mode no longer normalises by batch statistics)."""
        if self.merged is None:
            self.merged = self.merged_conv()
            del self.vertical, self.horizontal, self.small

    def extra_repr(self) -> str:
        merged = ", merged" if self.merged is not None else ""
        return f"{self.channels}, kernel_size={self.kernel_size}, small_kernel={self.small_kernel}{merged}"


def is_large_depthwise(shape: LayerShape, small_kernel: int) -> bool:
    """Whether the SLaK family builds ``shape`` as a decomposed large kernel."""
    if shape.linear or shape.dims != 2:
        return False
    size = shape.kernel_size[0]
    return (
        shape.in_channels == shape.groups == shape.out_channels
        and shape.kernel_size == (size, size)
        and size % 2 == 1
        and size > small_kernel
        and shape.stride == (1, 1)
        and shape.dilation == (1, 1)
        and shape.padding == (size // 2, size // 2)
    )


class SLaKBuilder(LayerBuilder):
    """Large depthwise convolutions become :class:`SLaKConv2d` (their bias is the branches' BN
    shift); every other layer is a plain one."""

    options: SLaKOptions

    def build(self, shape: LayerShape, name: str) -> nn.Module:
        if is_large_depthwise(shape, self.options.small_kernel):
            return SLaKConv2d(shape.in_channels, shape.kernel_size[0], self.options.small_kernel)
        return static_layer(shape)

    def finalize(self, model: nn.Module) -> None:
        attach_sparse_training(model, self.options)


register_family("slak", SLaKOptions, SLaKBuilder)

"""DY-CNN: dynamic convolution over attention of kernels (Chen et al., CVPR 2020).

Every layer keeps ``K`` kernels and mixes them per sample with a softmax attention computed from
the globally pooled input: ``W_b = sum_k pi_bk W_k``, ``b_b = sum_k pi_bk bias_k``. Two exact ways
run it, chosen per input shape by timing (:func:`kwsearch.nn.choose_paths`) or the cost model:

- ``assemble``: build every sample's kernel, then one per-sample convolution;
- ``bank``: convolve with all ``K`` kernels as one ordinary convolution, then mix the ``K``
  outputs by ``pi``. ``K`` times the arithmetic of the conv but no per-sample kernel, which wins
  when kernels are large and the output is small.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from kwsearch.nn.cost import PathCost
from kwsearch.nn.factory import register_family
from kwsearch.nn.kernel_bank import KernelBankBuilder, KernelBankConv2d, SoftmaxTemperature
from kwsearch.nn.per_sample import grouped_conv, is_pointwise, pointwise_bmm
from kwsearch.nn.temperature import SOFTMAX_DEFAULT_SCHEDULE

PATHS = ("assemble", "bank")

# A hidden width of int(in * reduction) is 0 for a 3-channel stem at reduction 0.25, which would
# make the attention a constant; at least this many hidden units keep it input-dependent.
MIN_HIDDEN = 4


class DyConvOptions(BaseModel):
    """Options of the ``dyconv`` family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel_num: int = Field(default=4, ge=1)
    reduction: float = Field(default=0.25, gt=0, le=1)
    temperature: SoftmaxTemperature = SOFTMAX_DEFAULT_SCHEDULE


def dyconv_costs(
    batch: int,
    in_channels: int,
    out_channels: int,
    kernel_elems: int,
    groups: int,
    kernel_num: int,
    out_positions: int,
) -> dict[str, PathCost]:
    """Estimated FLOPs and intermediate traffic of each path, ``assemble`` first.

    ``kernel_elems`` is kh * kw, ``out_positions`` the output's Ho * Wo. Returns ``{path: cost}``.
    """
    kernel = out_channels * (in_channels // groups) * kernel_elems  # elements of one kernel
    conv = 2.0 * batch * kernel * out_positions  # one convolution of the batch
    bank_outputs = batch * kernel_num * out_channels * out_positions
    # Stacking the bank for groups > 1 reorders the K kernels, a copy of the whole bank.
    bank_copy = 2.0 * kernel_num * kernel if groups > 1 else 0.0
    return {
        # A (B, K) x (K, kernel) product, then the conv; the per-sample kernels are written and read.
        "assemble": PathCost(
            flops=2.0 * batch * kernel_num * kernel + conv,
            elements_moved=2.0 * batch * kernel,
            per_sample_kernels=batch * kernel,
        ),
        # K convolutions at once, then a K-term weighted sum; the K outputs are written and read.
        "bank": PathCost(
            flops=kernel_num * conv + 2.0 * bank_outputs, elements_moved=2.0 * bank_outputs + bank_copy
        ),
    }


class _KernelAttention(nn.Module):
    """Pooled features -> K logits: Linear -> ReLU -> Linear (the softmax is the layer's)."""

    def __init__(self, in_channels: int, hidden: int, kernel_num: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, kernel_num)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(pooled)))


class DyConv2d(KernelBankConv2d):
    """A 2-d DY-CNN convolution: ``kernel_num`` kernels mixed per sample by softmax attention.

    ``path`` forces an execution path (``"assemble"`` or ``"bank"``); None takes the one chosen for
    the input's shape, or the cost model's.
    """

    paths = PATHS

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        kernel_num: int = 4,
        reduction: float = 0.25,
        temperature: float = SOFTMAX_DEFAULT_SCHEDULE.start,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            kernel_num=kernel_num,
            reduction=reduction,
            temperature=temperature,
        )
        self.register_parameter("bias", nn.Parameter(torch.empty(kernel_num, out_channels)) if bias else None)
        self.attention = _KernelAttention(
            in_channels, max(int(in_channels * reduction), MIN_HIDDEN), kernel_num
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The DY-CNN initialisation: every kernel and attention layer as a standalone ReLU layer."""
        self.init_kernels()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for fc in (self.attention.fc1, self.attention.fc2):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)

    def kernel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the (B, K) softmax attention over the kernels for input ``x`` (B, C, H, W)."""
        return torch.softmax(self.attention(x.mean(dim=(2, 3))) / self.temperature, dim=1)

    def path_costs(self, x: torch.Tensor) -> dict[str, PathCost]:
        """Returns the estimated cost of each path for input ``x``."""
        return dyconv_costs(
            x.shape[0],
            self.in_channels,
            self.out_channels,
            self.kernel_size[0] * self.kernel_size[1],
            self.groups,
            self.kernel_num,
            self.output_positions(x),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pi = self.kernel_attention(x)
        if self.select_path(x) == "bank":
            return self._bank(x, pi)
        return self._assemble(x, pi)

    def _assemble(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        kernels = torch.mm(pi, self.weight.flatten(1)).view(batch, *self.weight.shape[1:])
        bias = None if self.bias is None else torch.mm(pi, self.bias)
        if is_pointwise(self.kernel_size, self.padding, self.groups):
            return pointwise_bmm(x, kernels, bias, self.stride)
        return grouped_conv(x, kernels, bias, self.stride, self.padding, self.dilation, self.groups)

    def _bank(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        k, out, groups = self.kernel_num, self.out_channels, self.groups
        # A grouped conv feeds output block i from input group i only, so each group's block
        # must hold that group's output channels of all K kernels: order (group, kernel, channel).
        kernel_shape = self.weight.shape[2:]
        bank = (
            self.weight.view(k, groups, out // groups, *kernel_shape)
            .transpose(0, 1)
            .reshape(-1, *kernel_shape)
        )
        y = F.conv2d(x, bank, None, self.stride, self.padding, self.dilation, groups)
        batch, _, height, width = y.shape
        y = y.view(batch, groups, k, out // groups, height, width)
        y = torch.einsum("bgkohw,bk->bgohw", y, pi).reshape(batch, out, height, width)
        if self.bias is not None:
            y = y + torch.mm(pi, self.bias).view(batch, out, 1, 1)
        return y


class DyConvBuilder(KernelBankBuilder):
    family = "dyconv"
    layer = DyConv2d


register_family("dyconv", DyConvOptions, DyConvBuilder, builds_linear=False)

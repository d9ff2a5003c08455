"""ODConv: omni-dimensional dynamic convolution (Li, Zhou & Yao, ICLR 2022).

Semantics follow the authors' code (OSVAI/ODConv). A shared trunk (pool, 1x1 without bias, BN,
ReLU) feeds four heads, each sharpened by the temperature:

- channel attention ``ca`` (sigmoid, per input channel) multiplies the input features;
- filter attention ``fa`` (sigmoid, per output channel) multiplies the output; absent for
  depthwise convs (in == groups == out);
- spatial attention ``sa`` (sigmoid, per kernel position) multiplies every kernel; absent for 1x1;
- kernel attention ``ka`` (softmax over the K kernels); absent when K == 1.

``y = conv(x * ca, sum_k ka_k (sa * W_k)) * fa (+ bias)``. Paths: ``assemble`` builds each
sample's kernel and runs a per-sample conv; ``bank`` (ungrouped) scales the unfolded input by
``sa``, applies all K kernels in one GEMM shared by the batch and mixes the K outputs by ``ka``;
``static_kernel`` (1x1 with K == 1, where the kernel is the same for every sample) runs one plain
convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from kwsearch.nn.cost import PathCost
from kwsearch.nn.cpu_matmul import matmul
from kwsearch.nn.factory import register_family
from kwsearch.nn.kernel_bank import KernelBankBuilder, KernelBankConv2d, SoftmaxTemperature
from kwsearch.nn.per_sample import grouped_conv, is_pointwise, output_size, pointwise_bmm
from kwsearch.nn.temperature import SOFTMAX_DEFAULT_SCHEDULE

PATHS = ("assemble", "bank", "static_kernel")

# The reference's floor on the trunk width (its ``min_channel``): at reduction 1/16 a 64-channel
# layer would otherwise get 4 hidden units for four heads.
MIN_HIDDEN = 16


class ODConvOptions(BaseModel):
    """Options of the ``odconv`` family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel_num: int = Field(default=4, ge=1)
    reduction: float = Field(default=0.0625, gt=0, le=1)
    temperature: SoftmaxTemperature = SOFTMAX_DEFAULT_SCHEDULE


class Attentions(NamedTuple):
    """The four attentions of one batch; None where the head is absent (it would be all ones)."""

    channel: torch.Tensor  # (B, in)
    filter: torch.Tensor | None  # (B, out)
    spatial: torch.Tensor | None  # (B, kh * kw)
    kernel: torch.Tensor | None  # (B, K)


def odconv_costs(
    batch: int,
    in_channels: int,
    out_channels: int,
    kernel_elems: int,
    groups: int,
    kernel_num: int,
    in_positions: int,
    out_positions: int,
) -> dict[str, PathCost]:
    """Estimated FLOPs and intermediate traffic of each applicable path.

    ``kernel_elems`` is kh * kw; ``in_positions`` / ``out_positions`` are H * W and Ho * Wo.
    Returns ``{path: cost}``; ``static_kernel`` is present only for 1x1 kernels with K == 1.
    """
    kernel = out_channels * (in_channels // groups) * kernel_elems  # elements of one kernel
    conv = 2.0 * batch * kernel * out_positions
    # Both paths scale the input by ca (a tensor written and read back) and the output by fa.
    scaling = batch * (in_channels * in_positions + out_channels * out_positions)
    scaled_input = 2.0 * batch * in_channels * in_positions
    # A (B, K) x (K, kernel) product and the spatial scaling; the per-sample kernels are written and read.
    assembly = 2.0 * batch * kernel_num * kernel + (batch * kernel if kernel_elems > 1 else 0.0)
    costs = {
        "assemble": PathCost(
            flops=conv + scaling + assembly,
            elements_moved=scaled_input + 2.0 * batch * kernel,
            per_sample_kernels=batch * kernel,
        )
    }
    if groups == 1:
        # Unfold the scaled input, scale it by sa per kernel position, then one GEMM with all K
        # kernels shared by the batch and a K-term mix: K x the conv, no per-sample kernel.
        columns = batch * in_channels * kernel_elems * out_positions
        outputs = batch * kernel_num * out_channels * out_positions
        costs["bank"] = PathCost(
            flops=kernel_num * conv + scaling + columns + 2.0 * outputs,
            elements_moved=scaled_input + 4.0 * columns + 2.0 * outputs,
        )
    if kernel_elems == 1 and kernel_num == 1:
        costs["static_kernel"] = PathCost(flops=conv + scaling, elements_moved=scaled_input)
    return costs


class _OmniAttention(nn.Module):
    """Pooled features -> the four attentions (ODConv's ``Attention`` with Linear for 1x1 conv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_elems: int,
        groups: int,
        kernel_num: int,
        hidden: int,
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.channel_fc = nn.Linear(hidden, in_channels)
        depthwise = in_channels == groups == out_channels
        self.filter_fc = None if depthwise else nn.Linear(hidden, out_channels)
        self.spatial_fc = None if kernel_elems == 1 else nn.Linear(hidden, kernel_elems)
        self.kernel_fc = None if kernel_num == 1 else nn.Linear(hidden, kernel_num)

    def forward(self, pooled: torch.Tensor, temperature: torch.Tensor) -> Attentions:
        # In training BN normalises over the batch, so like the reference a batch of 1 fails here.
        h = F.relu(self.bn(self.fc(pooled)))

        def sigmoid_head(fc: nn.Linear | None) -> torch.Tensor | None:
            return None if fc is None else torch.sigmoid(fc(h) / temperature)

        kernel = None if self.kernel_fc is None else torch.softmax(self.kernel_fc(h) / temperature, dim=1)
        return Attentions(
            sigmoid_head(self.channel_fc), sigmoid_head(self.filter_fc), sigmoid_head(self.spatial_fc), kernel
        )


class ODConv2d(KernelBankConv2d):
    """A 2-d ODConv convolution with ``kernel_num`` kernels and four attentions.

    ``path`` forces an execution path (``"assemble"``, ``"bank"`` or ``"static_kernel"``); None
    takes the one chosen for the input's shape, or the cost model's.
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
        reduction: float = 0.0625,
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
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
        self.attention = _OmniAttention(
            in_channels,
            out_channels,
            self.kernel_size[0] * self.kernel_size[1],
            groups,
            kernel_num,
            max(int(in_channels * reduction), MIN_HIDDEN),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation: kernels and heads as standalone ReLU layers, BN identity."""
        self.init_kernels()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for m in self.attention.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.attention.bn.reset_parameters()  # weight 1, bias 0, fresh running statistics

    def attentions(self, x: torch.Tensor) -> Attentions:
        """Returns the four attentions for input ``x`` (B, C, H, W)."""
        return self.attention(x.mean(dim=(2, 3)), self.temperature)

    def path_costs(self, x: torch.Tensor) -> dict[str, PathCost]:
        """Returns the estimated cost of each applicable path for input ``x``."""
        return odconv_costs(
            x.shape[0],
            self.in_channels,
            self.out_channels,
            self.kernel_size[0] * self.kernel_size[1],
            self.groups,
            self.kernel_num,
            x.shape[2] * x.shape[3],
            self.output_positions(x),
        )

    def path_unavailable(self, path: str) -> str | None:
        if path == "static_kernel" and (self.kernel_size != (1, 1) or self.kernel_num != 1):
            return "needs a 1x1 kernel and kernel_num == 1"
        if path == "bank" and self.groups != 1:
            return "needs groups == 1"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.attentions(x)
        path = self.select_path(x)
        batch = x.shape[0]
        x = x * att.channel.view(batch, -1, 1, 1)
        if path == "static_kernel":
            y = F.conv2d(x, self.weight[0], None, self.stride, self.padding, self.dilation, self.groups)
        elif path == "bank":
            y = self._bank(x, att)
        else:
            y = self._assemble(x, att)
        if att.filter is not None:
            y = y * att.filter.view(batch, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def _bank(self, x: torch.Tensor, att: Attentions) -> torch.Tensor:
        # sa depends on the sample and the kernel position only, so it can scale the unfolded
        # input instead of every kernel; the K kernels are then shared by the whole batch.
        batch = x.shape[0]
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, in*k*k, L)
        positions = columns.shape[-1]
        if att.spatial is not None:
            columns = (
                columns.view(batch, self.in_channels, -1, positions) * att.spatial.view(batch, 1, -1, 1)
            ).view(batch, -1, positions)
        bank = self.weight.reshape(self.kernel_num * self.out_channels, -1)
        # one product for the whole batch (on oneDNN for float32 on a CPU: twice MKL's rate there)
        rows = columns.transpose(1, 2).reshape(batch * positions, -1)
        y = matmul(rows, bank.t()).view(batch, positions, self.kernel_num, self.out_channels)
        y = y[:, :, 0].transpose(1, 2) if att.kernel is None else torch.einsum("blko,bk->bol", y, att.kernel)
        spatial = output_size(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation)
        return y.reshape(batch, self.out_channels, *spatial)

    def _assemble(self, x: torch.Tensor, att: Attentions) -> torch.Tensor:
        batch = x.shape[0]
        shape = self.weight.shape[1:]
        if att.kernel is None:
            kernels = self.weight.expand(batch, *shape)  # K == 1: every sample starts from W_0
        else:
            kernels = torch.mm(att.kernel, self.weight.flatten(1)).view(batch, *shape)
        if att.spatial is not None:
            # sa is per sample, not per kernel, so it factors out of the sum over k:
            # sum_k ka_k (sa * W_k) = sa * sum_k ka_k W_k, one K-fold smaller product.
            kernels = kernels * att.spatial.view(batch, 1, 1, *self.kernel_size)
        if is_pointwise(self.kernel_size, self.padding, self.groups):
            return pointwise_bmm(x, kernels, None, self.stride)
        return grouped_conv(x, kernels, None, self.stride, self.padding, self.dilation, self.groups)


class ODConvBuilder(KernelBankBuilder):
    family = "odconv"
    layer = ODConv2d


register_family("odconv", ODConvOptions, ODConvBuilder, builds_linear=False)

"""The frame DY-CNN and ODConv share: a 2-d convolution with a bank of K kernels mixed per sample.

It holds the geometry and the bank; the families add their attention, their bias and their exact
execution paths.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import torch
from pydantic import AfterValidator
from torch import nn
from torch.nn.modules.utils import _pair

from kwsearch.nn.factory import ConvSpecError, LayerBuilder, LayerShape
from kwsearch.nn.paths import MultiPathLayer
from kwsearch.nn.per_sample import output_size
from kwsearch.nn.temperature import (
    SOFTMAX_DEFAULT_SCHEDULE,
    TemperatureControlled,
    TemperatureSchedule,
    completed_from,
)


def _positive(schedule: TemperatureSchedule) -> TemperatureSchedule:
    if min(schedule.start, schedule.end) <= 0:
        raise ValueError("the attention divides its logits by the temperature: 'start' and 'end' must be > 0")
    return schedule


# The ``temperature`` option of DY-CNN and ODConv: a partial schedule completed from the published one.
SoftmaxTemperature = Annotated[
    TemperatureSchedule, completed_from(SOFTMAX_DEFAULT_SCHEDULE), AfterValidator(_positive)
]


class KernelBankConv2d(TemperatureControlled, MultiPathLayer):
    """Base of 2-d convolutions whose kernel is a per-sample mixture of ``kernel_num`` kernels.

    ``path`` forces one of ``paths``; None takes the chosen or the cheapest one
    (:class:`kwsearch.nn.paths.MultiPathLayer`).
    """

    published_path = "assemble"  # the reference implementation's algorithm

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int],
        dilation: int | tuple[int, int],
        groups: int,
        *,
        kernel_num: int,
        reduction: float,
        temperature: float,
    ) -> None:
        super().__init__(temperature)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        if kernel_num < 1:
            raise ValueError(f"kernel_num must be >= 1, got {kernel_num}")
        if not 0 < reduction <= 1:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.kernel_num = kernel_num
        self.weight = nn.Parameter(
            torch.empty(kernel_num, out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias: nn.Parameter | None
        self.register_parameter("bias", None)  # families register theirs (shapes differ)

    def init_kernels(self) -> None:
        """Each kernel initialised as a standalone ReLU layer, as both references do."""
        for kernel in self.weight.data:
            nn.init.kaiming_normal_(kernel, mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, kernel_num={self.kernel_num}"
        )

    def output_positions(self, x: torch.Tensor) -> int:
        """Ho * Wo for input ``x``."""
        return math.prod(output_size(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation))

    def path_signature(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"kernel_num={self.kernel_num})"
        )


class KernelBankBuilder(LayerBuilder):
    """Builds a family's :class:`KernelBankConv2d`; these families make 2-d convolutions only."""

    family: ClassVar[str]
    layer: ClassVar[type[KernelBankConv2d]]

    def build(self, shape: LayerShape, name: str) -> nn.Module:
        """The family's layer for ``shape``. Raises ConvSpecError for linear or non-2-d layers."""
        if shape.linear or shape.dims != 2:
            kind = "a linear layer" if shape.linear else f"a {shape.dims}-d convolution"
            raise ConvSpecError(
                f"conv.family: {self.family} builds 2-d convolutions only; layer {name!r} is {kind}"
            )
        return self.layer(
            shape.in_channels,
            shape.out_channels,
            shape.kernel_size,
            shape.stride,
            shape.padding,
            shape.dilation,
            shape.groups,
            shape.bias,
            kernel_num=self.options.kernel_num,
            reduction=self.options.reduction,
            temperature=self.options.temperature.start,
        )

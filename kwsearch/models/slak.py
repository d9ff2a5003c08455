"""SLaK backbones: ConvNeXt with per-stage large depthwise kernels and wider stages, as
VITA-Group/SLaK (``models/SLaK.py``) builds them.

The architecture is ConvNeXt's (the blocks are :mod:`kwsearch.models.convnext`'s); SLaK changes
two arguments. ``kernel_size`` is the depthwise kernel of each stage (the paper's 51, 49, 47, 13)
and ``width_factor`` widens every stage as the reference does, ``int(dims * width_factor)``
(1.3 in the paper, which keeps the parameter count near ConvNeXt's once 40% of the weights are
pruned). The conv family decides what a large kernel is: ``conv: {family: slak}`` gives the
decomposed sparse kernels of the paper, ``static`` the dense M x M baseline.

``slak_nano`` is the proxy: timm's ConvNeXt-Nano depths and dims with kernels 13, 11, 9, 7; with
``width`` 0.25 and ``backbone_args.patch_size: 2`` it trains on 28x28 images in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kwsearch.models.convnext import CONV_DEFAULTS, ConvNeXt
from kwsearch.models.registry import register_backbone

REFERENCE_WIDTH_FACTOR = 1.3


def _variant(name: str, depths: tuple[int, ...], dims: tuple[int, ...], kernels: tuple[int, ...]) -> None:
    @register_backbone(name, CONV_DEFAULTS, kwargs_to=ConvNeXt)
    def build(
        conv: Mapping[str, Any],
        kernel_size: int | Sequence[int] = kernels,
        width_factor: float = REFERENCE_WIDTH_FACTOR,
        **kwargs,
    ) -> ConvNeXt:
        wide = [int(d * width_factor) for d in dims]  # truncated, as the reference
        return ConvNeXt(depths, wide, conv, kernel_size=kernel_size, **kwargs)

    build.__doc__ = f"{name}: ConvNeXt with depths {depths}, dims {dims} x width_factor, kernels {kernels}"


_variant("slak_tiny", (3, 3, 9, 3), (96, 192, 384, 768), (51, 49, 47, 13))
_variant("slak_small", (3, 3, 27, 3), (96, 192, 384, 768), (51, 49, 47, 13))
_variant("slak_base", (3, 3, 27, 3), (128, 256, 512, 1024), (51, 49, 47, 13))
_variant("slak_nano", (2, 2, 8, 2), (80, 160, 320, 640), (13, 11, 9, 7))

"""ConvNeXt (Tiny, and a Nano proxy) built through the conv factory, named as the KernelWarehouse
reference names it.

Layer names follow the KernelWarehouse code (``kw_convnext.py``): the stem is ``stagestem_conv0``,
the downsampling conv in front of stage ``i + 1`` is ``stage{i}_layerds_conv0`` (so it draws on
stage ``i``'s warehouses), and a block's convs are ``stage{s}_layer{l}_dwconv0`` (k x k depthwise),
``..._pwconv1`` and ``..._pwconv2`` (the inverted-bottleneck MLP, as 1x1 convs). The reference's
preset shares ``["layer", "pwconv"]``: per stage one warehouse for the depthwise convs, one for
both MLP convs and one for the downsampling conv. Every conv has a bias, as in ConvNeXt.

With KernelWarehouse the stem and the downsampling convs are KW layers too, as in the reference,
whose attentions all use LayerNorm: so does every KW layer here unless the spec sets ``norm_layer``
(:data:`CONV_DEFAULTS`). The per-layer families (DY-CNN,
ODConv; no reference ConvNeXt) keep the stem static, as their references keep the first layer
and patch embeddings static, and make every other conv dynamic. The classifier is static.

``convnext_nano`` is timm's narrow variant (depths 2, 2, 8, 2; dims 80, 160, 320, 640) for fast
proxy searches. ``patch_size`` is the stem's stride: with the default 4, inputs need 32 pixels or
more (28x28 inputs would shrink to nothing before the last stage); use 2 for 28x28.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kwsearch.models.config import ModelConfigError
from kwsearch.models.layers import DropPath, scaled, static_modules
from kwsearch.models.registry import register_backbone
from kwsearch.nn import ConvFactory

# kw_convnext.py builds its warehouse manager with norm_layer=nn.LayerNorm: every attention of the
# reference ConvNeXt normalises with LayerNorm, where the family's default (its ResNet) uses BatchNorm.
CONV_DEFAULTS = {"kw": {"norm_layer": "layer"}}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W) input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    """Depthwise k x k, LayerNorm, 1x1 to 4x width, GELU, 1x1 back, layer scale, residual."""

    def __init__(
        self,
        factory: ConvFactory,
        dim: int,
        stage: int,
        layer: int,
        drop_path: float,
        layer_scale: float,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        prefix = f"stage{stage}_layer{layer}"
        self.dwconv = factory.conv(
            dim, dim, kernel_size, 1, kernel_size // 2, groups=dim, bias=True, name=f"{prefix}_dwconv0"
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = factory.conv(dim, 4 * dim, 1, bias=True, name=f"{prefix}_pwconv1")
        self.act = nn.GELU()
        self.pwconv2 = factory.conv(4 * dim, dim, 1, bias=True, name=f"{prefix}_pwconv2")
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale)) if layer_scale > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class ConvNeXt(nn.Module):
    """ConvNeXt; ``width`` scales every stage's channels (multiples of 8), ``drop_path`` is the
    stochastic-depth rate of the last block (rising linearly from 0, as in ConvNeXt), and
    ``kernel_size`` is the depthwise kernel of every stage (one odd size, or one per stage).
    Raises ModelConfigError naming ``backbone_args.kernel_size`` for sizes that cannot be used."""

    def __init__(
        self,
        depths: Sequence[int],
        dims: Sequence[int],
        conv: Mapping[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        patch_size: int = 4,
        layer_scale: float = 1e-6,
        head_init_scale: float = 1.0,
        kernel_size: int | Sequence[int] = 7,
    ) -> None:
        super().__init__()
        kernel_sizes = _stage_kernel_sizes(kernel_size, len(depths))
        factory = ConvFactory(conv, CONV_DEFAULTS)
        dims = [scaled(d, width) for d in dims]
        # Registered first, as in the reference, so that KW cells are allocated in its order.
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    factory.conv(
                        in_chans,
                        dims[0],
                        patch_size,
                        patch_size,
                        bias=True,
                        name="stagestem_conv0",
                        dynamic=factory.shares_across_layers,
                    ),
                    LayerNorm2d(dims[0], eps=1e-6),
                )
            ]
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(dims[i], eps=1e-6),
                    factory.conv(dims[i], dims[i + 1], 2, 2, bias=True, name=f"stage{i}_layerds_conv0"),
                )
            )
        rates = torch.linspace(0, drop_path, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for stage, (depth, dim, kernel) in enumerate(zip(depths, dims, kernel_sizes, strict=True)):
            first = sum(depths[:stage])
            self.stages.append(
                nn.Sequential(
                    *(
                        Block(factory, dim, stage, layer, rates[first + layer], layer_scale, kernel)
                        for layer in range(depth)
                    )
                )
            )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dims[-1], num_classes)
        for m in static_modules(self):
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # the branches of a decomposed (SLaK) kernel have none
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)
        factory.finalize(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        return self.head(self.dropout(self.norm(x.mean(dim=(-2, -1)))))


def _stage_kernel_sizes(kernel_size: int | Sequence[int], stages: int) -> list[int]:
    sizes = [kernel_size] * stages if isinstance(kernel_size, int) else list(kernel_size)
    if len(sizes) != stages or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in sizes):
        raise ModelConfigError(
            f"backbone_args.kernel_size: needs one odd size or {stages} (one per stage), got {kernel_size!r}"
        )
    return sizes


def _variant(name: str, depths: tuple[int, ...], dims: tuple[int, ...]) -> None:
    @register_backbone(name, CONV_DEFAULTS, kwargs_to=ConvNeXt)
    def build(conv: Mapping[str, Any], **kwargs) -> ConvNeXt:
        return ConvNeXt(depths, dims, conv, **kwargs)

    build.__doc__ = f"{name}: ConvNeXt with depths {depths} and dims {dims}"


_variant("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768))
_variant("convnext_nano", (2, 2, 8, 2), (80, 160, 320, 640))

"""DeiT-Tiny (ViT with embed 192, depth 12, 3 heads, MLP ratio 4) built through the conv factory.

The KernelWarehouse repository ships no DeiT model; its paper applies KW to DeiT's linear layers.
Here the four linear layers of every block are dynamic, named
``stage{s}_layer{l}_qkv``, ``..._proj`` (attention) and ``..._fc1``, ``..._fc2`` (MLP), with all
blocks in stage 0 unless ``stages`` splits the depth into that many consecutive, near-equal groups
(block ``i`` is in stage ``i * stages // depth``; ``l`` counts the blocks within a stage). So
``sharing_range: ["layer"]`` gives one warehouse per linear role across the blocks of a stage, and
``["layer", "fc"]`` also merges fc1 and fc2, the analogue of the KW ConvNeXt preset
(``["layer", "pwconv"]``: its pwconv1/pwconv2 are that block's MLP) and the default used here.
The patch embedding (a strided conv), the class token, the position embedding and the classifier
stay static.

Families that build only 2-d convolutions (DY-CNN, ODConv: ``ConvFactory.builds_linear`` is
False) get a DeiT whose linear layers are all static, i.e. the static model.

``img_size`` and ``patch_size`` set the token grid (224 / 16 -> 14 x 14); for 32x32 or 28x28
inputs use ``patch_size=4``. ``width`` scales the embedding (to multiples of 8 per head).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kwsearch.models.config import ModelConfigError
from kwsearch.models.layers import DropPath, scaled, static_modules
from kwsearch.models.registry import register_backbone
from kwsearch.nn import ConvFactory


class _Linears:
    """Makes the blocks' linear layers: the family's where it builds linear layers, else plain ones."""

    def __init__(self, factory: ConvFactory) -> None:
        self.factory = factory

    def __call__(self, in_features: int, out_features: int, name: str) -> nn.Module:
        return self.factory.linear(
            in_features, out_features, True, name=name, dynamic=self.factory.builds_linear
        )


class Attention(nn.Module):
    def __init__(self, linear: _Linears, dim: int, heads: int, prefix: str) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = linear(dim, 3 * dim, f"{prefix}_qkv")
        self.proj = linear(dim, dim, f"{prefix}_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, linear: _Linears, dim: int, hidden: int, prefix: str) -> None:
        super().__init__()
        self.fc1 = linear(dim, hidden, f"{prefix}_fc1")
        self.act = nn.GELU()
        self.fc2 = linear(hidden, dim, f"{prefix}_fc2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self, linear: _Linears, dim: int, heads: int, mlp_ratio: float, prefix: str, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(linear, dim, heads, prefix)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(linear, dim, int(dim * mlp_ratio), prefix)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT / DeiT classifier on the class token."""

    def __init__(
        self,
        conv: Mapping[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        stages: int = 1,
    ) -> None:
        super().__init__()
        if patch_size < 1 or img_size % patch_size:
            raise ModelConfigError(f"backbone_args.patch_size: {patch_size} must divide img_size={img_size}")
        if not 1 <= stages <= depth:
            raise ModelConfigError(f"backbone_args.stages: {stages} must be between 1 and depth={depth}")
        factory = ConvFactory(conv)
        dim = scaled(embed_dim, width, divisor=8 * heads)
        self.img_size, self.patch_size = img_size, patch_size
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch_size) ** 2 + 1, dim))
        linear = _Linears(factory)
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        blocks = []
        for i in range(depth):
            stage = i * stages // depth
            first = -(-stage * depth // stages)  # the first block of this stage
            prefix = f"stage{stage}_layer{i - first}"
            blocks.append(Block(linear, dim, heads, mlp_ratio, prefix, rates[i]))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in static_modules(self):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        factory.finalize(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"input of {tuple(x.shape[-2:])} pixels, but the model was built for img_size={self.img_size}"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, patches, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(self.dropout(x[:, 0]))


@register_backbone("deit_tiny", kwargs_to=VisionTransformer)
def deit_tiny(conv: Mapping[str, Any], **kwargs) -> VisionTransformer:
    """deit_tiny: ViT with embed 192, depth 12, 3 heads, MLP ratio 4 (patch 16 at 224 by default)."""
    return VisionTransformer(conv, **{"embed_dim": 192, "depth": 12, "heads": 3, "mlp_ratio": 4.0, **kwargs})

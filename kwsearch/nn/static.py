"""The static baseline: plain PyTorch convolutions, as a family like the others."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import nn

from kwsearch.nn.factory import LayerBuilder, LayerShape, register_family, static_layer


class StaticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticBuilder(LayerBuilder):
    def build(self, shape: LayerShape, name: str) -> nn.Module:
        return static_layer(shape)


register_family("static", StaticOptions, StaticBuilder)

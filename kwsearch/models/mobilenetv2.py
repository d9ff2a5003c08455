"""MobileNetV2 (1.0x, 0.5x) built through the conv factory, named as the KernelWarehouse reference names it.

Channels are rounded as the reference rounds them (to multiples of 8, never more than 10% down; the
last 1x1 conv keeps 1280 channels below width 1). Layer names follow the KernelWarehouse code:
the stem is ``stage0_conv0``; a block's convs are ``stage{s}_layer{l}_pwconv0`` (expansion),
``..._dwconv0`` (depthwise) and ``..._pwconv1`` (projection); the last 1x1 conv is
``stage6_layer3_pwconv1``. The seven rows of the MobileNetV2 table form warehouse stages
1, 2, 3, 4, 5, 6, 6, and the reference's *warehouse handover* is kept: the first block of a new
stage is named with the previous stage and that stage's running layer index, after which the layer
index of the new stage starts at 0.

Which layers are dynamic follows the references: with KernelWarehouse every conv is a KW layer,
stem included (``kw_mobilenetv2.py``); the per-layer families keep the stem static and make every
other conv dynamic (ODConv's ``od_mobilenetv2.py``; DY-CNN makes all but the first layer dynamic).
The classifier is static. The attention temperature anneals over the published MobileNetV2
fractions (:data:`CONV_DEFAULTS`), which differ from the families' ResNet ones.

``kw1d2x_mobilenetv2_100`` / ``_050`` reproduce the reference's separate 1/2x model
(``kw1d2x_mobilenetv2.py``): the pointwise convs of blocks named in warehouse stages 1-5 are static,
and the classifier is a KernelWarehouse linear layer (``classifier``; static for families that build
no linear layers, as their references keep it). Its reference hard-codes the conv options; they
are :data:`KW1D2X_CONV`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kwsearch.models.layers import DropPath, nearest_multiple, static_modules
from kwsearch.models.registry import register_backbone
from kwsearch.nn import KW_DEFAULT_SCHEDULE, SOFTMAX_DEFAULT_SCHEDULE, ConvFactory

# (expansion t, channels c, blocks n, first stride s) per row, and the warehouse stage of each row.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
WAREHOUSE_STAGES = (1, 2, 3, 4, 5, 6, 6)

# The published MobileNetV2 recipes run 150 epochs, of which KernelWarehouse anneals its temperature
# over 15 (configs/mobilenetv2_*/kw*.json: "epochs": 150, "temp_epoch": 15) and ODConv over 10
# (README: --epochs 150; main.py: --temp_epoch 10); DY-CNN takes ODConv's recipe here.
KW_TEMPERATURE = KW_DEFAULT_SCHEDULE.model_copy(update={"fraction": 15 / 150})
SOFTMAX_TEMPERATURE = SOFTMAX_DEFAULT_SCHEDULE.model_copy(update={"fraction": 10 / 150})
CONV_DEFAULTS = {
    "kw": {"temperature": KW_TEMPERATURE},
    "odconv": {"temperature": SOFTMAX_TEMPERATURE},
    "dyconv": {"temperature": SOFTMAX_TEMPERATURE},
}

# The options the reference's kw1d2x model hard-codes (10 warehouses, in order of first use:
# stem, the depthwise convs of stages 1-5, then stage 6's pwconv0, dwconv0, pwconv1, classifier).
# Its ``sharing_range = tuple("layer")`` is the characters l, a, y, e, r, which fuses the same
# names as ``["layer"]`` does.
KW1D2X_CONV: dict[str, Any] = {
    "family": "kw",
    "reduction": 0.03125,
    "cell_num_ratio": [1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.5],
    "cell_inplane_ratio": [1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.025],
    "cell_outplane_ratio": [1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 1],
    "sharing_range": ["layer"],
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), moved up one
    step where rounding would lose more than 10% (the TensorFlow MobileNet rule)."""
    rounded = nearest_multiple(value, divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """Expansion 1x1 (absent for t = 1), depthwise 3x3, linear projection 1x1; residual if shapes allow."""

    def __init__(
        self,
        factory: ConvFactory,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        stage: int,
        layer: int,
        pointwise_dynamic: bool,
        drop_path: float,
    ) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_residual = stride == 1 and inp == oup
        prefix = f"stage{stage}_layer{layer}"
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [
                factory.conv(inp, hidden, 1, name=f"{prefix}_pwconv0", dynamic=pointwise_dynamic),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            factory.conv(hidden, hidden, 3, stride, 1, groups=hidden, name=f"{prefix}_dwconv0"),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            factory.conv(hidden, oup, 1, name=f"{prefix}_pwconv1", dynamic=pointwise_dynamic),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path) if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.drop_path(self.conv(x))
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2; ``width`` is the reference's ``width_mult``; ``drop_path`` is a stochastic-depth
    rate for every residual block (the reference has none; 0 by default).

    ``static_pointwise_below`` makes the pointwise convs of blocks named in warehouse stages below
    it static (the kw1d2x model uses 6); ``dynamic_classifier`` asks the factory for the classifier
    (kw1d2x) where the family shares warehouses across layers.
    """

    def __init__(
        self,
        conv: Mapping[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        static_pointwise_below: int = 0,
        dynamic_classifier: bool = False,
    ) -> None:
        super().__init__()
        factory = ConvFactory(conv, CONV_DEFAULTS)
        kw = factory.shares_across_layers
        channels = make_divisible(32 * width)
        self.last_channel = make_divisible(1280 * max(1.0, width))
        features: list[nn.Module] = [
            nn.Sequential(
                factory.conv(in_chans, channels, 3, 2, 1, name="stage0_conv0", dynamic=kw),
                nn.BatchNorm2d(channels),
                nn.ReLU6(inplace=True),
            )
        ]
        layer = 0
        for row, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
            out = make_divisible(c * width)
            stage = WAREHOUSE_STAGES[row]
            for i in range(n):
                handover = i == 0 and row > 0 and stage != WAREHOUSE_STAGES[row - 1]
                name_stage = stage - 1 if handover else stage
                features.append(
                    InvertedResidual(
                        factory,
                        channels,
                        out,
                        s if i == 0 else 1,
                        t,
                        name_stage,
                        layer,
                        pointwise_dynamic=name_stage >= static_pointwise_below,
                        drop_path=drop_path,
                    )
                )
                channels = out
                layer = 0 if handover else layer + 1
        features.append(
            nn.Sequential(
                factory.conv(
                    channels, self.last_channel, 1, name=f"stage{WAREHOUSE_STAGES[-1]}_layer{layer}_pwconv1"
                ),
                nn.BatchNorm2d(self.last_channel),
                nn.ReLU6(inplace=True),
            )
        )
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = factory.linear(
            self.last_channel, num_classes, name="classifier", dynamic=dynamic_classifier and kw
        )
        for m in static_modules(self):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        factory.finalize(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


def _variant(name: str, width_mult: float, **structure) -> None:
    @register_backbone(name, CONV_DEFAULTS, kwargs_to=MobileNetV2)
    def build(conv: Mapping[str, Any], width: float = 1.0, **kwargs) -> MobileNetV2:
        return MobileNetV2(conv, width=width_mult * width, **{**structure, **kwargs})

    build.__doc__ = f"{name}: MobileNetV2 at width {width_mult} (times ``width``)" + (
        " with the KernelWarehouse 1/2x structure (use KW1D2X_CONV)" if structure else ""
    )


for _width, _suffix in ((1.0, "100"), (0.5, "050")):
    _variant(f"mobilenetv2_{_suffix}", _width)
    _variant(f"kw1d2x_mobilenetv2_{_suffix}", _width, static_pointwise_below=6, dynamic_classifier=True)

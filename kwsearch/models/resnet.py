"""ResNet-18/34/50 built through the conv factory, named as the KernelWarehouse reference names them.

Layer names follow ``stage{s}_layer{l}_conv{c}`` so ``sharing_range`` groups them into warehouses
exactly as in the paper's code. The reference's *warehouse handover* is kept: the first block of
each stage draws its first conv (and the stride-2 shortcut) from the previous stage's warehouse;
``handover: false`` (a backbone argument) keeps every conv in its own stage's warehouses.
The stem and the classifier stay static; shortcuts are dynamic only for KernelWarehouse and only
with stride 2, as in the references (ODConv's keeps every shortcut static). The first 1x1 conv of
ResNet-50's first block is static for KernelWarehouse only (its reference's handover leaves it
without a warehouse); every other block conv is dynamic for every family.
The ``*_cifar`` variants use a 3x3 stride-1 stem without max-pool for 32x32 and 28x28 inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kwsearch.models.layers import DropPath, scaled, static_modules
from kwsearch.models.registry import register_backbone
from kwsearch.nn import ConvFactory


class BasicBlock(nn.Module):
    expansion = 1
    convs = 2

    def __init__(self, factory, inplanes, planes, stride, downsample, stage, layer, handover, drop_path):
        super().__init__()
        conv1_stage = max(stage - 1, 0) if handover else stage
        self.conv1 = factory.conv(
            inplanes, planes, 3, stride, 1, name=f"stage{conv1_stage}_layer{layer}_conv0"
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        layer = 0 if handover else layer
        self.conv2 = factory.conv(planes, planes, 3, 1, 1, name=f"stage{stage}_layer{layer}_conv1")
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + self.drop_path(out))


class Bottleneck(nn.Module):
    expansion = 4
    convs = 3

    def __init__(self, factory, inplanes, planes, stride, downsample, stage, layer, handover, drop_path):
        super().__init__()
        conv1_stage = stage - 1 if handover else stage
        # The KernelWarehouse reference leaves this conv static in the very first block, whose
        # handover has no previous stage's warehouse to draw from; ODConv's makes it dynamic.
        self.conv1 = factory.conv(
            inplanes,
            planes,
            1,
            name=f"stage{conv1_stage}_layer{layer}_conv0",
            dynamic=conv1_stage >= 0 or not factory.shares_across_layers,
        )
        self.bn1 = nn.BatchNorm2d(planes)
        layer = 0 if handover else layer
        self.conv2 = factory.conv(planes, planes, 3, stride, 1, name=f"stage{stage}_layer{layer}_conv1")
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = factory.conv(planes, planes * 4, 1, name=f"stage{stage}_layer{layer}_conv2")
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + self.drop_path(out))


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, int, int, int],
        conv: Mapping[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        cifar_stem: bool = False,
        handover: bool = True,
    ) -> None:
        super().__init__()
        factory = ConvFactory(conv)
        self.handover = handover
        self.inplanes = scaled(64, width)
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self._layer_index = 0
        stages = []
        for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            stride = 1 if stage == 0 else 2
            stages.append(
                self._make_stage(factory, block, scaled(planes, width), depth, stride, stage, drop_path)
            )
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in static_modules(self):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        factory.finalize(self)

    def _make_stage(self, factory, block, planes, depth, stride, stage, drop_path) -> nn.Sequential:
        downsample = None
        # With the handover the shortcut belongs to the previous stage (as in the reference);
        # without it, to its own stage's first block, after that block's convs.
        shortcut_name = (
            f"stage{stage - 1}_layer{self._layer_index + 1}_conv0"
            if self.handover
            else f"stage{stage}_layer0_conv{block.convs}"
        )
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                factory.conv(
                    self.inplanes,
                    planes * block.expansion,
                    1,
                    stride,
                    name=shortcut_name,
                    # The KW reference draws stride-2 shortcuts from the previous stage's
                    # warehouse; per-layer families (the ODConv reference) keep shortcuts static.
                    dynamic=stride != 1 and factory.shares_across_layers,
                ),
                nn.BatchNorm2d(planes * block.expansion),
            )
        first_layer = self._layer_index if self.handover else 0
        blocks = [
            block(
                factory,
                self.inplanes,
                planes,
                stride,
                downsample,
                stage,
                first_layer,
                self.handover,
                drop_path,
            )
        ]
        self._layer_index = 1
        self.inplanes = planes * block.expansion
        for _ in range(1, depth):
            blocks.append(
                block(factory, self.inplanes, planes, 1, None, stage, self._layer_index, False, drop_path)
            )
            self._layer_index += 1
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def _variant(name: str, block, depths, cifar_stem: bool):
    @register_backbone(name)
    def build(
        conv: Mapping[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        handover: bool = True,
    ) -> ResNet:
        return ResNet(
            block, depths, conv, num_classes, in_chans, width, drop_path, dropout, cifar_stem, handover
        )

    build.__doc__ = f"{name}: ResNet with {block.__name__} blocks {depths}" + (
        " and a 3x3 stem" if cifar_stem else ""
    )
    return build


for _name, _block, _depths in (
    ("resnet18", BasicBlock, (2, 2, 2, 2)),
    ("resnet34", BasicBlock, (3, 4, 6, 3)),
    ("resnet50", Bottleneck, (3, 4, 6, 3)),
):
    _variant(_name, _block, _depths, cifar_stem=False)
    _variant(f"{_name}_cifar", _block, _depths, cifar_stem=True)

"""The published KernelWarehouse presets (the reference's ``configs/*.json``) as conv specs.

A search reads every front against them, so they must read exactly as published: ResNet
(``layer_conv`` sharing, 1/4x and 1/2x with half-size cells; ResNet-50's 1/2x adds a non-local
basis), MobileNetV2 (1x shares ``[layer, pwconv]``, 4x shares ``[layer]``) and ConvNeXt 1x
(LayerNorm attention). Each carries its recipe's temperature schedule as a fraction of the run:
20 of 300 epochs for ResNet and ConvNeXt, 15 of 150 for MobileNetV2.
"""

from __future__ import annotations

import copy
from typing import Any

from kwsearch.models.mobilenetv2 import KW_TEMPERATURE as MOBILENETV2_TEMPERATURE
from kwsearch.nn import KW_DEFAULT_SCHEDULE, TemperatureSchedule


def _spelled(schedule: TemperatureSchedule) -> dict[str, Any]:
    """A schedule as a conv spec writes it."""
    return schedule.model_dump(exclude_none=True, exclude={"steps"})


_KW = {"family": "kw", "reduction": 0.0625, "temperature": _spelled(KW_DEFAULT_SCHEDULE)}
_KW_MOBILENETV2 = {**_KW, "temperature": _spelled(MOBILENETV2_TEMPERATURE)}
_HALF_CELLS = {"cell_inplane_ratio": 0.5, "cell_outplane_ratio": 0.5}
_RESNET = {
    "kw_1d4x": {**_KW, "sharing_range": "layer_conv", "cell_num_ratio": 0.25, **_HALF_CELLS},
    "kw_1d2x": {**_KW, "sharing_range": "layer_conv", "cell_num_ratio": 0.5, **_HALF_CELLS},
    "kw_1x": {**_KW, "sharing_range": "layer_conv", "cell_num_ratio": 1},
    "kw_2x": {**_KW, "sharing_range": "layer_conv", "cell_num_ratio": 2},
    "kw_4x": {**_KW, "sharing_range": "layer_conv", "cell_num_ratio": 4},
}
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": {**_RESNET, "kw_1d2x": {**_RESNET["kw_1d2x"], "nonlocal_basis_ratio": 0.0625}},
    "mobilenetv2": {
        "kw_1x": {**_KW_MOBILENETV2, "cell_num_ratio": 1, "sharing_range": ["layer", "pwconv"]},
        "kw_4x": {**_KW_MOBILENETV2, "cell_num_ratio": 4, "sharing_range": ["layer"]},
    },
    "convnext": {
        "kw_1x": {**_KW, "cell_num_ratio": 1, "sharing_range": "layer_pwconv", "norm_layer": "layer"}
    },
}


def _family_of(backbone: str) -> str | None:
    # resnet18_cifar -> resnet18, mobilenetv2_050 -> mobilenetv2, convnext_nano -> convnext
    return next((family for family in _PRESETS if backbone.startswith(family)), None)


def kw_preset_names(backbone: str) -> list[str]:
    """The presets published for ``backbone``'s architecture (empty if none)."""
    family = _family_of(backbone)
    return list(_PRESETS[family]) if family else []


def kw_preset(backbone: str, name: str) -> dict[str, Any]:
    """The conv spec of preset ``name`` (``kw_1d4x`` ... ``kw_4x``) for ``backbone``.
    Raises KeyError naming what is published when there is no such preset."""
    names = kw_preset_names(backbone)
    if name not in names:
        published = ", ".join(names) or "none"
        raise KeyError(
            f"no KernelWarehouse preset {name!r} is published for {backbone} (published: {published})"
        )
    return copy.deepcopy(_PRESETS[_family_of(backbone)][name])  # callers may edit their copy

"""Turn any PyTorch model into a dynamic-convolution model: ``kwsearch.convert(model, spec)``.

Layers are chosen by glob patterns on their dotted module names (``layer*.*.conv*``); KernelWarehouse
sharing groups are given the same way, as an ordered mapping from patterns to warehouse names (the
first matching pattern wins; a converted layer that matches none gets a warehouse of its own).
The reference implementations hand-write every backbone; this works on models we have never seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from kwsearch.nn import ConvFactory, ConvSpecError

_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def _conv_arguments(name: str, conv: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> dict[str, Any]:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ConvSpecError(
            f"{name}: padding={conv.padding!r}, padding_mode={conv.padding_mode!r} cannot be converted; "
            "give explicit integer zero padding or exclude the layer"
        )
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "dims": _CONVS[type(conv)],
    }


def convert(
    model: nn.Module,
    spec: Mapping[str, Any],
    include: Iterable[str] = ("*",),
    exclude: Iterable[str] = (),
    warehouses: Mapping[str, str] | None = None,
) -> nn.Module:
    """Replace the ``Conv1d/2d/3d`` and ``Linear`` layers of ``model`` whose names match ``include``
    and no pattern of ``exclude`` by layers of ``spec``'s family, in place; returns ``model``.

    ``warehouses`` maps name patterns to warehouse names (KernelWarehouse). New layers start from
    their family's initialisation. Raises ConvSpecError for a spec that also sets
    ``sharing_range`` (give the groups as patterns instead), for layers that cannot be converted,
    and when no layer matches.
    """
    if spec.get("sharing_range"):
        raise ConvSpecError("conv.sharing_range: the converter takes sharing groups as `warehouses` patterns")
    include, exclude, warehouses = list(include), list(exclude), dict(warehouses or {})
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) in (*_CONVS, nn.Linear) and _matches(name, include) and not _matches(name, exclude)
    ]
    if not targets:
        raise ConvSpecError(f"no Conv or Linear layer matches include={include} exclude={exclude}")
    factory = ConvFactory(spec)
    for name, module in targets:
        warehouse = next((w for pattern, w in warehouses.items() if fnmatchcase(name, pattern)), name)
        if isinstance(module, nn.Linear):
            new = factory.linear(
                module.in_features, module.out_features, module.bias is not None, name=warehouse
            )
        else:
            new = factory.conv(**_conv_arguments(name, module), name=warehouse)
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, new)
    return factory.finalize(model)

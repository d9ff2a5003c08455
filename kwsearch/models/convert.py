"""Turn any PyTorch model into a dynamic-convolution model: ``kwsearch.convert(model, spec)``.

Layers are chosen by glob patterns on their dotted module names (``layer*.*.conv*``); KernelWarehouse
sharing groups are given the same way, as an ordered mapping from patterns to warehouse names (the
first matching pattern wins; a converted layer that matches none gets a warehouse of its own).
The stem (the model's first convolution) and the classifier (its last linear layer) stay static
unless asked for, as in the published models. The reference implementations hand-write every
backbone; this works on models we have never seen, and says what it did (:class:`Conversion`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from kwsearch.models.accounting import parameter_split
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


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert` did: the layers it replaced, the ones it left static by default, and
    the parameters before and after (``attention``: the dynamic layers' attention)."""

    family: str
    layers: list[str]
    kept_static: list[str]  # the stem and the classifier, when not asked for
    params_before: int
    params_after: int
    attention: int

    def describe(self) -> str:
        ratio = self.params_after / self.params_before
        lines = [
            f"kwsearch.convert: {len(self.layers)} layers converted to {self.family}",
            f"parameters: {self.params_before:,} -> {self.params_after:,} ({ratio:.2f}x the original; "
            f"attention {self.attention:,}, {self.attention / self.params_after:.1%} of the converted model)",
            "the converted layers start from the family's initialisation: their pretrained weights "
            "were not kept (the other layers keep theirs)",
        ]
        if self.kept_static:
            lines.append(
                f"left static: {', '.join(self.kept_static)} (stem=True / classifier=True converts them)"
            )
        return "\n".join(lines)


def convert(
    model: nn.Module,
    spec: Mapping[str, Any],
    include: Iterable[str] = ("*",),
    exclude: Iterable[str] = (),
    warehouses: Mapping[str, str] | None = None,
    *,
    stem: bool = False,
    classifier: bool = False,
    verbose: bool = True,
) -> nn.Module:
    """Replace the ``Conv1d/2d/3d`` and ``Linear`` layers of ``model`` whose names match ``include``
    and no pattern of ``exclude`` by layers of ``spec``'s family, in place; returns ``model``.
    The stem (the first convolution) and the classifier (the last linear layer) are left static
    unless ``stem`` / ``classifier``. Prints what it did (:class:`Conversion`) unless not
    ``verbose``; the same is ``model.kwsearch_conversion``.

    ``warehouses`` maps name patterns to warehouse names (KernelWarehouse). New layers start from
    their family's initialisation. Raises ConvSpecError for a spec that also sets
    ``sharing_range`` (give the groups as patterns instead), for layers that cannot be converted,
    and when no layer matches.
    """
    if spec.get("sharing_range"):
        raise ConvSpecError("conv.sharing_range: the converter takes sharing groups as `warehouses` patterns")
    include, exclude, warehouses = list(include), list(exclude), dict(warehouses or {})
    layers = [(name, m) for name, m in model.named_modules() if type(m) in (*_CONVS, nn.Linear)]
    convs = [name for name, m in layers if type(m) in _CONVS]
    linears = [name for name, m in layers if type(m) is nn.Linear]
    ends = {}  # the layers left static unless asked for: name -> its role
    if convs and not stem:
        ends[convs[0]] = "stem"
    if linears and not classifier:
        ends[linears[-1]] = "classifier"
    chosen = [name for name, _ in layers if _matches(name, include) and not _matches(name, exclude)]
    targets = [(name, m) for name, m in layers if name in chosen and name not in ends]
    if not targets:
        raise ConvSpecError(
            f"no Conv or Linear layer matches include={include} exclude={exclude}"
            + (f" besides the {' and the '.join(ends.values())}" if chosen else "")
        )
    params_before = sum(p.numel() for p in model.parameters())
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
    factory.finalize(model)
    model.kwsearch_conversion = Conversion(
        family=spec.get("family", "?"),
        layers=[name for name, _ in targets],
        kept_static=[f"{role} {name}" for name, role in ends.items() if name in chosen],
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
        attention=parameter_split(model).attention,
    )
    if verbose:
        print(model.kwsearch_conversion.describe())
    return model

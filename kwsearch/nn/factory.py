"""One factory from a conv spec to modules: models call it and never name a conv class.

A spec is a mapping ``{"family": NAME, **options}``. Each family registers an options model
(pydantic, unknown keys rejected) and a builder class. A model asks its factory for every conv
and linear layer it wants dynamic, passing a layer name (``stage2_layer1_conv0``) that families
with shared state (KernelWarehouse's warehouses) use, then calls :meth:`ConvFactory.finalize` once
all layers exist. Adding a family means one module and one :func:`register_family` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from torch import nn

from kwsearch.validation import describe

IntOrTuple = int | Sequence[int]


class ConvSpecError(ValueError):
    """A conv spec names an unknown family or carries a bad option; the message names the key."""


@dataclass(frozen=True)
class LayerShape:
    """Everything about a conv or linear layer except how its weights are made."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    linear: bool = False

    @property
    def dims(self) -> int:
        return len(self.kernel_size)


def _tuple(value: IntOrTuple, dims: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    if len(value) != dims:
        raise ValueError(f"{name} needs 1 or {dims} values, got {value}")
    return value


def conv_shape(
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    bias: bool = False,
    dims: int = 2,
) -> LayerShape:
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )
    return LayerShape(
        in_channels,
        out_channels,
        _tuple(kernel_size, dims, "kernel_size"),
        _tuple(stride, dims, "stride"),
        _tuple(padding, dims, "padding"),
        _tuple(dilation, dims, "dilation"),
        groups,
        bias,
    )


def static_layer(shape: LayerShape) -> nn.Module:
    """The plain PyTorch layer for ``shape``."""
    if shape.linear:
        return nn.Linear(shape.in_channels, shape.out_channels, bias=shape.bias)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[shape.dims]
    return conv(
        shape.in_channels,
        shape.out_channels,
        shape.kernel_size,
        stride=shape.stride,
        padding=shape.padding,
        dilation=shape.dilation,
        groups=shape.groups,
        bias=shape.bias,
    )


class LayerBuilder:
    """Builds the layers of one model for one family. Families with per-layer state only
    override :meth:`build`; families with shared state also override :meth:`finalize`."""

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def build(self, shape: LayerShape, name: str) -> nn.Module:
        raise NotImplementedError

    def finalize(self, model: nn.Module) -> None:
        """Called once after every layer of ``model`` was built."""


@dataclass(frozen=True)
class Family:
    name: str
    options: type[BaseModel]
    builder: Callable[[BaseModel], LayerBuilder]
    shares_across_layers: bool = False  # layers draw on common parameters (KernelWarehouse)
    builds_linear: bool = True  # False: the family makes 2-d convolutions only


_FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    options: type[BaseModel],
    builder: Callable[[BaseModel], LayerBuilder],
    shares_across_layers: bool = False,
    builds_linear: bool = True,
) -> None:
    _FAMILIES[name] = Family(name, options, builder, shares_across_layers, builds_linear)


def family_names() -> list[str]:
    return sorted(_FAMILIES)


# Per family, the options a backbone's reference uses where they differ from the family's own
# defaults, e.g. ``{"kw": {"norm_layer": "layer"}}`` for ConvNeXt.
BackboneDefaults = Mapping[str, Mapping[str, Any]]


class ParsedSpec(NamedTuple):
    """A validated conv spec: its family and the family's options."""

    family: Family
    options: BaseModel


def parse_spec(spec: Mapping[str, Any], defaults: BackboneDefaults | None = None) -> ParsedSpec:
    """Validate ``spec``; return its family and options. Raises ConvSpecError naming the key.

    Options the spec leaves out take the backbone's ``defaults`` for its family, then the
    family's own; a ``temperature`` given in part is completed from the backbone's schedule."""
    spec = dict(spec)
    name = spec.pop("family", None)
    if name not in _FAMILIES:
        raise ConvSpecError(f"conv.family: {name!r} is not one of {', '.join(family_names())}")
    family = _FAMILIES[name]
    published = dict((defaults or {}).get(name, {}))
    try:
        return ParsedSpec(family, family.options.model_validate({**published, **spec}, context=published))
    except ValidationError as error:
        raise ConvSpecError(describe(error, prefix="conv.")) from None


class ConvFactory:
    """Makes the conv and linear layers of one model from one spec; ``defaults`` are the backbone's
    published options per family (see :func:`parse_spec`). A spec parsed already (with them) is
    taken as it is."""

    def __init__(
        self, spec: Mapping[str, Any] | ParsedSpec, defaults: BackboneDefaults | None = None
    ) -> None:
        self.family, self.options = spec if isinstance(spec, ParsedSpec) else parse_spec(spec, defaults)
        self._builder = self.family.builder(self.options)
        self._finalized = False

    @property
    def shares_across_layers(self) -> bool:
        """True for families whose layers share parameters (warehouses); backbones follow the
        references in making more layers dynamic for them (KernelWarehouse's stride-2 shortcuts)."""
        return self.family.shares_across_layers

    @property
    def builds_linear(self) -> bool:
        """False for families that make 2-d convolutions only (their linear layers must stay static)."""
        return self.family.builds_linear

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        name: str = "default",
        dims: int = 2,
        dynamic: bool = True,
    ) -> nn.Module:
        """A ``dims``-d conv of the family (a plain one when ``dynamic`` is False)."""
        shape = conv_shape(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, dims
        )
        return self._make(shape, name, dynamic)

    def linear(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        name: str = "default",
        dynamic: bool = True,
    ) -> nn.Module:
        shape = LayerShape(in_features, out_features, (1,), (1,), (0,), (1,), 1, bias, linear=True)
        return self._make(shape, name, dynamic)

    def _make(self, shape: LayerShape, name: str, dynamic: bool) -> nn.Module:
        if self._finalized:
            raise RuntimeError("ConvFactory.finalize() was called already; create a new factory per model")
        return self._builder.build(shape, name) if dynamic else static_layer(shape)

    def finalize(self, model: nn.Module) -> nn.Module:
        """Create shared state (warehouses) and initialise it; returns ``model``."""
        self._builder.finalize(model)
        self._finalized = True
        return model

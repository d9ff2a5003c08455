"""The model config: one YAML/dict that describes one network.

It is what a search trial samples, what replay trains and what is saved beside a checkpoint::

    backbone: resnet18_cifar
    num_classes: 10
    in_chans: 1
    width: 0.5
    input_size: [28, 28]
    conv: {family: kw, cell_num_ratio: 0.5, sharing_range: [layer, conv]}

Unknown keys, wrong types and impossible values are :class:`ModelConfigError`, whose message names
the file (when there is one) and the key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from torch import nn

from kwsearch.models.registry import backbone_arguments, backbone_names, conv_defaults, get_backbone
from kwsearch.nn import ConvSpecError, ParsedSpec, TemperatureSchedule, parse_spec
from kwsearch.validation import describe
from kwsearch.yaml_file import YamlFileError, read_yaml


class ModelConfigError(ValueError):
    """A model config that cannot describe a network; the message names the file and the key."""


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    num_classes: int = Field(default=1000, ge=1)
    in_chans: int = Field(default=3, ge=1)
    width: float = Field(default=1.0, gt=0, le=8)
    drop_path: float = Field(default=0.0, ge=0, lt=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    input_size: tuple[int, int] = (224, 224)
    conv: dict[str, Any] = Field(default_factory=lambda: {"family": "static"})
    backbone_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        if name not in backbone_names():
            raise ValueError(f"{name!r} is not one of {', '.join(backbone_names())}")
        return name

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1:
            raise ValueError("both sides must be >= 1")
        return size

    # the conv spec parsed with the backbone's defaults, once per config (the config is frozen)
    _conv_spec: ParsedSpec | None = PrivateAttr(default=None)

    @field_validator("conv")
    @classmethod
    def _valid_conv(cls, spec: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        backbone = info.data.get("backbone")  # absent when the backbone itself is invalid
        parse_spec(spec, conv_defaults(backbone) if backbone else None)  # ConvSpecError names conv.<key>
        return spec

    def conv_spec(self) -> ParsedSpec:
        """The conv family and its options as the backbone builds them: the spec's own values,
        else the backbone's published defaults (ConvNeXt's LayerNorm attention, MobileNetV2's
        temperature schedules), else the family's."""
        if self._conv_spec is None:
            self._conv_spec = parse_spec(self.conv, conv_defaults(self.backbone))
        return self._conv_spec

    def conv_options(self) -> BaseModel:
        return self.conv_spec().options

    def temperature_schedule(self) -> TemperatureSchedule | None:
        """The attention temperature schedule the model trains with; None for families without one."""
        return getattr(self.conv_options(), "temperature", None)


def _where(source: str | Path | None) -> str:
    return f"{source}: " if source is not None else ""


def parse_model_config(data: Any, source: str | Path | None = None) -> ModelConfig:
    """Validate a mapping as a model config. Raises ModelConfigError naming ``source`` and the key."""
    if not isinstance(data, dict):
        raise ModelConfigError(f"{_where(source)}a model config is a mapping, got {type(data).__name__}")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as error:
        # conv errors already carry their full key ("conv.cell_num_ratio: ..."), kept whole
        raise ModelConfigError(_where(source) + describe(error)) from None
    for key in config.backbone_args:
        if key in ModelConfig.model_fields:
            raise ModelConfigError(
                f"{_where(source)}backbone_args.{key}: set it as the model config's {key}, not here"
            )
    arguments = _arguments_model(config.backbone)
    if arguments is not None:
        try:
            arguments.model_validate(config.backbone_args)
        except ValidationError as error:
            problems = [
                f"backbone_args.{'.'.join(map(str, e['loc']))}: "
                + (f"not an argument of {config.backbone}" if e["type"] == "extra_forbidden" else e["msg"])
                for e in error.errors()
            ]
            raise ModelConfigError(_where(source) + "; ".join(problems)) from None
    return config


@functools.cache
def _arguments_model(backbone: str) -> type[BaseModel] | None:
    """A model of the backbone's arguments, to check ``backbone_args`` by their types before any
    network is built (strictly: ``handover: maybe`` or ``patch_size: two`` are refused)."""
    arguments = backbone_arguments(backbone)
    if arguments is None:
        return None
    return create_model(
        f"{backbone}_args",
        __config__=ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True),
        **{key: (kind, default) for key, (kind, default) in arguments.items()},
    )


def load_model_config(path: str | Path) -> ModelConfig:
    """Read and validate a YAML model config. Raises ModelConfigError naming the file."""
    try:
        data = read_yaml(path)
    except YamlFileError as error:
        raise ModelConfigError(str(error)) from None
    return parse_model_config(data, Path(path))


def build_model(config: ModelConfig, source: str | Path | None = None) -> nn.Module:
    """Instantiate ``config`` on the current default device (use ``torch.device("meta")`` to
    account without memory). Raises ModelConfigError for options no network can satisfy."""
    try:
        return get_backbone(config.backbone)(
            config.conv_spec(),
            num_classes=config.num_classes,
            in_chans=config.in_chans,
            width=config.width,
            drop_path=config.drop_path,
            dropout=config.dropout,
            **config.backbone_args,
        )
    except (ConvSpecError, ModelConfigError) as error:  # a backbone's own argument checks name the key
        raise ModelConfigError(f"{_where(source)}{error}") from None

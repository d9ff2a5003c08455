"""Backbones built through the conv factory, the model config, the converter and accounting.

Importing this package registers every backbone.
"""

from kwsearch.models import convnext, deit, mobilenetv2, resnet, slak  # noqa: F401  (register backbones)
from kwsearch.models.accounting import ModelAccount, account, check_input, count_macs, parameter_split
from kwsearch.models.config import (
    ModelConfig,
    ModelConfigError,
    build_model,
    load_model_config,
    parse_model_config,
)
from kwsearch.models.convert import convert
from kwsearch.models.registry import backbone_names, get_backbone, register_backbone

__all__ = [
    "ModelAccount",
    "ModelConfig",
    "ModelConfigError",
    "account",
    "backbone_names",
    "build_model",
    "check_input",
    "convert",
    "count_macs",
    "get_backbone",
    "load_model_config",
    "parameter_split",
    "parse_model_config",
    "register_backbone",
]

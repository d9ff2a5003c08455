"""Backbones built through the conv factory; importing registers them."""

from kwsearch.models import resnet  # noqa: F401  (registers the ResNets)
from kwsearch.models.registry import backbone_names, get_backbone, register_backbone

__all__ = ["backbone_names", "get_backbone", "register_backbone"]

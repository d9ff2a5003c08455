"""Backbone registry: a name builds a model (timm's idea, kept small).

A backbone registers with it the conv options its references publish where they differ from a
family's own defaults (``conv_defaults``, as its constructor passes them to the conv factory), so a
model config's options can be known without building the model.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kwsearch.nn.factory import BackboneDefaults

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_CONV_DEFAULTS: dict[str, BackboneDefaults] = {}


def register_backbone(
    name: str, conv_defaults: BackboneDefaults | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BACKBONES[name] = fn
        _CONV_DEFAULTS[name] = conv_defaults or {}
        return fn

    return decorator


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under ``name``; KeyError lists the known names."""
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(backbone_names())}")
    return _BACKBONES[name]


def conv_defaults(name: str) -> BackboneDefaults:
    """The conv options backbone ``name`` publishes per family; KeyError lists the known names."""
    get_backbone(name)
    return _CONV_DEFAULTS[name]

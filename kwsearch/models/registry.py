"""Backbone registry: a name builds a model (timm's idea, kept small)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BACKBONES[name] = fn
        return fn

    return decorator


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under ``name``; KeyError lists the known names."""
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(backbone_names())}")
    return _BACKBONES[name]

"""Backbone registry: a name builds a model (timm's idea, kept small).

A backbone registers with it the conv options its references publish where they differ from a
family's own defaults (``conv_defaults``, as its constructor passes them to the conv factory), so a
model config's options can be known without building the model; and, when its function passes
``**kwargs`` on to a class, that class (``kwargs_to``), so that the arguments a model config may
set (``backbone_args``) and their types are known too.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

from kwsearch.nn.factory import BackboneDefaults

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_CONV_DEFAULTS: dict[str, BackboneDefaults] = {}
_KWARGS_TO: dict[str, Callable[..., Any] | None] = {}
# what every backbone takes from the model config's own fields, never from backbone_args
CONFIG_ARGUMENTS = ("conv", "num_classes", "in_chans", "width", "drop_path", "dropout")


def register_backbone(
    name: str, conv_defaults: BackboneDefaults | None = None, kwargs_to: Callable[..., Any] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BACKBONES[name] = fn
        _CONV_DEFAULTS[name] = conv_defaults or {}
        _KWARGS_TO[name] = kwargs_to
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


def backbone_arguments(name: str) -> dict[str, tuple[Any, Any]] | None:
    """The ``backbone_args`` backbone ``name`` takes: argument -> (type, default), from the
    signatures of its function and the class it passes ``**kwargs`` to. Arguments without a
    default are the variant's structure (depths, widths), not settings. None when the function
    takes any keyword and names no class (a user's backbone: anything goes)."""
    fn = get_backbone(name)
    found: dict[str, tuple[Any, Any]] = {}
    for target in (_KWARGS_TO[name], fn):
        if target is None:
            continue
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        for key, parameter in inspect.signature(target).parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                if target is fn and _KWARGS_TO[name] is None:
                    return None
                continue
            if key in CONFIG_ARGUMENTS or key == "self" or parameter.default is inspect.Parameter.empty:
                continue
            found[key] = (hints.get(key, Any), parameter.default)
    return found

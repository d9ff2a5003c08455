"""Reading the YAML files users write (model configs, recipes, studies, spaces)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Far more than any config a person writes, far fewer than an alias bomb ("billion laughs")
# expands to: aliases share one object when parsed, but every reader after the parser (validation,
# hashing, JSON) walks the expanded tree.
MAX_VALUES = 100_000
# Deeper than any config nests; an alias that refers to itself is infinitely deep.
MAX_DEPTH = 64


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file."""


def read_yaml(path: str | Path) -> Any:
    """The parsed contents of ``path``: never empty, at most :data:`MAX_VALUES` values once its
    aliases are expanded, nested at most :data:`MAX_DEPTH` deep. Raises YamlFileError naming the
    file and the reason."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise YamlFileError(f"{path}: cannot read ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlFileError(
            f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise YamlFileError(f"{path}: not valid YAML ({_one_line(error)})") from None
    except RecursionError:
        raise YamlFileError(f"{path}: nested deeper than the parser can follow") from None
    if data is None:
        raise YamlFileError(f"{path}: the file is empty")
    _check_size(data, path)
    return data


def _one_line(error: yaml.YAMLError) -> str:
    """A parser's error as one line: what it found, and where (its message spans lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(error, "context", None)
    return f"{context + ': ' if context else ''}{problem}{where}"


def _check_size(data: Any, path: str | Path) -> None:
    """Raise YamlFileError when ``data`` expands to more than MAX_VALUES values or nests deeper
    than MAX_DEPTH (which an alias to itself does). Stops as soon as either is exceeded."""
    count = 0

    def walk(node: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise YamlFileError(
                f"{path}: expands to more than {MAX_VALUES:,} values (aliases repeat what they refer to)"
            )
        if depth > MAX_DEPTH:
            raise YamlFileError(
                f"{path}: nested deeper than {MAX_DEPTH} levels (an alias that contains itself?)"
            )
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            for child in children:
                walk(child, depth + 1)

    walk(data, 0)

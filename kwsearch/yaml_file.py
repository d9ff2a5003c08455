"""Reading the YAML files users write (model configs, recipes, studies, spaces)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file."""


def read_yaml(path: str | Path) -> Any:
    """The parsed contents of ``path``. Raises YamlFileError naming the file and the reason."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise YamlFileError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise YamlFileError(f"{path}: not valid YAML ({error})") from None

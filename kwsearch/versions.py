"""The versions of the software a result was produced with (a study stores them when it starts)."""

from __future__ import annotations

import platform
from importlib import metadata

from kwsearch import __version__

_PACKAGES = ("torch", "optuna", "ray", "plotly", "pandas")


def software_versions() -> dict[str, str]:
    """Python, kwsearch and the libraries a study's results depend on, by name."""
    found = {"python": platform.python_version(), "kwsearch": __version__}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found

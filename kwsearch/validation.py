"""Pydantic's validation errors as the one-line messages kwsearch gives: ``key.path: problem``."""

from __future__ import annotations

from pydantic import ValidationError


def describe(error: ValidationError, prefix: str = "", empty: str = "<options>") -> str:
    """Every problem of ``error`` as ``key: message``, joined by ``; ``. Keys are dotted paths
    under ``prefix`` (``empty`` names the whole object). A message that already begins with its
    own key's sub-key (an error raised by a nested validator, such as a conv spec's) is kept whole."""
    problems = []
    for e in error.errors():
        key = prefix + (".".join(str(p) for p in e["loc"]) or empty)
        message = e["msg"].removeprefix("Value error, ")
        problems.append(message if message.startswith(f"{key}.") else f"{key}: {message}")
    return "; ".join(problems)

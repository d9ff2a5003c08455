"""Writing files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def torch_save_atomically(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place; the temporary
    file is removed if anything fails. Raises what writing raises (OSError on a read-only folder)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            torch.save(payload, out)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

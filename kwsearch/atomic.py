"""Writing files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A binary file beside ``path`` that is renamed into place when the block ends without an
    error, and removed when it raises. A reader sees the old file or the new one, never a part."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def torch_save_atomically(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place; the temporary
    file is removed if anything fails. Raises what writing raises (OSError on a read-only folder)."""
    with _replacing(path) as out:
        torch.save(payload, out)


def write_text_atomically(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file renamed into place. Raises what
    writing raises (OSError on a read-only folder)."""
    with _replacing(path) as out:
        out.write(text.encode("utf-8"))

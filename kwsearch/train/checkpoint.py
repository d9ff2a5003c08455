"""Checkpoints: everything needed to continue a run exactly, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kwsearch.atomic import torch_save_atomically

CHECKPOINT_NAME = "last.pt"


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/last.pt`` atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    torch_save_atomically(state, path)
    return path


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The last checkpoint in ``directory``, or None when there is none."""
    path = directory / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

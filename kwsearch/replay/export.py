"""A replayed model on disk, and ``kwsearch.load`` which rebuilds it.

A replay's folder holds the trainer's checkpoint ``last.pt`` (weights, optimizer, history and the
run it belongs to: model config, data set name, recipe) and, written before training starts, the
same run as files a person or ``kwsearch train`` reads: ``model.yaml``, ``recipe.yaml`` and
``data.yaml``. ``kwsearch train model.yaml --data NAME --recipe recipe.yaml --checkpoint-dir
FOLDER`` is the very run: it resumes an interrupted replay and leaves a finished one as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from kwsearch.models import ModelConfig, build_model, parse_model_config
from kwsearch.train import Recipe
from kwsearch.train.checkpoint import CHECKPOINT_NAME

MODEL_FILE = "model.yaml"
RECIPE_FILE = "recipe.yaml"
DATA_FILE = "data.yaml"


def write_run_files(folder: Path, model: ModelConfig, recipe: Recipe, data: dict[str, Any]) -> None:
    """Write the run's model config, recipe and data settings into ``folder`` (exactly what the
    checkpoint's run record holds, so ``kwsearch train`` with them continues the checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (
        (MODEL_FILE, model.model_dump(mode="json")),
        (RECIPE_FILE, recipe.model_dump(mode="json")),
        (DATA_FILE, data),
    ):
        # rewritten at every start of the run: a crash mid-write is repaired by the next start
        (folder / name).write_text(yaml.safe_dump(content, sort_keys=False))


def load(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The trained model in ``path`` (a replay folder, or a checkpoint file written by the trainer),
    built from the model config it was trained with, its weights loaded, in eval mode on
    ``device``. Raises FileNotFoundError when there is no checkpoint and ValueError when the file
    is not a kwsearch checkpoint."""
    file, saved = _checkpoint(Path(path))
    model = build_model(parse_model_config(saved["run"]["model"], file))
    model.load_state_dict(saved["model"])
    # channels-last weights (saved on a GPU) load as ordinary contiguous tensors
    return model.to(device).eval()


def saved_run(path: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file in ``path`` (a folder or the file) and the run it belongs to (model
    config, data set name, recipe). Raises as :func:`load` does."""
    file, saved = _checkpoint(path)
    return file, saved["run"]


def _checkpoint(path: Path) -> tuple[Path, dict[str, Any]]:
    file = path / CHECKPOINT_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint ({CHECKPOINT_NAME}) here")
    saved = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict) or "model" not in saved or "model" not in (saved.get("run") or {}):
        raise ValueError(f"{file}: not a kwsearch checkpoint (no weights or no model config)")
    return file, saved

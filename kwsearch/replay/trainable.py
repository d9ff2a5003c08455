"""One replay run as a Ray Tune function trainable: train one config with the full recipe and one
seed, checkpointing every epoch into the run's folder and resuming from it, and report every epoch,
then the whole history (read from the checkpoint, so epochs trained before an interruption are in
it) and the epoch training resumed from."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import torch
from ray import tune

from kwsearch.models import parse_model_config
from kwsearch.search.trainable import METRICS
from kwsearch.train import Recipe, default_device, train_model

REPLAY_METRICS = (*METRICS, "test_loss", "test_accuracy")


def train_replay_run(config: dict[str, Any], data: dict[str, Any], threads: int) -> None:
    """Train ``config["model"]`` by ``config["recipe"]`` with checkpoints in ``config["folder"]``."""
    torch.set_num_threads(threads)
    try:
        model = parse_model_config(config["model"])
        recipe = Recipe.model_validate(config["recipe"])

        def report(metrics: dict[str, Any]) -> None:
            tune.report({k: float(metrics[k]) for k in REPLAY_METRICS if metrics.get(k) is not None})

        result = train_model(
            model,
            data["name"],
            recipe,
            device=default_device(),  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU (share)
            data_root=data.get("root"),
            data_options=data.get("options"),
            checkpoint_dir=Path(config["folder"]),
            on_epoch=report,
            progress=False,
        )
        tune.report(
            {
                "finished": 1.0,
                "resumed_from_epoch": float(result.resumed_from_epoch),
                "params": float(result.params),
                "history": json.dumps(result.history),
            }
        )
    except Exception as error:
        tune.report({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        raise

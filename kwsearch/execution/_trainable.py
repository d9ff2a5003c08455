"""The one Ray Tune trainable: train one model config by one recipe with the one trainer, report
every epoch, then the whole history. Proxy trials, baselines and replays all run it; a run given a
folder checkpoints every epoch there and resumes from it. Runs in a Ray worker, where the data set
is loaded once per process and reused by every run that worker takes (``reuse_actors``)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import torch
from ray import tune

from kwsearch.train import default_device, train_model

# Per-epoch metrics reported to Ray (numbers only; the trainer's None temperature is left out).
METRICS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_images",
    "test_loss",
    "test_accuracy",
    "test_images",
    "lr",
    "temperature",
    "train_seconds",
    "epoch_seconds",
)


def train_run(config: dict[str, Any], data: dict[str, Any], threads: int) -> None:
    """Train ``config["model"]`` (a validated ModelConfig) by ``config["recipe"]`` (a Recipe) on
    ``data``, checkpointing into ``config["folder"]`` when it names one. Reports each epoch's
    metrics, then ``finished`` with the whole history (a resumed run's earlier epochs included)
    and the epoch it resumed from. A failure is reported (message and traceback) before it is
    raised, so the study records why."""
    torch.set_num_threads(threads)
    try:

        def report(metrics: dict[str, Any]) -> None:
            tune.report({k: float(metrics[k]) for k in METRICS if metrics.get(k) is not None})

        folder = config.get("folder")
        result = train_model(
            config["model"],
            data["name"],
            config["recipe"],
            device=default_device(),  # Ray sets CUDA_VISIBLE_DEVICES to the run's GPU (share)
            data_root=data.get("root"),
            data_options=data.get("options"),
            checkpoint_dir=Path(folder) if folder else None,
            on_epoch=report,
            progress=False,
        )
        tune.report(
            {
                "finished": 1.0,
                "resumed_from_epoch": float(result.resumed_from_epoch),
                "history": json.dumps(result.history),
            }
        )
    except Exception as error:
        tune.report({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        raise

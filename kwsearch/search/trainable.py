"""One proxy trial as a Ray Tune function trainable: build the sampled model, train it with the
one trainer, report every epoch. Runs in a Ray worker; the data set is loaded once per worker
process and reused by every trial that worker runs (``reuse_actors``)."""

from __future__ import annotations

import traceback
from typing import Any

import torch
from ray import tune

from kwsearch.models import parse_model_config
from kwsearch.train import Recipe, train_model

# Metrics Ray receives each epoch (numbers only; the trainer's None temperature is left out).
METRICS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "temperature",
    "train_seconds",
    "epoch_seconds",
)


def _device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the GPU (share) it gave this trial.
    return (
        torch.device("cuda")
        if torch.cuda.is_available() and torch.cuda.device_count()
        else torch.device("cpu")
    )


def run_trial(config: dict[str, Any], data: dict[str, Any], threads: int) -> None:
    """Train ``config["model"]`` by ``config["recipe"]`` on ``data``; report each epoch. A failure
    is reported (its message and traceback) before it is raised, so the study records why."""
    torch.set_num_threads(threads)
    try:
        model = parse_model_config(config["model"])
        recipe = Recipe.model_validate(config["recipe"])

        def report(metrics: dict[str, Any]) -> None:
            tune.report({k: float(metrics[k]) for k in METRICS if metrics.get(k) is not None})

        train_model(
            model,
            data["name"],
            recipe,
            device=_device(),
            data_root=data.get("root"),
            data_options=data.get("options"),
            on_epoch=report,
            progress=False,
        )
    except Exception as error:
        tune.report({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        raise

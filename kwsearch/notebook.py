"""The calls a notebook makes, exported from ``kwsearch`` (see docs/notebooks.md, whose code
blocks run as tests): a study's runs as one pandas table and its front, a model from a config,
and the preprocessing a trained model expects. Loading a study file, running a search, converting
a model and loading a trained one are the package's own functions, exported beside these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from kwsearch.data.resize import resize_images
from kwsearch.models import ModelConfig, parse_model_config
from kwsearch.models import build_model as _build
from kwsearch.search.study import Study

StudyLike = Study | str | Path  # a loaded study, a study file, or the name of a stored study


def _stored(study: StudyLike, runs_dir: str | Path, storage: str | None) -> tuple[str, str]:
    from kwsearch.search.locate import locate_study

    if isinstance(study, Study):
        storage = storage or study.settings.storage
        target = study.name
    else:
        target = str(study)
    found = locate_study(target, storage, Path(runs_dir))
    return found.storage, found.name


def trials(study: StudyLike, *, runs_dir: str | Path = "runs", storage: str | None = None) -> pd.DataFrame:
    """Every run of a stored study, one row each: ``kind`` says what it is: ``search`` (a proposal
    of the search: its ``status`` says complete, pruned, failed, infeasible or duplicate),
    ``baseline`` (``label`` names it) or ``replay`` (a front member trained by the full recipe:
    ``number`` is the search trial it replays, ``test_accuracy`` its result, ``export`` its folder
    for :func:`kwsearch.load`). ``accuracy`` is the
    validation accuracy (a complete search trial's: its config's mean over seeds and confirmation
    runs, with ``accuracy_low``/``accuracy_high``, its 95% interval); ``pareto`` marks the front.
    Costs are ``params``, ``effective_params``, ``macs`` and, in a study that measures them,
    ``train_ms_per_image``, ``latency_ms``, ``latency_batch_ms`` with their ``device``; searched
    values are ``param:NAME`` columns. Raises StudyError for a study that cannot be found."""
    from kwsearch.records import StudyStore
    from kwsearch.report import load

    url, name = _stored(study, runs_dir, storage)
    data = load(url, name)
    replays = [
        {
            "kind": "replay",
            "number": r.proxy_trial,
            "status": r.status,
            "accuracy": r.val_accuracy,
            "test_accuracy": r.test_accuracy,
            "seed": r.seed,
            **(r.costs.as_dict() if r.costs else {}),
            "epochs": len(r.history),
            "seconds": r.seconds,
            "config": json.dumps(r.config, sort_keys=True) if r.config is not None else None,
            "export": str(r.export) if r.export else None,  # its folder, for kwsearch.load
        }
        for r in StudyStore.open(url, name).replays()
    ]
    table = pd.concat([data.trials, pd.DataFrame(replays)], ignore_index=True) if replays else data.trials
    if "pareto" in table:
        table["pareto"] = table["pareto"].eq(True)  # replays' rows: not on the search's front
    return table


def front(study: StudyLike, *, runs_dir: str | Path = "runs", storage: str | None = None) -> pd.DataFrame:
    """The search's Pareto front (rows of :func:`trials`), cheapest first."""
    table = trials(study, runs_dir=runs_dir, storage=storage)
    if "pareto" not in table:
        return table.iloc[0:0]
    return table[table["pareto"]].sort_values(["params", "number"])


def build_model(config: ModelConfig | dict[str, Any] | str) -> nn.Module:
    """The network a model config describes (a config mapping, a trial's ``config`` column as
    JSON text, or a validated ModelConfig), freshly initialised. Raises ModelConfigError."""
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, ModelConfig):
        config = parse_model_config(config)
    return _build(config)


@dataclass(frozen=True)
class Preprocessing:
    """What a trained model expects of its input: images at ``size`` (H, W), scaled to [0, 1]
    and normalised per channel by ``mean`` and ``std`` (the training pixels' statistics)."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (N, C, H, W) as uint8, or float in [0, 1], at any size: the model's input,
        resized and normalised as the training images were."""
        if images.dtype != torch.uint8:
            images = (images * 255).round().clamp(0, 255).to(torch.uint8)
        images = resize_images(images, self.size).float() / 255
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std


def preprocessing(path: str | Path, data_root: str | Path | None = None) -> Preprocessing:
    """The preprocessing the model trained in ``path`` (a replay folder or a checkpoint, as
    :func:`kwsearch.load` takes) expects: the recipe's resolution and the normalisation of the
    data set it was trained on (which is loaded to read it: ``data_root`` where it is not found
    by name). Raises FileNotFoundError and ValueError as :func:`kwsearch.load` does."""
    from kwsearch.data import load_dataset
    from kwsearch.replay.export import DATA_FILE, saved_run
    from kwsearch.train import Recipe

    file, run = saved_run(Path(path))
    recipe = Recipe.model_validate(run["recipe"])
    options: dict[str, Any] = {}
    data_file = file.parent / DATA_FILE
    if data_file.is_file():  # the run's data settings (a generated set's options, say)
        import yaml

        options = (yaml.safe_load(data_file.read_text()) or {}).get("options") or {}
    dataset = load_dataset(run["data"], root=data_root, image_size=recipe.resolution, **options)
    return Preprocessing(tuple(dataset.image_size), tuple(dataset.mean), tuple(dataset.std))

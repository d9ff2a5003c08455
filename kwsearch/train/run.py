"""Train one model config on one data set by one recipe: what ``kwsearch train``, search trials and
replay call (each data-parallel worker of a replay too, on its share of every batch). Data are
loaded once per process (and device) and split here: validation is held out of the training set,
the proxy subset is drawn from what remains, the test set is used only when the recipe asks for
it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import ValidationError

from kwsearch.data import (
    STREAMED,
    Augmentation,
    eval_loader,
    load_dataset,
    stratified_subset,
    train_loader,
    train_val_split,
)
from kwsearch.models import ModelConfig, ModelConfigError, build_model, check_input
from kwsearch.train.parallel import ONE, Workers, worker_seed
from kwsearch.train.recipe import Recipe
from kwsearch.train.trainer import StepHook, TrainResult, fit
from kwsearch.validation import describe
from kwsearch.yaml_file import YamlFileError, read_yaml


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file (or option) and the field."""


def load_recipe(path: str | Path | None = None, **options) -> Recipe:
    """A recipe from a YAML file (or the defaults) with the command line's ``options`` over it
    (None values ignored). Raises RecipeError naming the file and the field, or the option
    (``--epochs -1: ...``) when the file alone is a valid recipe and an option makes it invalid."""
    data: dict = {}
    if path is not None:
        try:
            data = read_yaml(path)
        except YamlFileError as error:
            raise RecipeError(str(error)) from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe is a mapping, got {type(data).__name__}")
        try:
            Recipe.model_validate(data)
        except ValidationError as error:
            raise RecipeError(f"{path}: {describe(error, empty='recipe')}") from None
    given = {key: value for key, value in options.items() if value is not None}
    try:
        return Recipe.model_validate({**data, **given})
    except ValidationError as error:
        raise RecipeError(_blame_options(error, given)) from None


def option_name(field: str) -> str:
    """The command-line option that sets recipe field ``field``."""
    return "--" + field.replace("_", "-")


def _blame_options(error: ValidationError, given: dict) -> str:
    """``error`` (of a recipe valid without the options) as ``--option value: problem``: a field's
    own problem names its option, a problem between fields names every option given."""
    problems = []
    for e in error.errors():
        field = str(e["loc"][0]) if e["loc"] else None
        culprits = {field: given[field]} if field in given else given
        where = ", ".join(f"{option_name(k)} {v}" for k, v in culprits.items())
        problems.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(name: str) -> torch.device:
    """The device ``name`` names (``cpu``, ``cuda``, ``cuda:N``, ``mps``), if this machine has it.
    Raises ValueError saying why not."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name!r} is not a device kwsearch trains on (cpu, cuda, cuda:N, mps)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name!r}: this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name!r}: this machine has {count} CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name!r}: this machine has no MPS device")
    return device


def train_model(
    config: ModelConfig,
    data: str,
    recipe: Recipe,
    *,
    device: torch.device | None = None,
    data_root: str | Path | None = None,
    data_options: dict | None = None,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    step_hooks: Sequence[StepHook] = (),
    progress: bool | None = None,
    workers: Workers = ONE,
    started_at: float | None = None,
) -> TrainResult:
    """Train ``config`` on ``data`` (``data_options`` go to :func:`kwsearch.data.load_dataset`) by
    ``recipe``, as this process's share of ``workers`` (all of it by default). Raises
    ModelConfigError when the model does not fit the data (classes, channels), RecipeError for data
    controls the data cannot meet and for a recipe of several workers run as one (they run through
    Ray: ``kwsearch replay``), and what :func:`kwsearch.train.trainer.fit` raises. The first
    epoch's ``setup_seconds`` counts from ``started_at`` (wall clock; default: this call): the
    data set and the model are set-up too, and whatever the caller did for the run before."""
    started_at = time.time() if started_at is None else started_at
    if recipe.workers != workers.size:
        raise RecipeError(
            f"workers: {recipe.workers} data-parallel workers train through Ray Train (a replay: `kwsearch "
            f"replay`); this process is {workers.size} of them"
        )
    if recipe.data_loading == "stream" and data.strip().lower() not in STREAMED:
        raise RecipeError(
            f"data_loading: stream reads an image cache from disk (data set {', '.join(STREAMED)}, written "
            f"by `kwsearch prepare`); {data} is held in memory"
        )
    device = device or default_device()
    dataset = load_dataset(
        data,
        root=data_root,
        device=device,
        image_size=recipe.resolution,
        loading=recipe.data_loading,
        **(data_options or {}),
    )
    if config.num_classes != dataset.num_classes:
        raise ModelConfigError(
            f"num_classes: {config.num_classes}, but {data} has {dataset.num_classes} classes"
        )
    if config.in_chans != dataset.in_chans:
        raise ModelConfigError(f"in_chans: {config.in_chans}, but {data} has {dataset.in_chans} channels")
    with torch.device("meta"):  # before any weight exists: a network too deep for the images
        try:
            check_input(build_model(config), (dataset.in_chans, *dataset.image_size))
        except ModelConfigError as error:
            size = "x".join(map(str, dataset.image_size))
            resized = " (the recipe's resolution)" if recipe.resolution else ""
            raise ModelConfigError(f"{data}'s images are {size}{resized}: {error}") from None
    val_args = (
        {"val_fraction": recipe.val_size}
        if isinstance(recipe.val_size, float)
        else {"val_size": recipe.val_size}
    )
    try:
        train_idx, val_idx = train_val_split(dataset.train_labels, seed=recipe.seed, **val_args)
    except ValueError as error:
        raise RecipeError(f"val_size: {error}") from None
    if recipe.train_subset is not None:
        try:
            subset = stratified_subset(dataset.train_labels[train_idx], recipe.train_subset, recipe.seed)
        except ValueError as error:
            raise RecipeError(f"train_subset: {error}") from None
        train_idx = train_idx[subset]
    if len(train_idx) < recipe.batch_size:
        raise RecipeError(
            f"batch_size: larger than the {len(train_idx)} training images left after the validation split "
            "and the subset"
        )
    channels_last = recipe.uses_channels_last(device)
    augmentation = None if recipe.augment else Augmentation()
    train = train_loader(
        dataset,
        recipe.batch_size,
        indices=train_idx,
        seed=recipe.seed,
        augmentation=augmentation,
        channels_last=channels_last,
        shard=workers.shard,
    )
    evaluation = {"channels_last": channels_last, "shard": workers.shard}
    val = eval_loader(dataset, recipe.eval_batch_size, split="train", indices=val_idx, **evaluation)
    test = None
    if recipe.evaluate_test:
        test = eval_loader(dataset, recipe.eval_batch_size, split="test", **evaluation)
    torch.manual_seed(recipe.seed)
    model = build_model(config)
    if workers.rank:  # the same initial model everywhere (DDP starts from rank 0's), own draws after
        torch.manual_seed(worker_seed(recipe.seed, workers.rank))
    run_info = {
        "model": config.model_dump(mode="json"),
        "data": data,
        "recipe": recipe.model_dump(mode="json"),
    }
    return fit(
        model,
        train,
        val,
        recipe,
        device,
        temperature=config.temperature_schedule(),
        test=test,
        checkpoint_dir=checkpoint_dir,
        run_info=run_info,
        on_epoch=on_epoch,
        step_hooks=step_hooks,
        progress=progress,
        workers=workers,
        started_at=started_at,
    )

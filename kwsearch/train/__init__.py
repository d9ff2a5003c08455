"""The one trainer, for proxy trials, `kwsearch train` and replay."""

from kwsearch.train.recipe import Recipe
from kwsearch.train.run import (
    RecipeError,
    default_device,
    load_recipe,
    option_name,
    parse_device,
    train_model,
)
from kwsearch.train.trainer import (
    OutOfMemory,
    TrainingDiverged,
    TrainResult,
    choose_training_paths,
    evaluate,
    fit,
    to_channels_last,
)

__all__ = [
    "OutOfMemory",
    "Recipe",
    "RecipeError",
    "TrainResult",
    "TrainingDiverged",
    "choose_training_paths",
    "default_device",
    "evaluate",
    "fit",
    "load_recipe",
    "option_name",
    "parse_device",
    "to_channels_last",
    "train_model",
]

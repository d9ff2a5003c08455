"""The one trainer, for proxy trials, `kwsearch train` and replay."""

from kwsearch.train.parallel import ONE, DataParallel, Workers
from kwsearch.train.presets import RECIPE_PRESETS, RecipePreset
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
    "ONE",
    "RECIPE_PRESETS",
    "DataParallel",
    "OutOfMemory",
    "Recipe",
    "RecipeError",
    "RecipePreset",
    "TrainResult",
    "TrainingDiverged",
    "Workers",
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

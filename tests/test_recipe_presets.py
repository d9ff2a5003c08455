"""The papers' recipes as presets: each validates, the fields given beside it win, a study names
a replay recipe by its preset, a shortened preset anneals its temperature as the published run
does, and the step schedule and plain momentum the ODConv recipes need do what they say."""

import pytest
import torch

from kwsearch.search.study import StudyError, parse_study
from kwsearch.train import RECIPE_PRESETS, Recipe, RecipeError, load_recipe
from kwsearch.train.optim import learning_rate, make_optimizer
from tests.helpers import tiny_study

# The published annealing, in epochs of the published run (main.py --temp_epoch of each reference).
PUBLISHED_TEMPERATURE_EPOCHS = {
    "kw_resnet_imagenet": 20,
    "kw_mobilenetv2_imagenet": 15,
    "odconv_resnet_imagenet": 10,
    "odconv_mobilenetv2_imagenet": 10,
}


@pytest.mark.parametrize("name", sorted(RECIPE_PRESETS))
def test_every_preset_is_a_recipe_with_its_source(name):
    preset = RECIPE_PRESETS[name]
    recipe = Recipe(preset=name)
    assert recipe.preset == name and preset.source and preset.not_applied
    for field, value in preset.recipe.items():
        assert getattr(recipe, field) == value, field
    assert Recipe.model_validate(recipe.model_dump()) == recipe  # a stored recipe reads back the same
    if preset.temperature is not None:
        assert preset.temperature.duration(recipe.epochs) == pytest.approx(PUBLISHED_TEMPERATURE_EPOCHS[name])


def test_fields_beside_a_preset_replace_its_own():
    recipe = load_recipe(None, preset="kw_resnet_imagenet", epochs=30, batch_size=256)
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.optimizer) == (30, 256, 4e-3, "adamw")
    # a shortened preset anneals over the same share of its run
    preset = RECIPE_PRESETS["kw_resnet_imagenet"]
    assert preset.temperature.duration(30) / 30 == preset.temperature.duration(300) / 300
    with pytest.raises(RecipeError, match="--preset kw_resnet: 'kw_resnet' is not one of kw_resnet_imagenet"):
        load_recipe(None, preset="kw_resnet")


def test_a_study_replays_with_a_preset_and_refuses_an_unknown_one():
    study = parse_study(tiny_study("p", replay={"recipe": {"preset": "odconv_resnet_imagenet", "epochs": 4}}))
    recipe = study.settings.replay.recipe
    assert recipe.preset == "odconv_resnet_imagenet" and recipe.epochs == 4 and recipe.lr_schedule == "step"
    with pytest.raises(StudyError, match=r"replay\.recipe\.preset: 'nope' is not one of"):
        parse_study(tiny_study("p", replay={"recipe": {"preset": "nope"}}))
    with pytest.raises(StudyError, match="batch_size 100 does not split over 8 workers"):
        parse_study(tiny_study("p", replay={"recipe": {"batch_size": 100, "workers": 8}}))


def test_step_schedule_multiplies_by_gamma_at_each_fraction_of_the_run():
    recipe = Recipe(epochs=100, lr=0.1, warmup_epochs=0, lr_schedule="step", lr_steps=(0.3, 0.6, 0.9))
    steps = 10  # per epoch
    rates = {epoch: learning_rate(recipe, epoch * steps, steps) for epoch in (0, 29, 30, 59, 60, 89, 90, 99)}
    assert rates[0] == rates[29] == pytest.approx(0.1)
    assert rates[30] == rates[59] == pytest.approx(0.01)
    assert rates[60] == rates[89] == pytest.approx(0.001)
    assert rates[90] == rates[99] == pytest.approx(0.0001)
    # a shortened run steps at the same fractions
    short = recipe.model_copy(update={"epochs": 10})
    assert learning_rate(short, 29, 10) == pytest.approx(0.1) and learning_rate(
        short, 30, 10
    ) == pytest.approx(0.01)
    with pytest.raises(RecipeError, match="lr_steps must be increasing fractions"):
        load_recipe(None, lr_steps=[0.6, 0.3])


def test_plain_momentum():
    model = torch.nn.Linear(3, 2)
    assert not make_optimizer(model, Recipe(preset="odconv_resnet_imagenet")).defaults["nesterov"]
    assert make_optimizer(model, Recipe(preset="kw_mobilenetv2_imagenet")).defaults["nesterov"]

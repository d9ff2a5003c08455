"""Learning-rate schedule and the weight-decay split of the optimizer."""

import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from kwsearch.models import build_model, parse_model_config
from kwsearch.nn import warehouse_managers
from kwsearch.train.optim import learning_rate, make_optimizer, parameter_groups
from kwsearch.train.recipe import Recipe


def test_warmup_then_cosine_to_min_lr():
    recipe = Recipe(epochs=10, lr=0.4, warmup_epochs=2, min_lr=0.04)
    steps = 100  # per epoch
    assert learning_rate(recipe, 0, steps) == pytest.approx(0.4 / 200)
    assert learning_rate(recipe, 199, steps) == pytest.approx(0.4)
    middle = 200 + (1000 - 200) // 2
    assert learning_rate(recipe, middle, steps) == pytest.approx(0.04 + 0.36 * 0.5)
    assert learning_rate(recipe, 999, steps) == pytest.approx(0.04, abs=1e-5)
    rates = [learning_rate(recipe, s, steps) for s in range(200, 1000)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_no_warmup_starts_at_lr():
    recipe = Recipe(epochs=4, lr=0.1, warmup_epochs=0)
    assert learning_rate(recipe, 0, 10) == pytest.approx(0.1)
    assert learning_rate(recipe, 20, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.5)))


def test_weight_decay_only_on_conv_and_linear_weights_and_kernels():
    config = parse_model_config(
        {
            "backbone": "resnet18_cifar",
            "width": 0.25,
            "num_classes": 10,
            "conv": {"family": "kw", "sharing_range": "layer_conv"},
        }
    )
    model = build_model(config)
    decay, no_decay = parameter_groups(model, 5e-4)
    decay_ids = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 5e-4
    warehouses = {id(p) for m in warehouse_managers(model) for p in m.warehouses}
    assert warehouses <= decay_ids, "warehouse cells are kernels: decayed"
    for pid in decay_ids:
        name = names[pid]
        assert "attention" not in name and not name.endswith("bias") and ".bn" not in name, name
    assert any("attention.fc1" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_optimizers():
    model = torch.nn.Linear(3, 2)
    sgd = make_optimizer(model, Recipe(optimizer="sgd", momentum=0.9))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(make_optimizer(model, Recipe(optimizer="adamw", lr=1e-3)), torch.optim.AdamW)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "lamb"}, "optimizer"),
        ({"lr": 0.1, "min_lr": 0.2}, "min_lr"),
        ({"val_size": 1.5}, "val_size"),
        ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_recipes_name_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        Recipe(**fields)

"""The trainer on real (tiny) models and generated data: learning, exact resumption, temperature,
hooks, divergence, and the `kwsearch train` command."""

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from kwsearch.models import ModelConfigError, build_model, parse_model_config
from kwsearch.nn import MultiPathLayer, TemperatureControlled
from kwsearch.train import (
    Recipe,
    RecipeError,
    TrainingDiverged,
    choose_training_paths,
    fit,
    to_channels_last,
    train_model,
)
from kwsearch.train.checkpoint import load_checkpoint
from tests.helpers import interrupt_after_epoch

SYNTHETIC = {
    "num_train": 480,
    "num_test": 96,
    "channels": 1,
    "height": 16,
    "width": 16,
    "num_classes": 4,
    "seed": 3,
}
CPU = torch.device("cpu")


def model_config(family="kw", **conv):
    spec = {"family": family, **conv}
    if family == "kw":
        spec.setdefault("sharing_range", ["layer", "conv"])
    return parse_model_config(
        {"backbone": "resnet18_cifar", "num_classes": 4, "in_chans": 1, "width": 0.125, "conv": spec}
    )


def recipe(**fields):
    defaults = {
        "epochs": 3,
        "batch_size": 32,
        "eval_batch_size": 64,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "val_size": 96,
    }
    return Recipe(**{**defaults, **fields})


def train(config=None, recipe_=None, **kwargs):
    return train_model(
        config or model_config(),
        "synthetic",
        recipe_ or recipe(),
        device=CPU,
        data_options=SYNTHETIC,
        progress=False,
        **kwargs,
    )


def test_a_kernelwarehouse_model_learns_the_generated_data():
    # Where a short run of this tiny net ends depends on the last bits of its arithmetic (seeds, or
    # the exact path taken, move the 4th epoch's accuracy between 0.36 and 0.81); by the 8th every
    # run tried was at 0.56 or more. Four classes on 96 images: chance is 0.25, its standard error
    # 0.044, so 0.45 is far beyond what a net that learned nothing reaches.
    result = train(recipe_=recipe(epochs=8))
    assert [m["epoch"] for m in result.history] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert result.last["val_accuracy"] > 0.45
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.params == sum(p.numel() for p in build_model(model_config()).parameters())


def test_resuming_from_a_checkpoint_gives_the_same_final_weights(tmp_path):
    uninterrupted = tmp_path / "whole"
    train(checkpoint_dir=uninterrupted, recipe_=recipe(epochs=3, **{"seed": 5}))
    interrupted = tmp_path / "interrupted"
    interrupt_after_epoch(partial(train, checkpoint_dir=interrupted, recipe_=recipe(epochs=3, seed=5)), 2)
    assert load_checkpoint(interrupted)["epoch"] == 2
    resumed = train(checkpoint_dir=interrupted, recipe_=recipe(epochs=3, seed=5))
    assert resumed.resumed_from_epoch == 2 and resumed.epochs == 3
    whole, pieced = load_checkpoint(uninterrupted), load_checkpoint(interrupted)
    assert whole["step"] == pieced["step"]
    for key, value in whole["model"].items():
        assert torch.equal(value, pieced["model"][key]), key
    assert [m["val_accuracy"] for m in whole["history"]] == [m["val_accuracy"] for m in pieced["history"]]


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train(checkpoint_dir=tmp_path, recipe_=recipe(epochs=1))
    with pytest.raises(ValueError, match="different run"):
        train(checkpoint_dir=tmp_path, recipe_=recipe(epochs=1, lr=0.01))


def test_finished_run_is_not_repeated(tmp_path):
    train(checkpoint_dir=tmp_path, recipe_=recipe(epochs=1))
    again = train(checkpoint_dir=tmp_path, recipe_=recipe(epochs=1))
    assert again.resumed_from_epoch == 1 and again.epochs == 1


def _temperatures_per_step(config, recipe_):
    """(step, temperature the step trained with) for every optimizer step of a run."""
    seen = []

    def record(model, step):
        layer = next(m for m in model.modules() if isinstance(m, TemperatureControlled))
        seen.append((step, float(layer.temperature)))

    result = train(config, recipe_, step_hooks=[record])
    assert [step for step, _ in seen] == list(range(1, len(seen) + 1))
    return seen, result


def test_temperature_is_set_as_the_references_set_it():
    """The references (KernelWarehouse's engine.py, ODConv's main.py) set the temperature before
    iteration i of epoch e from the count of steps once it is done, e * steps_per_epoch + i + 1:
    linear from start to end over temp_epoch epochs, held at end afterwards."""
    seen, result = _temperatures_per_step(
        model_config(temperature={"shape": "linear", "start": 1.0, "end": 0.0, "epochs": 2}), recipe(epochs=3)
    )
    steps_per_epoch = len(seen) // 3
    annealing_steps = 2 * steps_per_epoch
    for step, value in seen:  # step: 1-based, the count after the step
        assert value == pytest.approx(max(0.0, (annealing_steps - step) / annealing_steps), abs=1e-6)
    assert seen[0][1] < 1.0  # the first step already anneals
    assert seen[annealing_steps - 1][1] == 0.0  # the schedule's last step trains at its end
    assert result.history[0]["temperature"] == pytest.approx(0.5)  # the value of the epoch's last step
    assert result.history[-1]["temperature"] == 0.0


def test_a_fractional_schedule_anneals_a_short_and_a_long_run_alike():
    config = model_config(temperature={"start": 1.0, "end": 0.0, "fraction": 0.5})
    short, _ = _temperatures_per_step(config, recipe(epochs=1))
    long, _ = _temperatures_per_step(config, recipe(epochs=2))
    assert len(long) == 2 * len(short)
    # step s of the short run and step 2s of the long one are at the same point of training
    assert [value for _, value in short] == pytest.approx([value for _, value in long[1::2]], abs=1e-6)
    assert short[len(short) // 2 - 1][1] == 0.0 and short[len(short) // 2 - 2][1] > 0.0


def test_a_diverging_run_stops_with_a_reason():
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(config=model_config("static"), recipe_=recipe(epochs=2, lr=1e12, warmup_epochs=0))


class Batches:
    """A fixed list of (images, labels) batches: what the trainer needs of a loader."""

    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def _batches(count=3, features=8, classes=4):
    generator = torch.Generator().manual_seed(0)
    return Batches(
        [
            (
                torch.randn(16, features, generator=generator),
                torch.randint(classes, (16,), generator=generator),
            )
            for _ in range(count)
        ]
    )


def test_a_huge_but_finite_training_loss_is_divergence():
    """Logits of ~1e5 give a finite loss far over 100 ln(4): the run stops, it is not a result."""
    model = torch.nn.Linear(8, 4)
    with torch.no_grad():
        model.weight.mul_(1e5)
    with pytest.raises(
        TrainingDiverged, match=r"the training loss became [0-9.e+]+ in epoch 1 \(the bound is 138.6"
    ):
        fit(model, _batches(), _batches(1), recipe(epochs=2, lr=1e-9, warmup_epochs=0), CPU)


def _frozen_statistics_model(running_var: float) -> torch.nn.Module:
    """Batch statistics keep the training logits small; the frozen running statistics the
    evaluation uses (momentum 0: they never move) blow them up (a tiny variance) or make them
    NaN (a negative one)."""
    norm = torch.nn.BatchNorm1d(4, eps=1e-20, momentum=0.0)
    with torch.no_grad():
        norm.running_var.fill_(running_var)
    return torch.nn.Sequential(torch.nn.Linear(8, 4), norm)


def test_a_nan_validation_loss_stops_a_run_whose_training_loss_is_fine():
    seen = []
    with pytest.raises(TrainingDiverged, match="the validation loss became nan in epoch 1"):
        fit(
            _frozen_statistics_model(-1.0),
            _batches(),
            _batches(1),
            recipe(epochs=2, lr=1e-3, warmup_epochs=0),
            CPU,
            on_epoch=seen.append,
        )
    assert seen == []  # no epoch of it was reported as a result


def test_a_huge_but_finite_validation_loss_is_no_divergence():
    """As in networks that train well before their normalisation statistics settle (a KW
    ResNet18 on 12x12 images: 37,192 after epoch 1, 32.6 after epoch 4, training loss 1.5 to 0.8):
    the run goes on, its accuracy measured as it is."""
    result = fit(
        _frozen_statistics_model(1e-20),
        _batches(),
        _batches(1),
        recipe(epochs=2, lr=1e-3, warmup_epochs=0),
        CPU,
    )
    assert result.epochs == 2 and result.last["val_loss"] > 1e6 and result.last["train_loss"] < 5


def test_model_and_data_must_agree():
    wrong = parse_model_config(
        {"backbone": "resnet18_cifar", "num_classes": 10, "in_chans": 1, "width": 0.125}
    )
    with pytest.raises(ModelConfigError, match="num_classes: 10, but synthetic has 4 classes"):
        train(config=wrong)
    with pytest.raises(RecipeError, match="batch_size"):
        train(recipe_=recipe(batch_size=1000))


def test_label_smoothing_clipping_and_adamw_run():
    result = train(
        config=model_config("odconv"),
        recipe_=recipe(
            epochs=1, optimizer="adamw", lr=2e-3, label_smoothing=0.1, grad_clip=1.0, augment=False
        ),
    )
    assert result.epochs == 1 and 0 <= result.last["val_accuracy"] <= 1


def test_test_set_only_when_asked():
    assert "test_accuracy" not in train(recipe_=recipe(epochs=1)).last
    assert 0 <= train(recipe_=recipe(epochs=1, evaluate_test=True)).last["test_accuracy"] <= 1


KWSEARCH = Path(sys.executable).parent / "kwsearch"


def test_cli_train_json_contract(tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text(
        yaml.safe_dump(
            {"backbone": "resnet18_cifar", "num_classes": 10, "width": 0.125, "conv": {"family": "dyconv"}}
        )
    )
    result = subprocess.run(
        [
            str(KWSEARCH),
            "train",
            str(model),
            "--data",
            "synthetic",
            "--epochs",
            "1",
            "--train-subset",
            "200",
            "--batch-size",
            "50",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"val_accuracy", "params", "epochs", "seconds"} <= set(summary)
    assert summary["epochs"] == 1 and isinstance(summary["params"], int)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "imagenet"], "imagenet"),
        (["--data", "synthetic", "--epochs", "0"], "--epochs 0: "),
        (["--data", "synthetic", "--train-subset", "5"], "--train-subset 5: "),
    ],
)
def test_cli_train_bad_input_exits_2(tmp_path, args, message):
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump({"backbone": "resnet18_cifar", "num_classes": 10, "width": 0.125}))
    result = subprocess.run(
        [str(KWSEARCH), "train", str(model), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("family", ["kw", "dyconv", "odconv"])
def test_channels_last_training_of_dynamic_models(family):
    """Dynamic models hold tensors of other ranks than 4 (cells, 5-d banks), which
    ``Module.to(memory_format=channels_last)`` refuses; the trainer converts the 4-d ones only,
    as it does on every GPU run, and the result equals the NCHW run's."""
    plain = train(model_config(family), recipe(epochs=1, channels_last="off"))
    nhwc = train(model_config(family), recipe(epochs=1, channels_last="on"))
    assert nhwc.last["train_loss"] == pytest.approx(plain.last["train_loss"], rel=1e-4)
    model = to_channels_last(build_model(model_config(family)))
    for tensor in model.parameters():
        if tensor.dim() == 4 and tensor.shape[1] > 1 and tensor.shape[2] * tensor.shape[3] > 1:
            assert tensor.is_contiguous(memory_format=torch.channels_last)


def test_each_layer_takes_its_path_before_the_first_step_timed_only_where_the_run_pays(monkeypatch, tmp_path):
    file = tmp_path / "paths.json"
    monkeypatch.setenv("KWSEARCH_PATH_CACHE", str(file))
    monkeypatch.setenv("KWSEARCH_MEASURE_PATHS", "1")
    choices = []

    def record(model, step):
        if step == 1:
            layers = [m for m in model.modules() if isinstance(m, MultiPathLayer)]
            choices.extend(choice for layer in layers for choice in layer.chosen_paths.items())

    # 12 steps: too few to pay for timing any layer, so the cost model chooses and nothing is cached
    config = model_config("kw", sharing_range=["layer"])
    train(config, recipe(epochs=1), step_hooks=[record])
    assert choices and all(shape[0] == 32 for shape, _ in choices)  # the training batch
    assert {choice.source for _, choice in choices} <= {"modelled", "only"}
    assert not file.exists()

    # Timed for a run of no known length (what `kwsearch inspect --paths` does), the choices
    # serve the short run from the cache, which it leaves as it was.
    example = torch.randn(32, 1, 16, 16)
    timed_now = choose_training_paths(build_model(config), example, recipe(epochs=1))
    assert "measured" in {entry.choice.source for entry in timed_now}
    timed = file.read_text()
    choices.clear()
    train(config, recipe(epochs=1), step_hooks=[record])
    assert "cached" in {choice.source for _, choice in choices} <= {"cached", "modelled", "only"}
    assert file.read_text() == timed


def test_a_runs_set_up_counts_from_when_its_caller_started_it():
    """The trainable times a run's measured costs before training: that is the run's set-up too."""
    started_at = time.time() - 100.0
    result = train(recipe_=recipe(epochs=1), started_at=started_at)
    first = result.history[0]
    assert first["started_at"] == started_at and first["setup_seconds"] >= 100.0
    assert first["ended_at"] - first["started_at"] >= first["setup_seconds"] + first["epoch_seconds"] - 1e-3

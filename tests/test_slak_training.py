"""SLaK through the one trainer: sparse training keeps its masks (and exact zeros) through every
step with and without bf16 autocast, rewires on schedule, learns, resumes bit-identically from a
checkpoint, and runs from the `kwsearch train` and `kwsearch inspect` commands."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from kwsearch.models import account, build_model, parse_model_config
from kwsearch.nn.sparsity import MASK_BUFFER
from kwsearch.train import Recipe, train_model
from kwsearch.train.checkpoint import load_checkpoint
from tests.helpers import interrupt_after_epoch

SYNTHETIC = {"num_train": 288, "num_test": 64, "channels": 1, "height": 16, "width": 16, "num_classes": 4}
CPU = torch.device("cpu")
MODEL = {
    "backbone": "slak_nano",
    "num_classes": 4,
    "in_chans": 1,
    "width": 0.125,
    "input_size": [16, 16],
    "backbone_args": {"patch_size": 2, "kernel_size": [9, 7, 5, 3], "width_factor": 1.0},
}


def config(**conv):
    return parse_model_config({**MODEL, "conv": {"family": "slak", "small_kernel": 3, **conv}})


def recipe(**fields):
    defaults = {"epochs": 2, "batch_size": 32, "eval_batch_size": 64, "lr": 0.05, "val_size": 64}
    return Recipe(**{"warmup_epochs": 0.5, **defaults, **fields})


def train(model_config, recipe_, **kwargs):
    return train_model(
        model_config, "synthetic", recipe_, device=CPU, data_options=SYNTHETIC, progress=False, **kwargs
    )


def masks_of(model):
    return {name: b for name, b in model.named_buffers() if name.endswith(MASK_BUFFER)}


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_masks_keep_their_density_and_masked_weights_stay_exactly_zero(amp):
    seen = {"steps": 0, "rewired": 0}
    start = {}

    def check(model, step):
        masks = masks_of(model)
        weights = dict(model.named_parameters())
        if not start:
            start.update({name: (m.clone(), int(m.sum())) for name, m in masks.items()})
        for name, mask in masks.items():
            weight = weights[name.removesuffix(MASK_BUFFER) + "weight"]
            assert torch.count_nonzero(weight[~mask]) == 0, (step, name)
            assert int(mask.sum()) == start[name][1], (step, name)
        seen["steps"] += 1
        seen["rewired"] += any(not torch.equal(m, start[n][0]) for n, m in masks.items())

    result = train(config(sparsity=0.5, update_frequency=3), recipe(amp=amp), step_hooks=[check])
    assert seen["steps"] == result.last["step"] == 2 * (224 // 32)
    assert seen["rewired"] > 0  # the masks did move
    assert math.isfinite(result.last["train_loss"])


def test_rewiring_follows_the_cosine_schedule_during_training():
    moves = []
    previous = {}

    def record(model, step):
        masks = {name: m.clone() for name, m in masks_of(model).items()}
        if previous:
            moves.append((step, sum(int((previous[n] & ~m).sum()) for n, m in masks.items())))
        previous.update(masks)
        record.live = {n: int(m.sum()) for n, m in masks.items()}

    train(
        config(sparsity=0.5, update_frequency=4, prune_rate=0.6, sparse_init="uniform"),
        recipe(),
        step_hooks=[record],
    )
    total = 2 * (224 // 32)
    for step, pruned in moves:
        rate = 0.6 * 0.5 * (1 + math.cos(math.pi * step / total))
        expected = sum(math.ceil(rate * live) for live in record.live.values()) if step % 4 == 0 else 0
        assert pruned == expected, step


def test_a_sparse_slak_model_learns_and_keeps_its_planned_parameters():
    model_config = config(sparsity=0.6, update_frequency=5)
    with torch.device("meta"):
        planned = account(build_model(model_config), (1, 16, 16))
    final = {}
    result = train(model_config, recipe(epochs=4), step_hooks=[lambda m, s: final.update(model=m)])
    assert result.last["val_accuracy"] > 0.6  # four classes: chance is 0.25
    assert planned.effective_params < 0.5 * planned.params
    assert account(final["model"], (1, 16, 16)).effective_params == planned.effective_params


def test_resuming_a_sparse_run_gives_bit_identical_weights_and_masks(tmp_path):
    model_config = config(sparsity=0.5, update_frequency=3, growth="gradient")
    train(model_config, recipe(epochs=3, seed=4), checkpoint_dir=tmp_path / "whole")
    pieced = tmp_path / "pieced"
    interrupt_after_epoch(partial(train, model_config, recipe(epochs=3, seed=4), checkpoint_dir=pieced), 1)
    resumed = train(model_config, recipe(epochs=3, seed=4), checkpoint_dir=pieced)
    assert resumed.resumed_from_epoch == 1
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(pieced)
    assert any(key.endswith(MASK_BUFFER) for key in whole["model"])
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key


ROOT = Path(__file__).resolve().parents[1]
KWSEARCH = Path(sys.executable).parent / "kwsearch"


def run(*args):
    # this checkout's package, whichever one the console script was installed from
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(KWSEARCH), *args], capture_output=True, text=True, timeout=300, env=env)


def test_cli_trains_and_inspects_a_sparse_slak_model(tmp_path):
    conv = {"family": "slak", "small_kernel": 3, "sparse_init": "erk"}
    data = {
        **MODEL,
        "num_classes": 10,
        "in_chans": 3,
        "input_size": [32, 32],
        "conv": conv,
    }  # synthetic's shape
    path = tmp_path / "slak.yaml"
    path.write_text(yaml.safe_dump(data))
    inspected = run("inspect", str(path), "--json")
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout.strip().splitlines()[-1])
    model = build_model(parse_model_config(data))
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["effective_params"] < report["params"]
    text = run("inspect", str(path))
    assert f"effective   {report['effective_params']:>14,}" in text.stdout
    options = ["--data", "synthetic", "--epochs", "1", "--train-subset", "200", "--batch-size", "50"]
    trained = run("train", str(path), *options, "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and 0 <= summary["val_accuracy"] <= 1

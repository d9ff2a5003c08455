"""What timing a config costs (kwsearch.train.timing, done once per trial before training when a
study measures costs), as a share of the proxy trial it precedes: the quickstart's proxy recipe on
Fashion-MNIST, on the CPU with one torch thread (what a quickstart trial gets).

    .venv/bin/python bench/measured_costs.py [--resolution 16] [--families static kw_1x kw_2x]

Prints, per config, the seconds spent choosing the execution paths of its dynamic layers (timed
on the device, in a fresh path cache: what the trial pays at its start anyway, measured or not),
then the seconds the timing took (the paths chosen), the proxy trial's seconds after it, the
timing's share of the two, and what was measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from kwsearch.data import load_dataset
from kwsearch.models import build_model, parse_model_config
from kwsearch.models.presets import kw_preset
from kwsearch.train import Recipe, choose_training_paths, train_model
from kwsearch.train.timing import measure_costs

# studies/quickstart.yaml's proxy, at the given resolution
PROXY = {
    "epochs": 3,
    "train_subset": 3000,
    "val_size": 1000,
    "batch_size": 128,
    "lr": 0.1,
    "warmup_epochs": 0.5,
}


def config(family: str, resolution: int, width: float) -> dict:
    base = {"backbone": "resnet18_cifar", "num_classes": 10, "in_chans": 1, "width": width}
    conv = {"family": "static"} if family == "static" else kw_preset("resnet18_cifar", family)
    return {**base, "input_size": [resolution, resolution], "conv": conv}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--families", nargs="+", default=["static", "kw_1x", "kw_2x"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["KWSEARCH_PATH_CACHE"] = str(Path(tempfile.mkdtemp()) / "paths.json")
    device = torch.device("cpu")
    recipe = Recipe(**PROXY, resolution=(args.resolution, args.resolution))
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}; {PROXY}, {args.resolution}px")
    # a worker loads the data set once and every trial it runs reuses it: not part of a trial's time
    load_dataset("fashion-mnist", device=device, image_size=recipe.resolution)
    for family in args.families:
        model = parse_model_config(config(family, args.resolution, args.width))
        start = time.perf_counter()
        example = torch.randn(recipe.batch_size, 1, args.resolution, args.resolution)
        choose_training_paths(build_model(model), example, recipe)
        paths = time.perf_counter() - start
        start = time.perf_counter()
        measured = measure_costs(model, (1, args.resolution, args.resolution), recipe, device)
        timing = time.perf_counter() - start
        start = time.perf_counter()
        train_model(model, "fashion-mnist", recipe, device=device, progress=False)
        trial = time.perf_counter() - start
        times = ", ".join(f"{k} {v:.3f}" for k, v in measured.items() if k != "device")
        print(
            f"{family:<7} width {args.width}: paths {paths:.2f} s, timing {timing:.2f} s, "
            f"proxy trial {trial:.1f} s, "
            f"share {100 * timing / (timing + trial):.1f}%  ({times}; {measured['device']})"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

"""SLaK training step time against static ConvNeXt-Nano, through the trainer.

    .venv/bin/python bench/slak.py [--device cuda] [--width 0.25] [--batch 128] [--steps 10] [--rounds 3]

Every model trains three epochs of ``--steps`` steps on generated 28x28 one-channel data (the
Fashion-MNIST shape) with ``kwsearch.train.train_model``; the warm epochs (second and third) are
timed. The models take turns for ``--rounds`` rounds and each keeps its fastest epoch, so load
from other processes on a shared machine inflates no row more than another.

Rows: ConvNeXt-Nano (7x7 depthwise kernels); SLaK-Nano with dense M x M kernels (``static``, the
large-kernel baseline); SLaK-Nano decomposed but dense (``slak`` at sparsity 0: the cost of the
three branches); SLaK-Nano sparse as the paper trains it (sparsity 0.4, rewiring every 100
steps) and rewiring every step (the upper bound of the mask cost). Times are relative to
ConvNeXt-Nano in the same run.
"""

from __future__ import annotations

import argparse

import torch

from kwsearch.models import parse_model_config
from kwsearch.train import Recipe, default_device, train_model

SPARSE = {"family": "slak", "sparsity": 0.4}
MODELS = {
    "convnext_nano static 7x7": {"backbone": "convnext_nano", "conv": {"family": "static"}},
    "slak_nano static MxM": {"backbone": "slak_nano", "conv": {"family": "static"}},
    "slak_nano slak dense": {"backbone": "slak_nano", "conv": {**SPARSE, "sparsity": 0.0}},
    "slak_nano slak sparse 0.4": {"backbone": "slak_nano", "conv": SPARSE},
    "slak_nano slak rewire/step": {"backbone": "slak_nano", "conv": {**SPARSE, "update_frequency": 1}},
}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--device")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    data = {
        "num_train": args.batch * args.steps + args.batch,
        "num_test": args.batch,
        "channels": 1,
        "height": 28,
        "width": 28,
        "num_classes": 10,
    }
    recipe = Recipe(epochs=3, batch_size=args.batch, lr=0.05, warmup_epochs=0, val_size=args.batch)
    shape = {"num_classes": 10, "in_chans": 1, "width": args.width, "backbone_args": {"patch_size": 2}}
    configs = {label: parse_model_config({**model, **shape}) for label, model in MODELS.items()}
    fastest = dict.fromkeys(configs, float("inf"))
    params = {}
    for _ in range(args.rounds):
        for label, config in configs.items():
            result = train_model(config, "synthetic", recipe, device=device, data_options=data)
            warm = min(epoch["train_seconds"] for epoch in result.history[1:])
            fastest[label] = min(fastest[label], 1000 * warm / args.steps)
            params[label] = result.params
    print(f"device {device}, width {args.width}, batch {args.batch}, 28x28x1, {args.steps} steps per epoch")
    print(f"{'model':<28}{'params':>11}{'ms/step':>10}{'vs nano':>9}")
    baseline = next(iter(fastest.values()))
    for label, step_ms in fastest.items():
        print(f"{label:<28}{params[label]:>11,}{step_ms:>10.1f}{step_ms / baseline:>8.2f}x")


if __name__ == "__main__":
    main()

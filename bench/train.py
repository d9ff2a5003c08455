"""Trainer throughput, and proxy accuracy on Fashion-MNIST.

    .venv/bin/python bench/train.py throughput [--device cuda] [--batch 128] [--steps 20] [--compile]
    .venv/bin/python bench/train.py accuracy [--epochs 3] [--train-subset 10000]

``throughput``: training images per second of the trainer (``kwsearch.train.fit``) for static and
KernelWarehouse 1x ResNet18-CIFAR and MobileNetV2 on Fashion-MNIST-shaped data, next to a
minimal hand-written loop over the same model and the same on-device batches; the ratio is the
trainer's share of that loop's throughput (target: >= 0.9). On CUDA both use bf16 autocast and
channels_last; both run the paths the trainer times for each layer; with ``--compile`` both run
the model through ``torch.compile`` (compiling in the first, untimed epoch). ``accuracy``:
validation accuracy of width-0.25 ResNet18-CIFAR, static and KernelWarehouse 1x, after a few
epochs on Fashion-MNIST, with the time taken.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from kwsearch.data import load_dataset, train_loader
from kwsearch.models import build_model, parse_model_config
from kwsearch.train import (
    Recipe,
    choose_training_paths,
    default_device,
    fit,
    to_channels_last,
    train_model,
)

KW1X = {
    "family": "kw",
    "reduction": 0.0625,
    "cell_num_ratio": 1,
    "sharing_range": ["layer", "conv", "pwconv"],
}
MODELS = {
    "resnet18_cifar static": {"backbone": "resnet18_cifar", "conv": {"family": "static"}},
    "resnet18_cifar kw1x": {"backbone": "resnet18_cifar", "conv": KW1X},
    "mobilenetv2_100 static": {"backbone": "mobilenetv2_100", "conv": {"family": "static"}},
    "mobilenetv2_100 kw1x": {"backbone": "mobilenetv2_100", "conv": KW1X},
}


class _Steps:
    """The first ``steps`` batches of a loader, as a BatchSource for ``fit``."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index == self.steps:
                return
            yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _hand_written(model, batches, recipe: Recipe, device: torch.device) -> float:
    """Seconds for one pass of the plainest loop: forward, loss, backward, SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in batches:
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def throughput(args: argparse.Namespace) -> None:
    device = torch.device(args.device) if args.device else default_device()
    dataset = load_dataset("fashion-mnist", device=device, image_size=args.size)
    # Two epochs, the second timed: the hand-written loop is timed warm too.
    recipe = Recipe(
        epochs=2, batch_size=args.batch, lr=0.05, warmup_epochs=0, val_size=args.batch, compile=args.compile
    )
    data = f"{args.size}x{args.size} Fashion-MNIST"
    print(f"device {device}, batch {args.batch}, {data}, {args.steps} steps{', compiled' * args.compile}")
    print(f"{'model':<26}{'trainer img/s':>15}{'hand loop img/s':>17}{'ratio':>8}")
    for label in args.models:
        config = parse_model_config({**MODELS[label], "num_classes": 10, "in_chans": 1})
        loader = train_loader(dataset, args.batch, seed=0, channels_last=device.type == "cuda")
        batches = _Steps(loader, args.steps)
        warm = build_model(config).to(device)
        if device.type == "cuda":
            warm = to_channels_last(warm)
        choose_training_paths(warm, next(iter(loader))[0], recipe)  # what fit does before its first step
        if args.compile:
            warm = torch.compile(warm, dynamic=False)
        _hand_written(warm, _Steps(loader, 2), recipe, device)  # warm-up: allocator, kernels, compiling
        # Both iterate the same live loader: augmentation is part of either loop's work.
        batches.set_epoch(1)
        loop_seconds = _hand_written(warm, batches, recipe, device)
        model = build_model(config)
        val = _Steps(loader, 1)
        result = fit(model, batches, val, recipe, device, progress=False)
        trainer_seconds = result.history[1]["train_seconds"]
        images = args.steps * args.batch
        print(
            f"{label:<26}{images / trainer_seconds:>15.1f}{images / loop_seconds:>17.1f}"
            f"{loop_seconds / trainer_seconds:>8.2f}",
            flush=True,
        )


def accuracy(args: argparse.Namespace) -> None:
    recipe = Recipe(
        epochs=args.epochs, batch_size=128, lr=0.1, warmup_epochs=0.5, train_subset=args.train_subset
    )
    print(
        f"Fashion-MNIST, {args.epochs} epochs on {args.train_subset} training images, 6000 validation images"
    )
    for label, conv in (("static", {"family": "static"}), ("kw1x", KW1X)):
        config = parse_model_config(
            {"backbone": "resnet18_cifar", "num_classes": 10, "in_chans": 1, "width": 0.25, "conv": conv}
        )
        result = train_model(config, "fashion-mnist", recipe, progress=False)
        accuracies = " ".join(f"{m['val_accuracy']:.4f}" for m in result.history)
        print(
            f"resnet18_cifar w0.25 {label:<7} {result.params:>9,} params  val acc by epoch {accuracies}"
            f"  {result.seconds:.0f} s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    speed = sub.add_parser("throughput")
    speed.add_argument("--device")
    speed.add_argument("--batch", type=int, default=128)
    speed.add_argument("--size", type=int, default=28)
    speed.add_argument("--steps", type=int, default=10)
    speed.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    speed.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    quality = sub.add_parser("accuracy")
    quality.add_argument("--epochs", type=int, default=3)
    quality.add_argument("--train-subset", type=int, default=10000)
    args = parser.parse_args()
    throughput(args) if args.mode == "throughput" else accuracy(args)


if __name__ == "__main__":
    main()

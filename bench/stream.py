"""Streaming a prepared image cache: does the reader keep a static ResNet18 fed?

    .venv/bin/python bench/stream.py [--images 1024] [--sizes 112 224] [--batch 64] [--steps 10]
                                     [--repeats 3] [--device cpu] [--threads 2] [--workdir DIR]

Writes a folder of generated photo-like JPEGs (500x375, smooth colour fields with grain: about the
size of an ImageNet photo on disk), prepares it with ``prepare_image_cache`` at each size (the
shorter side, centre square kept; images/s of preparation), then at each size measures, in one
process and one run:

- ``reader``: training batches (shuffled, augmented and normalised on the device, as the trainer
  gets them) from the ``StreamLoader`` with nothing else running: images/s into the training loop,
  from the page cache (``warm``) and after the cache file was evicted from it (``cold``);
- ``step``: a static ResNet18 (the ImageNet layout, width 1) training on in-memory batches of the
  same images (fetching the batch, forward, backward, SGD step): images/s;
- ``streamed``: the same training fed by the ``StreamLoader``: images/s.

The reader's rates are the fastest of ``--repeats`` epochs (after one untimed). The two training
rates are medians over ``--steps`` steps each, the two loaders taking turns step by step, so that
other work on a shared machine slows both alike.

It prints ``reader / step`` (how many times faster the reader delivers than ResNet18 consumes) and
``streamed / step`` (1.0: training never waits for the reader). Ratios are of one run on one
machine; on a shared machine compare ratios, not images/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kwsearch.data import load_dataset, prepare_image_cache, train_loader
from kwsearch.models import build_model, parse_model_config

CLASSES = 8


def write_photos(folder: Path, count: int) -> None:
    """``count`` JPEGs in ``CLASSES`` class folders: upscaled random colour fields plus grain, so
    that they compress like photographs (about 60-120 kB each)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        path = folder / f"class{i % CLASSES}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reader_rate(loader, device: torch.device) -> float:
    """Images per second of one whole epoch of ``loader``, batches consumed as fast as they come."""
    started = time.perf_counter()
    seen = 0
    for x, _ in loader.epoch(0):
        seen += x.shape[0]
    _sync(device)
    return seen / (time.perf_counter() - started)


def step_rates(model, loaders: dict, steps: int, device: torch.device) -> dict[str, float]:
    """Images per second of training steps fed by each of ``loaders``, taken in turn step by
    step (so that both see the same machine: other work on a shared one slows both alike), each
    timed with the fetching of its batch; the median over ``steps`` steps each, after one untimed."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    epochs = {name: loader.epoch(1) for name, loader in loaders.items()}
    times: dict[str, list[float]] = {name: [] for name in loaders}
    images = {}
    for step in range(steps + 1):
        for name, batches in epochs.items():
            _sync(device)
            started = time.perf_counter()
            x, y = next(batches)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            if step:
                times[name].append(time.perf_counter() - started)
            images[name] = x.shape[0]
    for batches in epochs.values():
        batches.close()
    return {name: images[name] / statistics.median(seconds) for name, seconds in times.items()}


def evict(cache: Path) -> None:
    """Drop the cache's image files from the page cache, so that the next epoch reads the disk."""
    for file in cache.glob("*.images"):
        with open(file, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the model")
    parser.add_argument("--workdir", type=Path, default=None, help="where the images and caches go")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} torch threads, device {device}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        started = time.perf_counter()
        write_photos(work / "photos", args.images)
        seconds = time.perf_counter() - started
        kilobytes = sum(p.stat().st_size for p in (work / "photos").rglob("*.jpg")) / args.images / 1e3
        print(f"{args.images} JPEGs of 500x375 ({kilobytes:.0f} kB each) written in {seconds:.1f} s")
        for size in args.sizes:
            cache = work / f"cache{size}"
            summary = prepare_image_cache(work / "photos", cache, size, progress=False)
            print(
                f"\n{size}px: prepared {args.images / summary.seconds:,.0f} images/s "
                f"({os.cpu_count()} decoding threads)"
            )
            stream = load_dataset("prepared", cache, device=device, loading="stream")
            memory = load_dataset("prepared", cache, device=device, loading="memory")
            streamed = train_loader(stream, args.batch, seed=0)
            reader_rate(streamed, device)  # untimed: threads, first page touches
            warm = max(reader_rate(streamed, device) for _ in range(args.repeats))
            cold = []
            for _ in range(args.repeats):
                evict(cache)
                cold.append(reader_rate(streamed, device))
            cold = max(cold)
            config = {
                "backbone": "resnet18",
                "num_classes": CLASSES,
                "in_chans": 3,
                "input_size": [size, size],
                "conv": {"family": "static"},
            }
            torch.manual_seed(0)
            model = build_model(parse_model_config(config)).to(device)
            rates = step_rates(
                model,
                {"memory": train_loader(memory, args.batch, seed=0), "stream": streamed},
                args.steps,
                device,
            )
            step, fed = rates["memory"], rates["stream"]
            print(f"  reader      warm {warm:10,.0f} images/s   cold {cold:10,.0f} images/s")
            print(f"  ResNet18    in memory {step:8,.1f} images/s   streamed {fed:8,.1f} images/s")
            ratios = f"warm {warm / step:,.0f}x, cold {cold / step:,.0f}x"
            print(f"  reader / step: {ratios};  streamed / step {fed / step:.2f}")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Two data-parallel workers against one: does a replay on two workers learn as one does?

    .venv/bin/python bench/workers.py [--epochs 4] [--seeds 0 1 2] [--train-subset 6000]
                                      [--conv kw] [--workdir DIR]

Two copies of one study on Fashion-MNIST (one fixed config: ResNet18-CIFAR at width 0.125,
KernelWarehouse 1x sharing within each layer, 16x16 images) whose replay recipes differ only in
``workers`` (1, or 2 through Ray Train with gloo on the CPU) with the same global batch of 64 and
learning rate. Each study is searched (its one proxy trial), then replayed once per seed through
``kwsearch.replay.run_replay``: the whole path a user runs. Per epoch it prints each curve's test
accuracy (mean over the seeds, 95% interval from ``kwsearch.stats.accuracy_estimate``: Student's t
over the seeds, never narrower than Wilson's over all their test images) and the difference
two workers - one worker with its MOVER interval (``kwsearch.stats.difference``); the curves agree
within seed noise where every difference's interval holds 0. It also prints, seed by seed, how
far the two curves are apart (the same seed sees the same batches on one worker or two; only the
batch statistics, computed per worker, and the order of floating-point sums differ).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from kwsearch.execution import ray_session
from kwsearch.records import StudyStore
from kwsearch.replay.runner import run_replay
from kwsearch.search import load_study
from kwsearch.search.runner import run_search
from kwsearch.stats import accuracy_estimate, difference


def study(name: str, workers: int, args: argparse.Namespace) -> dict:
    conv = {"family": "static"} if args.conv == "static" else {"family": "kw", "sharing_range": "layer_conv"}
    return {
        "name": name,
        "space": {
            "backbone": "resnet18_cifar",
            "num_classes": 10,
            "in_chans": 1,
            "input_size": [16, 16],
            "width": 0.125,
            "conv": conv,
        },
        "data": "fashion-mnist",
        "proxy": {"epochs": 1, "train_subset": 1000, "val_size": 500, "resolution": [16, 16]},
        "budget": {"trials": 1},
        "early_stopping": False,
        "baselines": [],
        # one worker: two seeds at once on the two CPUs; two workers: one run, a CPU each
        "resources": {"cpu": 1, "threads": 1, "max_concurrent": 2 if workers == 1 else 1},
        "replay": {
            "recipe": {
                "epochs": args.epochs,
                "batch_size": 64,
                "lr": 0.05,
                "warmup_epochs": 0.5,
                "train_subset": args.train_subset,
                "val_size": 1000,
                "resolution": [16, 16],
                "workers": workers,
            },
            "seeds": args.seeds,
        },
    }


def curves(storage: str, name: str) -> dict[int, list[dict]]:
    """Each seed's replay history."""
    return {r.seed: r.history for r in StudyStore.open(storage, name).replays() if r.status == "complete"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-subset", type=int, default=6000)
    parser.add_argument("--conv", choices=["kw", "static"], default="kw")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    found = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as work, ray_session(None):
        runs = Path(work) / "runs"
        for workers in (1, 2):
            name = f"workers{workers}"
            path = Path(work) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(study(name, workers, args)))
            run_search(load_study(path), runs_dir=runs, progress=False)
            started = time.perf_counter()
            summary = run_replay(str(path), trials=[0], runs_dir=runs)
            assert not summary.failed, summary.failed
            found[workers] = curves(summary.storage, name)
            print(f"{workers} worker(s): {len(args.seeds)} replays in {time.perf_counter() - started:.0f} s")
    one, two = found[1], found[2]
    images = one[args.seeds[0]][-1]["test_images"]
    print(f"\ntest accuracy over {images:,} images, {len(args.seeds)} seeds (mean, 95% CI)")
    print("epoch   1 worker                    2 workers                   2 - 1 (95% CI)")
    agree = True
    for epoch in range(args.epochs):
        a = accuracy_estimate([one[s][epoch]["test_accuracy"] for s in args.seeds], images)
        b = accuracy_estimate([two[s][epoch]["test_accuracy"] for s in args.seeds], images)
        d, low, high = difference(b, a)
        agree &= low <= 0 <= high
        curve = "   ".join(f"{e.value:.4f} ({e.low:.4f}-{e.high:.4f})" for e in (a, b))
        print(f"{epoch + 1:>5}   {curve}   {d:+.4f} ({low:+.4f} to {high:+.4f})")
    print("the curves agree within seed noise" if agree else "the curves differ beyond seed noise")
    gaps = [
        max(abs(one[s][e]["test_accuracy"] - two[s][e]["test_accuracy"]) for e in range(args.epochs))
        for s in args.seeds
    ]
    print("same seed, largest |2 - 1| over the epochs: " + ", ".join(f"{g:.4f}" for g in gaps))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""What a tracker costs a search: the same tiny search (generated 12x12 data, two trials at a
time, 3 epochs a trial) run with no tracker and with each chosen tracker, in one Ray session.

    PYTHONPATH=. .venv/bin/python bench/trackers.py [--trials 8] [--repeats 3] [--log wandb mlflow]

Runs the searches in turns (no tracker, then each tracker, ``--repeats`` times) and prints, for
each, the median over the repeats of: the search's wall time; the seconds the driver spent inside
the tracker's calls (each run's start, epochs, finish, and the close at the end, service start and
shutdown included), per trained run: while the driver is in them no other trial's result is
handled, so this is what the tracker adds to a search whatever the trials cost; and the CPU
seconds of the driver's children reaped by the search (wandb's service process, ended when the
search ends), per run: what it takes from the trials' cores. The wall-time difference to no
tracker is printed too; on a shared machine it is mostly noise.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import ray

from kwsearch.records import StudyStore, default_storage
from kwsearch.search import parse_study
from kwsearch.search.runner import run_search
from kwsearch.search.trackers import Trackers

STUDY = {
    "space": {
        "backbone": "resnet18_cifar",
        "num_classes": 4,
        "in_chans": 1,
        "input_size": [12, 12],
        "width": {"choice": [0.0625, 0.125]},
        "dropout": {"float": [0.0, 0.5]},
        "conv": {"family": "static"},
    },
    "data": {
        "name": "synthetic",
        "options": {
            "num_classes": 4,
            "height": 12,
            "width": 12,
            "channels": 1,
            "num_train": 640,
            "num_test": 64,
        },
    },
    "proxy": {"epochs": 3, "batch_size": 64, "val_size": 64, "augment": False},
    "early_stopping": False,
    "sampler": {"name": "random", "seed": 0},
    "resources": {"cpu": 1, "max_concurrent": 2, "threads": 1},
    "baselines": [],
}


def search(name: str, log: list[str], trials: int, runs_dir: Path) -> tuple[float, float, float, int]:
    """Wall seconds of the search, seconds inside the trackers' calls, CPU seconds of the children
    it reaped, trained runs."""
    inside = 0.0
    each = Trackers._each

    def timed(self, method, *args):
        nonlocal inside
        start = time.perf_counter()
        try:
            each(self, method, *args)
        finally:
            inside += time.perf_counter() - start

    study = parse_study({**STUDY, "name": name, "budget": {"trials": trials}, "log": log})
    Trackers._each = timed
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        start = time.perf_counter()
        run_search(study, runs_dir=runs_dir, progress=False)
        wall = time.perf_counter() - start
    finally:
        Trackers._each = each
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    store = StudyStore.open(default_storage(runs_dir / name), name)
    return wall, inside, cpu, sum(t.trained for t in store.trials())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--log", nargs="+", default=["wandb"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    arms = {"no tracker": [], **{tracker: [tracker] for tracker in args.log}}
    results: dict[str, list[tuple[float, float, float, int]]] = {arm: [] for arm in arms}
    try:
        with tempfile.TemporaryDirectory() as folder:
            search("warmup", [], 2, Path(folder))  # Ray's workers started, the data generated
            for repeat in range(args.repeats):
                for arm, log in arms.items():
                    name = f"{arm.replace(' ', '_')}_{repeat}"
                    results[arm].append(search(name, log, args.trials, Path(folder)))
        base = statistics.median(wall for wall, *_ in results["no tracker"])
        for arm, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            inside = statistics.median(r[1] / r[3] for r in runs)
            cpu = statistics.median(r[2] / r[3] for r in runs)
            print(
                f"{arm:<11} wall {wall:5.1f} s ({(wall - base) / args.trials:+.2f} s per run)  "
                f"in the tracker {inside:.3f} s per run  children's CPU {cpu:.3f} s per run"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

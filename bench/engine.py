"""Where a search's wall time goes outside training epochs.

    .venv/bin/python bench/engine.py [--study studies/quickstart.yaml] [--trials N]
                                     [--before PATH] [--workdir DIR] [--cost-model]
                                     [--path-cache FILE]

Runs ``kwsearch search STUDY`` (the quick start by default; ``--trials`` makes it smaller) as a
user does, through the command of this checkout, in a temporary folder, and times it from the
command's start to its exit. Then it reads the study's storage: every run's epochs
(``epoch_seconds``) and, where the trainer recorded them (``started_at``, ``setup_seconds``,
``ended_at``, ``process`` in each run's history), when each run began in its worker and when each
epoch ended. Each search starts with an empty path-choice cache (a first search on a machine:
every new layer shape is timed), or from a copy of ``--path-cache FILE`` (the same choices for
every search, so that their results can agree; a missing FILE is filled first with every config
of the space); ``--cost-model`` times no path. With ``--before
PATH`` (another checkout of kwsearch, e.g. `git archive COMMIT | tar -x -C PATH`) the same search
runs first with that code, in the same run, and the two are compared: configs, accuracies, path
choices, wall time.

The search holds ``slots`` runs at once (the CPUs Ray sees over each run's ``resources.cpu``,
at most ``max_concurrent``); over the wall time W it has ``slots x W`` slot-seconds, and what
the epochs did not use is split, exactly, into:

- driver start: every slot before the first run began in a worker (imports, checks, Ray start,
  the study's storage, the first proposal);
- set-up in the worker: from a run's start in its worker (``train_model`` called) to its first
  training step (data, the model, path choice);
- between epochs: the rest of a run's span (checkpoints, reports, evaluation of the test set);
- slots idle between runs: a slot free while runs were still to start (placement, Ray's queue,
  the driver's proposal);
- tail: slots free after the last run started (nothing left to run);
- driver end: every slot after the last epoch ended (Ray's shutdown, the summary).

Runs without timings (a checkout before they were recorded) give the share outside epochs only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kwsearch.execution import concurrent_runs
from kwsearch.records import StudyStore, default_storage
from kwsearch.search import load_study

HERE = Path(__file__).resolve().parent.parent


@dataclass
class Search:
    """One timed search: its wall clock and what its storage holds."""

    code: Path
    start: float
    end: float
    slots: int
    histories: list[list[dict]]  # every run that trained: search trials, baselines, confirmations
    trial_seconds: float  # the driver's seconds per run, summed (from its proposal to its end)
    results: dict[str, float]  # each run's config and seed -> its last validation accuracy
    paths: dict[str, str]  # layer shape -> the path chosen for it (timed during the search)

    @property
    def wall(self) -> float:
        return self.end - self.start


def run_search(
    code: Path, study: Path, trials: int | None, work: Path, cost_model: bool, path_cache: Path | None
) -> Search:
    """``kwsearch search`` with the checkout at ``code``, timed from its start to its exit."""
    name = f"engine_{code.name}"
    command = [
        sys.executable,
        "-c",
        "from kwsearch.cli import main; main()",
        "search",
        str(study),
        "--name",
        name,
        "--runs-dir",
        "runs",
    ]
    if trials is not None:
        command += ["--trials", str(trials)]
    # Ray's workers inherit PYTHONPATH: they run the same code. Each search starts with an empty
    # path-choice cache, as a first search on a machine does: every new layer shape is timed.
    env = {**os.environ, "PYTHONPATH": str(code), "KWSEARCH_PATH_CACHE": str(work / "paths.json")}
    if path_cache is not None:  # every search starts from the same path choices
        shutil.copy(path_cache, work / "paths.json")
    if cost_model:  # no layer timed: the cost model chooses every path
        env["KWSEARCH_MEASURE_PATHS"] = "0"
    where = subprocess.run(
        [sys.executable, "-c", "import kwsearch; print(kwsearch.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"{code}: kwsearch from {where}")
    start = time.time()
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    end = time.time()
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print("  " + next((line for line in done.stdout.splitlines() if "proposals for" in line), ""))
    store = StudyStore.open(default_storage(work / "runs" / name), name)
    order = [
        f"{t.number}:{t.status}:" + ",".join(str(v) for v in (t.params or {}).values())
        for t in store.trials()
    ]
    print("  trials in order: " + "  ".join(order))
    runs = [t for t in store.trials() + store.baselines() + store.confirmations() if t.history]
    # the runs the search held at once on this machine's CPUs, as the engine counts them
    slots = concurrent_runs(load_study(study).settings.resources, 0.0, {"CPU": float(os.cpu_count() or 1)})
    choices = _path_choices(work / "paths.json")
    results = {json.dumps([t.config, t.seed], sort_keys=True): t.history[-1]["val_accuracy"] for t in runs}
    histories = [t.history for t in runs]
    seconds = sum(t.seconds or 0.0 for t in runs)
    return Search(code, start, end, slots, histories, seconds, results, choices)


def _path_choices(file: Path) -> dict[str, str]:
    """Each layer shape's path, as the search's path-choice cache holds it."""
    if not file.exists():
        return {}
    sections = json.loads(file.read_text())["devices"].values()
    return {key: entry["path"] for section in sections for key, entry in section.items()}


def fill_path_cache(study_path: Path, file: Path) -> None:
    """Time the paths of every config of the study's space and of its baselines into ``file``, on
    a batch as its trials train on, with their torch threads."""
    import torch

    from kwsearch.data import load_dataset, train_loader
    from kwsearch.models import build_model, parse_model_config
    from kwsearch.search.space import Dimension
    from kwsearch.train.trainer import choose_training_paths

    study = load_study(study_path)
    settings = study.settings
    torch.set_num_threads(settings.resources.torch_threads)
    data = load_dataset(
        settings.data.name, image_size=settings.proxy.resolution, **settings.data.options or {}
    )
    batches = train_loader(
        data, settings.proxy.batch_size, indices=torch.arange(settings.proxy.batch_size), seed=0
    )
    batches.set_epoch(0)
    example = next(iter(batches))[0]
    configs = [config for config, _ in study.space.enumerate(Dimension.grid_values, limit=10_000)]
    configs += list(study.baseline_configs().values())
    os.environ["KWSEARCH_PATH_CACHE"] = str(file)
    started = time.perf_counter()
    for config in configs:
        choose_training_paths(
            build_model(parse_model_config(config, study.space.source)), example, settings.proxy
        )
    print(f"{file}: the paths of {len(configs)} configs timed in {time.perf_counter() - started:.0f} s")


def account(search: Search) -> dict[str, float] | None:
    """Slot-seconds by where they went (the module docstring); None without the runs' timings."""
    spans = []
    setup = between = epochs = 0.0
    for history in search.histories:
        if "started_at" not in history[0] or "ended_at" not in history[-1]:
            return None
        begun, ended = history[0]["started_at"], history[-1]["ended_at"]
        run_epochs = sum(e["epoch_seconds"] for e in history)
        spans.append((begun, ended))
        epochs += run_epochs
        setup += history[0]["setup_seconds"]
        between += ended - begun - history[0]["setup_seconds"] - run_epochs
    first, last_start, last_end = min(b for b, _ in spans), max(b for b, _ in spans), max(e for _, e in spans)
    gaps = tail = 0.0
    moments = sorted({t for span in spans for t in span})
    for a, b in itertools.pairwise(moments):
        live = sum(begun <= a and ended >= b for begun, ended in spans)
        idle = max(search.slots - live, 0) * (b - a)
        if b <= last_start:
            gaps += idle
        else:
            tail += idle
    return {
        "epochs": epochs,
        "driver start": search.slots * (first - search.start),
        "set-up in the worker": setup,
        "between epochs": between,
        "slots idle between runs": gaps,
        "tail": tail,
        "driver end": search.slots * (search.end - last_end),
    }


def report(search: Search) -> None:
    total = search.slots * search.wall
    epochs = sum(e["epoch_seconds"] for history in search.histories for e in history)
    outside = 1 - epochs / total
    workers = {e["process"] for history in search.histories for e in history if "process" in e}
    print(f"\n{search.code}")
    print(
        f"  wall {search.wall:.1f} s; {len(search.histories)} runs, {search.slots} at a time: "
        f"{total:.0f} slot-seconds, {epochs:.0f} in epochs; outside epochs {outside:.1%}"
    )
    print(f"  the driver's trial seconds, summed: {search.trial_seconds:.0f}")
    if workers:
        print(f"  worker processes that trained: {len(workers)}")
    parts = account(search)
    if parts is None:
        print("  (no timings recorded by this checkout's trainable: no breakdown)")
        return
    for name, seconds in parts.items():
        print(
            f"  {name:<25} {seconds:7.1f} slot-s  {seconds / total:6.1%}  "
            f"({seconds / search.slots:5.1f} s wall)"
        )
    per_run = parts["set-up in the worker"] / len(search.histories)
    print(f"  set-up per run: {per_run:.2f} s")
    starts = sorted(history[0]["started_at"] for history in search.histories)
    if len(starts) >= search.slots:
        print(f"  every slot training after {starts[search.slots - 1] - search.start:.1f} s")
    # a worker's next run: from the end of its run before to the start of the next
    by_worker: dict[float, list[tuple[float, float]]] = {}
    for history in search.histories:
        by_worker.setdefault(history[0]["process"], []).append(
            (history[0]["started_at"], history[-1]["ended_at"])
        )
    handovers = sorted(
        later[0] - earlier[1]
        for spans in by_worker.values()
        for earlier, later in itertools.pairwise(sorted(spans))
    )
    if handovers:
        print(
            f"  a worker's next run started {statistics.median(handovers):.2f} s after its last ended "
            f"(median of {len(handovers)}; longest {handovers[-1]:.2f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=HERE / "studies" / "quickstart.yaml")
    parser.add_argument("--trials", type=int, default=None, help="trained trials (default: the study's)")
    parser.add_argument("--before", type=Path, default=None, help="another checkout, run first")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--path-cache",
        type=Path,
        default=None,
        help="start every search from a copy of this path cache (filled first when missing)",
    )
    parser.add_argument(
        "--cost-model", action="store_true", help="time no layer's paths (KWSEARCH_MEASURE_PATHS=0)"
    )
    args = parser.parse_args()
    if args.path_cache is not None and not args.path_cache.exists():
        fill_path_cache(args.study, args.path_cache.resolve())
    print(f"{os.cpu_count()} CPUs; load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    searches = []
    for code in ([args.before.resolve()] if args.before else []) + [HERE]:
        # the study as that checkout ships it, where it has one
        study = (
            code / args.study.resolve().relative_to(HERE)
            if args.study.resolve().is_relative_to(HERE)
            else args.study
        )
        with tempfile.TemporaryDirectory(dir=args.workdir) as work:
            searches.append(
                run_search(code, study.resolve(), args.trials, Path(work), args.cost_model, args.path_cache)
            )
    for search in searches:
        report(search)
    if len(searches) == 2:
        before, after = searches
        same = before.results == after.results
        print(f"\nsame configs and accuracies before and after: {'yes' if same else 'NO'}")
        if before.results.keys() == after.results.keys() and not same:
            moved = [abs(after.results[k] - before.results[k]) for k in before.results]
            print(f"  same configs; accuracies differ by up to {max(moved):.4f}")
        shared = before.paths.keys() & after.paths.keys()
        differ = sum(before.paths[k] != after.paths[k] for k in shared)
        print(f"  layer shapes timed in both: {len(shared)}, chosen differently: {differ}")
        print(
            f"wall time after/before: {after.wall / before.wall:.2f} "
            f"({before.wall:.0f} s -> {after.wall:.0f} s)"
        )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({str(s.code): {"wall": s.wall, "runs": len(s.histories)} for s in searches}))


if __name__ == "__main__":
    main()

"""Time and size of `kwsearch report` for a large study.

    .venv/bin/python bench/report.py [--trials 1000] [--out reports/bench.html]

Writes a synthetic study of ``--trials`` trials through the study's record (kwsearch.records:
trials with their status, config, costs, history, seed and errors; the study's settings,
objectives, budget, baseline and reference point; baselines and replays) into a SQLite file,
then times loading it and writing the report, and prints the HTML file's size, what of it is
plotly.js and what each section of the page takes.
Targets: under 10 seconds and under 10 MB for 1,000 trials. The tests use
:func:`synthetic_study` for the report's edge cases.
"""

from __future__ import annotations

import argparse
import datetime
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from kwsearch.records import Costs, ReplayRecord, StudyRecord, StudyStore, TrialRecord

OBJECTIVES = ["accuracy", "params", "macs"]
BASELINE = Costs(params=700_000, effective_params=700_000, macs=40_000_000)
FAMILIES = ["static", "dyconv", "odconv", "kw"]
WIDTHS = [0.25, 0.5, 0.75, 1.0]
STATUS_WEIGHTS = {"complete": 0.7, "pruned": 0.12, "failed": 0.03, "infeasible": 0.15}


def synthetic_study(
    storage: str,
    name: str = "synthetic",
    trials: int = 1000,
    epochs: int = 10,
    seed: int = 0,
    statuses: dict[str, float] | None = None,
    grid_seeds: list[int] | None = None,
    label: str = "",
    replays: int = 0,
    references: tuple[str, ...] = ("static", "kw_1x"),
) -> StudyStore:
    """A study as the search would have stored it: ``trials`` trials of a family/width/cell-ratio
    space with ``statuses`` drawn by weight (``running`` allowed). ``grid_seeds``: a grid ablation
    (every width x family per seed, no conditional dimension). ``label`` is appended to a choice
    label, error messages and baseline labels (the escaping test puts markup there)."""
    rng = random.Random(seed)
    weights = statuses or STATUS_WEIGHTS
    budget = {"params": 4.0 * BASELINE.params}
    settings = {
        "name": name,
        "space": {"backbone": "resnet18_cifar", "width": {"choice": WIDTHS}},
        "data": {"name": "synthetic", "root": None, "options": {"num_classes": 10}},
        "proxy": {"epochs": epochs, "batch_size": 128, "lr": 0.1},
        "objectives": OBJECTIVES,
        "budget": {"params": {"value": 4.0, "relative": True}, "trials": trials},
        "sampler": {
            "name": "grid" if grid_seeds else "tpe",
            "seed": 0,
            "seeds": grid_seeds or [0],
            "options": {},
        },
        "early_stopping": {"enabled": True, "min_epochs": 1, "reduction_factor": 3.0},
    }
    store = StudyStore.create(
        storage,
        name,
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(),
    )
    store.write_record(
        StudyRecord(
            name=name,
            settings=settings,
            objectives=OBJECTIVES,
            budget=budget,
            baseline_config={"backbone": "resnet18_cifar", "conv": {"family": "static"}},
            baseline_costs=BASELINE,
            reference_point=[0.0, 1.1 * budget["params"], 2.0 * 8 * BASELINE.macs],
            started=time.time() - 3600,
            gpus_per_trial=0.25,
        )
    )
    families = [f + label if f == "odconv" else f for f in FAMILIES]
    combos = (
        [(w, f, s) for s in grid_seeds for w in WIDTHS for f in families]
        if grid_seeds
        else [(rng.choice(WIDTHS), rng.choice(families), 0) for _ in range(trials)]
    )
    start = datetime.datetime(2026, 1, 1)
    records = []
    for number, (width, family, trial_seed) in enumerate(combos):
        status = rng.choices(list(weights), list(weights.values()))[0]
        params: dict[str, Any] = {"width": width, "conv.family": family}
        distributions: dict[str, Any] = {
            "width": CategoricalDistribution(WIDTHS),
            "conv.family": CategoricalDistribution(families),
        }
        ratio = 1.0
        if family == "kw" and not grid_seeds:
            ratio = rng.uniform(0.25, 4.0)
            params["conv.kw.cell_num_ratio"] = ratio
            distributions["conv.kw.cell_num_ratio"] = FloatDistribution(0.25, 4.0, log=True)
        if grid_seeds:
            params["seed"] = trial_seed
            distributions["seed"] = CategoricalDistribution(grid_seeds)
        config = {
            "backbone": "resnet18_cifar",
            "width": width,
            "conv": {"family": family, **({"cell_num_ratio": ratio} if family == "kw" else {})},
        }
        scale = width**2 * (1.0 + (ratio if family != "static" else 0.0))
        params_count = int(BASELINE.params * scale * 3)
        costs = Costs(params_count, params_count, int(BASELINE.macs * (width**2) * 1.2))
        if "infeasible" in weights and costs.params > budget["params"]:
            status = "infeasible"
        quality = 0.6 + 0.3 * width + 0.03 * (family != "static") + rng.gauss(0, 0.02)
        epochs_done = {"complete": epochs, "pruned": rng.randint(1, epochs - 1), "failed": rng.randint(0, 2)}
        epochs_done["running"] = rng.randint(0, epochs - 1)
        history = [
            {
                "epoch": e,
                "train_loss": 2.0 / e,
                "val_loss": 2.2 / e,
                "train_accuracy": quality * (1 - 0.5 / e),
                "val_accuracy": min(0.999, quality * (1 - 0.5 / e)),
                "lr": 0.1 * (1 - e / epochs),
                **({"temperature": 1.0 - 0.9 * e / epochs} if family == "kw" else {}),
                "train_seconds": 2.0,
                "epoch_seconds": 2.5,
            }
            for e in range(1, epochs_done.get(status, 0) + 1)
        ]
        error = None
        if status == "infeasible":
            error = f"over budget: params {costs.params:,} > {budget['params']:,.0f}{label}"
        if status == "failed":
            error = f"RuntimeError: CUDA out of memory{label}"
        records.append(
            TrialRecord(
                number=number,
                status=status,
                params=params,
                distributions=distributions,
                config=config,
                costs=costs,
                constraints={"buildable": 0.0, "params": costs.params - budget["params"]},
                history=history,
                seed=trial_seed,
                seconds=None if status == "running" else 2.5 * len(history) + 0.5,
                error=error,
                trained=status != "infeasible",
                started=start + datetime.timedelta(seconds=30 * number),
                finished=None
                if status == "running"
                else start + datetime.timedelta(seconds=30 * number + 25),
            )
        )
    store.add(records + _baselines(references, label, epochs))
    if replays:
        complete = [t for t in records if t.status == "complete"][:replays]
        store.add_replays(
            [
                ReplayRecord(
                    number=i,
                    status="complete",
                    proxy_trial=t.number,
                    seed=0,
                    config=t.config,
                    costs=t.costs,
                    recipe=None,
                    test_accuracy=min(1.0, t.accuracy + 0.05 * rng.random()),
                )
                for i, t in enumerate(complete)
            ]
        )
    return store


def _baselines(labels: tuple[str, ...], suffix: str, epochs: int) -> list[TrialRecord]:
    records = []
    for i, label in enumerate(labels):
        costs = Costs(BASELINE.params * (1 + 2 * i), BASELINE.params, BASELINE.macs * (1 + i))
        history = [{"epoch": e, "val_accuracy": 0.7 + 0.01 * e + 0.02 * i} for e in range(1, epochs + 1)]
        records.append(
            TrialRecord(
                number=i,
                status="complete",
                config={"backbone": "resnet18_cifar", "conv": {"family": "static" if i == 0 else "kw"}},
                costs=costs,
                history=history,
                seed=0,
                seconds=2.5 * epochs,
                trained=True,
                baseline=label + suffix,
            )
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("reports/bench.html"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from kwsearch.report import load, write_report  # imported first: its import time is not the report's

    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{folder}/study.db"
        began = time.perf_counter()
        synthetic_study(storage, trials=args.trials, replays=20)
        print(f"wrote a synthetic study of {args.trials} trials in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        data = load(storage, "synthetic")
        loaded = time.perf_counter() - began
        files = write_report(data, args.out)
        total = time.perf_counter() - began
    size = files.html.stat().st_size / 1e6
    print(f"report of {args.trials} trials: load {loaded:.2f} s, load + write {total:.2f} s, {size:.2f} MB")
    print(f"  {files.html}, {files.csv}, {files.parquet}")
    for name, megabytes in page_sections(files.html.read_text()):
        print(f"  {megabytes:5.2f} MB  {name}")


def page_sections(page: str) -> list[tuple[str, float]]:
    """What the inlined plotly.js and each section (from one ``<h2>`` to the next) of ``page``
    take, in MB."""
    from plotly.offline import get_plotlyjs

    sizes = [("plotly.js (inlined)", len(get_plotlyjs()) / 1e6)]
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"<h2[^>]*>(.*?)</h2>", page)]
    ends = [start for start, _ in starts[1:]] + [len(page)]
    return sizes + [(name, (end - start) / 1e6) for (start, name), end in zip(starts, ends, strict=True)]


if __name__ == "__main__":
    main()

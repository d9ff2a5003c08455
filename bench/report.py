"""Time and size of `kwsearch report` for a large study.

    .venv/bin/python bench/report.py [--trials 1000] [--out reports/bench.html]

Writes a synthetic study of ``--trials`` trials straight through Optuna's API with the schema the
search stores (kwsearch.search.records: status, config, costs, history, seed, errors; the study's
settings, objectives, budget, baseline and reference point; references and replays), into a
SQLite file, then times loading it and writing the report, and prints the HTML file's size.
Targets: under 10 seconds and under 10 MB for 1,000 trials. The tests use
:func:`synthetic_study` for the report's edge cases.
"""

from __future__ import annotations

import argparse
import datetime
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

OBJECTIVES = ["accuracy", "params", "macs"]
BASELINE = {"params": 700_000, "effective_params": 700_000, "macs": 40_000_000}
FAMILIES = ["static", "dyconv", "odconv", "kw"]
WIDTHS = [0.25, 0.5, 0.75, 1.0]
STATUS_WEIGHTS = {"complete": 0.7, "pruned": 0.12, "failed": 0.03, "infeasible": 0.15}


def synthetic_study(
    storage: str | optuna.storages.BaseStorage,
    name: str = "synthetic",
    trials: int = 1000,
    epochs: int = 10,
    seed: int = 0,
    statuses: dict[str, float] | None = None,
    grid_seeds: list[int] | None = None,
    label: str = "",
    replays: int = 0,
    references: tuple[str, ...] = ("static", "kw_1x"),
) -> optuna.Study:
    """A study as the search would have stored it: ``trials`` trials of a family/width/cell-ratio
    space with ``statuses`` drawn by weight (``running`` allowed). ``grid_seeds``: a grid ablation
    (every width x family per seed, no conditional dimension). ``label`` is appended to a choice
    label, error messages and reference labels (the escaping test puts markup there)."""
    rng = random.Random(seed)
    weights = statuses or STATUS_WEIGHTS
    budget = {"params": 4.0 * BASELINE["params"]}
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
    study = optuna.create_study(
        storage=storage, study_name=name, directions=["maximize", "minimize", "minimize"]
    )
    for key, value in {
        "settings": settings,
        "source": None,
        "objectives": OBJECTIVES,
        "budget": budget,
        "baseline": BASELINE,
        "reference_point": [0.0, 1.1 * budget["params"], 2.0 * 8 * BASELINE["macs"]],
        "started": time.time() - 3600,
        "gpus_per_trial": 0.25,
    }.items():
        study.set_user_attr(key, value)
    families = [f + label if f == "odconv" else f for f in FAMILIES]
    combos = (
        [(w, f, s) for s in grid_seeds for w in WIDTHS for f in families]
        if grid_seeds
        else [(rng.choice(WIDTHS), rng.choice(families), 0) for _ in range(trials)]
    )
    start = datetime.datetime(2026, 1, 1)
    frozen = []
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
        costs = {
            "params": int(BASELINE["params"] * scale * 3),
            "effective_params": int(BASELINE["params"] * scale * 3),
            "macs": int(BASELINE["macs"] * (width**2) * 1.2),
        }
        if "infeasible" in weights and costs["params"] > budget["params"]:
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
                "temperature": (1.0 - 0.9 * e / epochs) if family == "kw" else None,
                "train_seconds": 2.0,
                "epoch_seconds": 2.5,
            }
            for e in range(1, epochs_done.get(status, 0) + 1)
        ]
        user_attrs: dict[str, Any] = {
            "status": status,
            "config": config,
            "costs": costs,
            "seed": trial_seed,
            "trained": status != "infeasible",
            "history": [{k: v for k, v in h.items() if v is not None} for h in history],
        }
        state = {"complete": TrialState.COMPLETE, "infeasible": TrialState.COMPLETE}.get(status)
        state = state or {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL}.get(
            status, TrialState.RUNNING
        )
        if status == "infeasible":
            user_attrs["error"] = f"over budget: params {costs['params']:,} > {budget['params']:,.0f}{label}"
            user_attrs["trained"] = False
        if status == "failed":
            user_attrs["error"] = f"RuntimeError: CUDA out of memory{label}"
        if status != "running":
            user_attrs["seconds"] = 2.5 * len(history) + 0.5
        values = None
        if state == TrialState.COMPLETE:
            accuracy = history[-1]["val_accuracy"] if history else 0.0
            values = [accuracy, costs["params"], costs["macs"]]
        frozen.append(
            create_trial(
                state=state,
                values=values,
                params=params,
                distributions=distributions,
                user_attrs=user_attrs,
                intermediate_values={h["epoch"]: h["val_accuracy"] for h in history},
                constraints={"buildable": 0.0, "params": costs["params"] - budget["params"]},
            )
        )
        frozen[-1].datetime_start = start + datetime.timedelta(seconds=30 * number)
        if state != TrialState.RUNNING:
            frozen[-1].datetime_complete = start + datetime.timedelta(seconds=30 * number + 25)
    study.add_trials(frozen)
    _add_side_study(storage, f"{name}.references", references, label, epochs)
    if replays:
        # trials are numbered in the order they were added
        complete = [(n, t) for n, t in enumerate(frozen) if t.user_attrs["status"] == "complete"][:replays]
        replay_study = optuna.create_study(
            storage=storage, study_name=f"{name}.replays", directions=["maximize"]
        )
        replay_study.add_trials(
            create_trial(
                value=t.values[0] + 0.1,
                user_attrs={
                    "status": "complete",
                    "proxy_trial": number,
                    "seed": 0,
                    "config": t.user_attrs["config"],
                    "test_accuracy": min(1.0, t.values[0] + 0.05 * rng.random()),
                },
            )
            for number, t in complete
        )
    return study


def _add_side_study(storage, name: str, labels: tuple[str, ...], suffix: str, epochs: int) -> None:
    references = optuna.create_study(
        storage=storage, study_name=name, directions=["maximize", "minimize", "minimize"]
    )
    for i, label in enumerate(labels):
        costs = {"params": BASELINE["params"] * (1 + 2 * i), "effective_params": BASELINE["params"]}
        costs["macs"] = BASELINE["macs"] * (1 + i)
        history = [{"epoch": e, "val_accuracy": 0.7 + 0.01 * e + 0.02 * i} for e in range(1, epochs + 1)]
        references.add_trial(
            create_trial(
                values=[history[-1]["val_accuracy"], costs["params"], costs["macs"]],
                user_attrs={
                    "status": "complete",
                    "reference": label + suffix,
                    "config": {
                        "backbone": "resnet18_cifar",
                        "conv": {"family": "static" if i == 0 else "kw"},
                    },
                    "costs": costs,
                    "history": history,
                    "seed": 0,
                },
            )
        )


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


if __name__ == "__main__":
    main()

"""Score another proxy recipe against a finished calibration's full training, without training
the full runs again.

    kwsearch calibrate studies/quickstart.yaml --json > cal.json    # once: the full runs
    .venv/bin/python bench/proxy_variants.py cal.json --study studies/quickstart.yaml \
        --epochs 3 --train-subset 9000 --out e3.json

Reads the calibration's configs and their full (replay-recipe) accuracies from the JSON that
``kwsearch calibrate --json`` prints, trains every config with the study's proxy recipe changed by
the options given (``--epochs``, ``--train-subset``; ``--study`` names the study file), once per
seed, two runs at a time on one thread each, and prints for every epoch of the new proxy
Spearman's rho and Kendall's tau against full training (mean over the seeds; Fisher-z and
bootstrap 95% intervals from
``kwsearch.stats.rank_agreement``), the new proxy's seed-to-seed rank agreement and noise, and
each config's accuracies and the temperature its runs reached. ``--out`` keeps every run's
history; ``--analyse FILE`` prints a kept result again.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HISTORY_KEYS = ("epoch", "val_accuracy", "val_loss", "train_loss", "temperature")


def train(job: tuple[dict[str, Any], str, dict[str, Any], int]) -> dict[str, Any]:
    """One proxy run of one config (in a pool process, on one thread)."""
    config, data, recipe, seed = job
    import torch

    from kwsearch.models import parse_model_config
    from kwsearch.train import Recipe, train_model

    torch.set_num_threads(1)
    started = time.perf_counter()
    result = train_model(parse_model_config(config), data, Recipe(**recipe, seed=seed), progress=False)
    history = [{key: epoch.get(key) for key in HISTORY_KEYS} for epoch in result.history]
    return {"seed": seed, "history": history, "seconds": time.perf_counter() - started}


def proxy_recipe(study_file: str, epochs: int | None, train_subset: int | None) -> tuple[str, dict[str, Any]]:
    """The study's data set name and its proxy recipe with the options given over it."""
    from kwsearch.search import load_study

    study = load_study(study_file)
    recipe = study.settings.proxy.model_dump(exclude_defaults=True)
    for key, value in (("epochs", epochs), ("train_subset", train_subset)):
        if value is not None:
            recipe[key] = value
    return study.settings.data.name, recipe


def analyse(result: dict[str, Any]) -> None:
    from kwsearch.stats import rank_agreement

    def interval(statistic) -> str:
        if statistic is None:
            return "-"
        low, high = statistic.bootstrap_ci95
        return f"{statistic.value:+.2f} (bootstrap {low:+.2f} to {high:+.2f}; p {statistic.p_value:.2f})"

    configs = result["configs"]
    full = [c["full"] for c in configs]
    print(f"proxy recipe {result['recipe']}, seeds {result['seeds']}: {result['wall_seconds']:.0f} s")
    for epoch in range(result["recipe"]["epochs"]):
        proxy = [np.mean([run["history"][epoch]["val_accuracy"] for run in c["runs"]]) for c in configs]
        found = rank_agreement(proxy, full)
        print(
            f"val_accuracy@{epoch + 1}: {min(proxy):.3f} to {max(proxy):.3f}   "
            f"Spearman {interval(found['spearman'])}   Kendall {interval(found['kendall'])}"
        )
    last = [[run["history"][-1]["val_accuracy"] for run in c["runs"]] for c in configs]
    if len(result["seeds"]) >= 2:
        seeds = rank_agreement([a[0] for a in last], [a[1] for a in last])
        noise = np.mean([np.std(a, ddof=1) for a in last])
        first, second = result["seeds"][:2]
        print(f"seed {first} against seed {second}: Spearman {interval(seeds['spearman'])}")
        print(f"seed-to-seed standard deviation (mean over configs): {noise:.3f}")
    print("config  params     full    study's proxy  this proxy by seed    temperature reached  seconds")
    for c in configs:
        accuracies = ", ".join(f"{run['history'][-1]['val_accuracy']:.3f}" for run in c["runs"])
        temperatures = ", ".join(str(run["history"][-1]["temperature"]) for run in c["runs"])
        seconds = ", ".join(f"{run['seconds']:.0f}" for run in c["runs"])
        print(
            f"{c['index']:>6}  {c['params']:>9,}  {c['full']:.4f}  {c['study_proxy']:.3f}          "
            f"{accuracies:<20}  {temperatures:<19}  {seconds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("calibration", nargs="?", help="what `kwsearch calibrate --json` printed")
    parser.add_argument("--study", help="the study file that was calibrated")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--analyse", type=Path, help="print a result kept with --out")
    args = parser.parse_args()
    if args.analyse:
        analyse(json.loads(args.analyse.read_text()))
        return
    calibration = json.loads(Path(args.calibration).read_text())
    if not calibration.get("complete"):
        parser.error(f"{args.calibration}: the calibration has not finished")
    if not args.study:
        parser.error("--study: the study file that was calibrated")
    data, recipe = proxy_recipe(args.study, args.epochs, args.train_subset)
    configs = calibration["configs"]
    jobs = [(c["config"], data, recipe, seed) for c in configs for seed in args.seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        runs = list(pool.map(train, jobs))
    per = len(args.seeds)
    result = {
        "recipe": recipe,
        "seeds": args.seeds,
        "wall_seconds": time.perf_counter() - started,
        "configs": [
            {
                "index": c["index"],
                "params": c["params"],
                "full": c["full_mean"],
                "study_proxy": c["proxy_mean"],
                "runs": runs[i * per : (i + 1) * per],
            }
            for i, c in enumerate(configs)
        ],
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    analyse(result)


if __name__ == "__main__":
    main()

"""Whether timing the execution paths pays for a study's proxy runs.

    .venv/bin/python bench/path_payoff.py [--study studies/quickstart.yaml] [--configs N] [--steps K]

For each config of the study's space (the grid's order, at most N), on one thread and in process
CPU time (the machine is shared; CPU time is what other processes disturb least):

1. the model takes the cost model's paths (``measure=False``), and K training steps (forward,
   backward, SGD; one more first, as a warm-up) on proxy batches are timed;
2. the same model's paths are timed (``measure=True``, an empty cache file, no ``steps``: what a
   run of no known length times), which costs the timing's seconds; then K steps are timed again.

It prints per config what timing cost, a step on each set of paths, and the payoff over the
proxy's own number of steps: ``steps x (modelled step - timed step) - timing``. A positive total
says timing the paths pays for this proxy; path choice (``kwsearch.nn.path_choice``) times a
layer only where its modelled cost is at most 5% of the layer's time over the run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from kwsearch.data import load_dataset, train_loader
from kwsearch.models import build_model, parse_model_config
from kwsearch.nn import choose_paths
from kwsearch.search import load_study
from kwsearch.search.space import Dimension

HERE = Path(__file__).resolve().parent.parent


def step_ms(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Median process CPU milliseconds of a training step over ``batches`` (the first: warm-up)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_of = nn.CrossEntropyLoss()
    model.train()
    times = []
    for x, y in batches:
        start = time.process_time()
        loss_of(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=HERE / "studies" / "quickstart.yaml")
    parser.add_argument("--configs", type=int, default=8, help="configs of the space to try")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per set of paths")
    args = parser.parse_args()

    torch.set_num_threads(1)
    study = load_study(args.study)
    proxy = study.settings.proxy
    data = load_dataset(
        study.settings.data.name, image_size=proxy.resolution, **study.settings.data.options or {}
    )
    images = proxy.train_subset or len(data.train_labels)
    proxy_steps = proxy.epochs * (images // proxy.batch_size)
    loader = train_loader(data, proxy.batch_size, indices=torch.arange(images), seed=0)
    loader.set_epoch(0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) > args.steps:
            break
    grid = list(study.space.enumerate(Dimension.grid_values, limit=10_000))
    configs = grid[:: max(1, len(grid) // args.configs)][: args.configs]  # spread over the grid
    print(f"{args.study}: {len(configs)} configs, proxy of {proxy_steps} steps; one thread, process CPU time")
    print(f"{'config':<44} {'timing s':>9} {'modelled ms':>12} {'timed ms':>9} {'payoff s':>9}")
    total = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for index, (config, values) in enumerate(configs):
            model = build_model(parse_model_config(config, study.space.source))
            example = batches[0][0]
            choose_paths(model, example, measure=False)
            modelled = step_ms(model, batches)
            start = time.process_time()
            choose_paths(model, example, measure=True, cache_file=Path(folder) / f"paths{index}.json")
            timing = time.process_time() - start
            timed = step_ms(model, batches)
            payoff = proxy_steps * (modelled - timed) / 1e3 - timing
            total += payoff
            name = ",".join(str(v) for v in values.values())
            print(f"{name:<44} {timing:9.2f} {modelled:12.1f} {timed:9.1f} {payoff:9.2f}")
    print(f"payoff of timing over {len(configs)} proxy runs: {total:+.1f} s of CPU time")


if __name__ == "__main__":
    main()

"""How well the cost model picks paths: its choice against the timings in path caches.

    .venv/bin/python bench/path_model.py CACHE.json [CACHE.json ...]
                                         [--study STUDY.yaml] [--passes X [X ...]] [--list]

A path cache (``KWSEARCH_PATH_CACHE``, filled by ``bench/ops.py``, ``bench/engine.py
--path-cache`` or any timed run) holds, per layer and input, the milliseconds of each path timed
(forward + backward). For the layers of ResNet18 at 112 px that ``bench/ops.py`` times (DY-CNN,
ODConv, KernelWarehouse 1x; whole networks and the stage layers, batch 32 and 128), or with
``--study`` for every config of a study's space and its baselines at the proxy's batch and
resolution, this rebuilds each layer on the meta device, asks the cost model for its path on the
cache section's device, and looks the layer up in the caches. It prints, per family, how many
layers it found timed, how many the cost model sends down another path than the fastest timed,
and the timed milliseconds of the cost model's paths summed over those layers against the fastest
paths' (1.00: every choice as fast as timing's). ``--passes`` evaluates other values of the CPU's
extra passes over per-sample kernels (``_PER_SAMPLE_KERNEL_PASSES`` in ``kwsearch/nn/cost.py``);
``--list`` names every layer the cost model sends down a slower path.

No timing is done here: the figures are only as good as the caches' timings (one machine, one
thread count, one torch version; noisy where two paths are close). Layers are looked up as a CPU
times them (float32, contiguous, no autocast): a GPU cache's entries (bf16 autocast,
channels_last) are not found, and such a section prints nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ops import FAMILIES, LAYERS, STAGE_DEPTH

from kwsearch.models import build_model, get_backbone, parse_model_config
from kwsearch.nn import ConvFactory, cost
from kwsearch.nn.path_choice import _cache_key, _recorded_inputs

OPS_FAMILIES = ("dyconv", "odconv", "kw1x")  # the families bench/ops.py times paths of


@dataclass(frozen=True)
class Layer:
    family: str
    key: str  # the path cache's
    costs: dict[str, cost.PathCost]


def ops_networks() -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """The networks bench/ops.py times, on the meta device, with their example batches."""
    for family in OPS_FAMILIES:
        spec = FAMILIES[family]
        for batch in (32, 128):
            with torch.device("meta"):
                yield family, get_backbone("resnet18")(spec), torch.empty(batch, 3, 112, 112)
                for channels, side in LAYERS:
                    stage_spec = {**spec, "sharing_range": ["layer"]} if spec["family"] == "kw" else spec
                    factory = ConvFactory(stage_spec)
                    stage = nn.Sequential(
                        *(
                            factory.conv(channels, channels, 3, padding=1, name=f"s_layer{i}")
                            for i in range(STAGE_DEPTH)
                        )
                    )
                    factory.finalize(stage)
                    yield family, stage, torch.empty(batch, channels, side, side)


def study_networks(path: Path) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """Every config of a study's space and its baselines, on the meta device, with a training
    batch of the proxy's size and resolution."""
    from kwsearch.search import load_study
    from kwsearch.search.space import Dimension

    study = load_study(path)
    proxy = study.settings.proxy
    configs = [config for config, _ in study.space.enumerate(Dimension.grid_values, limit=10_000)]
    configs += list(study.baseline_configs().values())
    for config in configs:
        model_config = parse_model_config(config, study.space.source)
        size = proxy.resolution or model_config.input_size
        with torch.device("meta"):
            example = torch.empty(proxy.batch_size, model_config.in_chans, *size)
            yield model_config.conv["family"], build_model(model_config), example


def layers(networks: Iterator[tuple[str, nn.Module, torch.Tensor]]) -> list[Layer]:
    """Each distinct (layer, input) of the networks, with the cost model's estimates."""
    found: dict[str, Layer] = {}
    for family, model, example in networks:
        for layer, spec in _recorded_inputs(model, example, None):
            key = _cache_key(layer, spec, None)
            if key not in found:
                found[key] = Layer(family, key, layer.path_costs(torch.empty(spec.shape, device="meta")))
    return list(found.values())


def timings(files: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """Device type -> layer key -> milliseconds of each timed path (the first file's first)."""
    timed: dict[str, dict[str, dict[str, float]]] = {}
    for file in files:
        for section, entries in json.loads(file.read_text())["devices"].items():
            device = section.split(":")[0]
            for key, entry in entries.items():
                timed.setdefault(device, {}).setdefault(key, entry["milliseconds"])
    return timed


def evaluate(found: list[Layer], timed: dict[str, dict[str, float]], device: str, listing: bool) -> None:
    """Print the cost model's choices on ``device`` against the timed milliseconds."""
    totals: dict[str, list[float]] = {}
    for layer in found:
        milliseconds = timed.get(layer.key)
        if not milliseconds:
            continue
        candidates = {path: c for path, c in layer.costs.items() if path in milliseconds}
        if len(candidates) < 2:
            continue
        chosen = cost.cheapest(candidates, torch.device(device))
        fastest = min(milliseconds, key=milliseconds.__getitem__)
        total = totals.setdefault(layer.family, [0, 0, 0.0, 0.0])
        total[0] += 1
        total[1] += chosen != fastest
        total[2] += milliseconds[chosen]
        total[3] += milliseconds[fastest]
        if listing and chosen != fastest:
            print(
                f"    {layer.key}: {chosen} {milliseconds[chosen]:.1f} ms, timed fastest "
                f"{fastest} {milliseconds[fastest]:.1f} ms"
            )
    for family, (count, wrong, chosen_ms, fastest_ms) in sorted(totals.items()):
        print(
            f"  {family:<8} {count:>4} layers timed, {wrong:>3} on another path than the fastest; "
            f"cost model's paths {chosen_ms / fastest_ms:.3f}x the fastest's time"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("caches", type=Path, nargs="+")
    parser.add_argument("--study", type=Path, default=None, help="a study's space instead of ResNet18's")
    parser.add_argument("--passes", type=float, nargs="+", default=None, help="CPU per-sample kernel passes")
    parser.add_argument("--list", action="store_true", help="name the layers on a slower path")
    args = parser.parse_args()
    found = layers(study_networks(args.study) if args.study else ops_networks())
    print(f"{len(found)} distinct layers and inputs; caches: {', '.join(map(str, args.caches))}")
    for device, timed in timings(args.caches).items():
        settings = args.passes if device == "cpu" and args.passes else [None]
        for passes in settings:
            if passes is not None:
                cost._PER_SAMPLE_KERNEL_PASSES["cpu"] = passes
            shown = cost._PER_SAMPLE_KERNEL_PASSES.get(device, 0.0)
            print(f"{device}, per-sample kernel passes {shown:g}:")
            evaluate(found, timed, device, args.list)


if __name__ == "__main__":
    main()

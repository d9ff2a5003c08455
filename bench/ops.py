"""Speed of each conv family relative to static conv: ResNet18-shaped layers and whole train steps.

    .venv/bin/python bench/ops.py                     # CPU, batch 32 and 128, 112x112 input
    .venv/bin/python bench/ops.py --device cuda       # GPU: bf16 autocast and channels_last
    .venv/bin/python bench/ops.py --cpu-time          # one thread, CPU time: a CPU shared with others

Every figure is a ratio to the static conv measured in the same run (machines are shared and
noisy; absolute times are printed for context only). ``kw1x``, ``dyconv`` and ``odconv`` take the
paths ``choose_paths`` times on the device (or reads from the path cache, ``KWSEARCH_PATH_CACHE``:
point it at a new file to time afresh); ``kw1x-model`` takes the cost model's paths; ``kw1x-ref``
is KernelWarehouse 1x forced onto the reference implementation's algorithm (assemble a kernel per
sample, one grouped convolution); ``kw1x-triton`` forces the fused Triton path on every layer it
applies to (the others timed as for ``kw1x``): it needs ``KWSEARCH_TRITON=1`` and a CUDA device,
so it runs only when asked for (``--families static kw1x kw1x-triton``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kwsearch.models import get_backbone
from kwsearch.nn import ConvFactory, KWConvNd, choose_paths
from kwsearch.train import to_channels_last

KW1X = {"family": "kw", "reduction": 0.0625, "cell_num_ratio": 1, "sharing_range": "layer_conv"}
FAMILIES = {
    "static": {"family": "static"},
    "dyconv": {"family": "dyconv", "kernel_num": 4},
    "odconv": {"family": "odconv", "kernel_num": 4},
    "kw1x": KW1X,
    "kw1x-model": KW1X,
    "kw1x-ref": KW1X,
    "kw1x-triton": KW1X,
}
OPT_IN = {"kw1x-triton"}  # not in the default --families
TIMED_PATHS = {"dyconv", "odconv", "kw1x"}  # families whose layers take the paths timed on the device
# ResNet18 3x3 convs at a 112x112 input: (channels, feature map side) per stage.
LAYERS = [(64, 28), (128, 14), (256, 7), (512, 4)]
STAGE_DEPTH = 6  # convs sharing one warehouse in a ResNet18 stage with handover (sets n)


def _take_paths(model: nn.Module, x: torch.Tensor, family: str) -> None:
    """Set the paths ``family`` runs: timed on the device, the reference's, or the cost model's."""
    if family == "kw1x-triton":
        layers = [m for m in model.modules() if isinstance(m, KWConvNd)]
        fused = [m for m in layers if m.path_unavailable("fused_triton") is None]
        if not fused:
            raise SystemExit(f"kw1x-triton: fused_triton {layers[0].path_unavailable('fused_triton')}")
        for m in fused:
            m.path = "fused_triton"
    if family in TIMED_PATHS or family == "kw1x-triton":
        choose_paths(model, x, autocast_dtype=torch.bfloat16 if x.device.type == "cuda" else None)
    elif family == "kw1x-ref":
        for m in model.modules():
            if isinstance(m, KWConvNd):
                m.path = "grouped_conv"


def _timed(step: Callable[[], None], device: torch.device, reps: int, cpu_time: bool = False) -> float:
    """Median wall seconds of ``step`` over ``reps`` runs after two warm-up runs; with
    ``cpu_time``, the fewest seconds of process CPU time instead (what other processes on a shared
    machine disturb least)."""
    for _ in range(2):
        step()
    clock = time.process_time if cpu_time else time.perf_counter
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - start)
    return min(times) if cpu_time else statistics.median(times)


def _prepare(model: nn.Module, x: torch.Tensor, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    model = model.to(device).train()
    x = x.to(device)
    if device.type == "cuda":
        model = to_channels_last(model)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def _autocast(device: torch.device):
    return (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )


def layer_step_time(
    family: str, channels: int, side: int, batch: int, device: torch.device, reps: int, cpu_time: bool
) -> float:
    """Forward + backward of one 3x3 conv whose warehouse is shared with a stage's other convs."""
    spec = FAMILIES[family]
    factory = ConvFactory({**spec, "sharing_range": ["layer"]} if spec["family"] == "kw" else spec)
    stage = nn.Sequential(
        *(factory.conv(channels, channels, 3, padding=1, name=f"s_layer{i}") for i in range(STAGE_DEPTH))
    )
    factory.finalize(stage)
    model, x = _prepare(stage, torch.randn(batch, channels, side, side), device)
    _take_paths(model, x, family)
    layer = model[0]

    def step() -> None:
        with _autocast(device):
            out = layer(x)
        out.float().square().mean().backward()

    return _timed(step, device, reps, cpu_time)


def network_step_time(
    family: str, batch: int, size: int, device: torch.device, reps: int, cpu_time: bool
) -> float:
    """One SGD train step of ResNet18 (ImageNet stem, 1000 classes) at ``size`` x ``size``."""
    model, x = _prepare(get_backbone("resnet18")(FAMILIES[family]), torch.randn(batch, 3, size, size), device)
    _take_paths(model, x, family)
    target = torch.randint(0, 1000, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device):
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()

    return _timed(step, device, reps, cpu_time)


def machine_balance(device: torch.device) -> tuple[float, float]:
    """GEMM FLOP/s and strided-copy bytes/s on ``device``: the two rates the cost model weighs."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    x = torch.randn(32, 9, 512, 512, device=device)
    gemm = 2 * 2048**3 / _timed(lambda: a @ b, device, reps=5)
    copy = 2 * 4 * x.numel() / _timed(lambda: x.permute(0, 2, 3, 1).contiguous(), device, reps=5)
    return gemm, copy


def _row(label: str, times: dict[str, float]) -> str:
    base = times["static"]
    cells = "".join(f" {times[f] / base:>8.2f}x" for f in times)
    return f"{label:<28}{cells}   (static {base * 1e3:.1f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--size", type=int, default=112, help="input side for the whole-network steps")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--families", nargs="+", default=[f for f in FAMILIES if f not in OPT_IN], choices=list(FAMILIES)
    )
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument(
        "--balance", action="store_true", help="only measure the cost model's machine balance"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, process CPU time, fastest of --reps: for CPUs shared with other work",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.cpu_time:
        torch.set_num_threads(1)
    families = ["static", *(f for f in args.families if f != "static")]
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    where += ", process CPU time, fastest run" if args.cpu_time else ", wall time, median run"
    gemm, copy = machine_balance(device)
    print(f"device {device} ({where}), torch {torch.__version__}")
    rates = f"GEMM {gemm / 1e9:.0f} GFLOP/s, strided copy {copy / 1e9:.1f} GB/s"
    print(f"{rates}: balance {gemm / copy:.0f} FLOP/byte")
    if args.balance:
        return
    print("time of a forward + backward (layers) or train step (network), relative to static conv")
    print(f"{'':<28}" + "".join(f" {f:>9}" for f in families))
    for batch in args.batches:
        if not args.skip_layers:
            for channels, side in LAYERS:
                times = {
                    f: layer_step_time(f, channels, side, batch, device, args.reps, args.cpu_time)
                    for f in families
                }
                print(_row(f"layer {channels}x{side}x{side} b{batch}", times), flush=True)
        if not args.skip_network:
            times = {
                f: network_step_time(f, batch, args.size, device, args.reps, args.cpu_time) for f in families
            }
            print(_row(f"resnet18 step {args.size}px b{batch}", times), flush=True)


if __name__ == "__main__":
    main()

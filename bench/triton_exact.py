"""Is the fused Triton KernelWarehouse path exact on this GPU? Before its speed means anything.

    KWSEARCH_TRITON=1 python3 bench/triton_exact.py

For ResNet18-shaped KernelWarehouse 1x layers (3x3 and 1x1, stride 1 and 2, every stage), the
output and the gradients of the input and of every parameter (warehouse, attention: alpha's
gradient reaches the attention) on the ``fused_triton`` path, in float32 and under bfloat16
autocast, against the ``grouped_conv`` path of a float64 copy. Prints the relative errors (max
abs difference over max abs value) per layer and dtype, beside the float32 / bfloat16
``grouped_conv`` path's own; exits 1 if one is over its bound (float32: 1e-4; bfloat16: twice the
``grouped_conv`` path's error under the same autocast, or 1e-4).
On the CPU the tests do the same through Triton's interpreter (tests/test_triton_kw.py).
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
from torch import nn

from kwsearch.nn import ConvFactory, set_temperature

KW1X = {"family": "kw", "reduction": 0.0625, "cell_num_ratio": 1, "sharing_range": ["layer"]}
# (in, out, kernel, stride, input side): a ResNet18 at 112 px, one layer per kind and stage
LAYERS = [
    (64, 64, 3, 1, 28),
    (64, 128, 3, 2, 28),
    (64, 128, 1, 2, 28),
    (128, 128, 3, 1, 14),
    (256, 256, 3, 1, 7),
    (512, 512, 3, 1, 4),
]
FLOAT32_BOUND = 1e-4


def kw_stage(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    """The layer and a second one sharing its warehouse, random parameters, temperature 0.3."""
    factory = ConvFactory(KW1X)
    stage = nn.Sequential(
        factory.conv(cin, cout, k, stride=stride, padding=k // 2, name="s_layer0"),
        factory.conv(cout, cout, 3, padding=1, name="s_layer1"),
    )
    factory.finalize(stage)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in stage.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    set_temperature(stage, 0.3)
    return stage.train()


def outputs_and_grads(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor, autocast: torch.dtype | None):
    x = x.detach().requires_grad_()
    inputs = [x, *layer.parameters()]
    with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        y = layer(x)
    return [y, *torch.autograd.grad(y, inputs, dy.to(y.dtype), allow_unused=True)]


def relative_error(actual: torch.Tensor | None, expected: torch.Tensor | None) -> float:
    if expected is None or actual is None:
        return 0.0 if actual is expected else float("inf")
    scale = expected.abs().max().clamp_min(1e-30)
    return ((actual.double() - expected).abs().max() / scale).item()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda", help="cpu: under TRITON_INTERPRET=1, and slow")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else args.device
    print(f"{where}, torch {torch.__version__}")
    worst_over = False
    for cin, cout, k, stride, side in LAYERS:
        stage = kw_stage(cin, cout, k, stride).to(device)
        fused = stage[0]
        reason = fused.path_unavailable("fused_triton")
        if reason is not None:
            print(f"fused_triton {reason}")
            return 1
        reference = copy.deepcopy(fused).double()
        reference.path, fused.path = "grouped_conv", "fused_triton"
        x = torch.randn(args.batch, cin, side, side, device=device)
        with torch.no_grad():
            dy = torch.randn_like(reference(x.double()))
        expected = outputs_and_grads(reference, x.double(), dy, None)
        for autocast in (None, torch.bfloat16):
            errors = {}
            for path in ("fused_triton", "grouped_conv"):
                fused.path = path
                actual = outputs_and_grads(fused, x, dy.float(), autocast)
                errors[path] = [relative_error(a, e) for a, e in zip(actual, expected, strict=True)]
            # Each output and gradient within its bound, or (bfloat16, where the attention's own
            # rounding dominates some gradients) within twice the published path's error.
            bounds = [
                FLOAT32_BOUND if autocast is None else max(FLOAT32_BOUND, 2 * e)
                for e in errors["grouped_conv"]
            ]
            over = any(e > b for e, b in zip(errors["fused_triton"], bounds, strict=True))
            worst_over |= over
            fused_errors, published = errors["fused_triton"], errors["grouped_conv"]
            print(
                f"{cin}->{cout} k{k} s{stride} {side}x{side} b{args.batch} "
                f"{'bf16 autocast' if autocast else 'float32':>13}: output {fused_errors[0]:.1e}, "
                f"input grad {fused_errors[1]:.1e}, worst {max(fused_errors):.1e} "
                f"(grouped_conv: worst {max(published):.1e})" + ("  OVER BOUND" if over else "")
            )
    return 1 if worst_over else 0


if __name__ == "__main__":
    sys.exit(main())

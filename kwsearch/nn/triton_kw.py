"""The fused KernelWarehouse 2-d convolution: one Triton implicit-GEMM kernel that mixes the
warehouse cells by the attention tile by tile on chip, so no per-sample kernel is ever written.

``kw_conv2d(x, cells, alpha, geometry)`` computes the same function as assembling every sample's
kernel (:meth:`kwsearch.nn.kernel_warehouse.KWConvNd.assemble`) and convolving sample by sample,
with gradients for ``x``, ``cells`` and ``alpha``:

- forward: each output tile contracts over kernel positions and input-channel tiles; each weight
  tile is ``sum_n alpha[b, m, n] * cells[n, tile]`` formed in registers;
- input gradient: the transposed convolution, weight tiles mixed the same way;
- cells and alpha gradients: each sample's weight-gradient tile is formed on chip and contracted
  with alpha (into the cells' gradient) and with the cells (into alpha's), never stored.

It is opt-in (``KWSEARCH_TRITON=1``): it has not yet run, let alone been timed, on a GPU. Triton's
interpreter (``TRITON_INTERPRET=1``, set before the kernels are first used) runs it on CPU
tensors, which is how the tests check it. Nothing here imports triton until a kernel runs, so the
package works without it.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass

import torch

OPT_IN_ENV = "KWSEARCH_TRITON"
INTERPRET_ENV = "TRITON_INTERPRET"
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Output positions per program: the cost model charges one mix of a weight tile per this many.
BLOCK_POSITIONS = 64


def _interpreting() -> bool:
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def _triton_import_error() -> str | None:
    """None when triton imports, else why not (its import is cached by Python after the first try)."""
    try:
        importlib.import_module("triton")
    except Exception as error:  # an absent or broken install alike: the path is not offered
        return f"{type(error).__name__}: {error}"
    return None


def fused_path_unavailable(device: torch.device) -> str | None:
    """Why the fused Triton path cannot run for parameters on ``device`` (a phrase), or None.

    It runs on a CUDA device when triton imports and ``KWSEARCH_TRITON=1`` asks for it; under
    Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors too, for the tests.
    """
    if os.environ.get(OPT_IN_ENV, "0") != "1":
        return f"is opt-in until measured on a GPU: set {OPT_IN_ENV}=1"
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        return f"needs a CUDA device (or {INTERPRET_ENV}=1 on the CPU)"
    error = _triton_import_error()
    if error is not None:
        return f"needs triton, which does not import ({error})"
    return None


@dataclass(frozen=True)
class FusedGeometry:
    """A 2-d KernelWarehouse convolution as the kernels see it (groups 1).

    Mixture ``(s, og, ig)`` of a sample covers output channels ``og * cell_out ...`` and input
    channels ``ig * cell_in ...`` at kernel position ``s`` (1x1 cells) or at every kernel position
    (full-kernel cells, ``spatial == 1``).
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    spatial: int
    out_groups: int
    in_groups: int

    @property
    def kernel_positions(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def mixtures(self) -> int:
        """Mixtures per sample: alpha's middle dimension."""
        return self.spatial * self.out_groups * self.in_groups

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(
                (height, width), self.kernel_size, self.stride, self.padding, self.dilation, strict=True
            )
        )

    def check(self, cells: torch.Tensor) -> None:
        """Raises ValueError when ``cells`` (n, cell_out, cell_in, *cell_kernel) do not tile this
        geometry as 1x1 cells, one per kernel position, or as full-kernel cells."""
        cell_kernel = tuple(cells.shape[3:])
        one_by_one = cell_kernel == (1, 1) and self.spatial == self.kernel_positions
        full_kernel = cell_kernel == self.kernel_size and self.spatial == 1
        if cells.dim() != 5 or not (one_by_one or full_kernel):
            raise ValueError(
                f"cells of shape {tuple(cells.shape)} do not tile a {self.kernel_size} kernel "
                f"in {self.spatial} spatial mixtures"
            )


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _blocks(cell_out: int, cell_in: int) -> tuple[int, int]:
    """Tile sizes of the output and input channels (the grids start tiles at cell boundaries, so a
    tile never crosses a cell): at least 16 along each side, as tl.dot needs, no larger than a
    cell needs, within 64 x 32. Not tuned: the path has not been timed on a GPU."""
    return (
        min(64, max(16, _next_power_of_two(cell_out))),
        min(32, max(16, _next_power_of_two(cell_in))),
    )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _cell_kernel(cells: torch.Tensor) -> int:
    return cells.shape[3] * cells.shape[4]


def _common_arguments(geometry: FusedGeometry, cells: torch.Tensor) -> list[int]:
    num_cells, cell_out, cell_in = cells.shape[:3]
    return [
        num_cells,
        cell_out,
        cell_in,
        _cell_kernel(cells),
        geometry.out_groups,
        geometry.in_groups,
        geometry.mixtures,
    ]


def _geometry_arguments(geometry: FusedGeometry) -> list[int]:
    return [*geometry.stride, *geometry.padding, *geometry.dilation]


def _fp32_dot(x: torch.Tensor) -> bool:
    """Contract in float32: for float32 inputs, and under the interpreter (see ``_dot``)."""
    return x.dtype == torch.float32 or _interpreting()


def _kernels():
    # Imported on first use: triton decides at decoration time whether to interpret.
    from kwsearch.nn import triton_kw_kernels

    return triton_kw_kernels


def _forward(
    x: torch.Tensor, cells: torch.Tensor, alpha: torch.Tensor, geometry: FusedGeometry
) -> torch.Tensor:
    batch, _, height, width = x.shape
    cell_out = cells.shape[1]
    out_height, out_width = geometry.output_size(height, width)
    memory_format = (
        torch.channels_last
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    y = torch.empty(
        batch,
        geometry.out_groups * cell_out,
        out_height,
        out_width,
        device=x.device,
        dtype=x.dtype,
        memory_format=memory_format,
    )
    block_o, block_c = _blocks(cell_out, cells.shape[2])
    grid = (
        batch * _cdiv(out_height * out_width, BLOCK_POSITIONS),
        geometry.out_groups * _cdiv(cell_out, block_o),
    )
    _kernels().kw_conv2d_forward[grid](
        x,
        cells,
        alpha,
        y,
        *x.stride(),
        *y.stride(),
        height,
        width,
        out_height,
        out_width,
        geometry.kernel_size[1],
        geometry.kernel_positions,
        *_geometry_arguments(geometry),
        *_common_arguments(geometry, cells),
        BLOCK_O=block_o,
        BLOCK_C=block_c,
        BLOCK_P=BLOCK_POSITIONS,
        FP32_DOT=_fp32_dot(x),
    )
    return y


def _input_grad(
    dy: torch.Tensor, cells: torch.Tensor, alpha: torch.Tensor, x: torch.Tensor, geometry: FusedGeometry
) -> torch.Tensor:
    batch, _, height, width = x.shape
    dx = torch.empty_like(x)
    block_o, block_c = _blocks(cells.shape[1], cells.shape[2])
    grid = (
        batch * _cdiv(height * width, BLOCK_POSITIONS),
        geometry.in_groups * _cdiv(cells.shape[2], block_c),
    )
    _kernels().kw_conv2d_input_grad[grid](
        dy,
        cells,
        alpha,
        dx,
        *dy.stride(),
        *dx.stride(),
        height,
        width,
        dy.shape[2],
        dy.shape[3],
        geometry.kernel_size[1],
        geometry.kernel_positions,
        *_geometry_arguments(geometry),
        *_common_arguments(geometry, cells),
        BLOCK_O=block_o,
        BLOCK_C=block_c,
        BLOCK_Q=BLOCK_POSITIONS,
        FP32_DOT=_fp32_dot(x),
    )
    return dx


def _mixing_grads(
    dy: torch.Tensor,
    x: torch.Tensor,
    cells: torch.Tensor,
    alpha: torch.Tensor,
    geometry: FusedGeometry,
    cells_grad: bool,
    alpha_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    batch, _, height, width = x.shape
    cell_out, cell_in = cells.shape[1:3]
    # float32 buffers: the kernel adds into them atomically.
    d_cells = torch.zeros(cells.shape, device=x.device, dtype=torch.float32)
    d_alpha = torch.zeros(alpha.shape, device=x.device, dtype=torch.float32)
    block_o, block_c = _blocks(cell_out, cell_in)
    grid = (
        batch * geometry.out_groups * _cdiv(cell_out, block_o),
        geometry.kernel_positions * geometry.in_groups * _cdiv(cell_in, block_c),
    )
    _kernels().kw_conv2d_mixing_grads[grid](
        x,
        dy,
        cells,
        alpha,
        d_cells,
        d_alpha,
        *x.stride(),
        *dy.stride(),
        height,
        width,
        dy.shape[2],
        dy.shape[3],
        geometry.kernel_size[1],
        *_geometry_arguments(geometry),
        *_common_arguments(geometry, cells),
        BLOCK_O=block_o,
        BLOCK_C=block_c,
        BLOCK_P=BLOCK_POSITIONS,
        FP32_DOT=_fp32_dot(x),
        CELLS_GRAD=cells_grad,
        ALPHA_GRAD=alpha_grad,
    )
    return (
        d_cells.to(cells.dtype) if cells_grad else None,
        d_alpha.to(alpha.dtype) if alpha_grad else None,
    )


class _FusedKWConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cells, alpha, geometry):
        ctx.geometry = geometry
        ctx.save_for_backward(x, cells, alpha)
        return _forward(x, cells, alpha, geometry)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, cells, alpha = ctx.saved_tensors
        dy = dy.to(x.dtype)
        needs_x, needs_cells, needs_alpha = ctx.needs_input_grad[:3]
        dx = _input_grad(dy, cells, alpha, x, ctx.geometry) if needs_x else None
        d_cells = d_alpha = None
        if needs_cells or needs_alpha:
            d_cells, d_alpha = _mixing_grads(dy, x, cells, alpha, ctx.geometry, needs_cells, needs_alpha)
        return dx, d_cells, d_alpha, None


def kw_conv2d(
    x: torch.Tensor, cells: torch.Tensor, alpha: torch.Tensor, geometry: FusedGeometry
) -> torch.Tensor:
    """``x`` (B, C, H, W) convolved with every sample's kernel mixed from ``cells``
    (n, cell_out, cell_in, *cell_kernel) by ``alpha`` (B, mixtures, n), in ``x``'s dtype
    (float32, bfloat16 or float16; accumulation in float32). Differentiable in all three.

    Raises ValueError for another dtype or shapes that do not fit ``geometry``.
    """
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the fused Triton path computes in {SUPPORTED_DTYPES}, not {x.dtype}")
    geometry.check(cells)
    if alpha.shape != (x.shape[0], geometry.mixtures, cells.shape[0]):
        raise ValueError(
            f"alpha of shape {tuple(alpha.shape)}, expected {(x.shape[0], geometry.mixtures, cells.shape[0])}"
        )
    if x.shape[1] != geometry.in_groups * cells.shape[2]:
        raise ValueError(f"input of {x.shape[1]} channels, expected {geometry.in_groups * cells.shape[2]}")
    if (
        max(
            x.numel(),
            x.shape[0] * geometry.out_groups * cells.shape[1] * math.prod(geometry.output_size(*x.shape[2:])),
        )
        >= 2**31
    ):
        # The kernels' offsets are 32-bit integers.
        raise ValueError("the fused Triton path takes inputs and outputs of fewer than 2**31 elements")
    # The kernels index cells and alpha as dense arrays; x and y go by their strides.
    return _FusedKWConv2d.apply(x, cells.contiguous(), alpha.contiguous(), geometry)

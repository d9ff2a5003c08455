"""KernelWarehouse layers (Li & Yao, ICML 2024) and the manager that owns their warehouses.

A model reserves its layers through a :class:`WarehouseManager` (directly, or through the conv
factory with ``family: kw``), then calls :meth:`WarehouseManager.store` to create the warehouses
and :meth:`WarehouseManager.allocate` to give every layer its attention and initial assignment.
The manager then lives inside the model's first KernelWarehouse layer (``warehouse_managers``
finds it), so its warehouses are model parameters, counted once.
Layers are allocated in the order ``model.modules()`` yields them, as the reference does, so a
published model's cells start where the paper's start.

Each layer's kernel is a per-sample mixture of warehouse cells. Five exact execution paths
compute the output; which runs is chosen per input shape by timing them on the device
(:func:`kwsearch.nn.choose_paths`), or from FLOP and element counts (:mod:`kwsearch.nn.cost`):

- ``grouped_conv``: assemble every sample's kernel, then one convolution grouped over the batch;
- ``batched_matmul``: the same kernels, applied as a batched matrix multiply (to the input for
  1x1 and linear layers, to the unfolded input for larger ungrouped 2-d kernels);
- ``cell_conv``: convolve once with the cells themselves, then mix the outputs by the attention;
- ``input_mixing``: mix the unfolded input by the attention, then one matrix multiply with the
  cells shared by the whole batch (``y_b = sum_n C_n (sum alpha_b X_b)``);
- ``fused_triton``: one Triton implicit-GEMM convolution that mixes each weight tile from the
  cells on chip (:mod:`kwsearch.nn.triton_kw`); ungrouped 2-d layers on a CUDA device, opt-in
  with ``KWSEARCH_TRITON=1`` until it has been measured on a GPU.

The last three never form a per-sample kernel, which pays when the warehouse outnumbers the output
positions (late stages, small inputs): assembly costs ``n / positions`` times the convolution,
cell_conv ``n / out_groups + n / cell_in``, input_mixing ``n / cell_out + n / (in_groups * k)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat
from torch import nn

from kwsearch.nn.cost import PathCost
from kwsearch.nn.cpu_matmul import matmul
from kwsearch.nn.factory import ConvSpecError, LayerBuilder, LayerShape, register_family
from kwsearch.nn.kw_attention import KWAttention
from kwsearch.nn.paths import MultiPathLayer
from kwsearch.nn.per_sample import grouped_conv, is_pointwise, output_size, pointwise_bmm
from kwsearch.nn.temperature import (
    KW_DEFAULT_SCHEDULE,
    TemperatureControlled,
    TemperatureSchedule,
    completed_from,
)
from kwsearch.nn.triton_kw import (
    BLOCK_POSITIONS,
    SUPPORTED_DTYPES,
    FusedGeometry,
    fused_path_unavailable,
    kw_conv2d,
)
from kwsearch.nn.warehouse import (
    ReservedLayer,
    WarehousePlan,
    WarehousePlanError,
    cells_assigned,
    fuse_warehouse_name,
    initial_assignment,
    normalize_sharing_range,
    plan_warehouses,
)

Ratio = PositiveFloat | list[PositiveFloat]

# Per-sample kernels assembled at once by the grouped_conv and batched_matmul paths on a CPU. A
# chunk of the batch whose kernels fit the last-level cache is convolved or multiplied while they
# are still there, and its kernels come from memory the allocator reuses: the whole batch's kernels
# (75 MB at 256x7x7, batch 32) are fresh pages every pass, whose faults cost as much CPU time as
# the mixing that fills them (57 ms against 29 ms into reused memory). On a 32 MiB L3, one thread:
# batched_matmul at 256x7x7 ran fastest in chunks of 4 to 10 samples (9 to 24 MB), grouped_conv at
# 128x14x14, batch 128, in chunks of 32 to 43 (19 to 25 MB: 300 ms against 540 ms for one chunk).
_CPU_KERNEL_CHUNK_BYTES = 24 * 2**20


class KWOptions(BaseModel):
    """KernelWarehouse options under the reference implementation's names.

    Ratios may be one value or one value per warehouse (in order of first reservation).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    reduction: Ratio = 0.0625
    cell_num_ratio: Ratio = 1.0
    cell_inplane_ratio: Ratio = 1.0
    cell_outplane_ratio: Ratio = 1.0
    sharing_range: str | list[str] = Field(default_factory=list)
    nonlocal_basis_ratio: Ratio = 1.0
    spatial_partition: bool | list[bool] = True
    norm_layer: Literal["batch", "layer"] = "batch"
    temperature: Annotated[TemperatureSchedule, completed_from(KW_DEFAULT_SCHEDULE)] = KW_DEFAULT_SCHEDULE


class KWConvNd(TemperatureControlled, MultiPathLayer):
    """A convolution whose kernel is assembled per sample from cells of a shared warehouse."""

    published_path = "grouped_conv"  # the reference implementation's algorithm

    dims: int = 2
    attention: KWAttention

    def __init__(self, shape: LayerShape, reserved: ReservedLayer, manager: WarehouseManager) -> None:
        super().__init__(manager.options.temperature.start)
        self.shape = shape
        self.reserved = reserved
        self.bias = nn.Parameter(torch.zeros(shape.out_channels)) if shape.bias else None
        # A list keeps the manager out of this module's children: its parameters belong to the model once.
        self._manager = [manager]
        self.plan: WarehousePlan | None = None

    def attach(self, plan: WarehousePlan, layer_index: int, start_cell: int) -> int:
        """Create the attention for this layer's place in ``plan``; return the next free cell."""
        settings = plan.settings
        mixtures = plan.mixtures[layer_index]
        self.plan, self.mixtures = plan, mixtures
        self.attention = KWAttention(
            self.shape.in_channels,
            settings.reduction,
            plan.num_cells,
            mixtures.count,
            initial_assignment(mixtures.count, start_cell, settings.cell_num_ratio),
            start_cell,
            settings.cell_num_ratio,
            settings.nonlocal_basis_ratio,
            self.manager.options.norm_layer,
        )
        return start_cell + cells_assigned(mixtures.count, settings.cell_num_ratio)

    @property
    def manager(self) -> WarehouseManager:
        return self._manager[0]

    @property
    def cells(self) -> torch.Tensor:
        """This layer's warehouse: (n, cell_out, cell_in, *cell_kernel)."""
        return self.manager.warehouses[self.manager.warehouse_index[self.reserved.warehouse]]

    def _geometry(self) -> str:
        s = self.shape
        return (
            f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, stride={s.stride}, "
            f"padding={s.padding}, dilation={s.dilation}, groups={s.groups}"
        )

    def extra_repr(self) -> str:
        return f"{self._geometry()}, bias={self.shape.bias}, warehouse={self.reserved.warehouse!r}"

    # -- execution paths -------------------------------------------------------------------------

    def _mixed_cells(self, alpha: torch.Tensor, batch: int) -> torch.Tensor:
        """Every mixture's cell, (B, spatial, out_groups, in_groups, cell_out, cell_in, *cell_kernel)."""
        cells = self.cells
        m = self.mixtures
        return matmul(alpha, cells.reshape(cells.shape[0], -1)).view(
            batch, m.spatial, m.out_groups, m.in_groups, *cells.shape[1:]
        )

    def assemble(self, alpha: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-sample kernels (B, out, in / groups, *kernel) from the mixing weights."""
        #   -> (B, out_groups, cell_out, in_groups, cell_in, spatial, *cell_kernel)
        kernels = self._mixed_cells(alpha, batch).permute(0, 2, 4, 3, 5, 1, *range(6, 6 + self.dims))
        s = self.shape
        return kernels.reshape(batch, s.out_channels, s.in_channels // s.groups, *s.kernel_size)

    def _grouped_conv(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return self._in_chunks(self._grouped_conv_of_chunk, x, alpha)

    def _grouped_conv_of_chunk(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        s = self.shape
        return grouped_conv(
            x, self.assemble(alpha, x.shape[0]), None, s.stride, s.padding, s.dilation, s.groups
        )

    def _batched_matmul(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        s = self.shape
        if is_pointwise(s.kernel_size, s.padding, s.groups):
            return pointwise_bmm(x, self.assemble(alpha, x.shape[0]), None, s.stride)
        return self._in_chunks(self._unfolded_matmul, x, alpha)

    def _in_chunks(
        self, run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, alpha: torch.Tensor
    ) -> torch.Tensor:
        """``run(x, alpha)`` on equal chunks of the batch whose per-sample kernels take at most
        ``_CPU_KERNEL_CHUNK_BYTES`` (on a CPU; elsewhere the whole batch: a GPU wants large
        operations), the outputs concatenated."""
        batch = x.shape[0]
        kernel_bytes = batch * self._kernel_numel() * x.element_size()
        chunks = (
            min(batch, math.ceil(kernel_bytes / _CPU_KERNEL_CHUNK_BYTES)) if x.device.type == "cpu" else 1
        )
        if chunks <= 1:
            return run(x, alpha)
        size = math.ceil(batch / chunks)
        alpha_chunks = alpha.split(size * self.mixtures.count)  # rows are (sample, mixture)
        return torch.cat([run(*pair) for pair in zip(x.split(size), alpha_chunks, strict=True)])

    def _kernel_numel(self) -> int:
        s = self.shape
        return s.out_channels * (s.in_channels // s.groups) * math.prod(s.kernel_size)

    def _unfolded_matmul(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels times the unfolded input, one mixed cell at a time, in the order the
        mixing writes them (spatial cell, out-group, in-group): a matrix multiply per sample and
        cell, then a sum over spatial cells and in-groups. The kernels are never permuted into the
        convolution's order, a copy as large as the kernels forward and again backward."""
        s, m = self.shape, self.mixtures
        batch = x.shape[0]
        kernels = self._mixed_cells(alpha, batch).flatten(5)  # (B, S, OG, IG, cell_out, contraction)
        columns = self._grouped_columns(x).transpose(1, 2).unsqueeze(2)  # (B, S, 1, IG, contraction, L)
        products = torch.matmul(kernels, columns)  # (B, S, OG, IG, cell_out, L)
        y = products.sum(dim=(1, 3)) if m.spatial * m.in_groups > 1 else products[:, 0, :, 0]
        return y.reshape(batch, s.out_channels, *self._output_size(x))

    def _grouped_columns(self, x: torch.Tensor) -> torch.Tensor:
        """The unfolded input as (B, in-groups, spatial cells, contraction, L):
        with 1x1 cells (spatial partition) one position per cell and cell_in to contract over;
        with full-kernel cells one position and (cell_in, kh, kw), the order unfold uses."""
        s, m = self.shape, self.mixtures
        columns = F.unfold(x, s.kernel_size, s.dilation, s.padding, s.stride)  # (B, in * kh * kw, L)
        batch, positions = x.shape[0], columns.shape[-1]
        if m.spatial > 1:
            return columns.view(batch, m.in_groups, -1, m.spatial, positions).transpose(2, 3)
        return columns.view(batch, m.in_groups, 1, -1, positions)

    def _cell_conv(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        s, m = self.shape, self.mixtures
        cells = self.cells
        num_cells, cell_out = cells.shape[0], cells.shape[1]
        batch = x.shape[0]
        columns = self._grouped_columns(x)
        responses = torch.einsum("nop,bgspl->bgsnol", cells.reshape(num_cells, cell_out, -1), columns)
        weights = alpha.view(batch, m.spatial, m.out_groups, m.in_groups, num_cells)
        y = torch.einsum("bsogn,bgsncl->bocl", weights, responses)
        return y.reshape(batch, s.out_channels, *self._output_size(x))

    def _input_mixing(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # y_b = sum_n C_n (sum over in-groups and kernel positions of alpha_b * X_b): the attention
        # mixes the unfolded input, then one GEMM with the cells serves the whole batch. The mixed
        # input is written as (sample, position, out-group, cell, contraction): the GEMM's rows and
        # columns, so neither it nor its gradient is ever permuted. It is the largest tensor of the
        # path (n / kernel positions times the unfolded input: 28 MB at 512x4x4, batch 32, n = 27).
        s, m = self.shape, self.mixtures
        cells = self.cells
        num_cells, cell_out = cells.shape[0], cells.shape[1]
        batch = x.shape[0]
        columns = F.unfold(x, s.kernel_size, s.dilation, s.padding, s.stride)  # (B, in * kh * kw, L)
        positions = columns.shape[-1]
        # unfold's rows are (in-group, contraction, spatial cell): per position, a (spatial cell,
        # contraction) matrix for the attention's (cell, spatial cell) weights to multiply.
        by_position = columns.view(batch, m.in_groups, -1, m.spatial, positions).permute(0, 4, 1, 3, 2)
        contraction = by_position.shape[-1]
        weights = alpha.view(batch, m.spatial, m.out_groups, m.in_groups, num_cells).permute(0, 2, 3, 4, 1)
        # (B, 1, out_groups, in_groups, n, spatial) by (B, L, 1, in_groups, spatial, contraction)
        mixed = torch.matmul(weights.unsqueeze(1), by_position.unsqueeze(2))  # (B, L, OG, IG, n, P)
        mixed = mixed.sum(3) if m.in_groups > 1 else mixed.squeeze(3)
        cells_by_out = cells.reshape(num_cells, cell_out, contraction).transpose(0, 1).reshape(cell_out, -1)
        y = matmul(mixed.reshape(-1, num_cells * contraction), cells_by_out.t())  # (B * L * OG, cell_out)
        y = y.view(batch, positions, s.out_channels).transpose(1, 2)
        return y.reshape(batch, s.out_channels, *self._output_size(x))

    def _fused_geometry(self) -> FusedGeometry:
        s, m = self.shape, self.mixtures
        return FusedGeometry(
            tuple(s.kernel_size),
            tuple(s.stride),
            tuple(s.padding),
            tuple(s.dilation),
            m.spatial,
            m.out_groups,
            m.in_groups,
        )

    def _fused_triton(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # The kernels see no autocast: give them the input in the dtype a convolution would run in.
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        cells = self.cells
        return kw_conv2d(x, cells, alpha.reshape(x.shape[0], -1, cells.shape[0]), self._fused_geometry())

    _PATHS: ClassVar[dict[str, Callable]] = {
        "grouped_conv": _grouped_conv,
        "batched_matmul": _batched_matmul,
        "cell_conv": _cell_conv,
        "input_mixing": _input_mixing,
        "fused_triton": _fused_triton,
    }
    paths = tuple(_PATHS)

    def path_unavailable(self, path: str) -> str | None:
        s = self.shape
        pointwise = is_pointwise(s.kernel_size, s.padding, s.groups)
        if path == "batched_matmul" and not pointwise and (self.dims != 2 or s.groups != 1):
            return "needs a pointwise kernel (1x1, unpadded, ungrouped) or an ungrouped 2-d convolution"
        if path in ("cell_conv", "input_mixing", "fused_triton") and (self.dims != 2 or s.groups != 1):
            return "needs an ungrouped 2-d convolution"
        if path == "fused_triton":
            return fused_path_unavailable(self.cells.device)
        return None

    def path_signature(self) -> str:
        m = self.mixtures
        return (
            f"{type(self).__name__}({self._geometry()}, "
            f"cells={self.plan.num_cells}x{'x'.join(map(str, self.plan.cell_shape))}, "
            f"mixtures={m.spatial}x{m.out_groups}x{m.in_groups})"
        )

    def _output_size(self, x: torch.Tensor) -> tuple[int, ...]:
        s = self.shape
        return output_size(x.shape[2:], s.kernel_size, s.stride, s.padding, s.dilation)

    def path_costs(self, x: torch.Tensor) -> dict[str, PathCost]:
        """Estimated cost of each path that applies to input ``x`` (FLOPs, elements moved)."""
        s, m = self.shape, self.mixtures
        batch, positions = x.shape[0], math.prod(self._output_size(x))
        n, cell_numel = self.plan.num_cells, self.plan.cell_numel
        kernel_numel = self._kernel_numel()
        assembly = PathCost(
            flops=2.0 * batch * m.count * n * cell_numel + 2.0 * batch * kernel_numel * positions,
            elements_moved=2.0 * batch * kernel_numel,
            per_sample_kernels=batch * kernel_numel,
        )
        unfolded_rows = s.in_channels * math.prod(s.kernel_size)
        costs = {}
        if is_pointwise(s.kernel_size, s.padding, s.groups):
            costs["batched_matmul"] = assembly
        elif self.path_unavailable("batched_matmul") is None:  # on the unfolded input, reordered
            unfolding = 2.0 * batch * unfolded_rows * positions
            moved = assembly.elements_moved + 2.0 * unfolding
            costs["batched_matmul"] = replace(assembly, elements_moved=moved)
        costs["grouped_conv"] = assembly
        if self.path_unavailable("cell_conv") is None:
            cell_out = self.plan.cell_shape[0]
            response_elements = batch * m.in_groups * m.spatial * n * cell_out * positions
            costs["cell_conv"] = PathCost(
                flops=2.0 * response_elements * (cell_numel // cell_out)
                + 2.0 * response_elements * m.out_groups,
                elements_moved=2.0 * response_elements + 2.0 * batch * unfolded_rows * positions,
            )
            mixed_elements = batch * m.out_groups * n * (cell_numel // cell_out) * positions
            costs["input_mixing"] = PathCost(
                flops=2.0 * mixed_elements * m.in_groups * m.spatial + 2.0 * mixed_elements * cell_out,
                elements_moved=4.0 * mixed_elements + 2.0 * batch * unfolded_rows * positions,
            )
        if self.path_unavailable("fused_triton") is None and x.dtype in SUPPORTED_DTYPES:
            # The conv's FLOPs, plus each program mixing its weight tiles from all n cells once per
            # BLOCK_POSITIONS output positions; it moves the input, the output and the cells, and
            # no per-sample kernel.
            tiles = batch * math.ceil(positions / BLOCK_POSITIONS)
            costs["fused_triton"] = PathCost(
                flops=2.0 * batch * kernel_numel * positions + 2.0 * tiles * n * kernel_numel,
                elements_moved=float(x.numel() + batch * s.out_channels * positions + n * cell_numel),
            )
        return costs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plan is None:
            raise RuntimeError(
                f"KernelWarehouse layer {self.reserved.name!r} has no warehouse yet: "
                "call WarehouseManager.store() and .allocate(model) (or ConvFactory.finalize(model))"
            )
        alpha = self.attention(x, self.temperature)
        y = self._PATHS[self.select_path(x)](self, x, alpha)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * self.dims))
        return y


class KWConv1d(KWConvNd):
    dims = 1


class KWConv2d(KWConvNd):
    dims = 2


class KWConv3d(KWConvNd):
    dims = 3


class KWLinear(KWConvNd):
    """A linear layer over the last axis of (B, ..., C) input: a 1-d pointwise KW conv over tokens,
    with attention pooled over all tokens of a sample (as in the reference)."""

    dims = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        tokens = x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)
        return super().forward(tokens).transpose(1, 2).reshape(*leading, -1)


_LAYER_CLASSES = {1: KWConv1d, 2: KWConv2d, 3: KWConv3d}


class WarehouseManager(nn.Module):
    """Owns a model's warehouses: reserves layers, plans and creates warehouses, allocates cells."""

    def __init__(self, options: KWOptions | None = None, **kwargs) -> None:
        super().__init__()
        self.options = options if options is not None else KWOptions(**kwargs)
        self.sharing_range = normalize_sharing_range(self.options.sharing_range)
        self.reserved: list[ReservedLayer] = []
        self.plans: list[WarehousePlan] = []
        self.warehouse_index: dict[str, int] = {}
        self.warehouses = nn.ParameterList()

    def reserve(self, shape: LayerShape, name: str = "default") -> KWConvNd:
        """A KernelWarehouse layer for ``shape`` drawing on the warehouse ``name`` fuses to."""
        if self.plans:
            raise RuntimeError("warehouses are stored already; reserve every layer before store()")
        reserved = ReservedLayer(
            name=name,
            warehouse=fuse_warehouse_name(name, self.sharing_range),
            in_channels=shape.in_channels,
            out_channels=shape.out_channels,
            groups=shape.groups,
            kernel_size=shape.kernel_size,
            bias=shape.bias,
        )
        self.reserved.append(reserved)
        cls = KWLinear if shape.linear else _LAYER_CLASSES[shape.dims]
        return cls(shape, reserved, self)

    def store(self) -> list[WarehousePlan]:
        """Plan the warehouses and create their parameters; returns the plans."""
        o = self.options
        self.plans = plan_warehouses(
            self.reserved,
            o.reduction,
            o.cell_num_ratio,
            o.cell_inplane_ratio,
            o.cell_outplane_ratio,
            o.nonlocal_basis_ratio,
            o.spatial_partition,
        )
        for index, plan in enumerate(self.plans):
            self.warehouse_index[plan.name] = index
            self.warehouses.append(nn.Parameter(torch.randn(plan.num_cells, *plan.cell_shape)))
        return self.plans

    def allocate(self, model: nn.Module) -> None:
        """Give each of this manager's layers in ``model`` its attention and Kaiming-initialised cells,
        in module order. Raises RuntimeError if a reserved layer is not part of ``model``."""
        next_cell = [0] * len(self.plans)
        seen = set()
        first_layer = None
        for layer in model.modules():
            if not isinstance(layer, KWConvNd) or layer.manager is not self:
                continue
            first_layer = first_layer or layer
            index = self.warehouse_index[layer.reserved.warehouse]
            plan = self.plans[index]
            start = next_cell[index]
            next_cell[index] = layer.attach(plan, plan.layers.index(layer.reserved), start)
            cells = self.warehouses[index]
            with torch.no_grad():
                nn.init.kaiming_normal_(
                    cells[start : next_cell[index]].view(-1, *plan.cell_shape[1:]),
                    mode="fan_out",
                    nonlinearity="relu",
                )
            seen.add(id(layer.reserved))
        missing = [r.name for r in self.reserved if id(r) not in seen]
        if missing:
            raise RuntimeError(f"layers reserved but not found in the model: {', '.join(missing)}")
        # The first layer owns the manager, so the warehouses are the model's parameters (once)
        # without adding a child to the model itself, whose forward (a Sequential's, say) may
        # call every child.
        if first_layer is not None:
            first_layer.add_module("warehouse_manager", self)


def warehouse_managers(model: nn.Module) -> list[WarehouseManager]:
    """The warehouse managers whose layers are in ``model`` (one per factory), in module order."""
    managers: list[WarehouseManager] = []
    for module in model.modules():
        if isinstance(module, KWConvNd) and all(module.manager is not m for m in managers):
            managers.append(module.manager)
    return managers


class KWBuilder(LayerBuilder):
    def __init__(self, options: KWOptions) -> None:
        super().__init__(options)
        self.manager = WarehouseManager(options)

    def build(self, shape: LayerShape, name: str) -> nn.Module:
        return self.manager.reserve(shape, name)

    def finalize(self, model: nn.Module) -> None:
        try:
            self.manager.store()
        except WarehousePlanError as error:
            raise ConvSpecError(str(error)) from None
        self.manager.allocate(model)


register_family("kw", KWOptions, KWBuilder, shares_across_layers=True)

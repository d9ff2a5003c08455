"""KernelWarehouse planning: from reserved layers to warehouses, with no tensor in sight.

Layers are reserved by name (``stage2_layer1_conv0``) and shape. ``sharing_range`` fuses names
into warehouse names as the reference implementation does: each ``_``-separated part of a
layer name that starts with a sharing keyword is replaced by that keyword, so with
``["layer", "conv"]`` the layer above goes to ``stage2_layer_conv`` and all layers of stage 2
share one warehouse. Per warehouse the planner then derives, as the reference does:

- the cell shape ``[gcd(out) * cell_outplane_ratio, gcd(in / groups) * cell_inplane_ratio, *k]``
  where ``k`` is all ones with ``spatial_partition`` and the (common) kernel size otherwise;
- each layer's mixtures ``M = (out / cell_out) * (in / groups / cell_in) * prod(kernel / k)``;
- the warehouse size ``n = max(int(cell_num_ratio * sum(M)), 1)``;
- the initial assignment: each layer's mixtures point at consecutive cells of the warehouse
  (``int(cell_num_ratio)`` cells apart), or, for ``cell_num_ratio < 1``, one mixture in every
  ``1 / cell_num_ratio`` points at a cell and the others at the zero cell.

Everything here is exact integer arithmetic: a warehouse's size is known before any weight exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


class WarehousePlanError(ValueError):
    """Options that no warehouse can satisfy; the message names the option and the warehouse."""


def fuse_warehouse_name(layer_name: str, sharing_range: Sequence[str]) -> str:
    """The warehouse a layer named ``layer_name`` draws from under ``sharing_range``."""
    fused = []
    for part in layer_name.split("_"):
        for keyword in sharing_range:
            if part.startswith(keyword):
                part = keyword
        fused.append(part)
    return "_".join(fused)


def normalize_sharing_range(sharing_range: str | Sequence[str]) -> tuple[str, ...]:
    """Accept the presets' string form (``"layer_conv"``) and the list form alike."""
    if isinstance(sharing_range, str):
        return tuple(p for p in sharing_range.split("_") if p)
    return tuple(sharing_range)


@dataclass(frozen=True, eq=False)  # identity: two layers may share a name and a shape
class ReservedLayer:
    """A layer as the planner sees it: weight shape ``(out, in / groups, *kernel)``."""

    name: str
    warehouse: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    bias: bool

    @property
    def in_channels_per_group(self) -> int:
        return self.in_channels // self.groups


@dataclass(frozen=True)
class LayerMixtures:
    """How one layer's kernel is cut into cells: ``spatial * out_groups * in_groups`` mixtures."""

    spatial: int
    out_groups: int
    in_groups: int

    @property
    def count(self) -> int:
        return self.spatial * self.out_groups * self.in_groups


@dataclass(frozen=True)
class WarehouseSettings:
    """The options of one warehouse, resolved from one-value-or-one-per-warehouse lists."""

    reduction: float
    cell_num_ratio: float
    cell_inplane_ratio: float
    cell_outplane_ratio: float
    nonlocal_basis_ratio: float
    spatial_partition: bool


@dataclass(frozen=True)
class WarehousePlan:
    name: str
    settings: WarehouseSettings
    cell_shape: tuple[int, ...]  # (cell_out, cell_in, *cell_kernel)
    num_cells: int  # n
    layers: tuple[ReservedLayer, ...]
    mixtures: tuple[LayerMixtures, ...]  # one per layer, in reservation order

    @property
    def cell_numel(self) -> int:
        return math.prod(self.cell_shape)

    @property
    def num_parameters(self) -> int:
        return self.num_cells * self.cell_numel


def per_warehouse(value, count: int, key: str, names: Sequence[str]) -> list:
    """Expand an option given as one value or as one value per warehouse."""
    if not isinstance(value, list | tuple):
        return [value] * count
    if len(value) == 1:
        return list(value) * count
    if len(value) != count:
        raise WarehousePlanError(
            f"conv.{key}: {len(value)} values given, but the model has {count} warehouses "
            f"({', '.join(names)}); give one value or one per warehouse"
        )
    return list(value)


def cells_assigned(num_mixtures: int, cell_num_ratio: float) -> int:
    """How many warehouse cells a layer's initial assignment takes (the reference's rule)."""
    if cell_num_ratio >= 1.0:
        return num_mixtures * int(cell_num_ratio)
    period = int(1.0 / cell_num_ratio)
    return sum(1 for i in range(num_mixtures) if i % period == (i // period) % period)


def initial_assignment(num_mixtures: int, start_cell: int, cell_num_ratio: float) -> list[int]:
    """For each mixture of a layer, the warehouse cell it points at initially (-1: the zero cell).

    ``start_cell`` is where this layer's cells begin in its warehouse.
    """
    targets = []
    if cell_num_ratio >= 1.0:
        step = int(cell_num_ratio)
        return [start_cell + i * step for i in range(num_mixtures)]
    period = int(1.0 / cell_num_ratio)
    for i in range(num_mixtures):
        if i % period == (i // period) % period:
            targets.append(start_cell)
            start_cell += 1
        else:
            targets.append(-1)
    return targets


def _cell_shape(layers: Sequence[ReservedLayer], settings: WarehouseSettings, name: str) -> tuple[int, ...]:
    out_gcd = math.gcd(*(layer.out_channels for layer in layers))
    in_gcd = math.gcd(*(layer.in_channels_per_group for layer in layers))
    cell_out = max(int(out_gcd * settings.cell_outplane_ratio), 1)
    cell_in = max(int(in_gcd * settings.cell_inplane_ratio), 1)
    for key, cell, gcd in (
        ("cell_outplane_ratio", cell_out, out_gcd),
        ("cell_inplane_ratio", cell_in, in_gcd),
    ):
        if gcd % cell:
            raise WarehousePlanError(
                f"conv.{key}: gives cells of {cell} channels in warehouse {name!r}, which do not divide "
                f"its layers' {gcd} (greatest common divisor); no whole number of cells fits"
            )
    kernel = layers[0].kernel_size
    if settings.spatial_partition:
        return (cell_out, cell_in, *(1,) * len(kernel))
    if any(layer.kernel_size != kernel for layer in layers):
        sizes = sorted({layer.kernel_size for layer in layers})
        raise WarehousePlanError(
            f"conv.spatial_partition: false needs one kernel size per warehouse, but {name!r} has {sizes}"
        )
    return (cell_out, cell_in, *kernel)


def _mixtures(layer: ReservedLayer, cell_shape: tuple[int, ...]) -> LayerMixtures:
    spatial = math.prod(k // c for k, c in zip(layer.kernel_size, cell_shape[2:], strict=True))
    return LayerMixtures(
        spatial, layer.out_channels // cell_shape[0], layer.in_channels_per_group // cell_shape[1]
    )


def plan_warehouses(
    layers: Sequence[ReservedLayer],
    reduction,
    cell_num_ratio,
    cell_inplane_ratio,
    cell_outplane_ratio,
    nonlocal_basis_ratio,
    spatial_partition,
) -> list[WarehousePlan]:
    """Plan every warehouse of a model from its reserved layers, in order of first reservation.

    Each option is one value or one value per warehouse. Raises WarehousePlanError for options
    that leave no whole cell, mixed kernel sizes without spatial partition, or a
    ``cell_num_ratio`` whose initial assignment does not fill the warehouse exactly (the
    reference asserts this too: use an integer >= 1, or 1/integer).
    """
    groups: dict[str, list[ReservedLayer]] = {}
    for layer in layers:
        groups.setdefault(layer.warehouse, []).append(layer)
    names = list(groups)
    options = {
        "reduction": reduction,
        "cell_num_ratio": cell_num_ratio,
        "cell_inplane_ratio": cell_inplane_ratio,
        "cell_outplane_ratio": cell_outplane_ratio,
        "nonlocal_basis_ratio": nonlocal_basis_ratio,
        "spatial_partition": spatial_partition,
    }
    columns = {key: per_warehouse(value, len(names), key, names) for key, value in options.items()}
    plans = []
    for index, name in enumerate(names):
        settings = WarehouseSettings(**{key: column[index] for key, column in columns.items()})
        members = groups[name]
        cell_shape = _cell_shape(members, settings, name)
        mixtures = tuple(_mixtures(layer, cell_shape) for layer in members)
        total = sum(m.count for m in mixtures)
        num_cells = max(int(total * settings.cell_num_ratio), 1)
        assigned = sum(cells_assigned(m.count, settings.cell_num_ratio) for m in mixtures)
        if assigned != num_cells:
            raise WarehousePlanError(
                f"conv.cell_num_ratio: {settings.cell_num_ratio} gives warehouse {name!r} {num_cells} cells, "
                f"but its layers' initial assignment takes {assigned}; use an integer >= 1 or 1/integer "
                "that fits the layers' mixture counts"
            )
        plans.append(WarehousePlan(name, settings, cell_shape, num_cells, tuple(members), mixtures))
    return plans


def attention_hidden(in_channels: int, reduction: float) -> int:
    """Width of a layer's attention trunk (at least 16, as in the reference)."""
    return max(int(in_channels * reduction), 16)

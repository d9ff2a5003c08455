"""Exact parameter and MAC accounting of a model, on the meta device (no weight memory)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kwsearch.models.config import ModelConfigError
from kwsearch.nn import TemperatureControlled, sparse_training, warehouse_managers
from kwsearch.nn.paths import MultiPathLayer, published_paths
from kwsearch.nn.sparsity import MASK_BUFFER, planned_nonzeros, sparse_targets


@dataclass(frozen=True)
class ParameterSplit:
    """``kernels``: warehouse cells and kernel banks; ``attention``: everything else a dynamic
    layer owns except its bias; ``static``: the rest (plain convs, norms, biases, classifier)."""

    total: int
    static: int
    kernels: int
    attention: int


def parameter_split(model: nn.Module) -> ParameterSplit:
    kernels, attention = set(), set()
    for layer in model.modules():
        if not isinstance(layer, TemperatureControlled):
            continue
        for name, p in layer.named_parameters():
            if name.startswith("warehouse_manager.") or name == "weight":
                kernels.add(id(p))
            elif name != "bias":
                attention.add(id(p))
    params = {id(p): p.numel() for p in model.parameters()}
    kernel_count = sum(params[i] for i in kernels)
    attention_count = sum(params[i] for i in attention - kernels)
    total = sum(params.values())
    return ParameterSplit(total, total - kernel_count - attention_count, kernel_count, attention_count)


def effective_parameters(model: nn.Module) -> int:
    """Parameters a sparse-trained model keeps: all of them, less the masked-out weights.

    A model that carries masks (sparse training has started) is counted from its masks. Before
    that (on the meta device, for a budget) the count is planned from the sparse-training settings
    its conv family attached: exact for ``erk`` and ``uniform`` layer densities (functions of the
    shapes) and for ``snip`` too, whose per-layer shares need data but whose total the trainer
    keeps at ``round(density * target weights)``. A dense model keeps every parameter.
    """
    total = sum(p.numel() for p in model.parameters())
    masks = [b for name, b in model.named_buffers() if name.rpartition(".")[2] == MASK_BUFFER]
    if masks:
        return total - sum(mask.numel() - int(mask.sum()) for mask in masks)
    settings = sparse_training(model)
    if settings is None:
        return total
    targets = sparse_targets(model, settings.sparse_targets)
    shapes = {name: tuple(m.weight.shape) for name, m in targets.items()}
    dense_targets = sum(math.prod(shape) for shape in shapes.values())
    return total - dense_targets + planned_nonzeros(settings, shapes)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one sample of ``input_shape`` (C, H, W):
    convolutions, linears, attention, and kernel assembly as the published algorithms do it.

    Runs on whatever device the model is on; on the meta device it costs no memory or arithmetic.
    Raises ModelConfigError when such an input does not pass through the model.
    """
    with FlopCounterMode(display=False) as counter:
        check_input(model, input_shape)
    return counter.get_total_flops() // 2


def check_input(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Pass one sample of ``input_shape`` (C, H, W) through ``model`` (in eval mode, each dynamic
    layer on its published path; on the meta device no arithmetic is done). Raises
    ModelConfigError when it does not pass: an image smaller than the network's downsampling, a
    size a patch embedding was not built for."""
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with published_paths(m for m in model.modules() if isinstance(m, MultiPathLayer)), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    except (RuntimeError, ValueError) as error:
        shape = "x".join(map(str, input_shape))
        raise ModelConfigError(f"a {shape} input does not pass through the network ({error})") from None
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class WarehouseSummary:
    name: str
    layers: list[str]
    cell_shape: list[int]
    num_cells: int
    params: int


def warehouse_summaries(model: nn.Module) -> list[WarehouseSummary]:
    return [
        WarehouseSummary(
            plan.name,
            [layer.name for layer in plan.layers],
            list(plan.cell_shape),
            plan.num_cells,
            plan.num_parameters,
        )
        for manager in warehouse_managers(model)
        for plan in manager.plans
    ]


@dataclass(frozen=True)
class ModelAccount:
    """``params`` counts every parameter; ``effective_params`` those a sparse-trained model keeps
    (:func:`effective_parameters`; equal to ``params`` for dense models)."""

    params: int
    effective_params: int
    static_params: int
    kernel_params: int
    attention_params: int
    macs: int
    input_shape: list[int]
    warehouses: list[WarehouseSummary]

    def as_dict(self) -> dict:
        return asdict(self)


def account(model: nn.Module, input_shape: tuple[int, ...]) -> ModelAccount:
    """Parameters (split, and those kept by sparse training), MACs at ``input_shape`` and the
    warehouse plan of ``model``."""
    split = parameter_split(model)
    return ModelAccount(
        params=split.total,
        effective_params=effective_parameters(model),
        static_params=split.static,
        kernel_params=split.kernels,
        attention_params=split.attention,
        macs=count_macs(model, input_shape),
        input_shape=list(input_shape),
        warehouses=warehouse_summaries(model),
    )

"""The dynamic-convolution operators: KernelWarehouse, DY-CNN, ODConv, SLaK and static conv.

Importing this package registers every family with the conv factory.
"""

from kwsearch.nn import static  # noqa: F401  (registers the family)
from kwsearch.nn.dyconv import DyConv2d, DyConvOptions
from kwsearch.nn.factory import (
    ConvFactory,
    ConvSpecError,
    LayerShape,
    ParsedSpec,
    conv_shape,
    family_names,
    parse_spec,
)
from kwsearch.nn.kernel_warehouse import (
    KWConv1d,
    KWConv2d,
    KWConv3d,
    KWConvNd,
    KWLinear,
    KWOptions,
    WarehouseManager,
    warehouse_managers,
)
from kwsearch.nn.odconv import ODConv2d, ODConvOptions
from kwsearch.nn.path_cache import PathCache, cache_file
from kwsearch.nn.path_choice import LayerPaths, choose_paths, measuring_enabled
from kwsearch.nn.paths import InputSpec, MultiPathLayer, PathChoice
from kwsearch.nn.slak import SLaKConv2d, SLaKOptions
from kwsearch.nn.sparsity import SparseTraining, sparse_training
from kwsearch.nn.temperature import (
    KW_DEFAULT_SCHEDULE,
    SOFTMAX_DEFAULT_SCHEDULE,
    TemperatureControlled,
    TemperatureSchedule,
    set_temperature,
)
from kwsearch.nn.warehouse import WarehousePlan, WarehousePlanError, plan_warehouses

__all__ = [
    "KW_DEFAULT_SCHEDULE",
    "SOFTMAX_DEFAULT_SCHEDULE",
    "ConvFactory",
    "ConvSpecError",
    "DyConv2d",
    "DyConvOptions",
    "InputSpec",
    "KWConv1d",
    "KWConv2d",
    "KWConv3d",
    "KWConvNd",
    "KWLinear",
    "KWOptions",
    "LayerPaths",
    "LayerShape",
    "MultiPathLayer",
    "ODConv2d",
    "ODConvOptions",
    "ParsedSpec",
    "PathCache",
    "PathChoice",
    "SLaKConv2d",
    "SLaKOptions",
    "SparseTraining",
    "TemperatureControlled",
    "TemperatureSchedule",
    "WarehouseManager",
    "WarehousePlan",
    "WarehousePlanError",
    "cache_file",
    "choose_paths",
    "conv_shape",
    "family_names",
    "measuring_enabled",
    "parse_spec",
    "plan_warehouses",
    "set_temperature",
    "sparse_training",
    "warehouse_managers",
]

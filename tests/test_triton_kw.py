"""The fused Triton path of KernelWarehouse 2-d convolutions, run by Triton's interpreter on CPU
tensors: output and gradients (input, cells, alpha) against the plain float64 reference on random
inputs and random parameters, the layer with the path forced, when the path is offered."""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: the fused path cannot be tested")

from kwsearch.nn import set_temperature
from kwsearch.nn.triton_kw import INTERPRET_ENV, OPT_IN_ENV, FusedGeometry, kw_conv2d
from tests.helpers import assert_rel_close, randomize_
from tests.test_kernel_warehouse import Stack, kw, reference_forward

FUSED = "fused_triton"


@pytest.fixture(autouse=True, scope="module")
def _interpreted_triton():
    """Triton's interpreter for this module only, and the path opted in. Triton decides whether
    to interpret when a kernel is decorated, so the kernels' module is (re)loaded with it on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INTERPRET_ENV, "1")
        patch.setenv(OPT_IN_ENV, "1")
        name = "kwsearch.nn.triton_kw_kernels"
        kernels = sys.modules.get(name) or importlib.import_module(name)
        if type(kernels.kw_conv2d_forward).__name__ != "InterpretedFunction":
            importlib.reload(kernels)
        yield


# -- the function against the float64 reference -----------------------------------------------


def reference_kernels(cells: torch.Tensor, alpha: torch.Tensor, geometry: FusedGeometry) -> torch.Tensor:
    """Every sample's kernel (B, out, in, kh, kw), mixture by mixture, in float64."""
    batch, cell_out, cell_in = alpha.shape[0], cells.shape[1], cells.shape[2]
    kh, kw_ = geometry.kernel_size
    kernels = torch.zeros(
        batch, geometry.out_groups * cell_out, geometry.in_groups * cell_in, kh, kw_, dtype=torch.float64
    )
    mixture = 0
    for position in range(geometry.spatial):
        for og in range(geometry.out_groups):
            for ig in range(geometry.in_groups):
                mixed = torch.einsum("bn,n...->b...", alpha[:, mixture], cells)
                rows = slice(og * cell_out, (og + 1) * cell_out)
                cols = slice(ig * cell_in, (ig + 1) * cell_in)
                if geometry.spatial > 1:  # a 1x1 cell at one kernel position
                    kernels[:, rows, cols, position // kw_, position % kw_] = mixed[..., 0, 0]
                else:
                    kernels[:, rows, cols] = mixed
                mixture += 1
    return kernels


def reference_conv(x, cells, alpha, geometry: FusedGeometry) -> torch.Tensor:
    kernels = reference_kernels(cells, alpha, geometry)
    g = geometry
    return torch.cat(
        [F.conv2d(x[b : b + 1], kernels[b], None, g.stride, g.padding, g.dilation) for b in range(x.shape[0])]
    )


# (batch, in, out, height, width, kernel, stride, padding, dilation, cell_out, cell_in, cells, 1x1 cells)
GEOMETRIES = [
    (2, 8, 8, 5, 5, 3, 1, 1, 1, 8, 8, 4, True),  # one mixture per kernel position
    (1, 8, 16, 5, 6, 3, 2, 0, 1, 8, 4, 3, True),  # 2 x 2 cell blocks, stride 2, no padding
    (1, 6, 12, 7, 5, 3, 2, 1, 1, 6, 3, 5, False),  # full-kernel cells, odd channel counts
    (2, 4, 6, 9, 9, 3, 1, 1, 1, 3, 4, 2, True),  # 81 positions: two position tiles
    (3, 40, 20, 3, 4, 1, 1, 0, 1, 20, 40, 2, True),  # 1x1; cell_in 40 spans two channel tiles
    (2, 8, 16, 5, 5, 1, 2, 0, 1, 16, 8, 3, True),  # 1x1 stride 2: a ResNet shortcut
    (2, 4, 4, 6, 6, 3, 1, 2, 2, 4, 2, 3, True),  # dilation 2
    (2, 8, 80, 3, 3, 3, 1, 1, 1, 80, 8, 2, True),  # cell_out 80 spans two output tiles
]


def random_operands(case, dtype=torch.float32):
    batch, cin, cout, height, width, k, stride, pad, dil, cell_out, cell_in, n, one_by_one = case
    out_groups, in_groups = cout // cell_out, cin // cell_in
    spatial = k * k if one_by_one else 1
    cell_kernel = (1, 1) if one_by_one else (k, k)
    geometry = FusedGeometry((k, k), (stride,) * 2, (pad,) * 2, (dil,) * 2, spatial, out_groups, in_groups)
    x = torch.randn(batch, cin, height, width)
    cells = torch.randn(n, cell_out, cell_in, *cell_kernel)
    alpha = torch.randn(batch, spatial * out_groups * in_groups, n)
    return geometry, [t.to(dtype) for t in (x, cells, alpha)]


def output_and_gradients(function, operands, dy):
    leaves = [t.detach().requires_grad_() for t in operands]
    y = function(*leaves)
    return [y, *torch.autograd.grad(y, leaves, dy.to(y.dtype))]


@pytest.mark.parametrize(
    "case", GEOMETRIES, ids=lambda c: f"b{c[0]}k{c[5]}s{c[6]}p{c[7]}d{c[8]}{'x'.join(map(str, c[9:12]))}"
)
def test_output_and_gradients_equal_the_float64_reference(case):
    geometry, operands = random_operands(case)
    x, cells = operands[:2]
    dy = torch.randn(x.shape[0], cells.shape[1] * geometry.out_groups, *geometry.output_size(*x.shape[2:]))
    expected = output_and_gradients(
        lambda *t: reference_conv(*t, geometry), [t.double() for t in operands], dy
    )
    actual = output_and_gradients(lambda *t: kw_conv2d(*t, geometry), operands, dy)
    for name, a, e in zip(("output", "x", "cells", "alpha"), actual, expected, strict=True):
        assert a.dtype == torch.float32 and a.shape == e.shape, name
        assert_rel_close(a.double(), e, rtol=1e-5)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_half_precision_input_accumulates_in_float32(dtype, rtol):
    geometry, operands = random_operands(GEOMETRIES[1])
    x, cells, alpha = operands
    dy = torch.randn(1, 16, 2, 2)
    expected = output_and_gradients(
        lambda *t: reference_conv(*t, geometry), [t.double() for t in operands], dy
    )
    actual = output_and_gradients(lambda *t: kw_conv2d(*t, geometry), [x.to(dtype), cells, alpha], dy)
    assert [t.dtype for t in actual] == [dtype, dtype, torch.float32, torch.float32]
    for a, e in zip(actual, expected, strict=True):
        assert_rel_close(a.double(), e, rtol)  # rounding of x, the kernel and dy to the half type


def test_only_the_gradients_asked_for_are_computed():
    geometry, (x, cells, alpha) = random_operands(GEOMETRIES[0])
    cells.requires_grad_()
    (d_cells,) = torch.autograd.grad(kw_conv2d(x, cells, alpha, geometry).sum(), [cells])
    expected = torch.autograd.grad(
        reference_conv(x.double(), cells.double(), alpha.double(), geometry).sum(), [cells]
    )
    assert_rel_close(d_cells.double(), expected[0], rtol=1e-5)


def test_a_dtype_or_shape_it_does_not_compute_is_refused():
    geometry, (x, cells, alpha) = random_operands(GEOMETRIES[0])
    with pytest.raises(ValueError, match="float64"):
        kw_conv2d(x.double(), cells, alpha, geometry)
    with pytest.raises(ValueError, match="alpha"):
        kw_conv2d(x, cells, alpha[:, :-1], geometry)
    with pytest.raises(ValueError, match="do not tile"):
        kw_conv2d(x, cells.expand(-1, -1, -1, 3, 3), alpha, geometry)


# -- the layer -------------------------------------------------------------------------------------


def kw_layer(cin, cout, k, stride=1, padding=0, bias=False, **options):
    """A KW 2-d layer sharing its warehouse with a second layer, random parameters, temperature 0.3."""
    layers = [
        ("blk_layer0", "conv", (cin, cout, k), dict(stride=stride, padding=padding, bias=bias)),
        ("blk_layer1", "conv", (cin, cout, k), dict(padding=k // 2)),
    ]
    net = randomize_(Stack(kw(sharing_range=["layer"], **options), layers))
    set_temperature(net, 0.3)
    return net, net.layers[0]


LAYERS = [
    dict(cin=8, cout=16, k=3, stride=2, padding=1, bias=True, cell_outplane_ratio=0.5),
    dict(cin=8, cout=8, k=3, padding=1, spatial_partition=False, cell_num_ratio=2),
    dict(cin=8, cout=16, k=1, cell_inplane_ratio=0.5, cell_num_ratio=0.5),
]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("options", LAYERS, ids=lambda o: f"k{o['k']}s{o.get('stride', 1)}")
def test_the_layer_on_the_fused_path_equals_the_reference(options, training):
    net, layer = kw_layer(**options)
    net.train(training)
    assert FUSED in layer.path_costs(torch.zeros(3, 8, 7, 7))
    x = torch.randn(3, options["cin"], 7, 7)
    expected = reference_forward(copy.deepcopy(layer).double(), x.double(), training)
    layer.path = FUSED
    assert_rel_close(layer(x).double(), expected, rtol=1e-5)


def test_the_layer_gradients_equal_the_float64_grouped_conv_path():
    # Through the attention too: alpha's gradient reaches the attention's parameters.
    net, _ = kw_layer(8, 16, 3, stride=2, padding=1, bias=True, cell_outplane_ratio=0.5)
    reference = copy.deepcopy(net).double()
    x = torch.randn(2, 8, 7, 7)
    results = []
    for model, path, dtype in ((net, FUSED, torch.float32), (reference, "grouped_conv", torch.float64)):
        model.layers[0].path = path
        inputs = [x.to(dtype).requires_grad_(), *model.parameters()]
        y = model.layers[0](inputs[0])
        dy = torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)
        grads = torch.autograd.grad(y, inputs, dy, allow_unused=True)
        results.append([y, *grads])
    names = ["output", "x", *(name for name, _ in net.named_parameters())]
    for name, fused, exact in zip(names, *results, strict=True):
        assert (fused is None) == (exact is None), name
        if exact is not None and exact.abs().max() > 0:
            assert_rel_close(fused.double(), exact, rtol=1e-4)


def test_the_layer_under_bfloat16_autocast_and_channels_last():
    net, layer = kw_layer(8, 8, 3, padding=1)
    net.eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = layer(x)
        layer.path = FUSED
        assert_rel_close(layer(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = layer(x)
    assert actual.dtype == torch.bfloat16
    assert_rel_close(actual.float(), expected, rtol=5e-2)


def test_its_cost_counts_the_conv_the_mixing_and_no_per_sample_kernel():
    _, layer = kw_layer(8, 16, 3, padding=1)
    x = torch.zeros(4, 8, 10, 10)
    costs = layer.path_costs(x)
    conv_flops = 2.0 * 4 * 16 * 8 * 9 * 100
    mixing_flops = 2.0 * 4 * 2 * layer.plan.num_cells * 16 * 8 * 9  # 100 positions: 2 tiles of 64
    assert costs[FUSED].flops == conv_flops + mixing_flops
    cells = layer.plan.num_cells * layer.plan.cell_numel
    assert costs[FUSED].elements_moved == x.numel() + 4 * 16 * 100 + cells


# -- when the path is offered ----------------------------------------------------------------------


def test_it_is_offered_only_when_asked_for_on_a_device_it_runs_on(monkeypatch):
    _, layer = kw_layer(8, 8, 3, padding=1)
    x = torch.zeros(2, 8, 6, 6)
    assert layer.path_unavailable(FUSED) is None and FUSED in layer.path_costs(x)
    assert FUSED not in layer.path_costs(x.double())  # float32, bfloat16 and float16 only
    monkeypatch.setenv(INTERPRET_ENV, "0")
    assert "CUDA" in layer.path_unavailable(FUSED) and FUSED not in layer.path_costs(x)
    monkeypatch.setenv(INTERPRET_ENV, "1")
    monkeypatch.delenv(OPT_IN_ENV)
    assert OPT_IN_ENV in layer.path_unavailable(FUSED) and FUSED not in layer.path_costs(x)
    layer.path = FUSED
    with pytest.raises(ValueError, match="opt-in"):
        layer(x)


@pytest.mark.parametrize(
    ("groups", "dims"),
    [(8, 2), (1, 1)],
)
def test_grouped_and_other_dimensional_layers_never_offer_it(groups, dims):
    net = Stack(kw(), [("a", "conv", (8, 8, 3), {"padding": 1, "groups": groups})], dims=dims)
    layer = net.layers[0]
    assert "ungrouped 2-d" in layer.path_unavailable(FUSED)
    assert FUSED not in layer.path_costs(torch.zeros(2, 8, *(6,) * dims))

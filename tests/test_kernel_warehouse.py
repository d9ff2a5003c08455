"""KernelWarehouse: planning as the reference does it, exact outputs on every path, accounting."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from kwsearch.nn import (
    ConvFactory,
    ConvSpecError,
    KWConvNd,
    KWLinear,
    kernel_warehouse,
    set_temperature,
    warehouse_managers,
)
from kwsearch.nn.cost import cheapest
from kwsearch.nn.warehouse import (
    LayerMixtures,
    ReservedLayer,
    WarehousePlan,
    attention_hidden,
    cells_assigned,
    fuse_warehouse_name,
    initial_assignment,
)
from tests.helpers import assert_rel_close, per_sample_conv, randomize_


class Stack(nn.Module):
    """A sequence of layers made by one factory; each entry is (name, factory method, args, kwargs)."""

    def __init__(self, spec, layers, dims=2):
        super().__init__()
        factory = ConvFactory(spec)
        self.layers = nn.ModuleList(
            factory.linear(*args, name=name, **kw)
            if kind == "linear"
            else factory.conv(*args, name=name, dims=dims, **kw)
            for name, kind, args, kw in layers
        )
        factory.finalize(self)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def kw(**options):
    return {"family": "kw", **options}


# -- the plain float64 reference ---------------------------------------------------------------


def reference_alpha(layer: KWConvNd, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Mixing weights (B, mixtures, n) recomputed from the attention's raw parameters."""
    att = layer.attention
    h = x.mean(dim=tuple(range(2, x.dim()))) @ att.fc1.weight.T
    if att.fc1.bias is not None:
        h = h + att.fc1.bias
    if isinstance(att.norm, nn.BatchNorm1d):
        mean, var = (
            (h.mean(0), h.var(0, unbiased=False))
            if training
            else (att.norm.running_mean, att.norm.running_var)
        )
    else:
        mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
    h = torch.relu((h - mean) / torch.sqrt(var + att.norm.eps) * att.norm.weight + att.norm.bias)
    n, m = att.num_cells, att.num_mixtures
    rows = h @ att.fc2.weight.T
    if att.num_basis is None:
        logits = (rows + att.fc2.bias).view(x.shape[0], m, n + 1)
    else:
        rows = rows.view(x.shape[0], m, -1)
        local, basis, zero = (
            rows[..., : att.num_local_cells],
            rows[..., att.num_local_cells : -1],
            rows[..., -1:],
        )
        nonlocal_cells = basis @ att.fc3.weight.T
        s = att.start_cell
        logits = torch.cat([nonlocal_cells[..., :s], local, nonlocal_cells[..., s:], zero], dim=-1)
        logits = logits + att.basis_bias.view(m, n + 1)
    z = logits / (logits.abs().sum(-1, keepdim=True) + 1e-3)
    tau = layer.temperature
    return ((1 - tau) * z + tau * att.assignment)[..., :-1]


def reference_kernel(layer: KWConvNd, alpha: torch.Tensor) -> torch.Tensor:
    """One sample's kernel, cell by cell: mixture (position, out block, in block) in reference order."""
    s, mix = layer.shape, layer.mixtures
    cells = layer.cells
    cell_out, cell_in = cells.shape[1:3]
    kernel = torch.zeros(s.out_channels, s.in_channels // s.groups, *s.kernel_size, dtype=cells.dtype)
    mixture = 0
    for position in range(mix.spatial):
        for out_block in range(mix.out_groups):
            for in_block in range(mix.in_groups):
                cell = sum(alpha[mixture, c] * cells[c] for c in range(cells.shape[0]))
                rows = slice(out_block * cell_out, (out_block + 1) * cell_out)
                cols = slice(in_block * cell_in, (in_block + 1) * cell_in)
                if mix.spatial > 1:  # 1x1 cells placed at one kernel position
                    where = (rows, cols, *torch.unravel_index(torch.tensor(position), s.kernel_size))
                    kernel[where] = cell.reshape(cell_out, cell_in)
                else:
                    kernel[rows, cols] = cell
                mixture += 1
    return kernel


def reference_forward(layer: KWConvNd, x: torch.Tensor, training: bool) -> torch.Tensor:
    alpha = reference_alpha(layer, x, training)
    kernels = [reference_kernel(layer, alpha[b]) for b in range(x.shape[0])]
    biases = None if layer.bias is None else [layer.bias] * x.shape[0]
    s = layer.shape
    return per_sample_conv(x, kernels, biases, s.stride, s.padding, s.dilation, s.groups)


def check_every_path(layer: KWConvNd, x: torch.Tensor, training: bool, rtol: float = 1e-6) -> list[str]:
    layer.train(training)
    expected = reference_forward(layer, x, training)
    paths = list(layer.path_costs(x))
    for path in [*paths, None]:
        layer.path = path
        assert_rel_close(layer(x), expected, rtol)
    return paths


# -- planning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sharing", "expected"),
    [
        ("stage2_layer1_conv0", ["layer", "conv"], "stage2_layer_conv"),
        ("stage2_layer1_conv0", "layer_conv", "stage2_layer_conv"),
        ("stage2_layer1_conv0", [], "stage2_layer1_conv0"),
        ("stage1_layer3_pwconv1", ["layer", "pwconv"], "stage1_layer_pwconv"),
        ("stage1_layer3_dwconv0", ["layer", "pwconv"], "stage1_layer_dwconv0"),
        ("stage0_layer0_conv2", ["stage", "layer", "conv"], "stage_layer_conv"),
    ],
)
def test_layer_names_fuse_into_warehouses_as_in_the_reference(name, sharing, expected):
    from kwsearch.nn.warehouse import normalize_sharing_range

    assert fuse_warehouse_name(name, normalize_sharing_range(sharing)) == expected


def test_plan_of_a_shared_warehouse_matches_hand_computation():
    net = Stack(
        kw(sharing_range="layer_conv", cell_num_ratio=0.5, cell_inplane_ratio=0.5, cell_outplane_ratio=0.5),
        [
            ("stage0_layer0_conv0", "conv", (8, 16, 3), {"padding": 1}),
            ("stage0_layer1_conv0", "conv", (16, 16, 3), {"padding": 1}),
            ("stage0_layer1_conv1", "conv", (16, 32, 1), {}),
            ("stage1_layer0_conv0", "conv", (32, 48, 3), {"padding": 1}),
        ],
    )
    first, second = warehouse_managers(net)[0].plans
    assert first.name == "stage0_layer_conv" and second.name == "stage1_layer_conv"
    # gcd(out) = 16 -> 8, gcd(in) = 8 -> 4; spatial partition cuts 3x3 into 9 positions.
    assert first.cell_shape == (8, 4, 1, 1)
    assert [m.count for m in first.mixtures] == [9 * 2 * 2, 9 * 2 * 4, 1 * 4 * 4]
    assert first.num_cells == (36 + 72 + 16) // 2
    assert second.cell_shape == (24, 16, 1, 1) and second.num_cells == 9 * 2 * 2 // 2


def layer_parameter_count(
    layer: ReservedLayer, mixtures: LayerMixtures, plan: WarehousePlan, norm_layer: str
) -> int:
    """Parameters a KernelWarehouse layer owns itself: its attention and its bias."""
    settings = plan.settings
    hidden = attention_hidden(layer.in_channels, settings.reduction)
    count = layer.in_channels * hidden + 2 * hidden  # fc1 weight, norm affine
    if norm_layer != "batch":
        count += hidden  # fc1 keeps its bias when not followed by BatchNorm
    per_mixture = plan.num_cells + 1
    m = mixtures.count
    if settings.nonlocal_basis_ratio >= 1.0:
        count += hidden * per_mixture * m + per_mixture * m  # fc2 weight and bias
    else:
        local = int(settings.cell_num_ratio * m)
        nonlocal_cells = plan.num_cells - local
        basis = max(int(nonlocal_cells * settings.nonlocal_basis_ratio), 16)
        count += hidden * (local + basis + 1) * m + basis * nonlocal_cells + per_mixture * m
    if layer.bias:
        count += layer.out_channels
    return count


def kw_parameter_count(plans: list[WarehousePlan], norm_layer: str = "batch") -> int:
    """All parameters the KernelWarehouse layers of a model add (warehouses, attentions, biases),
    counted from the plans by the published formulas: what every instantiated count is checked
    against."""
    return sum(
        plan.num_parameters
        + sum(
            layer_parameter_count(layer, m, plan, norm_layer)
            for layer, m in zip(plan.layers, plan.mixtures, strict=True)
        )
        for plan in plans
    )


def test_parameter_count_of_one_layer_is_hand_computed():
    net = Stack(kw(), [("conv", "conv", (16, 32, 3), {"padding": 1, "bias": True})])
    # cells 32x16 (1x1), 9 mixtures, n = 9: warehouse 9 * 32 * 16
    # attention: hidden = max(16 / 16, 16) = 16; fc1 16*16 (no bias before BN), BN 2*16,
    # fc2 16 * (9 mixtures * 10 logits) + 90 bias; conv bias 32
    expected = 9 * 32 * 16 + 16 * 16 + 2 * 16 + 16 * 90 + 90 + 32
    assert sum(p.numel() for p in net.parameters()) == expected == 6458
    assert kw_parameter_count(warehouse_managers(net)[0].plans) == expected


def test_parameter_count_with_nonlocal_basis_and_layernorm_is_hand_computed():
    net = Stack(
        kw(sharing_range=["layer"], nonlocal_basis_ratio=0.5, norm_layer="layer"),
        [
            ("s_layer0", "conv", (16, 16, 3), {"padding": 1}),
            ("s_layer1", "conv", (16, 16, 3), {"padding": 1}),
            ("s_layer2", "conv", (16, 16, 3), {"padding": 1}),
        ],
    )
    (plan,) = warehouse_managers(net)[0].plans
    assert plan.num_cells == 27  # 3 layers x 9 mixtures of 16x16 cells
    # per layer: local = 9, nonlocal = 18, basis = max(9, 16) = 16
    # fc1 16*16 + 16 bias (LayerNorm keeps it), LN 2*16,
    # fc2 16 * (9 + 16 + 1) * 9, fc3 16 * 18, basis bias (27 + 1) * 9
    per_layer = 16 * 16 + 16 + 32 + 16 * 26 * 9 + 16 * 18 + 28 * 9
    expected = 27 * 16 * 16 + 3 * per_layer
    assert sum(p.numel() for p in net.parameters()) == expected
    assert kw_parameter_count(plan and warehouse_managers(net)[0].plans, "layer") == expected


def test_accounting_on_the_meta_device_matches():
    layers = [
        ("stage0_layer0_conv0", "conv", (32, 64, 3), {"padding": 1}),
        ("stage0_layer1_conv0", "conv", (64, 64, 3), {}),
    ]
    with torch.device("meta"):
        net = Stack(kw(sharing_range="layer", cell_num_ratio=2), layers)
    assert all(p.is_meta for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == kw_parameter_count(warehouse_managers(net)[0].plans)


@pytest.mark.parametrize("ratio", [1, 2, 4, 0.5, 0.25])
def test_initial_assignment_follows_the_reference_rule(ratio):
    # 36 and 72 mixtures: multiples of every period 1 / ratio, as the reference needs
    layers = [
        ("a_layer0", "conv", (8, 8, 3), {"padding": 1}),
        ("a_layer1", "conv", (8, 16, 3), {"padding": 1}),
    ]
    net = Stack(kw(sharing_range=["layer"], cell_num_ratio=ratio, cell_inplane_ratio=0.25), layers)
    first, second = (layer.attention.assignment for layer in net.layers)
    taken = []
    for beta in (first, second):
        assert torch.equal(beta.sum(1), torch.ones(beta.shape[0])), "each mixture points at exactly one cell"
        taken += sorted(int(c) for c in beta.argmax(1) if c != beta.shape[1] - 1)
    # disjoint, in layer order; with ratio k >= 1 a mixture's cell is followed by k - 1 free cells
    step = int(ratio) if ratio >= 1 else 1
    assert taken == list(range(0, warehouse_managers(net)[0].plans[0].num_cells, step))
    if ratio < 1:
        period = int(1 / ratio)
        pointing = (first[:, -1] == 0).nonzero().flatten().tolist()
        assert pointing == [i for i in range(first.shape[0]) if i % period == (i // period) % period]


def test_allocation_follows_module_order_not_reservation_order():
    factory = ConvFactory(kw(sharing_range=["layer"]))
    late = factory.conv(8, 8, 1, name="x_layer1")  # reserved first ...
    early = factory.conv(8, 8, 1, name="x_layer0")
    model = nn.Sequential(early, late)  # ... but second in the module tree
    factory.finalize(model)
    assert early.attention.start_cell == 0 and late.attention.start_cell == 1


def test_each_layer_slice_gets_kaiming_init():
    net = Stack(
        kw(sharing_range=["layer"]),
        [("a_layer0", "conv", (64, 64, 3), {}), ("a_layer1", "conv", (64, 64, 3), {})],
    )
    cells = warehouse_managers(net)[0].warehouses[0]
    # fan_out of a slice viewed as (cells * 64, 64, 1, 1): 9 cells * 64
    for start in (0, 9):
        std = cells[start : start + 9].std().item()
        assert abs(std / math.sqrt(2 / (9 * 64)) - 1) < 0.05


# -- exactness ----------------------------------------------------------------------------------

CONV_CASES = [
    # (in, out, kernel, stride, padding, dilation, groups, bias, options)
    (8, 16, 3, 1, 1, 1, 1, False, {}),
    (
        8,
        16,
        3,
        2,
        0,
        1,
        1,
        True,
        {"cell_num_ratio": 0.5, "cell_inplane_ratio": 0.5, "cell_outplane_ratio": 0.5},
    ),
    (8, 8, 3, 1, 2, 2, 1, False, {"cell_num_ratio": 2}),
    (8, 16, 3, 1, 1, 1, 2, False, {"spatial_partition": False}),
    (8, 8, 3, 1, 1, 1, 8, True, {}),  # depthwise
    (8, 16, 1, 1, 0, 1, 1, False, {"cell_outplane_ratio": 0.25}),
    (8, 16, 1, 2, 0, 1, 1, True, {"cell_num_ratio": 0.25, "cell_inplane_ratio": 0.25}),
    (4, 8, 7, 2, 3, 1, 1, False, {"cell_num_ratio": 0.5, "cell_outplane_ratio": 0.5}),
    (4, 8, 7, 1, 3, 1, 1, False, {"spatial_partition": False, "nonlocal_basis_ratio": 0.5}),
]


def warehouse_pair(case) -> Stack:
    """The conv of ``case`` and a second layer in the same warehouse (so the first does not own
    all of it), random parameters, float64, temperature 0.3."""
    cin, cout, k, stride, pad, dil, groups, bias, options = case
    layers = [
        (
            "blk_layer0",
            "conv",
            (cin, cout, k),
            dict(stride=stride, padding=pad, dilation=dil, groups=groups, bias=bias),
        ),
        ("blk_layer1", "conv", (cin, cout, k), dict(padding=k // 2, groups=groups)),
    ]
    net = randomize_(Stack(kw(sharing_range=["layer"], **options), layers)).double()
    set_temperature(net, 0.3)
    return net


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"k{c[2]}s{c[3]}p{c[4]}d{c[5]}g{c[6]}")
@pytest.mark.parametrize("training", [False, True])
def test_conv2d_equals_per_sample_reference_on_every_path(case, training):
    cin, groups = case[0], case[6]
    net = warehouse_pair(case)
    x = torch.randn(3, cin, 9, 9, dtype=torch.float64)
    paths = check_every_path(net.layers[0], x, training)
    assert "grouped_conv" in paths
    assert ("cell_conv" in paths) == (groups == 1)
    assert ("batched_matmul" in paths) == (groups == 1)  # the input itself at 1x1, else unfolded


@pytest.mark.parametrize("dims", [1, 3])
def test_conv1d_and_conv3d_equal_the_reference(dims):
    layers = [("a", "conv", (4, 8, 3), {"padding": 1, "stride": 2, "bias": True})]
    net = randomize_(Stack(kw(cell_outplane_ratio=0.5), layers, dims=dims)).double()
    set_temperature(net, 0.6)
    x = torch.randn(2, 4, *(7,) * dims, dtype=torch.float64)
    assert check_every_path(net.layers[0], x, training=False) == ["grouped_conv"]


def test_linear_equals_the_reference_on_tokens():
    net = randomize_(Stack(kw(cell_inplane_ratio=0.5), [("mlp_fc1", "linear", (12, 24), {})])).double().eval()
    set_temperature(net, 0.2)
    layer = net.layers[0]
    assert isinstance(layer, KWLinear)
    tokens = torch.randn(3, 5, 12, dtype=torch.float64)
    as_conv = tokens.transpose(1, 2)
    expected = reference_forward(layer, as_conv, training=False).transpose(1, 2)
    for path in ("batched_matmul", "grouped_conv"):
        layer.path = path
        assert_rel_close(layer(tokens), expected)
    assert layer(tokens[:, 0]).shape == (3, 24)  # (B, C) input works too


@pytest.mark.parametrize("ratio", [1, 2, 0.5])
def test_temperature_one_assembles_exactly_the_assigned_cells(ratio):
    layers = [
        ("a_layer0", "conv", (8, 16, 3), {"padding": 1}),
        ("a_layer1", "conv", (16, 16, 3), {"padding": 1}),
    ]
    options = kw(sharing_range=["layer"], cell_num_ratio=ratio, cell_outplane_ratio=0.5)  # 8x8 cells
    net = randomize_(Stack(options, layers)).double()
    set_temperature(net, 1.0)
    layer = net.layers[1]
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    alpha = layer.attention(x, layer.temperature)
    kernels = layer.assemble(alpha, 2)
    cells = layer.cells
    assert cells.shape[1:3] == (8, 8)
    m = layer.mixtures
    beta = layer.attention.assignment
    for mixture in range(m.count):
        position, rest = divmod(mixture, m.out_groups * m.in_groups)
        out_block, in_block = divmod(rest, m.in_groups)
        ky, kx = divmod(position, 3)
        target = int(beta[mixture].argmax())
        expected = torch.zeros(8, 8) if target == cells.shape[0] else cells[target, :, :, 0, 0]
        block = kernels[:, out_block * 8 : (out_block + 1) * 8, in_block * 8 : (in_block + 1) * 8, ky, kx]
        assert torch.equal(block[0], expected.double()) and torch.equal(block[1], expected.double())


@pytest.mark.parametrize(
    ("path", "kernel"),
    [
        ("grouped_conv", 3),
        ("cell_conv", 3),
        ("input_mixing", 3),
        ("batched_matmul", 3),
        ("batched_matmul", 1),
    ],
)
def test_gradients_pass_gradcheck(path, kernel):
    net = randomize_(
        Stack(kw(cell_outplane_ratio=0.5), [("a", "conv", (4, 4, kernel), {"padding": kernel // 2})])
    ).double()
    net.eval()
    set_temperature(net, 0.4)
    layer = net.layers[0]
    layer.path = path
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    cells = warehouse_managers(net)[0].warehouses[0]
    assert torch.autograd.gradcheck(lambda x, cells: layer(x), (x, cells), fast_mode=True)


# Every conv case with each assembling or mixing path that applies to it.
ASSEMBLING_PATH_CASES = pytest.mark.parametrize(
    ("case", "path"),
    [
        (case, path)
        for case in CONV_CASES
        for path in ("grouped_conv", "batched_matmul", "input_mixing")
        if path == "grouped_conv" or case[6] == 1  # the others take ungrouped layers
    ],
    ids=lambda c: f"k{c[2]}s{c[3]}p{c[4]}d{c[5]}g{c[6]}" if isinstance(c, tuple) else c,
)


@ASSEMBLING_PATH_CASES
def test_paths_give_the_reference_and_its_gradients_in_chunks_of_the_batch(case, path, monkeypatch):
    # On a CPU the assembling paths take a few samples' kernels at a time: one sample a chunk here,
    # with a batch of 3. Out-groups, in-groups and full-kernel cells are among the cases.
    net = warehouse_pair(case)
    layer = net.layers[0].train()
    monkeypatch.setattr(kernel_warehouse, "_CPU_KERNEL_CHUNK_BYTES", 1)
    layer.path = path
    x = torch.randn(3, case[0], 9, 9, dtype=torch.float64, requires_grad=True)
    parameters = {id(p): p for p in [*warehouse_managers(net)[0].warehouses, *layer.parameters()]}
    inputs = [x, *parameters.values()]  # the input, the cells, the attention's and the bias
    upstream = torch.randn_like(reference_forward(layer, x, True))
    got = torch.autograd.grad(layer(x), inputs, upstream)
    expected = torch.autograd.grad(reference_forward(layer, x, True), inputs, upstream)
    for g, e in zip(got, expected, strict=True):
        assert_rel_close(g, e)


@ASSEMBLING_PATH_CASES
def test_float32_paths_give_the_float64_reference_and_its_gradients(case, path):
    # In float32 on a CPU the mixing and input_mixing's products run on oneDNN (cpu_matmul), which
    # the float64 tests never reach: here the float32 layer meets the float64 reference.
    reference_net = warehouse_pair(case)
    net = copy.deepcopy(reference_net).float()
    layer, reference_layer = net.layers[0].train(), reference_net.layers[0].train()
    layer.path = path
    x = torch.randn(3, case[0], 9, 9, dtype=torch.float64, requires_grad=True)
    x32 = x.detach().float().requires_grad_(True)

    def inputs(net, layer, x):  # the input, the cells, the attention's parameters and the bias
        parameters = {id(p): p for p in [*warehouse_managers(net)[0].warehouses, *layer.parameters()]}
        return [x, *parameters.values()]

    expected_y = reference_forward(reference_layer, x, True)
    upstream = torch.randn_like(expected_y)
    y = layer(x32)
    assert_rel_close(y.double(), expected_y, rtol=1e-5)
    got = torch.autograd.grad(y, inputs(net, layer, x32), upstream.float())
    expected = torch.autograd.grad(expected_y, inputs(reference_net, reference_layer, x), upstream)
    for g, e in zip(got, expected, strict=True):
        assert_rel_close(g.double(), e, rtol=1e-4)


def test_channels_last_input_gives_the_same_output():
    net = randomize_(Stack(kw(), [("a", "conv", (8, 8, 3), {"padding": 1})])).eval()
    x = torch.randn(2, 8, 6, 6)
    for path in ("grouped_conv", "cell_conv"):
        net.layers[0].path = path
        assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), net(x), atol=1e-5)


# -- the cost-based choice -----------------------------------------------------------------------


def test_cell_conv_is_chosen_when_assembly_outweighs_the_convolution():
    # 8x64 cells: 8 output groups, 64-wide contraction; n = 4 layers x 72 mixtures = 288 cells.
    layers = [(f"a_layer{i}", "conv", (64, 64, 3), {}) for i in range(4)]
    layer = Stack(kw(sharing_range=["layer"], cell_outplane_ratio=0.125), layers).layers[0]
    cpu = torch.device("cpu")
    # Relative to the convolution: assembly costs n / positions, cell_conv n / 8 + n / 64.
    one_position = torch.zeros(8, 64, 3, 3)
    many_positions = torch.zeros(8, 64, 34, 34)
    assert cheapest(layer.path_costs(one_position), cpu) == "cell_conv"
    assert cheapest(layer.path_costs(many_positions), cpu) == "grouped_conv"


def test_input_mixing_is_chosen_for_wide_cells_on_small_maps():
    # A ResNet18 stage-4 shape: 512x512 cells, n = 54; relative to the convolution input_mixing
    # costs n / 512 + n / 9 and never writes the 32 per-sample 512x512x3x3 kernels.
    layers = [(f"a_layer{i}", "conv", (512, 512, 3), {"padding": 1}) for i in range(6)]
    with torch.device("meta"):
        layer = Stack(kw(sharing_range=["layer"]), layers).layers[0]
    cpu = torch.device("cpu")
    assert cheapest(layer.path_costs(torch.zeros(32, 512, 4, 4, device="meta")), cpu) == "input_mixing"
    assert cheapest(layer.path_costs(torch.zeros(32, 512, 28, 28, device="meta")), cpu) == "grouped_conv"


# -- bad options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "layers", "key"),
    [
        ({"cell_inplane_ratio": 0.75}, [("a", "conv", (6, 6, 3), {})], "conv.cell_inplane_ratio"),
        ({"cell_outplane_ratio": 2}, [("a", "conv", (6, 6, 3), {})], "conv.cell_outplane_ratio"),
        (
            {"spatial_partition": False, "sharing_range": ["layer"]},
            [("a_layer0", "conv", (6, 6, 3), {}), ("a_layer1", "conv", (6, 6, 1), {})],
            "conv.spatial_partition",
        ),
        ({"cell_num_ratio": 1.5}, [("a", "conv", (6, 6, 3), {})], "conv.cell_num_ratio"),
        (
            {"cell_num_ratio": [1, 2, 1]},
            [("a", "conv", (6, 6, 3), {}), ("b", "conv", (6, 6, 3), {})],
            "conv.cell_num_ratio",
        ),
    ],
)
def test_impossible_plans_name_the_option(options, layers, key):
    with pytest.raises(ConvSpecError, match=key):
        Stack(kw(**options), layers)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (kw(cell_num_raito=1), "conv.cell_num_raito"),
        (kw(reduction=-1), "conv.reduction"),
        (kw(norm_layer="group"), "conv.norm_layer"),
        ({"family": "kernelwarehouse"}, "conv.family"),
    ],
)
def test_bad_options_name_the_key(spec, key):
    with pytest.raises(ConvSpecError, match=key):
        ConvFactory(spec)


def test_per_warehouse_options_apply_in_reservation_order():
    layers = [("s0_layer0", "conv", (8, 8, 3), {}), ("s1_layer0", "conv", (8, 8, 3), {})]
    net = Stack(kw(sharing_range=["layer"], cell_num_ratio=[1, 2]), layers)
    assert [p.num_cells for p in warehouse_managers(net)[0].plans] == [9, 18]


def test_disabled_layers_are_plain_convs():
    factory = ConvFactory(kw())
    stem = factory.conv(3, 8, 3, name="stem", dynamic=False)
    assert type(stem) is nn.Conv2d


def test_warehouses_are_model_parameters_once_and_a_sequential_still_runs():
    factory = ConvFactory(kw(sharing_range=["layer"]))
    model = nn.Sequential(factory.conv(4, 8, 3, name="a_layer0"), factory.conv(8, 8, 3, name="a_layer1"))
    factory.finalize(model)
    (manager,) = warehouse_managers(model)
    names = [name for name, _ in model.named_parameters() if "warehouses" in name]
    assert names == ["0.warehouse_manager.warehouses.0"]
    assert model(torch.randn(2, 4, 7, 7)).shape == (2, 8, 3, 3)
    assert sum(p.numel() for p in model.parameters()) == kw_parameter_count(manager.plans)


def test_a_layer_used_before_finalize_says_what_to_do():
    layer = ConvFactory(kw()).conv(4, 4, 3)
    with pytest.raises(RuntimeError, match="finalize"):
        layer(torch.zeros(1, 4, 5, 5))


@pytest.mark.parametrize(("mixtures", "ratio"), list(itertools.product([1, 4, 9, 16], [1, 2, 0.5, 0.25])))
def test_assignment_and_cell_count_agree(mixtures, ratio):
    targets = initial_assignment(mixtures, 5, ratio)
    pointing = [t for t in targets if t >= 0]
    assert len(pointing) == (cells_assigned(mixtures, ratio) if ratio < 1 else mixtures)
    assert pointing == sorted(set(pointing)) and (not pointing or pointing[0] == 5)


@pytest.mark.parametrize("path", ["grouped_conv", "cell_conv", "input_mixing"])
def test_every_path_runs_under_bf16_autocast(path):
    net = randomize_(Stack(kw(cell_outplane_ratio=0.5), [("a", "conv", (8, 8, 3), {"padding": 1})])).eval()
    set_temperature(net, 0.3)
    layer = net.layers[0]
    layer.path = path
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = layer(x)
    assert_rel_close(actual.float(), expected, rtol=5e-2)


# -- forced paths --------------------------------------------------------------------------------

DEPTHWISE = ("a", "conv", (8, 8, 3), {"padding": 1, "groups": 8})
DENSE_3X3 = ("a", "conv", (8, 8, 3), {"padding": 1})


@pytest.mark.parametrize(
    ("layer", "dims", "path", "reason"),
    [
        (DEPTHWISE, 2, "cell_conv", "ungrouped 2-d"),
        (DEPTHWISE, 2, "input_mixing", "ungrouped 2-d"),
        (DEPTHWISE, 2, "batched_matmul", "pointwise"),
        (DENSE_3X3, 1, "batched_matmul", "pointwise"),
        (DENSE_3X3, 1, "cell_conv", "ungrouped 2-d"),
        (DENSE_3X3, 2, "fastest", "one of"),
    ],
)
def test_a_forced_path_that_does_not_apply_is_refused(layer, dims, path, reason):
    net = Stack(kw(), [layer], dims=dims)
    net.layers[0].path = path
    with pytest.raises(ValueError, match=reason):
        net(torch.randn(2, 8, *(6,) * dims))


@pytest.mark.parametrize(
    ("layer", "dims"),
    [(DEPTHWISE, 2), (DENSE_3X3, 2), (DENSE_3X3, 1), (("a", "conv", (8, 8, 1), {}), 2)],
)
def test_the_costed_paths_are_exactly_the_paths_that_apply(layer, dims):
    kw_layer = Stack(kw(), [layer], dims=dims).layers[0]
    applicable = {p for p in kw_layer.paths if kw_layer.path_unavailable(p) is None}
    assert set(kw_layer.path_costs(torch.zeros(2, 8, *(6,) * dims))) == applicable

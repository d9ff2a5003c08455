"""ODConv: exactness of every path against a plain per-sample reference written from the
reference implementation's semantics, gradients, sizes, temperature, path choice and factory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from kwsearch.nn.cost import cheapest
from kwsearch.nn.factory import ConvFactory, ConvSpecError
from kwsearch.nn.odconv import PATHS, ODConv2d, ODConvOptions, odconv_costs
from kwsearch.nn.temperature import SOFTMAX_DEFAULT_SCHEDULE
from tests.helpers import (
    RESNET18_LAYERS_TIMED_ON_A_CPU,
    assert_cpu_takes_timed_path_gpu_estimate_unchanged,
    assert_rel_close,
    per_sample_conv,
    randomize_,
)

TEMPERATURE = 2.7


# (in, out, kernel, stride, padding, dilation, groups, bias, kernel_num)
CASES = {
    "1x1-K1": (6, 8, 1, 1, 0, 1, 1, True, 1),  # the static-kernel path; assemble as a matmul
    "1x1-K1-stride2-padded-groups2": (6, 8, 1, 2, 1, 1, 2, False, 1),
    "1x1-K1-depthwise": (6, 6, 1, 1, 0, 1, 6, True, 1),  # only the channel head exists
    "1x1": (6, 8, 1, 1, 0, 1, 1, False, 3),
    "3x3": (6, 8, 3, 1, 1, 1, 1, True, 3),
    "3x3-K1": (6, 8, 3, 1, 1, 1, 1, False, 1),
    "3x3-stride2-dilation2-groups2": (6, 8, 3, 2, 2, 2, 2, False, 3),
    "3x3-depthwise": (6, 6, 3, 1, 1, 1, 6, True, 3),  # no filter head
    "3x3-depthwise-multiplier2": (4, 8, 3, 2, 1, 1, 4, False, 2),  # in != out: filter head exists
    "7x7-stride2": (4, 6, 7, 2, 3, 1, 1, False, 2),
    "7x7-depthwise-dilation2": (4, 4, 7, 1, 6, 2, 4, True, 3),
    "3x5-asymmetric": (6, 4, (3, 5), (1, 2), (1, 0), (2, 1), 2, True, 2),
}


def _path_applies(case: str, path: str | None) -> bool:
    _, _, k, _, _, _, groups, _, kernel_num = CASES[case]
    if path == "static_kernel":
        return k == 1 and kernel_num == 1
    return path != "bank" or groups == 1


PATH_CASES = [
    pytest.param(case, path, id=f"{case}-{path or 'auto'}")
    for case in CASES
    for path in (None, *PATHS)
    if _path_applies(case, path)
]


def _layer(case: str) -> ODConv2d:
    cin, cout, k, s, p, d, g, bias, kernel_num = CASES[case]
    layer = ODConv2d(cin, cout, k, s, p, d, g, bias, kernel_num=kernel_num).double()
    randomize_(layer)
    layer.set_temperature(TEMPERATURE)
    return layer


def _reference(layer: ODConv2d, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from its parameters with plain ops, following OSVAI/ODConv: the trunk
    (pool, 1x1, BN, ReLU), the heads, x * ca, a per-sample kernel summed in a loop, then * fa."""
    att = layer.attention
    h = x.mean(dim=(2, 3)) @ att.fc.weight.T
    if layer.training:  # batch statistics, biased variance
        mean, var = h.mean(dim=0), h.var(dim=0, unbiased=False)
    else:
        mean, var = att.bn.running_mean, att.bn.running_var
    h = torch.relu((h - mean) / torch.sqrt(var + att.bn.eps) * att.bn.weight + att.bn.bias)

    def head(fc):
        return (h @ fc.weight.T + fc.bias) / TEMPERATURE

    batch, kh, kw = x.shape[0], *layer.kernel_size
    ones = torch.ones(batch, 1, dtype=x.dtype)
    ca = torch.sigmoid(head(att.channel_fc))
    fa = ones if att.filter_fc is None else torch.sigmoid(head(att.filter_fc))
    sa = ones if att.spatial_fc is None else torch.sigmoid(head(att.spatial_fc))
    ka = ones if att.kernel_fc is None else torch.softmax(head(att.kernel_fc), dim=1)
    weights = []
    for b in range(batch):
        spatial = sa[b].reshape(kh, kw) if att.spatial_fc is not None else sa[b]
        weights.append(sum(ka[b, k] * (spatial * layer.weight[k]) for k in range(layer.kernel_num)))
    y = per_sample_conv(
        x * ca[:, :, None, None], weights, None, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    y = y * fa[:, :, None, None]
    return y if layer.bias is None else y + layer.bias[None, :, None, None]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("case", "path"), PATH_CASES)
def test_matches_per_sample_reference(case, path, train):
    layer = _layer(case).train(train)
    layer.path = path
    x = torch.randn(3, layer.in_channels, 11, 10, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(layer(x), _reference(layer, x), rtol=1e-6)


@pytest.mark.parametrize("case", [c for c in CASES if _path_applies(c, "bank")])
def test_float32_bank_gives_the_float64_reference_and_its_gradients(case):
    # In float32 on a CPU the bank's product runs on oneDNN (cpu_matmul), which the float64 tests
    # never reach: here the float32 layer meets the float64 reference, with gradients.
    reference_layer = _layer(case).train()
    layer = copy.deepcopy(reference_layer).float()
    layer.path = "bank"
    x = torch.randn(3, layer.in_channels, 11, 10, dtype=torch.float64, requires_grad=True)
    x32 = x.detach().float().requires_grad_(True)
    expected_y = _reference(reference_layer, x)
    upstream = torch.randn_like(expected_y)
    y = layer(x32)
    assert_rel_close(y.double(), expected_y, rtol=1e-5)
    got = torch.autograd.grad(y, [x32, *layer.parameters()], upstream.float())
    expected = torch.autograd.grad(expected_y, [x, *reference_layer.parameters()], upstream)
    for g, e in zip(got, expected, strict=True):
        assert_rel_close(g.double(), e, rtol=1e-4)


@pytest.mark.parametrize(("kernel_size", "kernel_num", "path"), [(3, 2, "assemble"), (1, 1, "static_kernel")])
def test_gradcheck_input_weight_and_head(kernel_size, kernel_num, path):
    # Tiny (gradcheck perturbs every input element twice), in train mode so the gradient also
    # flows through the BN batch statistics.
    layer = ODConv2d(4, 4, kernel_size, 2, 1, 2, groups=2, bias=True, kernel_num=kernel_num).double()
    randomize_(layer).train()
    layer.set_temperature(TEMPERATURE)
    layer.path = path
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64, requires_grad=True)

    def run(x, weight, channel_weight):
        params = {"weight": weight, "attention.channel_fc.weight": channel_weight}
        return functional_call(layer, params, (x,))

    weight = layer.weight.detach().clone().requires_grad_()
    channel_weight = layer.attention.channel_fc.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(run, (x, weight, channel_weight))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    # hidden = max(int(16 * 0.0625), 16) = 16 throughout. Trunk: fc 16 * 16 (no bias) = 256,
    # BN weight + bias 2 * 16 = 32 (running statistics are buffers). Heads (with bias):
    # channel 16 * 16 + 16 = 272, filter 16 * 32 + 32 = 544, spatial 16 * 9 + 9 = 153,
    # kernel 16 * 4 + 4 = 68. Kernels 4 * 32 * 16 * 9 = 18432.
    assert _count(ODConv2d(16, 32, 3, kernel_num=4)) == 18432 + 256 + 32 + 272 + 544 + 153 + 68
    # Depthwise 32 channels (in == groups == out): no filter head. hidden max(int(2.0), 16) = 16.
    # Kernels 4 * 32 * 1 * 9 = 1152, fc 32 * 16 = 512, BN 32, channel 16 * 32 + 32 = 544,
    # spatial 153, kernel 68.
    assert _count(ODConv2d(32, 32, 3, groups=32, kernel_num=4)) == 1152 + 512 + 32 + 544 + 153 + 68
    # 1x1: no spatial head. Kernels 4 * 32 * 16 = 2048, fc 256, BN 32, channel 272, filter 544,
    # kernel 68.
    assert _count(ODConv2d(16, 32, 1, kernel_num=4)) == 2048 + 256 + 32 + 272 + 544 + 68
    # kernel_num = 1: no kernel head; with the static bias (32). Kernel 32 * 16 * 9 = 4608.
    assert _count(ODConv2d(16, 32, 3, bias=True, kernel_num=1)) == 4608 + 256 + 32 + 272 + 544 + 153 + 32
    # A wide layer: hidden int(256 * 0.0625) = 16 still; at 512, 32. Kernels 512 * 512 * 9 * 1,
    # fc 512 * 32, BN 64, channel 32 * 512 + 512, filter the same, spatial 32 * 9 + 9.
    wide = 512 * 512 * 9 + 512 * 32 + 64 + 2 * (32 * 512 + 512) + 32 * 9 + 9
    assert _count(ODConv2d(512, 512, 3, kernel_num=1)) == wide


def test_initialisation():
    layer = ODConv2d(16, 32, 3, bias=True, kernel_num=4)
    fan_out_std = (2 / (32 * 3 * 3)) ** 0.5  # kaiming normal, fan_out, ReLU gain
    for kernel in layer.weight:
        assert abs(kernel.std().item() / fan_out_std - 1) < 0.1
    assert not torch.equal(layer.weight[0], layer.weight[1])  # drawn independently
    att = layer.attention
    assert abs(att.channel_fc.weight.std().item() / (2 / 16) ** 0.5 - 1) < 0.1  # fan_out = in = 16
    for zero in (
        layer.bias,
        att.channel_fc.bias,
        att.filter_fc.bias,
        att.spatial_fc.bias,
        att.kernel_fc.bias,
    ):
        assert torch.count_nonzero(zero) == 0
    assert torch.equal(att.bn.weight, torch.ones(16)) and torch.count_nonzero(att.bn.bias) == 0


def test_absent_heads():
    assert _layer("3x3-depthwise").attention.filter_fc is None
    assert _layer("1x1").attention.spatial_fc is None
    assert _layer("3x3-K1").attention.kernel_fc is None
    full = _layer("3x3-depthwise-multiplier2").attention
    assert None not in (full.filter_fc, full.spatial_fc, full.kernel_fc)


def test_temperature_shapes_attention_and_is_saved():
    layer = _layer("3x3").eval()
    x = torch.randn(4, layer.in_channels, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        sharp = layer.attentions(x)
        y_sharp = layer(x)
        layer.set_temperature(1e6)
        flat = layer.attentions(x)
        y_flat = layer(x)
    for name in ("channel", "filter", "spatial"):
        assert (getattr(flat, name) - 0.5).abs().max() < 1e-5, name
        assert (getattr(sharp, name) - 0.5).abs().max() > 1e-2, name
    assert (flat.kernel - 1 / layer.kernel_num).abs().max() < 1e-5
    assert not torch.allclose(y_sharp, y_flat)
    state = layer.state_dict()
    assert state["temperature"].item() == 1e6
    fresh = ODConv2d(6, 8, 3, 1, 1, bias=True, kernel_num=3).double()
    assert fresh.temperature.item() == SOFTMAX_DEFAULT_SCHEDULE.start
    fresh.load_state_dict(state)
    assert fresh.temperature.item() == 1e6


def test_cost_model_picks_static_kernel_where_it_applies():
    shape = {"batch": 8, "in_channels": 64, "out_channels": 64, "groups": 1, "in_positions": 196}
    pointwise = odconv_costs(kernel_elems=1, kernel_num=1, out_positions=196, **shape)
    assert pointwise["static_kernel"].flops < pointwise["assemble"].flops
    assert pointwise["static_kernel"].elements_moved < pointwise["assemble"].elements_moved
    # A 3x3 or a multi-kernel layer has a per-sample kernel: static_kernel does not apply.
    assert list(odconv_costs(kernel_elems=9, kernel_num=1, out_positions=196, **shape)) == [
        "assemble",
        "bank",
    ]
    assert list(odconv_costs(kernel_elems=1, kernel_num=4, out_positions=196, **shape)) == [
        "assemble",
        "bank",
    ]
    grouped = {**shape, "groups": 2}
    assert list(odconv_costs(kernel_elems=9, kernel_num=4, out_positions=196, **grouped)) == ["assemble"]
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert cheapest(pointwise, device) == "static_kernel"


def test_path_selection_and_forcing():
    x = torch.randn(2, 6, 5, 5)
    assert ODConv2d(6, 8, 1, kernel_num=1).select_path(x) == "static_kernel"
    assert ODConv2d(6, 8, 1, kernel_num=2).select_path(x) == "assemble"
    layer = ODConv2d(6, 8, 3, kernel_num=1)
    assert layer.select_path(x) == "assemble"
    layer.path = "static_kernel"
    with pytest.raises(ValueError, match="1x1"):
        layer(x)
    grouped = ODConv2d(6, 8, 3, groups=2)
    grouped.path = "bank"
    with pytest.raises(ValueError, match="bank"):
        grouped(x)
    layer.path = "pathless"
    with pytest.raises(ValueError, match="pathless"):
        layer(x)


def test_bank_is_chosen_where_per_sample_kernels_outweigh_the_activations():
    # ResNet18 stage 4 at 112 px: 32 per-sample 512x512x3x3 kernels vs 4x4 maps.
    shape = {"batch": 32, "in_channels": 512, "out_channels": 512, "groups": 1, "kernel_elems": 9}
    small = odconv_costs(kernel_num=4, in_positions=16, out_positions=16, **shape)
    large = odconv_costs(kernel_num=4, in_positions=3136, out_positions=3136, **shape)
    assert cheapest(small, torch.device("cpu")) == "bank"
    assert cheapest(large, torch.device("cpu")) == "assemble"


@pytest.mark.parametrize(
    ("case", "path"),
    [("3x3-stride2-dilation2-groups2", "assemble"), ("7x7-stride2", "bank"), ("1x1-K1", "static_kernel")],
)
def test_channels_last_matches_contiguous(case, path):
    layer = _layer(case).eval()
    layer.path = path
    x = torch.randn(2, layer.in_channels, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(layer(x.to(memory_format=torch.channels_last)), layer(x), rtol=1e-12)


@pytest.mark.parametrize(("case", "path"), [("3x3", "assemble"), ("1x1-K1", "static_kernel")])
def test_autocast_runs_in_low_precision(case, path):
    layer = _layer(case).float().eval()
    layer.path = path
    x = torch.randn(2, layer.in_channels, 6, 6)
    with torch.no_grad():
        expected = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = layer(x)
    assert_rel_close(actual.float(), expected, rtol=5e-2)


def test_factory_builds_odconv_with_options():
    factory = ConvFactory({"family": "odconv", "kernel_num": 2, "reduction": 0.5})
    layer = factory.conv(8, 16, 3, padding=1, bias=True)
    assert isinstance(layer, ODConv2d)
    assert layer.weight.shape == (2, 16, 8, 3, 3)
    assert layer.bias.shape == (16,)
    assert layer.attention.fc.out_features == 16  # max(int(8 * 0.5), 16)
    assert layer.temperature.item() == SOFTMAX_DEFAULT_SCHEDULE.start


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"family": "odconv", "kernel_nun": 2}, "kernel_nun"),
        ({"family": "odconv", "kernel_num": 0}, "kernel_num"),
        ({"family": "odconv", "reduction": -0.1}, "reduction"),
    ],
)
def test_factory_rejects_bad_options(spec, key):
    with pytest.raises(ConvSpecError, match=key):
        ConvFactory(spec)


def test_factory_refuses_linear_and_non_2d():
    factory = ConvFactory({"family": "odconv"})
    with pytest.raises(ConvSpecError, match="'fc'"):
        factory.linear(8, 4, name="fc")
    with pytest.raises(ConvSpecError, match="3-d"):
        factory.conv(8, 8, 3, dims=3)


def test_options_defaults_match_reference():
    options = ODConvOptions()
    assert (options.kernel_num, options.reduction, options.temperature) == (
        4,
        0.0625,
        SOFTMAX_DEFAULT_SCHEDULE,
    )


@pytest.mark.parametrize(
    ("channels", "out_channels", "side", "stride", "timed"), RESNET18_LAYERS_TIMED_ON_A_CPU
)
def test_cost_model_on_a_cpu_takes_the_path_timed_fastest(channels, out_channels, side, stride, timed):
    """From 128->256 on, the batch-shared bank (2.1x to 2.8x faster there than assembling
    per-sample kernels, which the cost model chose before it counted the product's extra passes
    over them). A GPU counts no such pass."""
    out_side = (side - 1) // stride + 1
    costs = odconv_costs(
        batch=32,
        in_channels=channels,
        out_channels=out_channels,
        kernel_elems=9,
        groups=1,
        kernel_num=4,
        in_positions=side**2,
        out_positions=out_side**2,
    )
    assert_cpu_takes_timed_path_gpu_estimate_unchanged(costs, timed)

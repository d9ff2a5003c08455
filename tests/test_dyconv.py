"""DY-CNN: exactness of every path against a plain per-sample reference, gradients, sizes,
temperature, the cost-based path choice and the factory."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from kwsearch.nn.cost import cheapest
from kwsearch.nn.dyconv import PATHS, DyConv2d, DyConvOptions, dyconv_costs
from kwsearch.nn.factory import ConvFactory, ConvSpecError
from kwsearch.nn.temperature import SOFTMAX_DEFAULT_SCHEDULE
from tests.helpers import (
    RESNET18_LAYERS_TIMED_ON_A_CPU,
    assert_cpu_takes_timed_path_gpu_estimate_unchanged,
    assert_rel_close,
    per_sample_conv,
    randomize_,
)

TEMPERATURE = 2.7


# (in, out, kernel, stride, padding, dilation, groups, bias): every path must be exact on each.
CASES = {
    "1x1": (6, 8, 1, 1, 0, 1, 1, True),  # pointwise: assemble runs as a batched matmul
    "1x1-stride2": (6, 8, 1, 2, 0, 1, 1, False),
    "1x1-padded-groups2": (6, 8, 1, 1, 1, 1, 2, True),
    "3x3": (6, 8, 3, 1, 1, 1, 1, True),
    "3x3-stride2-dilation2-groups2": (6, 8, 3, 2, 2, 2, 2, False),
    "3x3-depthwise": (6, 6, 3, 1, 1, 1, 6, True),
    "3x3-depthwise-multiplier2": (4, 8, 3, 2, 1, 1, 4, False),
    "7x7-stride2": (4, 6, 7, 2, 3, 1, 1, False),
    "7x7-depthwise-dilation2": (4, 4, 7, 1, 6, 2, 4, True),
    "3x5-asymmetric": (6, 4, (3, 5), (1, 2), (1, 0), (2, 1), 2, True),
}


def _layer(case: str, kernel_num: int = 3) -> DyConv2d:
    cin, cout, k, s, p, d, g, bias = CASES[case]
    layer = DyConv2d(cin, cout, k, s, p, d, g, bias, kernel_num=kernel_num).double()
    randomize_(layer)
    layer.set_temperature(TEMPERATURE)
    return layer


def _reference(layer: DyConv2d, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from its parameters with plain ops: attention, then a loop of sums."""
    fc1, fc2 = layer.attention.fc1, layer.attention.fc2
    pooled = x.mean(dim=(2, 3))
    logits = torch.relu(pooled @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias
    pi = torch.softmax(logits / TEMPERATURE, dim=1)
    weights, biases = [], None if layer.bias is None else []
    for b in range(x.shape[0]):
        weights.append(sum(pi[b, k] * layer.weight[k] for k in range(layer.kernel_num)))
        if biases is not None:
            biases.append(sum(pi[b, k] * layer.bias[k] for k in range(layer.kernel_num)))
    return per_sample_conv(x, weights, biases, layer.stride, layer.padding, layer.dilation, layer.groups)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("path", [None, *PATHS], ids=["auto", *PATHS])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_per_sample_reference(case, path, train):
    layer = _layer(case).train(train)
    layer.path = path
    x = torch.randn(3, layer.in_channels, 11, 10, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(layer(x), _reference(layer, x), rtol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_gradcheck_input_weight_bias(path):
    # Grouped, strided and dilated, but tiny: gradcheck perturbs every input element twice.
    layer = randomize_(DyConv2d(4, 4, 3, 2, 2, 2, groups=2, bias=True, kernel_num=2).double())
    layer.set_temperature(TEMPERATURE)
    layer.path = path
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)

    def run(x, weight, bias):
        return functional_call(layer, {"weight": weight, "bias": bias}, (x,))

    weight = layer.weight.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(run, (x, weight, bias))


def test_parameter_counts():
    # hidden = max(int(16 * 0.25), 4) = 4. Kernels 4 * 32 * 16 * 3 * 3 = 18432, fc1 16 * 4 + 4 = 68,
    # fc2 4 * 4 + 4 = 20.
    assert _count(DyConv2d(16, 32, 3, kernel_num=4, reduction=0.25)) == 18432 + 68 + 20
    # A bias adds one (out,) vector per kernel: 4 * 32.
    assert _count(DyConv2d(16, 32, 3, bias=True, kernel_num=4, reduction=0.25)) == 18432 + 68 + 20 + 128
    # A 3-channel stem: int(3 * 0.25) = 0, so hidden is the floor 4. Kernels 4 * 8 * 3 * 9 = 864,
    # fc1 3 * 4 + 4 = 16, fc2 4 * 4 + 4 = 20.
    assert _count(DyConv2d(3, 8, 3, kernel_num=4)) == 864 + 16 + 20
    # Depthwise 64 channels, K = 2: hidden int(64 * 0.25) = 16. Kernels 2 * 64 * 1 * 9 = 1152,
    # fc1 64 * 16 + 16 = 1040, fc2 16 * 2 + 2 = 34.
    assert _count(DyConv2d(64, 64, 3, groups=64, kernel_num=2)) == 1152 + 1040 + 34


def test_initialisation():
    layer = DyConv2d(16, 32, 3, bias=True, kernel_num=4)
    fan_out_std = (2 / (32 * 3 * 3)) ** 0.5  # kaiming normal, fan_out, ReLU gain
    for kernel in layer.weight:
        assert abs(kernel.std().item() / fan_out_std - 1) < 0.1
    assert not torch.equal(layer.weight[0], layer.weight[1])  # drawn independently
    assert abs(layer.attention.fc1.weight.std().item() / (2 / 4) ** 0.5 - 1) < 0.25  # fan_out = hidden = 4
    for zero in (layer.bias, layer.attention.fc1.bias, layer.attention.fc2.bias):
        assert torch.count_nonzero(zero) == 0


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_temperature_shapes_attention_and_is_saved():
    layer = _layer("3x3")
    x = torch.randn(4, layer.in_channels, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        sharp = layer.kernel_attention(x)
        y_sharp = layer(x)
        layer.set_temperature(1e6)
        flat = layer.kernel_attention(x)
        y_flat = layer(x)
    assert (flat - 1 / layer.kernel_num).abs().max() < 1e-5
    assert (sharp - 1 / layer.kernel_num).abs().max() > 1e-2
    assert not torch.allclose(y_sharp, y_flat)
    state = layer.state_dict()
    assert state["temperature"].item() == 1e6
    fresh = DyConv2d(6, 8, 3, 1, 1, bias=True, kernel_num=3).double()
    assert fresh.temperature.item() == SOFTMAX_DEFAULT_SCHEDULE.start
    fresh.load_state_dict(state)
    assert fresh.temperature.item() == 1e6


def test_cost_model_picks_each_path_where_counts_favour_it():
    # Large output, small kernels: the bank's K-fold convolution dominates.
    big = dyconv_costs(
        batch=8,
        in_channels=32,
        out_channels=32,
        kernel_elems=9,
        groups=1,
        kernel_num=4,
        out_positions=56 * 56,
    )
    assert big["assemble"].flops < big["bank"].flops / 3
    assert big["assemble"].elements_moved < big["bank"].elements_moved / 10
    # 1x1 output of a wide 3x3 conv (a late stage at small resolution): the per-sample kernels
    # are the large tensor and the bank does fewer FLOPs too.
    small = dyconv_costs(
        batch=8, in_channels=256, out_channels=256, kernel_elems=9, groups=1, kernel_num=4, out_positions=1
    )
    assert small["bank"].flops < small["assemble"].flops
    assert small["bank"].elements_moved < small["assemble"].elements_moved / 100
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert cheapest(big, device) == "assemble"
        assert cheapest(small, device) == "bank"


def test_automatic_choice_follows_cost_model():
    layer = DyConv2d(16, 16, 3, padding=0)
    assert layer.select_path(torch.empty(2, 16, 32, 32)) == "assemble"
    assert layer.select_path(torch.empty(2, 16, 3, 3)) == "bank"
    layer.path = "bank"
    assert layer.select_path(torch.empty(2, 16, 32, 32)) == "bank"
    layer.path = "fast"
    with pytest.raises(ValueError, match="fast"):
        layer(torch.randn(2, 16, 5, 5))


@pytest.mark.parametrize("path", PATHS)
def test_channels_last_matches_contiguous(path):
    layer = _layer("3x3-stride2-dilation2-groups2")
    layer.path = path
    x = torch.randn(2, layer.in_channels, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(layer(x.to(memory_format=torch.channels_last)), layer(x), rtol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_autocast_runs_in_low_precision(path):
    layer = DyConv2d(8, 8, 3, padding=1, bias=True, kernel_num=3)
    randomize_(layer)
    layer.path = path
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = layer(x)
    assert actual.dtype in (torch.bfloat16, torch.float32)
    assert_rel_close(actual.float(), expected, rtol=5e-2)


def test_factory_builds_dyconv_with_options():
    factory = ConvFactory({"family": "dyconv", "kernel_num": 2})
    layer = factory.conv(8, 16, 3, padding=1)
    assert isinstance(layer, DyConv2d)
    assert layer.weight.shape == (2, 16, 8, 3, 3)
    assert layer.padding == (1, 1) and layer.bias is None
    assert layer.temperature.item() == SOFTMAX_DEFAULT_SCHEDULE.start
    assert factory.options.temperature == SOFTMAX_DEFAULT_SCHEDULE
    assert factory.conv(8, 16, 1, bias=True).bias.shape == (2, 16)
    assert factory.conv(8, 16, 3, dynamic=False).__class__ is torch.nn.Conv2d


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"family": "dyconv", "kernel_nun": 2}, "kernel_nun"),
        ({"family": "dyconv", "kernel_num": 0}, "kernel_num"),
        ({"family": "dyconv", "reduction": 0.0}, "reduction"),
        ({"family": "dyconv", "reduction": 1.5}, "reduction"),
    ],
)
def test_factory_rejects_bad_options(spec, key):
    with pytest.raises(ConvSpecError, match=key):
        ConvFactory(spec)


def test_factory_refuses_linear_and_non_2d():
    factory = ConvFactory({"family": "dyconv"})
    with pytest.raises(ConvSpecError, match="'head'"):
        factory.linear(8, 4, name="head")
    with pytest.raises(ConvSpecError, match="1-d"):
        factory.conv(8, 8, 3, dims=1)


def test_options_are_frozen_and_defaults_match_paper():
    options = DyConvOptions()
    assert (options.kernel_num, options.reduction) == (4, 0.25)
    with pytest.raises(ValueError):
        options.kernel_num = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("channels", "out_channels", "side", "stride", "timed"), RESNET18_LAYERS_TIMED_ON_A_CPU
)
def test_cost_model_on_a_cpu_takes_the_path_timed_fastest(channels, out_channels, side, stride, timed):
    """On a CPU the product by per-sample kernels passes over them twice more: from 128->256 on,
    the batch-shared bank (2.1x to 2.4x faster there) wins. A GPU counts no such pass."""
    out_side = (side - 1) // stride + 1
    costs = dyconv_costs(
        batch=32,
        in_channels=channels,
        out_channels=out_channels,
        kernel_elems=9,
        groups=1,
        kernel_num=4,
        out_positions=out_side**2,
    )
    assert_cpu_takes_timed_path_gpu_estimate_unchanged(costs, timed)

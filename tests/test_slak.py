"""SLaK operator and backbones: the decomposed kernel against plain convolutions, the merged kernel
against the branches, which layers the family makes SLaK, option errors, MACs, and published
parameter counts (VITA-Group/SLaK README: SLaK-T 30M at 40% sparsity)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwsearch.models import ModelConfigError, account, build_model, count_macs, parse_model_config
from kwsearch.nn import ConvFactory, ConvSpecError, SLaKConv2d
from tests.helpers import assert_rel_close, randomize_

# (channels, M, N)
SHAPES = [(3, 7, 3), (4, 13, 5), (2, 9, 1), (5, 51, 5)]


def _layer(channels, kernel, small):
    return randomize_(SLaKConv2d(channels, kernel, small).double(), seed=kernel)


def _branch(x, conv: nn.Conv2d, bn: nn.BatchNorm2d, training: bool) -> torch.Tensor:
    """One branch with plain ops: a depthwise conv padded to keep the size, then BN by the batch's
    statistics (training) or the running ones (evaluation)."""
    kh, kw = conv.weight.shape[2:]
    y = F.conv2d(x, conv.weight, None, 1, (kh // 2, kw // 2), 1, x.shape[1])
    if training:
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = bn.weight / (var + bn.eps).sqrt()
    return (y - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("channels", "kernel", "small"), SHAPES)
def test_forward_equals_three_plain_branches(channels, kernel, small, training):
    layer = _layer(channels, kernel, small).train(training)
    x = torch.randn(2, channels, 11, 9, dtype=torch.float64)
    expected = sum(
        _branch(x, branch.conv, branch.bn, training)
        for branch in (layer.vertical, layer.horizontal, layer.small)
    )
    assert tuple(layer.vertical.conv.weight.shape) == (channels, 1, kernel, small)
    assert tuple(layer.horizontal.conv.weight.shape) == (channels, 1, small, kernel)
    assert tuple(layer.small.conv.weight.shape) == (channels, 1, small, small)
    y = layer(x)
    assert y.shape == x.shape
    assert_rel_close(y, expected, 1e-12)


@pytest.mark.parametrize(("channels", "kernel", "small"), SHAPES)
def test_merged_kernel_equals_the_branches_in_evaluation(channels, kernel, small):
    layer = _layer(channels, kernel, small).eval()
    x = torch.randn(3, channels, 12, 10, dtype=torch.float64)
    branches = layer(x)
    merged = layer.merged_conv()
    assert tuple(merged.weight.shape) == (channels, 1, kernel, kernel)
    assert_rel_close(merged(x), branches, 1e-12)
    layer.reparameterize()
    assert not hasattr(layer, "vertical") and layer.merged is not None
    assert_rel_close(layer(x), branches, 1e-12)


def test_merged_kernel_places_each_branch_at_the_centre():
    layer = SLaKConv2d(1, 5, 3).double().eval()
    with torch.no_grad():
        for value, branch in zip(
            (1.0, 10.0, 100.0), (layer.vertical, layer.horizontal, layer.small), strict=True
        ):
            branch.conv.weight.fill_(value)
            branch.bn.eps = 0.0  # with unit variance, zero mean and affine identity: BN is the identity
    kernel, bias = layer.merged_kernel()
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[:, 1:4] += 1.0  # 5 x 3
    expected[1:4, :] += 10.0  # 3 x 5
    expected[1:4, 1:4] += 100.0  # 3 x 3
    assert torch.equal(kernel[0, 0], expected)
    assert torch.equal(bias, torch.zeros(1, dtype=torch.float64))


def test_bad_sizes_are_refused():
    for kernel, small in [(5, 5), (3, 5), (8, 3), (7, 4)]:
        with pytest.raises(ValueError, match="odd kernel sizes"):
            SLaKConv2d(4, kernel, small)


def test_the_family_makes_only_large_depthwise_convs_slak():
    factory = ConvFactory({"family": "slak", "small_kernel": 3})
    assert isinstance(factory.conv(8, 8, 7, 1, 3, groups=8, bias=True), SLaKConv2d)
    plain = [
        factory.conv(8, 8, 3, 1, 1, groups=8),  # not larger than the small kernel
        factory.conv(8, 8, 7, 2, 3, groups=8),  # strided
        factory.conv(8, 8, 7, 1, 0, groups=8),  # does not keep the size
        factory.conv(8, 16, 7, 1, 3, groups=8),  # a channel multiplier, not depthwise
        factory.conv(8, 8, 7, 1, 3),  # dense
        factory.conv(8, 8, (7, 5), 1, (3, 2), groups=8),  # not square
        factory.conv(8, 8, 7, 1, 3, groups=8, dims=1),
    ]
    assert [type(m) for m in plain] == [nn.Conv2d] * 6 + [nn.Conv1d]
    assert type(factory.linear(8, 4)) is nn.Linear


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"small_kernel": 4}, "conv.small_kernel"),
        ({"sparsity": 1.0}, "conv.sparsity"),
        ({"sparse_init": "random"}, "conv.sparse_init"),
        ({"growth": "momentum"}, "conv.growth"),
        ({"update_frequency": 0}, "conv.update_frequency"),
        ({"prune_rate": 1.5}, "conv.prune_rate"),
        ({"sparse_targets": "large"}, "conv.sparse_targets"),
        ({"kernel_size": 31}, "conv.kernel_size"),
    ],
)
def test_bad_options_name_the_key(options, key):
    with pytest.raises(ConvSpecError, match=key):
        ConvFactory({"family": "slak", **options})


def test_macs_count_the_three_branches():
    layer = SLaKConv2d(4, 13, 5)
    assert count_macs(layer, (4, 10, 12)) == 4 * 10 * 12 * (2 * 13 * 5 + 5 * 5)


def _meta_account(backbone, conv, **data):
    config = parse_model_config({"backbone": backbone, "conv": conv, **data})
    with torch.device("meta"):
        return account(build_model(config), (config.in_chans, *config.input_size))


# (backbone, conv spec, all parameters, parameters kept by sparse training)
COUNTS = [
    ("slak_tiny", {"family": "slak"}, 50_703_838, 30_473_228),  # the README's "30M"
    ("slak_tiny", {"family": "slak", "sparse_init": "erk"}, 50_703_838, 30_473_222),
    ("slak_tiny", {"family": "slak", "sparse_init": "uniform"}, 50_703_838, 30_473_218),
    ("slak_tiny", {"family": "slak", "sparse_targets": "large_kernels"}, 50_703_838, 49_481_542),
    ("slak_tiny", {"family": "slak", "sparsity": 0.0}, 50_703_838, 50_703_838),
    ("slak_tiny", {"family": "static"}, 60_577_702, 60_577_702),  # dense 51x51 kernels
    ("slak_small", {"family": "slak"}, 91_131_820, None),
    ("slak_base", {"family": "slak"}, 157_950_792, None),
]


@pytest.mark.parametrize(("backbone", "conv", "params", "effective"), COUNTS)
def test_parameter_counts(backbone, conv, params, effective):
    report = _meta_account(backbone, conv)
    assert report.params == params
    if effective is not None:
        assert report.effective_params == effective


def test_published_slak_tiny_count():
    report = _meta_account("slak_tiny", {"family": "slak"})
    assert round(report.effective_params / 1e6) == 30
    # ConvNeXt-T's 28.6M: the 1.3x width costs what 40% sparsity saves, as the paper designs it
    assert report.params > 1.7 * _meta_account("convnext_tiny", {"family": "static"}).params


def test_backbone_kernel_sizes_and_width_follow_the_reference():
    model = build_model(parse_model_config({"backbone": "slak_nano", "conv": {"family": "slak"}}))
    layers = [[block.dwconv for block in stage] for stage in model.stages]
    assert [{m.kernel_size for m in stage} for stage in layers] == [{13}, {11}, {9}, {7}]
    assert [stage[0].channels for stage in layers] == [104, 208, 416, 832]  # int(dims * 1.3)
    custom = build_model(
        parse_model_config(
            {
                "backbone": "slak_nano",
                "conv": {"family": "slak", "small_kernel": 3},
                "backbone_args": {"kernel_size": 5, "width_factor": 1.0},
            }
        )
    )
    assert {block.dwconv.kernel_size for stage in custom.stages for block in stage} == {5}
    assert custom.stages[0][0].dwconv.channels == 80


@pytest.mark.parametrize("kernel_size", [[13, 11, 9], 12, [13, 11, 9, 0]])
def test_bad_kernel_sizes_name_the_key(kernel_size):
    config = parse_model_config({"backbone": "slak_nano", "backbone_args": {"kernel_size": kernel_size}})
    with pytest.raises(ModelConfigError, match=re.escape("m.yaml: backbone_args.kernel_size")):
        build_model(config, "m.yaml")


def test_a_proxy_trains_a_step_on_28x28():
    config = parse_model_config(
        {
            "backbone": "slak_nano",
            "num_classes": 10,
            "in_chans": 1,
            "width": 0.25,
            "conv": {"family": "slak"},
            "backbone_args": {"patch_size": 2},
        }
    )
    model = build_model(config)
    logits = model(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())

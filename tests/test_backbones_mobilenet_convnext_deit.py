"""MobileNetV2, ConvNeXt and DeiT: reference layer names, which layers each family makes dynamic,
and a forward/backward pass of every backbone with every family. Their published parameter counts
are pinned in test_published_models.py."""

import pytest
import torch
from torch import nn

import kwsearch.models.convnext
import kwsearch.models.deit
import kwsearch.models.mobilenetv2  # noqa: F401  (registers the backbones)
from kwsearch.models import get_backbone
from kwsearch.models.mobilenetv2 import KW1D2X_CONV, make_divisible
from kwsearch.nn import (
    DyConv2d,
    KWConv2d,
    KWConvNd,
    KWLinear,
    ODConv2d,
    TemperatureControlled,
    set_temperature,
    warehouse_managers,
)

KW = {"family": "kw", "reduction": 0.0625}
KW_MOBILENET_1X = {**KW, "cell_num_ratio": 1, "sharing_range": ["layer", "pwconv"]}  # kw1x_mobilenetv2_*.json
KW_MOBILENET_4X = {**KW, "cell_num_ratio": 4, "sharing_range": ["layer"]}  # kw4x_mobilenetv2_*.json
# configs/convnext/kw1x_convnext_tiny.json, with the reference model's LayerNorm attention
KW_CONVNEXT_1X = {**KW, "cell_num_ratio": 1, "sharing_range": "layer_pwconv", "norm_layer": "layer"}
KW_DEIT = {**KW, "sharing_range": ["layer", "fc"]}


def test_channel_rounding_follows_the_reference():
    assert [make_divisible(c * 0.5) for c in (32, 16, 24, 32, 64, 96, 160, 320)] == [
        16, 8, 16, 16, 32, 48, 80, 160
    ]  # fmt: skip
    assert make_divisible(1280 * max(1.0, 0.5)) == 1280
    assert make_divisible(10) == 16  # 8 would lose more than 10%


def _kw_names(model: nn.Module) -> list[str]:
    return [m.reserved.name for m in model.modules() if isinstance(m, KWConvNd)]


def test_mobilenetv2_names_and_handover_follow_the_reference():
    model = get_backbone("mobilenetv2_100")(KW_MOBILENET_1X, width=0.25)
    names = _kw_names(model)
    blocks = [n.removesuffix("_dwconv0") for n in names if n.endswith("dwconv0")]
    assert blocks == [
        "stage1_layer0",
        "stage1_layer1", "stage2_layer0",
        "stage2_layer1", "stage3_layer0", "stage3_layer1",
        "stage3_layer2", "stage4_layer0", "stage4_layer1", "stage4_layer2",
        "stage4_layer3", "stage5_layer0", "stage5_layer1",
        "stage5_layer2", "stage6_layer0", "stage6_layer1",
        "stage6_layer2",
    ]  # fmt: skip
    assert names[0] == "stage0_conv0" and names[-1] == "stage6_layer3_pwconv1"
    assert "stage1_layer0_pwconv0" not in names  # expansion 1: no expansion conv
    plans = warehouse_managers(model)[0].plans
    assert [p.name for p in plans][:4] == [
        "stage0_conv0",
        "stage1_layer_dwconv0",
        "stage1_layer_pwconv",
        "stage2_layer_pwconv",
    ]
    assert len(plans) == 13


def test_mobilenetv2_dynamic_layers_per_family():
    kw = get_backbone("mobilenetv2_100")(KW_MOBILENET_1X, width=0.25)
    od = get_backbone("mobilenetv2_100")({"family": "odconv", "kernel_num": 1}, width=0.25)
    assert isinstance(kw.features[0][0], KWConv2d)  # the KW reference's stem is a KW layer
    assert type(od.features[0][0]) is nn.Conv2d  # ODConv's stem is static
    kw_convs = sum(isinstance(m, KWConv2d) for m in kw.modules())
    od_convs = sum(isinstance(m, ODConv2d) for m in od.modules())
    assert kw_convs == od_convs + 1 == 52  # 17 blocks (one without expansion) + stem + last conv
    assert type(kw.classifier) is nn.Linear and type(od.classifier) is nn.Linear


def test_kw1d2x_structure():
    model = get_backbone("kw1d2x_mobilenetv2_100")(KW1D2X_CONV, width=0.25)
    names = _kw_names(model)
    pointwise = [n for n in names if "pwconv" in n]
    # Only blocks named in stage 6 keep dynamic pointwise convs (plus the last conv).
    assert all(n.startswith("stage6_") for n in pointwise) and len(pointwise) == 7
    assert isinstance(model.classifier, KWLinear) and names[-1] == "classifier"
    assert len(warehouse_managers(model)[0].plans) == 10  # one per entry of the hard-coded ratios
    od = get_backbone("kw1d2x_mobilenetv2_100")({"family": "odconv"}, width=0.25)
    assert type(od.classifier) is nn.Linear


def test_convnext_names_follow_the_reference():
    model = get_backbone("convnext_tiny")(KW_CONVNEXT_1X, width=0.25)
    names = _kw_names(model)
    assert names[:5] == [
        "stagestem_conv0",
        "stage0_layerds_conv0",
        "stage1_layerds_conv0",
        "stage2_layerds_conv0",
        "stage0_layer0_dwconv0",
    ]
    assert names[-3:] == ["stage3_layer2_dwconv0", "stage3_layer2_pwconv1", "stage3_layer2_pwconv2"]
    warehouses = [p.name for p in warehouse_managers(model)[0].plans]
    assert warehouses[:6] == [
        "stagestem_conv0",
        "stage0_layer_conv0",
        "stage1_layer_conv0",
        "stage2_layer_conv0",
        "stage0_layer_dwconv0",
        "stage0_layer_pwconv",
    ]
    assert len(warehouses) == 4 + 2 * 4
    assert all(isinstance(m.attention.norm, nn.LayerNorm) for m in model.modules() if isinstance(m, KWConvNd))


def test_convnext_per_layer_families_keep_the_stem_static():
    model = get_backbone("convnext_nano")({"family": "dyconv"}, width=0.25)
    assert type(model.downsample_layers[0][0]) is nn.Conv2d
    assert isinstance(model.downsample_layers[1][1], DyConv2d)
    assert sum(isinstance(m, DyConv2d) for m in model.modules()) == 3 + 3 * (2 + 2 + 8 + 2)


def test_deit_linears_per_family():
    kwargs = {"width": 0.25, "img_size": 32, "patch_size": 4}
    kw = get_backbone("deit_tiny")(KW_DEIT, **kwargs)
    assert _kw_names(kw)[:4] == [
        "stage0_layer0_qkv",
        "stage0_layer0_proj",
        "stage0_layer0_fc1",
        "stage0_layer0_fc2",
    ]
    assert sum(isinstance(m, KWLinear) for m in kw.modules()) == 48
    assert [p.name for p in warehouse_managers(kw)[0].plans] == [
        "stage0_layer_qkv",
        "stage0_layer_proj",
        "stage0_layer_fc",
    ]
    assert type(kw.head) is nn.Linear and type(kw.patch_embed) is nn.Conv2d
    staged = get_backbone("deit_tiny")(KW_DEIT, stages=4, **kwargs)
    assert _kw_names(staged)[-1] == "stage3_layer2_fc2" and len(warehouse_managers(staged)[0].plans) == 12
    for family in ("dyconv", "odconv"):
        model = get_backbone("deit_tiny")({"family": family}, **kwargs)
        assert not any(isinstance(m, TemperatureControlled) for m in model.modules())


def test_deit_checks_its_input_size():
    with pytest.raises(ValueError, match="patch_size"):
        get_backbone("deit_tiny")({"family": "static"}, img_size=30, patch_size=4)
    model = get_backbone("deit_tiny")({"family": "static"}, width=0.25, img_size=32, patch_size=4)
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 28, 28))


FAMILIES = {
    "static": lambda kw: {"family": "static"},
    "dyconv": lambda kw: {"family": "dyconv"},
    "odconv": lambda kw: {"family": "odconv"},
    "kw": lambda kw: kw,
}
# (backbone, KW spec as in the presets, constructor arguments for a small, fast model)
SMALL = [
    ("mobilenetv2_100", KW_MOBILENET_1X, {"width": 0.25}),
    ("mobilenetv2_050", KW_MOBILENET_4X, {"width": 0.5}),
    ("kw1d2x_mobilenetv2_100", KW1D2X_CONV, {"width": 0.25}),
    ("kw1d2x_mobilenetv2_050", KW1D2X_CONV, {"width": 0.5}),
    ("convnext_nano", KW_CONVNEXT_1X, {"width": 0.25}),
    ("convnext_tiny", KW_CONVNEXT_1X, {"width": 0.25}),
    ("deit_tiny", KW_DEIT, {"width": 0.25, "img_size": 32, "patch_size": 4}),
]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(("backbone", "kw", "kwargs"), SMALL, ids=[s[0] for s in SMALL])
def test_forward_and_backward(backbone, kw, kwargs, family):
    model = get_backbone(backbone)(FAMILIES[family](kw), num_classes=10, drop_path=0.1, **kwargs)
    set_temperature(model, 0.5)  # so that the attentions shape the output (and get gradients)
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("backbone", "kwargs"),
    [
        ("mobilenetv2_100", {"width": 0.25}),
        ("convnext_nano", {"width": 0.25, "patch_size": 2}),
        ("deit_tiny", {"width": 0.25, "img_size": 28, "patch_size": 4}),
    ],
)
def test_grayscale_28x28(backbone, kwargs):
    model = get_backbone(backbone)({**KW, "sharing_range": ["layer"]}, in_chans=1, num_classes=10, **kwargs)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)

"""Every backbone and family as published, from the plain model config a user would write:
parameter counts (ImageNet layout, 1000 classes, built on the meta device), the KernelWarehouse
presets, which layers each family makes dynamic, attention norms and temperature schedules.

Published figures: the KernelWarehouse README (ResNet and ConvNeXt 300-epoch tables, MobileNetV2
150-epoch table), ODConv's README (ResNet 100-epoch and MobileNetV2 150-epoch tables), timm
(ConvNeXt-Nano), the DeiT paper (DeiT-Tiny). Where none is published the count is our own (None).
"""

import pytest
import torch
from torch import nn

from kwsearch.models import build_model, parse_model_config
from kwsearch.models.mobilenetv2 import KW1D2X_CONV
from kwsearch.models.presets import kw_preset, kw_preset_names
from kwsearch.nn import DyConv2d, KWConv2d, KWConvNd, ODConv2d

KW_RESNET = {"family": "kw", "sharing_range": "layer_conv"}  # configs/resnet*/kw*.json
HALF_CELLS = {"cell_inplane_ratio": 0.5, "cell_outplane_ratio": 0.5}
KW_1D4X = {**KW_RESNET, "cell_num_ratio": 0.25, **HALF_CELLS}
KW_1D2X = {**KW_RESNET, "cell_num_ratio": 0.5, **HALF_CELLS}
KW_1D2X_NONLOCAL = {**KW_1D2X, "nonlocal_basis_ratio": 0.0625}  # kw1d2x_resnet50.json
OD_1X = {"family": "odconv", "kernel_num": 1}
KW_MOBILENET_1X = {"family": "kw", "sharing_range": ["layer", "pwconv"]}  # kw1x_mobilenetv2_*.json
KW_MOBILENET_4X = {"family": "kw", "cell_num_ratio": 4, "sharing_range": ["layer"]}  # kw4x_mobilenetv2_*.json
KW_CONVNEXT = {"family": "kw", "sharing_range": "layer_pwconv"}  # kw1x_convnext_tiny.json, no norm_layer
KW_DEIT = {"family": "kw", "sharing_range": ["layer", "fc"]}

# (model config as a user writes it, exact count built here, published millions or None, KW preset)
PUBLISHED = [
    ({"backbone": "resnet18"}, 11_689_512, 11.69, None),
    # the README says 4.08M; the reference code builds 4.03M, as here
    ({"backbone": "resnet18", "conv": KW_1D4X}, 4_031_768, 4.03, "kw_1d4x"),
    ({"backbone": "resnet18", "conv": KW_1D2X}, 7_431_044, 7.43, "kw_1d2x"),
    ({"backbone": "resnet18", "conv": KW_RESNET}, 11_932_148, 11.93, "kw_1x"),
    ({"backbone": "resnet18", "conv": {**KW_RESNET, "cell_num_ratio": 2}}, 23_242_127, 23.24, "kw_2x"),
    ({"backbone": "resnet18", "conv": {**KW_RESNET, "cell_num_ratio": 4}}, 45_862_085, 45.86, "kw_4x"),
    ({"backbone": "resnet18", "conv": OD_1X}, 11_943_944, 11.94, None),
    ({"backbone": "resnet18", "conv": {"family": "odconv"}}, 44_901_640, 44.90, None),
    # DY-CNN published no code: stem, shortcuts and classifier static as in ODConv's ResNet
    ({"backbone": "resnet18", "conv": {"family": "dyconv"}}, 44_933_880, None, None),
    ({"backbone": "resnet50"}, 25_557_032, 25.56, None),
    ({"backbone": "resnet50", "conv": KW_1D2X_NONLOCAL}, 17_638_264, 17.64, "kw_1d2x"),
    ({"backbone": "resnet50", "conv": KW_RESNET}, 28_052_310, 28.05, "kw_1x"),
    ({"backbone": "resnet50", "conv": {**KW_RESNET, "cell_num_ratio": 4}}, 102_015_144, 102.02, "kw_4x"),
    # ODConv's ResNet-50 makes the first block's first conv dynamic (KernelWarehouse's keeps it static)
    ({"backbone": "resnet50", "conv": OD_1X}, 28_635_112, 28.64, None),
    ({"backbone": "resnet50", "conv": {"family": "odconv"}}, 90_670_888, 90.67, None),
    ({"backbone": "resnet50", "conv": {"family": "dyconv"}}, 92_223_960, None, None),
    # the common CIFAR ResNet-18 (3x3 stem, no max-pool, 10 classes)
    ({"backbone": "resnet18_cifar", "num_classes": 10}, 11_173_962, 11.17, None),
    ({"backbone": "mobilenetv2_100"}, 3_504_872, 3.50, None),
    ({"backbone": "mobilenetv2_100", "conv": KW_MOBILENET_1X}, 5_168_146, 5.17, "kw_1x"),
    ({"backbone": "mobilenetv2_100", "conv": KW_MOBILENET_4X}, 11_379_382, 11.38, "kw_4x"),
    ({"backbone": "kw1d2x_mobilenetv2_100", "conv": KW1D2X_CONV}, 2_654_396, 2.65, None),
    ({"backbone": "mobilenetv2_100", "conv": OD_1X}, 4_940_185, 4.94, None),
    ({"backbone": "mobilenetv2_100", "conv": {"family": "odconv"}}, 11_512_149, 11.51, None),
    ({"backbone": "mobilenetv2_100", "conv": {"family": "dyconv"}}, 12_404_540, None, None),
    ({"backbone": "mobilenetv2_100", "width": 0.75}, 2_636_424, 2.64, None),  # ODConv README's 0.75x
    ({"backbone": "mobilenetv2_100", "width": 0.75, "conv": OD_1X}, 3_507_113, 3.51, None),
    ({"backbone": "mobilenetv2_100", "width": 0.75, "conv": {"family": "odconv"}}, 7_496_013, 7.50, None),
    ({"backbone": "mobilenetv2_050"}, 1_968_680, 1.97, None),
    ({"backbone": "mobilenetv2_050", "conv": KW_MOBILENET_1X}, 2_854_522, 2.85, "kw_1x"),
    ({"backbone": "mobilenetv2_050", "conv": KW_MOBILENET_4X}, 4_648_587, 4.65, "kw_4x"),
    ({"backbone": "kw1d2x_mobilenetv2_050", "conv": KW1D2X_CONV}, 1_466_888, 1.47, None),
    ({"backbone": "mobilenetv2_050", "conv": OD_1X}, 2_425_537, 2.43, None),
    ({"backbone": "mobilenetv2_050", "conv": {"family": "odconv"}}, 4_435_501, 4.44, None),
    ({"backbone": "convnext_tiny"}, 28_589_128, 28.59, None),
    ({"backbone": "convnext_tiny", "conv": KW_CONVNEXT}, 39_370_674, 39.37, "kw_1x"),
    ({"backbone": "convnext_nano"}, 15_593_560, 15.59, None),
    ({"backbone": "convnext_nano", "conv": KW_CONVNEXT}, 21_752_914, None, "kw_1x"),
    ({"backbone": "deit_tiny"}, 5_717_416, 5.72, None),
    ({"backbone": "deit_tiny", "conv": KW_DEIT}, 6_585_280, None, None),  # our layer naming
    ({"backbone": "deit_tiny", "conv": {"family": "kw", "sharing_range": ["layer"]}}, 6_288_280, None, None),
    ({"backbone": "deit_tiny", "conv": {"family": "odconv"}}, 5_717_416, None, None),  # 2-d only: static
]
IDS = [f"{c['backbone']}-{c.get('conv', {}).get('family', 'static')}-{n}" for c, n, _, _ in PUBLISHED]


def _meta_model(data: dict) -> nn.Module:
    with torch.device("meta"):
        return build_model(parse_model_config(data))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("config", "exact", "millions", "preset"), PUBLISHED, ids=IDS)
def test_parameter_count(config, exact, millions, preset):
    count = _count(_meta_model(config))
    assert count == exact
    if millions is not None:
        assert round(count / 1e6, 2) == millions


@pytest.mark.parametrize(
    ("config", "exact", "preset"),
    [(config, exact, preset) for config, exact, _, preset in PUBLISHED if preset],
    ids=[i for i, row in zip(IDS, PUBLISHED, strict=True) if row[3]],
)
def test_each_preset_builds_its_published_model(config, exact, preset):
    assert _count(_meta_model({**config, "conv": kw_preset(config["backbone"], preset)})) == exact


def _first_bottleneck_conv(family: str) -> nn.Module:
    return _meta_model({"backbone": "resnet50", "conv": {"family": family}}).layer1[0].conv1


def test_resnet50_first_conv_is_static_only_for_kernelwarehouse():
    assert type(_first_bottleneck_conv("kw")) is nn.Conv2d  # the handover has no warehouse for it
    assert isinstance(_first_bottleneck_conv("odconv"), ODConv2d)  # od_resnet.py makes it dynamic
    assert isinstance(_first_bottleneck_conv("dyconv"), DyConv2d)


@pytest.mark.parametrize("family", ["kw", "odconv", "dyconv"])
def test_resnet_shortcuts_stem_and_classifier(family):
    model = _meta_model({"backbone": "resnet50", "conv": {"family": family}})
    shortcuts = [stage[0].downsample[0] for stage in (model.layer1, model.layer2, model.layer3, model.layer4)]
    assert type(shortcuts[0]) is nn.Conv2d  # stride 1: static in every reference
    # stride 2: drawn from the previous stage's warehouse in KernelWarehouse's, static in ODConv's
    assert all(isinstance(s, KWConv2d) if family == "kw" else type(s) is nn.Conv2d for s in shortcuts[1:])
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear


def _attention_norms(model: nn.Module) -> set[type]:
    return {type(m.attention.norm) for m in model.modules() if isinstance(m, KWConvNd)}


def test_kernelwarehouse_convnext_attention_uses_layernorm_unless_told_otherwise():
    small = {"backbone": "convnext_nano", "width": 0.25}
    assert _attention_norms(_meta_model({**small, "conv": KW_CONVNEXT})) == {nn.LayerNorm}
    assert _attention_norms(_meta_model({**small, "conv": {**KW_CONVNEXT, "norm_layer": "batch"}})) == {
        nn.BatchNorm1d
    }
    slak = {**small, "backbone": "slak_nano", "conv": KW_CONVNEXT}  # a ConvNeXt with large kernels
    assert _attention_norms(_meta_model(slak)) == {nn.LayerNorm}
    assert _attention_norms(_meta_model({"backbone": "resnet18", "conv": KW_RESNET})) == {nn.BatchNorm1d}


# (backbone, family, the fraction of training the published recipe anneals over)
PUBLISHED_SCHEDULES = [
    ("resnet18", "kw", 20 / 300),  # KernelWarehouse main.py: --temp_epoch 20 of --epochs 300
    ("resnet50_cifar", "kw", 20 / 300),
    ("convnext_tiny", "kw", 20 / 300),
    ("deit_tiny", "kw", 20 / 300),
    ("mobilenetv2_100", "kw", 15 / 150),  # configs/mobilenetv2_*/kw*.json
    ("kw1d2x_mobilenetv2_050", "kw", 15 / 150),
    ("resnet18", "odconv", 10 / 100),  # ODConv README: --epochs 100; main.py --temp_epoch 10
    ("resnet50", "dyconv", 10 / 100),
    ("mobilenetv2_100", "odconv", 10 / 150),  # ODConv README: --epochs 150
    ("mobilenetv2_050", "dyconv", 10 / 150),
]


@pytest.mark.parametrize(("backbone", "family", "fraction"), PUBLISHED_SCHEDULES)
def test_the_temperature_anneals_over_the_published_fraction(backbone, family, fraction):
    config = parse_model_config({"backbone": backbone, "conv": {"family": family}})
    schedule = config.temperature_schedule()  # what the trainer is given
    assert schedule.fraction == pytest.approx(fraction) and schedule.epochs is None
    assert (schedule.start, schedule.end) == ((1.0, 0.0) if family == "kw" else (30.0, 1.0))
    if family == "kw" and "kw_1x" in kw_preset_names(backbone):  # a preset carries the same
        preset = parse_model_config({"backbone": backbone, "conv": kw_preset(backbone, "kw_1x")})
        assert preset.temperature_schedule() == schedule


def test_a_schedule_written_by_the_user_wins_and_is_completed_from_the_backbones():
    def schedule(temperature):
        conv = {"family": "odconv", "temperature": temperature}
        return parse_model_config({"backbone": "mobilenetv2_100", "conv": conv}).temperature_schedule()

    assert schedule({"shape": "cosine"}).model_dump(exclude_none=True) == {
        "shape": "cosine", "start": 30.0, "end": 1.0, "fraction": 10 / 150, "steps": 4
    }  # fmt: skip
    absolute = schedule({"epochs": 20})  # an absolute duration still works
    assert (absolute.start, absolute.end, absolute.epochs, absolute.fraction) == (30.0, 1.0, 20, None)

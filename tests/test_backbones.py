"""Every registered backbone with every conv family: accounting on the meta device equals the
instantiated model, and the ResNets train a step on CPU."""

import pytest
import torch

from kwsearch.models import account, backbone_names, build_model, get_backbone, parse_model_config
from kwsearch.models.accounting import warehouse_summaries
from kwsearch.nn import family_names

# Small but real instances: narrow widths and small inputs keep the sweep fast.
SMALL = {
    "deit_tiny": {"input_size": [32, 32], "backbone_args": {"img_size": 32, "patch_size": 4}},
    "convnext_tiny": {"width": 0.25, "input_size": [32, 32]},
    "convnext_nano": {"width": 0.25, "input_size": [32, 32]},
    # SLaK's 51x51 kernels, real and with every family, would cost gigabytes here; the wiring is the same
    **{
        name: {"width": 0.125, "input_size": [32, 32], "backbone_args": {"kernel_size": [9, 7, 5, 3]}}
        for name in ("slak_tiny", "slak_nano")
    },
}
# Deeper copies of slak_tiny (same code, other depths and dims); test_slak.py pins their counts.
SWEPT = [name for name in backbone_names() if name not in ("slak_small", "slak_base")]
SPECS = {
    "static": {"family": "static"},
    "dyconv": {"family": "dyconv"},
    "odconv": {"family": "odconv"},
    "kw": {"family": "kw", "sharing_range": ["layer", "conv", "pwconv"]},
    "slak": {"family": "slak", "sparse_init": "erk"},
}


def small_config(backbone, family):
    data = {
        "backbone": backbone,
        "num_classes": 10,
        "width": 0.25,
        "input_size": [32, 32],
        "conv": SPECS[family],
    }
    data.update(SMALL.get(backbone, {}))
    return parse_model_config(data)


def test_the_sweep_covers_every_family():
    assert sorted(SPECS) == family_names()


@pytest.mark.parametrize("family", sorted(SPECS))
@pytest.mark.parametrize("backbone", SWEPT)
def test_inspect_counts_equal_the_instantiated_model(backbone, family):
    config = small_config(backbone, family)
    with torch.device("meta"):
        report = account(build_model(config), (3, *config.input_size))
    model = build_model(config)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.static_params + report.kernel_params + report.attention_params == report.params
    assert report.effective_params == report.params or family == "slak"
    assert report.macs > 0
    if family == "static":
        assert report.kernel_params == report.attention_params == 0


@pytest.mark.parametrize("family", sorted(SPECS))
@pytest.mark.parametrize("backbone", [name for name in backbone_names() if name.startswith("resnet")])
def test_resnets_run_forward_and_backward(backbone, family):
    model = build_model(small_config(backbone, family))
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_resnet_without_handover_keeps_every_conv_in_its_own_stage():
    """``handover: false`` (the sharing ablation's "per stage") puts a stage's first conv and its
    stride-2 shortcut in that stage's warehouse; the reference's handover (the default) puts them
    in the previous stage's (as stage0_layer2_conv0 and stage0_layer3_conv0)."""
    spec = {"family": "kw", "sharing_range": ["layer", "conv"]}
    layers = {}
    for handover in (True, False):
        with torch.device("meta"):
            model = get_backbone("resnet18_cifar")(spec, width=0.125, handover=handover)
        layers[handover] = {w.name: set(w.layers) for w in warehouse_summaries(model)}
    assert {"stage0_layer2_conv0", "stage0_layer3_conv0"} <= layers[True]["stage0_layer_conv"]
    assert layers[False]["stage0_layer_conv"] == {
        "stage0_layer0_conv0",
        "stage0_layer0_conv1",
        "stage0_layer1_conv0",
        "stage0_layer1_conv1",
    }
    assert {"stage1_layer0_conv0", "stage1_layer0_conv2"} <= layers[False]["stage1_layer_conv"]
    # the same layers in all, only grouped differently
    assert sum(map(len, layers[True].values())) == sum(map(len, layers[False].values()))

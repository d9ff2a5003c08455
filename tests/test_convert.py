"""kwsearch.convert on a model kwsearch has never seen: a torchvision-style ResNet18 written here."""

import pytest
import torch
from torch import nn

import kwsearch
from kwsearch.models import build_model, parse_model_config
from kwsearch.models.accounting import parameter_split
from kwsearch.nn import ConvSpecError, DyConv2d, KWConv2d, KWLinear, warehouse_managers


class Block(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionStyleResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512]
        self.layer1 = nn.Sequential(Block(64, 64), Block(64, 64))
        self.layer2 = nn.Sequential(Block(64, 128, 2), Block(128, 128))
        self.layer3 = nn.Sequential(Block(128, 256, 2), Block(256, 256))
        self.layer4 = nn.Sequential(Block(256, 512, 2), Block(512, 512))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# The warehouses of our resnet18 with sharing_range [layer, conv]: one per stage, and the first
# conv and the shortcut of each stage's first block handed over to the previous stage's warehouse.
HANDOVER = {
    "layer2.0.conv1": "stage0",
    "layer2.0.downsample.*": "stage0",
    "layer3.0.conv1": "stage1",
    "layer3.0.downsample.*": "stage1",
    "layer4.0.conv1": "stage2",
    "layer4.0.downsample.*": "stage2",
    "layer1.*": "stage0",
    "layer2.*": "stage1",
    "layer3.*": "stage2",
    "layer4.*": "stage3",
}
KW = {"family": "kw", "reduction": 0.0625}


@pytest.mark.parametrize("cell_num_ratio", [1, 4])
def test_converted_torchvision_resnet18_matches_our_resnet18(cell_num_ratio):
    with torch.device("meta"):
        converted = kwsearch.convert(
            TorchvisionStyleResNet18(),
            {**KW, "cell_num_ratio": cell_num_ratio},
            include=["layer*"],
            warehouses=HANDOVER,
        )
        ours = build_model(
            parse_model_config(
                {
                    "backbone": "resnet18",
                    "conv": {**KW, "cell_num_ratio": cell_num_ratio, "sharing_range": ["layer", "conv"]},
                }
            )
        )
    count = sum(p.numel() for p in converted.parameters())
    assert count == sum(p.numel() for p in ours.parameters())
    assert count == {1: 11_932_148, 4: 45_862_085}[cell_num_ratio]
    (manager,) = warehouse_managers(converted)
    assert [p.num_cells for p in manager.plans] == [p.num_cells for p in warehouse_managers(ours)[0].plans]
    assert type(converted.conv1) is nn.Conv2d and type(converted.fc) is nn.Linear  # outside include


def test_converted_model_trains_a_step():
    model = kwsearch.convert(
        TorchvisionStyleResNet18(num_classes=10), KW, include=["layer*"], warehouses=HANDOVER
    )
    assert isinstance(model.layer3[1].conv2, KWConv2d)
    x = torch.randn(2, 3, 32, 32)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 7]))
    loss.backward()
    cells = warehouse_managers(model)[0].warehouses
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in cells)


def test_include_exclude_and_linear_layers():
    model = TorchvisionStyleResNet18(num_classes=10)
    kwsearch.convert(model, {"family": "dyconv"}, include=["layer4.*"], exclude=["*.downsample.*"])
    assert isinstance(model.layer4[0].conv1, DyConv2d)
    assert type(model.layer4[0].downsample[0]) is nn.Conv2d
    assert type(model.layer3[0].conv1) is nn.Conv2d
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    kwsearch.convert(mlp, KW, warehouses={"*": "mlp"}, classifier=True)
    assert isinstance(mlp[0], KWLinear) and isinstance(mlp[2], KWLinear)
    assert mlp(torch.randn(3, 8)).shape == (3, 4)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ({**KW, "sharing_range": ["layer"]}, {}, "conv.sharing_range"),
        (KW, {"include": ["nothing.*"]}, "no Conv or Linear layer matches"),
        ({"family": "kw", "cell_num_raito": 1}, {}, "conv.cell_num_raito"),
    ],
)
def test_bad_conversions_are_clear_errors(spec, kwargs, message):
    with pytest.raises(ConvSpecError, match=message):
        kwsearch.convert(TorchvisionStyleResNet18(), spec, **kwargs)


def test_same_padding_is_refused_with_the_layer_name():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"))
    with pytest.raises(ConvSpecError, match=r"^0: padding='same'"):
        kwsearch.convert(model, KW, stem=True)


def test_the_converter_says_what_it_did_and_leaves_stem_and_classifier_static(capsys):
    model = TorchvisionStyleResNet18(num_classes=10)
    before = sum(p.numel() for p in model.parameters())
    kwsearch.convert(model, KW, warehouses=HANDOVER)
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear  # by default
    assert isinstance(model.layer1[0].conv1, KWConv2d)
    after = sum(p.numel() for p in model.parameters())
    done = model.kwsearch_conversion
    assert done.params_before == before and done.params_after == after
    assert len(done.layers) == 19 and "conv1" not in done.layers and "fc" not in done.layers
    assert done.attention == parameter_split(model).attention > 0
    printed = capsys.readouterr().out
    assert f"{before:,} -> {after:,} ({after / before:.2f}x the original" in printed
    assert f"attention {done.attention:,}, {done.attention / after:.1%}" in printed
    assert "pretrained weights were not kept" in printed
    assert "left static: stem conv1, classifier fc" in printed

    asked = kwsearch.convert(TorchvisionStyleResNet18(), KW, stem=True, classifier=True, verbose=False)
    assert isinstance(asked.conv1, KWConv2d) and isinstance(asked.fc, KWLinear)
    assert capsys.readouterr().out == ""

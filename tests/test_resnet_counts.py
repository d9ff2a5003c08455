"""ResNet parameter counts equal the published ones (KernelWarehouse README, ImageNet, 1000 classes).

Built on the meta device: exact counts without allocating a single weight.
"""

import pytest
import torch

from kwsearch.models import get_backbone

KW = {"family": "kw", "reduction": 0.0625, "sharing_range": "layer_conv"}
QUARTER_CELLS = {"cell_inplane_ratio": 0.5, "cell_outplane_ratio": 0.5}

# (backbone, conv spec, published millions of parameters); spec = the reference's config files
PUBLISHED = [
    ("resnet18", {"family": "static"}, 11.69),
    ("resnet18", {**KW, "cell_num_ratio": 0.25, **QUARTER_CELLS}, 4.03),  # the reference code's count
    ("resnet18", {**KW, "cell_num_ratio": 0.5, **QUARTER_CELLS}, 7.43),
    ("resnet18", {**KW, "cell_num_ratio": 1}, 11.93),
    ("resnet18", {**KW, "cell_num_ratio": 2}, 23.24),
    ("resnet18", {**KW, "cell_num_ratio": 4}, 45.86),
    ("resnet18", {"family": "odconv", "kernel_num": 1}, 11.94),
    ("resnet18", {"family": "odconv", "kernel_num": 4}, 44.90),
    ("resnet50", {"family": "static"}, 25.56),
    ("resnet50", {**KW, "cell_num_ratio": 0.5, **QUARTER_CELLS, "nonlocal_basis_ratio": 0.0625}, 17.64),
    ("resnet50", {**KW, "cell_num_ratio": 1}, 28.05),
    ("resnet50", {**KW, "cell_num_ratio": 4}, 102.02),
]


@pytest.mark.parametrize(("backbone", "conv", "millions"), PUBLISHED)
def test_parameter_count_matches_the_published_figure(backbone, conv, millions):
    with torch.device("meta"):
        model = get_backbone(backbone)(conv)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions

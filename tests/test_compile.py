"""torch.compile takes every family's model whole: one graph for the forward, no graph break,
whether the cost model or choose_paths picks the paths; a compiled train step (forward and
backward, full graph) equals eager."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn

from kwsearch.models import build_model, parse_model_config
from kwsearch.nn import ConvFactory, choose_paths
from tests.helpers import randomize_

FAMILIES = {
    "static": ("resnet18_cifar", {"family": "static"}),
    "dyconv": ("resnet18_cifar", {"family": "dyconv"}),
    "odconv": ("resnet18_cifar", {"family": "odconv"}),
    "kw": ("resnet18_cifar", {"family": "kw", "sharing_range": "layer_conv"}),
    "slak": ("slak_nano", {"family": "slak"}),
}


def tiny_model(family: str) -> torch.nn.Module:
    backbone, conv = FAMILIES[family]
    config = {"backbone": backbone, "num_classes": 4, "in_chans": 1, "width": 0.0625, "conv": conv}
    return randomize_(build_model(parse_model_config(config))).train()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_model_compiles_into_one_graph(family):
    model = tiny_model(family)
    x = torch.randn(4, 1, 32, 32)
    torch._dynamo.reset()  # no choose_paths: the cost model's choice is traced too
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def mixed_network() -> nn.Sequential:
    """A KernelWarehouse, a DY-CNN and an ODConv layer between norms, pooled into a classifier."""
    kw, dy, od = (ConvFactory({"family": f}) for f in ("kw", "dyconv", "odconv"))
    model = nn.Sequential(
        kw.conv(1, 8, 3, padding=1, name="a"),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        dy.conv(8, 8, 3, padding=1),
        od.conv(8, 8, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        kw.linear(8, 4, name="fc"),
    )
    for factory in (kw, dy, od):
        factory.finalize(model)
    return randomize_(model).train()


def test_a_compiled_train_step_equals_eager():
    model = mixed_network()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    choose_paths(model, x)  # as the trainer does before compiling
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    torch._dynamo.reset()
    grads = []
    for network in (model, compiled):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(network(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for eager, traced in zip(*grads, strict=True):
        torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-5)

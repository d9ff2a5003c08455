"""Dynamic sparse training: layer densities (ERK, uniform, SNIP), the mask manager's prune and
regrow rules and schedule, and dense versus effective parameter accounting on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kwsearch.models import account, build_model, parse_model_config
from kwsearch.models.accounting import effective_parameters
from kwsearch.nn.sparsity import (
    MASK_BUFFER,
    SparseTraining,
    attach_sparse_training,
    erk_densities,
    layer_densities,
    sparse_targets,
)
from kwsearch.train.sparse import DynamicSparsity


def small_net() -> nn.Sequential:
    """A conv of 2 -> 4 channels, 3x3 (72 weights, 4 biases) and a linear 4 -> 3 (12 + 3): 91."""
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def sparse_net(**settings) -> tuple[nn.Sequential, SparseTraining]:
    net = small_net()
    options = SparseTraining(**{"sparsity": 0.5, "sparse_init": "uniform", **settings})
    attach_sparse_training(net, options)
    return net, options


def test_erk_densities_by_hand():
    # conv: raw (4+2+3+3)/72 = 1/6; linear: raw 7/12. At density 0.5, 42 of 84 weights live:
    # scale 42 / (12 + 7) makes the linear 1.29 > 1, so it is dense (12) and the conv holds
    # the other 30 of its 72: density 5/12.
    densities = erk_densities({"conv": (4, 2, 3, 3), "linear": (3, 4)}, 0.5)
    assert densities["linear"] == 1.0
    assert densities["conv"] == pytest.approx(5 / 12)


@pytest.mark.parametrize(
    ("sparse_init", "sparse_targets_", "effective"),
    [
        ("uniform", "all", 91 - 84 + 36 + 6),  # half of each layer
        ("erk", "all", 91 - 84 + 30 + 12),  # the hand computation above
        ("snip", "all", 91 - 84 + 42),  # shares from data, total round(0.5 * 84)
    ],
)
def test_effective_parameters_planned_by_hand(sparse_init, sparse_targets_, effective):
    net, _ = sparse_net(sparse_init=sparse_init, sparse_targets=sparse_targets_)
    assert effective_parameters(net) == effective
    assert effective_parameters(small_net()) == 91  # dense: every parameter
    sparse_net_zero, _ = sparse_net(sparsity=0.0)
    assert effective_parameters(sparse_net_zero) == 91


def test_effective_parameters_counted_from_masks():
    net = small_net()
    mask = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    mask.view(-1)[:10] = True
    net[0].register_buffer(MASK_BUFFER, mask)
    assert effective_parameters(net) == 91 - 72 + 10


def _slak_net(**conv):
    config = parse_model_config(
        {
            "backbone": "slak_nano",
            "num_classes": 3,
            "in_chans": 1,
            "width": 0.125,
            "input_size": [16, 16],
            "conv": {"family": "slak", **conv},
            "backbone_args": {"patch_size": 2, "kernel_size": [7, 5, 5, 3], "width_factor": 1.0},
        }
    )
    with torch.device("meta"):
        planned = account(build_model(config), (1, 16, 16))
    return build_model(config), planned


def _live(masks):
    return {name: int(m.sum()) for name, m in masks.items()}


@pytest.mark.parametrize("sparse_init", ["erk", "uniform", "snip"])
@pytest.mark.parametrize("targets", ["all", "large_kernels"])
def test_initial_masks_hold_the_target_density_and_the_planned_count(sparse_init, targets):
    model, planned = _slak_net(sparse_init=sparse_init, sparse_targets=targets, sparsity=0.7, small_kernel=1)
    sparsity = DynamicSparsity.for_model(model, torch.optim.SGD(model.parameters(), lr=0.1), 100)
    batch = (torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,)))
    sparsity.initialize(model, [batch])
    total = sum(m.numel() for m in sparsity.masks.values())
    live = sum(_live(sparsity.masks).values())
    # each layer rounds its share to whole weights
    assert abs(live - 0.3 * total) <= len(sparsity.masks) / 2
    if sparse_init == "snip":
        assert live == round(0.3 * total)
    else:
        shapes = {name: tuple(w.shape) for name, w in sparsity.weights.items()}
        densities = layer_densities(sparsity.settings, shapes)
        weighted = sum(densities[n] * w.numel() for n, w in sparsity.weights.items())
        assert weighted == pytest.approx(0.3 * total)  # the densities average to the target
    assert account(model, (1, 16, 16)).effective_params == planned.effective_params
    for name, mask in sparsity.masks.items():
        assert torch.all(sparsity.weights[name][~mask] == 0), name
    if targets == "large_kernels":
        assert all("vertical" in name or "horizontal" in name for name in sparsity.masks)
    else:
        assert set(sparsity.masks) == set(sparse_targets(model, "all"))


def test_snip_gives_salient_layers_more_weights_and_leaves_the_model_alone():
    model, _ = _slak_net(sparse_init="snip", sparsity=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsity = DynamicSparsity.for_model(model, torch.optim.SGD(model.parameters(), lr=0.1), 100)
    sparsity.initialize(model, [(torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,)))])
    densities = {name: float(m.float().mean()) for name, m in sparsity.masks.items()}
    assert len(set(densities.values())) > 1  # not uniform: the shares follow |w * grad|
    for key, value in model.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, before[key]), key  # the probe ran on a copy
    assert all(p.grad is None for p in model.parameters())


def _rate(prune_rate: float, step: int, total: int) -> float:
    return prune_rate * 0.5 * (1 + math.cos(math.pi * step / total))


def test_rewiring_moves_the_scheduled_count_and_keeps_each_layer_s_size():
    model, _ = _slak_net(sparse_init="uniform", sparsity=0.6, update_frequency=10, prune_rate=0.8)
    sparsity = DynamicSparsity.for_model(model, torch.optim.SGD(model.parameters(), lr=0.1), 100)
    sparsity.initialize(model, [])
    with torch.no_grad():  # trained-looking weights: distinct magnitudes everywhere
        for w in sparsity.weights.values():
            w.copy_(torch.randn_like(w))
    for step in range(1, 100):
        before = {name: m.clone() for name, m in sparsity.masks.items()}
        sparsity.step(step)
        for name, mask in sparsity.masks.items():
            live = int(before[name].sum())
            expected = 0
            if step % 10 == 0:
                expected = min(math.ceil(_rate(0.8, step, 100) * live), mask.numel() - live)
            assert int((before[name] & ~mask).sum()) == expected, (step, name)  # pruned
            assert int((~before[name] & mask).sum()) == expected, (step, name)  # regrown
            assert int(mask.sum()) == live
    assert sparsity.prune_rate(0) == 0.8 and sparsity.prune_rate(100) == pytest.approx(0.0, abs=1e-12)


def test_pruning_takes_the_smallest_live_weights_and_gradient_growth_the_largest_gradients():
    net, options = sparse_net(sparse_init="uniform", growth="gradient")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sparsity = DynamicSparsity(net, options, optimizer, total_steps=100)
    sparsity.initialize(net, [])
    net(torch.randn(2, 2, 5, 5)).sum().backward()
    optimizer.step()  # momentum everywhere, including the dead weights
    sparsity.apply()
    conv = net[0].weight
    mask = sparsity.masks["0"]
    with torch.no_grad():
        conv.copy_(torch.randn_like(conv) * mask)
    before = mask.clone()
    moved = sparsity.rewire(0.25)
    count = math.ceil(0.25 * 36)
    assert moved["0"] == count
    pruned, grown = before & ~mask, ~before & mask
    assert conv[pruned].abs().max() <= conv[before & mask].abs().min()
    grad = conv.grad.abs()
    assert grad[grown].min() >= grad[~before & ~mask].max()
    assert torch.all(conv[grown] == 0)  # regrown weights start at zero...
    assert torch.all(optimizer.state[conv]["momentum_buffer"][grown] == 0)  # ...with no momentum


def test_random_growth_only_revives_weights_that_were_dead():
    net, options = sparse_net(sparse_init="uniform", sparsity=0.5)
    sparsity = DynamicSparsity(net, options, torch.optim.SGD(net.parameters(), lr=0.1), total_steps=10)
    sparsity.initialize(net, [])
    before = sparsity.masks["3"].clone()
    sparsity.rewire(1.0)  # every live weight is pruned; as many regrow, all among the dead ones
    assert torch.equal(sparsity.masks["3"], ~before)


@pytest.mark.parametrize("sparse_init", ["erk", "uniform", "snip"])
def test_a_model_without_large_kernels_keeps_every_parameter(sparse_init):
    conv = {"family": "slak", "sparse_targets": "large_kernels", "sparse_init": sparse_init}
    with torch.device("meta"):
        model = build_model(parse_model_config({"backbone": "resnet18_cifar", "conv": conv}))
    report = account(model, (3, 32, 32))
    assert report.effective_params == report.params


def test_a_model_without_the_targets_is_refused():
    net = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"conv\.sparse_targets: the model has no 'large_kernels' layer"):
        DynamicSparsity(net, SparseTraining(sparse_targets="large_kernels"), None, 10)

"""Proxy controls: stratified subsets, train/validation splits, resolution."""

import pytest
import torch

from kwsearch.data import resize_images, stratified_subset, train_val_split


def _imbalanced_labels() -> torch.Tensor:
    # 5 classes of 500, 300, 120, 60 and 20 samples, interleaved.
    counts = [500, 300, 120, 60, 20]
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(3))]


def test_stratified_subset_has_exact_proportional_counts():
    labels = _imbalanced_labels()
    index = stratified_subset(labels, 100, seed=0)
    assert index.numel() == 100
    assert index.unique().numel() == 100
    assert torch.equal(index, index.sort().values)
    assert torch.bincount(labels[index], minlength=5).tolist() == [50, 30, 12, 6, 2]


def test_stratified_subset_rounds_to_the_exact_total_and_keeps_every_class():
    labels = _imbalanced_labels()  # 1000 samples
    for n in (5, 7, 33, 999, 1000):
        counts = torch.bincount(labels[stratified_subset(labels, n, seed=1)], minlength=5)
        assert int(counts.sum()) == n
        assert bool((counts >= 1).all())
        if n >= 33:  # below that, the one-per-class floor outweighs proportionality
            exact = torch.tensor([500, 300, 120, 60, 20]) * n / 1000
            assert bool(((counts - exact).abs() < 1.0).all())


def test_stratified_subset_is_seeded():
    labels = _imbalanced_labels()
    a = stratified_subset(labels, 200, seed=5)
    assert torch.equal(a, stratified_subset(labels, 200, seed=5))
    assert not torch.equal(a, stratified_subset(labels, 200, seed=6))


@pytest.mark.parametrize(
    ("n", "message"), [(1001, "cannot draw 1001 samples from 1000"), (4, "at least one per class")]
)
def test_stratified_subset_rejects_impossible_sizes(n, message):
    with pytest.raises(ValueError, match=message):
        stratified_subset(_imbalanced_labels(), n, seed=0)


def test_train_val_split_is_disjoint_complete_stratified_and_seeded():
    labels = _imbalanced_labels()
    train, val = train_val_split(labels, val_fraction=0.1, seed=0)
    assert val.numel() == 100 and train.numel() == 900
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(1000))
    assert torch.bincount(labels[val], minlength=5).tolist() == [50, 30, 12, 6, 2]
    again_train, again_val = train_val_split(labels, val_size=100, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    _, other_val = train_val_split(labels, val_size=100, seed=1)
    assert not torch.equal(val, other_val)


def test_train_val_split_needs_exactly_one_size():
    labels = _imbalanced_labels()
    with pytest.raises(ValueError, match="exactly one"):
        train_val_split(labels)
    with pytest.raises(ValueError, match="exactly one"):
        train_val_split(labels, val_size=10, val_fraction=0.1)
    with pytest.raises(ValueError, match="leaves no training sample"):
        train_val_split(labels, val_size=1000)


def test_resize_downsizes_with_antialiasing_and_keeps_uint8():
    # A one-pixel checkerboard: antialiased downsizing averages it to mid-grey; plain bilinear at
    # an exact factor of 2 would pick single pixels and keep 0/255 values.
    board = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 255).to(torch.uint8)
    images = board.expand(2, 3, 32, 32).contiguous()
    small = resize_images(images, 16)
    assert small.shape == (2, 3, 16, 16) and small.dtype == torch.uint8
    assert int(small.min()) >= 100 and int(small.max()) <= 155
    assert resize_images(images, (32, 32)) is images
    assert resize_images(images, (40, 48)).shape == (2, 3, 40, 48)

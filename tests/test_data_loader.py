"""DeviceLoader: coverage per epoch, order reproducible from (seed, epoch), exact resumption."""

import pytest
import torch

from kwsearch.data import (
    Augmentation,
    DeviceLoader,
    eval_loader,
    load_dataset,
    normalize,
    train_loader,
    train_val_split,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def data():
    # Image i holds the value i in its first pixel, so a batch (without augmentation) reveals
    # which samples it holds.
    n = 103
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    labels = torch.arange(n) % 7
    return images, labels


def _loader(data, **kwargs):
    images, labels = data
    options = {"batch_size": 10, "mean": MEAN, "std": STD, "shuffle": True, "seed": 11}
    return DeviceLoader(images, labels, **{**options, **kwargs})


def _order(loader, epoch):
    """The dataset indices an epoch visits, read back from the batches' first pixels."""
    found = []
    for x, _ in loader.epoch(epoch):
        found.extend(((x[:, 0, 0, 0].float() * STD[0] + MEAN[0]) * 255).round().long().tolist())
    return found


def test_every_index_once_per_epoch_without_drop_last(data):
    loader = _loader(data)
    assert len(loader) == 11
    order = _order(loader, 0)
    assert sorted(order) == list(range(103))
    sizes = [x.shape[0] for x, _ in loader.epoch(0)]
    assert sizes == [10] * 10 + [3]


def test_drop_last_drops_only_the_short_batch(data):
    loader = _loader(data, drop_last=True)
    assert len(loader) == 10
    assert [x.shape[0] for x, _ in loader] == [10] * 10


def test_order_is_reproducible_from_seed_and_epoch_and_differs_between_epochs(data):
    first = _loader(data)
    second = _loader(data)
    assert torch.equal(first.epoch_plan(3)[0], second.epoch_plan(3)[0])
    assert not torch.equal(first.epoch_plan(3)[0], first.epoch_plan(4)[0])
    assert not torch.equal(first.epoch_plan(3)[0], _loader(data, seed=12).epoch_plan(3)[0])
    assert _order(first, 2) == first.epoch_plan(2)[0].tolist()


def test_resumed_run_sees_the_same_batches(data):
    augmentation = Augmentation(crop_padding=2, flip=True)
    uninterrupted = _loader(data, augmentation=augmentation)
    reference = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        reference.append([(x.clone(), y.clone()) for x, y in uninterrupted])
    # A fresh loader (a restarted process) resumed at epoch 2, then mid-epoch at batch 4.
    resumed = _loader(data, augmentation=augmentation)
    resumed.set_epoch(2)
    for (x, y), (rx, ry) in zip(resumed, reference[2], strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    tail = list(_loader(data, augmentation=augmentation).epoch(1, start_batch=4))
    assert len(tail) == len(reference[1]) - 4
    for (x, y), (rx, ry) in zip(tail, reference[1][4:], strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_labels_follow_images_and_augmentation_is_training_only(data):
    images, labels = data
    plain = _loader(data, shuffle=False)
    x, y = next(iter(plain))
    assert torch.equal(y, labels[:10])
    torch.testing.assert_close(x, normalize(images[:10], MEAN, STD))
    augmented = _loader(data, shuffle=False, augmentation=Augmentation(crop_padding=2, flip=True))
    ax, ay = next(iter(augmented))
    assert torch.equal(ay, labels[:10]) and not torch.equal(ax, x)


def test_indices_restrict_the_loader_and_output_options(data):
    subset = torch.tensor([5, 17, 42, 99])
    loader = _loader(data, indices=subset, batch_size=3, dtype=torch.bfloat16, channels_last=True)
    assert loader.num_samples == 4 and len(loader) == 2
    batches = list(loader)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted((subset % 7).tolist())
    assert sorted(_order(_loader(data, indices=subset, batch_size=3), 0)) == subset.tolist()
    x, _ = batches[0]
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


def test_bad_inputs_are_rejected(data):
    images, labels = data
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, batch_size=4, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="labels of shape"):
        DeviceLoader(images, labels[:-1], batch_size=4, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, labels, batch_size=0, mean=MEAN, std=STD)


def test_train_and_eval_loaders_of_a_dataset():
    dataset = load_dataset("synthetic", num_train=50, num_test=13, height=8, width=8, seed=1)
    train, val = train_val_split(dataset.train_labels, val_size=10, seed=0)
    training = train_loader(dataset, 16, indices=train, seed=3)
    assert training.augmentation == dataset.default_augmentation() == Augmentation(crop_padding=1, flip=False)
    assert len(training) == 2 and training.drop_last and training.shuffle
    assert train_loader(dataset, 16, augmentation=Augmentation()).augmentation is None
    validation = eval_loader(dataset, 4, split="train", indices=val)
    assert torch.equal(torch.cat([y for _, y in validation]), dataset.train_labels[val])
    test = eval_loader(dataset, 4, split="test")
    assert len(test) == 4 and torch.equal(torch.cat([y for _, y in test]), dataset.test_labels)
    with pytest.raises(ValueError, match="split must be"):
        eval_loader(dataset, 4, split="val")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(data):
    augmentation = Augmentation(crop_padding=2, flip=True)
    cpu = _loader(data, augmentation=augmentation)
    images, labels = data
    cuda = _loader((images.cuda(), labels.cuda()), augmentation=augmentation)
    for (x, y), (cx, cy) in zip(cpu.epoch(5), cuda.epoch(5), strict=True):
        assert torch.equal(y, cy.cpu())
        torch.testing.assert_close(x, cx.cpu())

"""load_dataset: the real Fashion-MNIST, MNIST sources, generated data, the process cache, errors."""

import dataclasses
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from kwsearch.data import (
    FASHION_MNIST,
    MNIST,
    DataSourceError,
    FileSpec,
    UnknownDatasetError,
    channel_stats,
    dataset_names,
    load_dataset,
    mnist,
    synthetic,
)
from tests.helpers import serving

needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST.system_dirs[0]).is_dir(),
    reason="dataset-fashion-mnist is not installed (make setup installs it)",
)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("KWSEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@needs_fashion_mnist
def test_real_fashion_mnist_as_a_dataset():
    data = load_dataset("fashion-mnist", download=False)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_labels.dtype == torch.int64 and data.test_labels.dtype == torch.int64
    assert (data.num_classes, data.in_chans, data.image_size) == (10, 1, (28, 28))
    # The published statistics of the Fashion-MNIST training pixels.
    assert data.mean[0] == pytest.approx(0.2860, abs=1e-3)
    assert data.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert data.flip, "mirrored clothes keep their class"
    assert data.default_augmentation().crop_padding == 3
    assert load_dataset("fashion-mnist", download=False) is data


def test_channel_stats_are_exact():
    images = torch.randint(0, 256, (50, 3, 9, 7), generator=torch.Generator().manual_seed(2)).to(torch.uint8)
    mean, std = channel_stats(images)
    scaled = images.double() / 255
    expected_mean = scaled.mean(dim=(0, 2, 3))
    expected_std = scaled.std(dim=(0, 2, 3), unbiased=False)
    assert mean == pytest.approx(expected_mean.tolist(), abs=1e-12)
    assert std == pytest.approx(expected_std.tolist(), abs=1e-12)


def test_synthetic_is_deterministic_per_seed_and_learnable():
    a = synthetic(num_train=300, num_test=100, channels=2, height=12, width=10, num_classes=5, seed=7)
    b = synthetic(num_train=300, num_test=100, channels=2, height=12, width=10, num_classes=5, seed=7)
    c = synthetic(num_train=300, num_test=100, channels=2, height=12, width=10, num_classes=5, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["train_images"], c["train_images"])
    assert a["train_images"].shape == (300, 2, 12, 10) and a["train_images"].dtype == torch.uint8
    assert torch.bincount(a["train_labels"]).tolist() == [60] * 5
    # Learnable: the nearest class mean of the training images classifies held-out images.
    x, y = a["train_images"].flatten(1).float(), a["train_labels"]
    centroids = torch.stack([x[y == k].mean(0) for k in range(5)])
    predicted = torch.cdist(a["test_images"].flatten(1).float(), centroids).argmin(1)
    assert (predicted == a["test_labels"]).float().mean() > 0.9


def test_load_dataset_caches_one_object_per_arguments():
    options = {"num_train": 64, "num_test": 16, "height": 8, "width": 8, "seed": 3}
    first = load_dataset("synthetic", **options)
    assert load_dataset("synthetic", **options) is first
    assert load_dataset("Synthetic", download=False, **options) is first
    other = load_dataset("synthetic", **{**options, "seed": 4})
    assert other is not first and not torch.equal(other.train_images, first.train_images)
    assert first.train_images.shape == (64, 3, 8, 8) and first.num_classes == 10
    assert not first.flip
    assert first.mean == pytest.approx(channel_stats(first.train_images)[0])


def test_image_size_resizes_once_at_load():
    data = load_dataset("synthetic", image_size=(6, 4), num_train=40, num_test=10, height=12, width=8)
    assert data.train_images.shape == (40, 3, 6, 4) and data.test_images.shape == (10, 3, 6, 4)
    assert data.mean == pytest.approx(channel_stats(data.train_images)[0])


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(UnknownDatasetError) as error:
        load_dataset("imagenet")
    assert isinstance(error.value, ValueError)
    for name in dataset_names():
        assert name in str(error.value)
    assert set(dataset_names()) >= {"fashion-mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic"}
    with pytest.raises(ValueError, match=r"synthetic: unknown option.*colour"):
        load_dataset("synthetic", colour="red")
    with pytest.raises(ValueError, match="needs a root"):
        load_dataset("folder")


def _tiny_idx(count: int, label_offset: int) -> tuple[bytes, bytes]:
    images = bytes([0, 0, 8, 3, 0, 0, 0, count, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(4 * count))
    labels = bytes([0, 0, 8, 1, 0, 0, 0, count]) + bytes((label_offset + i) % 10 for i in range(count))
    return images, labels


def test_mnist_downloads_and_verifies_through_its_spec(isolated):
    served = isolated / "served"
    served.mkdir()
    contents = dict(zip(("train-images", "train-labels"), _tiny_idx(3, 0), strict=True))
    contents.update(zip(("t10k-images", "t10k-labels"), _tiny_idx(2, 5), strict=True))
    files = []
    for file in MNIST.files:
        data = contents[file.name.split("-idx")[0]]
        (served / file.name).write_bytes(gzip.compress(data))
        files.append(FileSpec(file.name, hashlib.sha256(data).hexdigest()))
    spec = dataclasses.replace(MNIST, files=tuple(files))
    with serving(served) as url:
        data = mnist(spec=spec, mirrors=[url], timeout=5)
    assert data["train_images"].shape == (3, 2, 2) and data["test_labels"].tolist() == [5, 6]


def test_the_published_mnist_digests_reject_other_files(isolated):
    for file in MNIST.files:
        (isolated / file.name).write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte\.gz: SHA-256 of the contents"):
        load_dataset("mnist", root=isolated, download=False)
    assert len({f.sha256 for f in MNIST.files}) == 4

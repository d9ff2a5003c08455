"""Fashion-MNIST sources: the real Debian files, checksum failures, download from a local mirror."""

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from kwsearch.data import FASHION_MNIST, DataSourceError, fashion_mnist, locate_files, read_idx_bytes
from kwsearch.data.sources import DatasetSpec, FileSpec
from tests.helpers import serving

SYSTEM_DIR = Path(FASHION_MNIST.system_dirs[0])
needs_system_copy = pytest.mark.skipif(
    not SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist is not installed (make setup installs it)"
)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user data dir, an empty cache, and no system folder unless a test adds one."""
    monkeypatch.delenv("KWSEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _spec_without_system_dir(**changes):
    fields = dict(FASHION_MNIST.__dict__, system_dirs=(), **changes)
    return DatasetSpec(**fields)


@needs_system_copy
def test_real_fashion_mnist_shapes_and_labels(isolated):
    data = fashion_mnist(download=False)
    assert data["train_images"].shape == (60000, 28, 28)
    assert data["test_images"].shape == (10000, 28, 28)
    assert data["train_images"].dtype == torch.uint8
    assert torch.equal(torch.bincount(data["train_labels"].long()), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(data["test_labels"].long()), torch.full((10,), 1000))


@needs_system_copy
def test_damaged_file_is_named_in_the_error(isolated):
    user_dir = isolated / "user"
    shutil.copytree(SYSTEM_DIR, user_dir)
    labels = user_dir / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] ^= 1
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataSourceError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256"):
        locate_files(FASHION_MNIST, root=user_dir, download=False)


def test_missing_files_without_network_say_what_to_install(isolated):
    spec = _spec_without_system_dir()
    # A closed port on this machine: the real download path runs and fails at once.
    with pytest.raises(DataSourceError) as error:
        locate_files(spec, mirrors=["http://127.0.0.1:9/"], timeout=2)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz not found" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "KWSEARCH_DATA_DIR" in message
    assert not any((isolated / "cache").rglob("*.part")), "a failed download must leave nothing behind"


@pytest.fixture
def local_mirror(tmp_path):
    """Serve a tiny made-up IDX data set over HTTP on the loopback interface."""
    served = tmp_path / "served"
    served.mkdir()
    images = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(8))
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 7])
    (served / "images.gz").write_bytes(gzip.compress(images))
    (served / "labels.gz").write_bytes(gzip.compress(labels))
    with serving(served) as url:
        yield url, images, labels


def test_download_verifies_and_caches(isolated, local_mirror):
    import hashlib

    url, images, labels = local_mirror
    spec = DatasetSpec(
        name="tiny",
        files=(
            FileSpec("images.gz", hashlib.sha256(images).hexdigest()),
            FileSpec("labels.gz", hashlib.sha256(labels).hexdigest()),
        ),
        system_dirs=(),
        mirrors=(url,),
        install_hint="none",
    )
    contents = locate_files(spec)
    assert read_idx_bytes(contents["images.gz"]).tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    assert read_idx_bytes(contents["labels.gz"]).tolist() == [3, 7]
    assert (isolated / "cache" / "kwsearch" / "tiny" / "images.gz").is_file()
    # Second call reads the cache: it works with the mirror gone.
    assert locate_files(spec, mirrors=["http://127.0.0.1:9/"])["labels.gz"] == labels


def test_download_with_wrong_checksum_is_rejected_and_not_kept(isolated, local_mirror):
    url, _, _ = local_mirror
    spec = DatasetSpec("tiny", (FileSpec("images.gz", "0" * 64),), (), (url,), "none")
    with pytest.raises(DataSourceError, match="SHA-256"):
        locate_files(spec)
    assert not list((isolated / "cache").rglob("images.gz*"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "bad magic"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "announces 11 bytes"),
    ],
)
def test_malformed_idx_is_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        read_idx_bytes(data, "x.idx")

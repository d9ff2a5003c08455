"""CIFAR python archives: the parser on small archives written here in the published format, the
download and checksum path through a local mirror, and refusal of foreign pickles."""

import dataclasses
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from kwsearch.data import (
    CIFAR10,
    CIFAR100,
    DataSourceError,
    cifar10,
    cifar100,
    load_dataset,
    read_cifar_archive,
)
from tests.helpers import serving


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("KWSEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _batch(n: int, first: int, label_keys: tuple[bytes, ...]) -> bytes:
    # Pixel values encode (sample, position) so the layout can be checked; labels count up.
    data = (np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) + first * 7) % 251
    batch = {b"batch_label": b"test batch", b"data": data.astype(np.uint8), b"filenames": [b"x.png"] * n}
    for key in label_keys:
        batch[key] = [(first + i) % 10 for i in range(n)]
    # Protocol 2 with byte-string keys, as the published (Python 2) pickles are.
    return pickle.dumps(batch, protocol=2)


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def cifar10_archive(per_batch: int = 3) -> bytes:
    members = {
        f"cifar-10-batches-py/data_batch_{i + 1}": _batch(per_batch, i * per_batch, (b"labels",))
        for i in range(5)
    }
    members["cifar-10-batches-py/test_batch"] = _batch(2, 100, (b"labels",))
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"a"] * 10}, protocol=2)
    return _archive(members)


def cifar100_archive() -> bytes:
    keys = (b"fine_labels", b"coarse_labels")
    return _archive(
        {"cifar-100-python/train": _batch(4, 0, keys), "cifar-100-python/test": _batch(2, 50, keys)}
    )


def test_cifar10_archive_is_decoded_to_nchw_uint8():
    data = read_cifar_archive(cifar10_archive(), "cifar10", "small.tar.gz")
    assert data["train_images"].shape == (15, 3, 32, 32) and data["train_images"].dtype == torch.uint8
    assert data["test_images"].shape == (2, 3, 32, 32)
    assert data["train_labels"].dtype == torch.int64
    assert data["train_labels"].tolist() == [i % 10 for i in range(15)]
    # Row layout: 1024 red values, then green, then blue, each row-major over 32x32.
    flat = (np.arange(3 * 3072).reshape(3, 3072) + 0) % 251
    first_batch = torch.from_numpy(flat.astype(np.uint8)).view(3, 3, 32, 32)
    assert torch.equal(data["train_images"][:3], first_batch)
    assert int(data["train_images"][1, 2, 5, 7]) == (3072 + 2 * 1024 + 5 * 32 + 7) % 251


def test_cifar100_uses_the_fine_labels():
    data = read_cifar_archive(cifar100_archive(), "cifar100")
    assert data["train_images"].shape == (4, 3, 32, 32)
    assert data["test_labels"].tolist() == [0, 1]


def test_malformed_archives_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"bad\.tar\.gz: not a readable tar archive"):
        read_cifar_archive(b"not a tar file at all" * 40, "cifar10", "bad.tar.gz")
    with pytest.raises(ValueError, match="no member cifar-10-batches-py/data_batch_1"):
        read_cifar_archive(cifar100_archive(), "cifar10", "wrong.tar.gz")


def test_foreign_objects_in_a_batch_pickle_are_refused():
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    members = {
        f"cifar-10-batches-py/data_batch_{i}": pickle.dumps(Payload(), protocol=2) for i in range(1, 6)
    }
    members["cifar-10-batches-py/test_batch"] = _batch(2, 0, (b"labels",))
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        read_cifar_archive(_archive(members), "cifar10", "evil.tar.gz")


def test_download_verifies_the_archive_sha256_and_parses_it(isolated):
    served = isolated / "served"
    served.mkdir()
    archive = cifar10_archive()
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    (file,) = CIFAR10.files
    digest = hashlib.sha256(archive).hexdigest()
    spec = dataclasses.replace(CIFAR10, files=(dataclasses.replace(file, sha256=digest),))
    with serving(served) as url:
        data = cifar10(spec=spec, mirrors=[url], timeout=5)
    assert data["train_images"].shape == (15, 3, 32, 32)
    # Verified over the file as published: the cached copy is the compressed archive itself.
    assert (isolated / "cache" / "kwsearch" / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive


def test_the_published_digests_reject_an_other_archive(isolated):
    (isolated / "cifar-100-python.tar.gz").write_bytes(cifar100_archive())
    with pytest.raises(DataSourceError, match="SHA-256 of the file is"):
        cifar100(root=isolated, download=False)
    with pytest.raises(DataSourceError, match=r"cifar-10-python\.tar\.gz not found"):
        load_dataset("cifar10", root=isolated / "empty", download=False)
    assert CIFAR100.files[0].digest_of == "file"

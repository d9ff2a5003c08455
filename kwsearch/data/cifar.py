"""Decoder for the CIFAR-10 / CIFAR-100 python archives (``cifar-10-python.tar.gz`` and
``cifar-100-python.tar.gz``): pickled dicts of a (N, 3072) uint8 ``data`` array and a label list."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from typing import Any, Literal

import numpy as np
import torch

# Members of each archive, by split, and the key of the labels in each batch.
_LAYOUT: dict[str, tuple[tuple[str, ...], tuple[str, ...], bytes]] = {
    "cifar10": (
        tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
        ("cifar-10-batches-py/test_batch",),
        b"labels",
    ),
    "cifar100": (("cifar-100-python/train",), ("cifar-100-python/test",), b"fine_labels"),
}

# What a CIFAR batch pickle may reference: numpy's array reconstruction (under the names numpy 1
# and numpy 2 write) and the codec Python 3 uses for bytes in protocol 2. Anything else is refused,
# so a damaged or hostile archive cannot run code while it is unpickled.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _load_batch(archive: tarfile.TarFile, member: str, label_key: bytes, name: str) -> tuple[Any, Any]:
    try:
        stream = archive.extractfile(member)
    except KeyError:
        stream = None
    if stream is None:
        raise ValueError(f"{name}: no member {member} (not a CIFAR python archive?)")
    try:
        # encoding="bytes": the batches were pickled by Python 2, their keys are byte strings.
        batch = _BatchUnpickler(stream, encoding="bytes").load()
        return batch[b"data"], batch[label_key]
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as error:
        raise ValueError(f"{name}: {member} is not a CIFAR batch ({error})") from error


def _split(archive: tarfile.TarFile, members: tuple[str, ...], label_key: bytes, name: str):
    images, labels = [], []
    for member in members:
        data, batch_labels = _load_batch(archive, member, label_key, name)
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != data.shape[0]:
            raise ValueError(
                f"{name}: {member} holds data of shape {data.shape} and {len(batch_labels)} labels, "
                "expected (N, 3072) and N"
            )
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R plane, G plane, B plane: CHW
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def read_cifar_archive(
    data: bytes, kind: Literal["cifar10", "cifar100"], name: str = "<archive>"
) -> dict[str, torch.Tensor]:
    """Decode a CIFAR python archive (gzip-compressed or plain tar bytes) without extracting it.

    Returns uint8 ``train_images`` / ``test_images`` of shape (N, 3, 32, 32) and int64
    ``train_labels`` / ``test_labels`` (CIFAR-100: the fine labels). Raises ValueError naming
    ``name`` when the bytes are not a tar archive or a member is missing or malformed.
    """
    if kind not in _LAYOUT:
        raise ValueError(f"unknown CIFAR kind {kind!r}; known: {', '.join(_LAYOUT)}")
    train_members, test_members, label_key = _LAYOUT[kind]
    try:
        # Decompress once: reading members out of a gzip stream seeks back and inflates it again.
        plain = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as archive:
            train_images, train_labels = _split(archive, train_members, label_key, name)
            test_images, test_labels = _split(archive, test_members, label_key, name)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"{name}: not a readable tar archive ({error})") from error
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }

"""Batches straight from uint8 tensors on the training device: no DataLoader workers, no
per-sample Python.

Exact resumption: an epoch's sample order and augmentation draws come from a CPU generator seeded
with a digest of (seed, epoch) only, so a run interrupted at epoch ``e`` and resumed with
``set_epoch(e)`` (or ``epoch(e, start_batch=b)`` mid-epoch) sees exactly the batches an
uninterrupted run would, on any device, whatever happened in earlier epochs or other loaders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from kwsearch.data.augment import (
    Augmentation,
    AugmentParams,
    apply_normalization,
    augment,
    draw_params,
    normalization_constants,
)
from kwsearch.data.datasets import Dataset


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the generator seed of ``epoch`` for a loader seeded with ``seed``: a digest, so
    nearby (seed, epoch) pairs give unrelated streams and no pair collides with another by
    arithmetic (seed + epoch would make seed 1 epoch 0 equal seed 0 epoch 1)."""
    digest = hashlib.sha256(f"kwsearch-loader:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DeviceLoader:
    """Iterate (images, labels) batches of a data set held as tensors on one device.

    ``images`` are uint8 (N, C, H, W) and ``labels`` int64 (N,) on the same device; ``indices``
    (optional) restricts the loader to those samples, e.g. a training or validation split. Each
    batch is normalised with ``mean``/``std`` to ``dtype`` (channels-last memory if asked), after
    ``augmentation`` when one is given. With ``shuffle`` every epoch has its own order derived
    from (``seed``, epoch); without it samples come in ``indices`` order. ``drop_last`` drops a
    final short batch (for training, so batch statistics never see a tiny batch).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        indices: torch.Tensor | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if labels.device != images.device:
            raise ValueError(f"images on {images.device} but labels on {labels.device}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"need one mean and std per channel ({images.shape[1]})")
        self.images = images
        self.labels = labels
        self.indices = (
            torch.arange(images.shape[0], device=images.device)
            if indices is None
            else indices.to(device=images.device, dtype=torch.long)
        )
        self.batch_size = batch_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # On the device once: building them per batch would copy from the host every step.
        self._scale, self._shift = normalization_constants(self.mean, self.std, images.device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self.dtype = dtype
        self.channels_last = channels_last
        self._epoch = 0

    @property
    def num_samples(self) -> int:
        """The number of samples the loader draws from (its indices)."""
        return self.indices.numel()

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next plain iteration (``for x, y in loader``) produce epoch ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch = epoch

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, AugmentParams | None]:
        """Return epoch ``epoch``'s sample order (dataset indices, on the data's device) and its
        augmentation parameters (one row per position in that order; None without augmentation).

        Everything comes from one CPU generator seeded by `epoch_seed` (order first, then the
        augmentation draws), so it depends on (seed, epoch) and the loader's settings only.
        """
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        if self.shuffle:
            order = self.indices[
                torch.randperm(self.num_samples, generator=generator).to(self.indices.device)
            ]
        else:
            order = self.indices
        params = None
        if self.augmentation is not None:
            params = draw_params(self.num_samples, self.augmentation, generator).to(self.images.device)
        return order, params

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield epoch ``epoch``'s batches from batch ``start_batch`` on (to resume mid-epoch):
        ``dtype`` images (B, C, H, W), normalised and, with an augmentation, augmented; and their
        int64 labels (B,)."""
        order, params = self.epoch_plan(epoch)
        for batch in range(start_batch, len(self)):
            positions = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            index = order[positions]
            images = self.images[index]
            if self.augmentation is not None and params is not None:
                images = augment(images, self.augmentation, params[positions])
            x = apply_normalization(images, self._scale, self._shift, self.dtype, self.channels_last)
            yield x, self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(self._epoch)


def train_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    indices: torch.Tensor | None = None,
    seed: int = 0,
    augmentation: Augmentation | None = None,
    drop_last: bool = True,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> DeviceLoader:
    """Return a shuffling, augmenting loader over ``dataset``'s training images (those at
    ``indices`` only, e.g. the training part of `train_val_split`).

    ``augmentation`` None means the data set's `Dataset.default_augmentation`; pass
    ``Augmentation()`` for none. Short final batches are dropped unless ``drop_last`` is False.
    """
    return DeviceLoader(
        dataset.train_images,
        dataset.train_labels,
        batch_size=batch_size,
        mean=dataset.mean,
        std=dataset.std,
        indices=indices,
        shuffle=True,
        drop_last=drop_last,
        seed=seed,
        augmentation=dataset.default_augmentation() if augmentation is None else augmentation,
        dtype=dtype,
        channels_last=channels_last,
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    split: Literal["train", "test"],
    indices: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> DeviceLoader:
    """Return a loader over ``split`` in a fixed order, without augmentation, keeping the last short
    batch: ``split="train"`` with validation ``indices`` for searches (which select on validation
    and never look at the test set), ``split="test"`` for final evaluation only. Raises ValueError
    on another split name."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = (
        (dataset.train_images, dataset.train_labels)
        if split == "train"
        else (dataset.test_images, dataset.test_labels)
    )
    return DeviceLoader(
        images,
        labels,
        batch_size=batch_size,
        mean=dataset.mean,
        std=dataset.std,
        indices=indices,
        dtype=dtype,
        channels_last=channels_last,
    )

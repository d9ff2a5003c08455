"""Batches straight from uint8 tensors on the training device: no DataLoader workers, no
per-sample Python.

Exact resumption: an epoch's sample order and augmentation draws come from a CPU generator seeded
with a digest of (seed, epoch) only, so a run interrupted at epoch ``e`` and resumed with
``set_epoch(e)`` (or ``epoch(e, start_batch=b)`` mid-epoch) sees exactly the batches an
uninterrupted run would, on any device, whatever happened in earlier epochs or other loaders.

Data-parallel workers share one plan: with ``shard=(rank, workers)`` a loader yields its worker's
share of every batch of that plan, so N workers together see exactly the batches one worker would.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from kwsearch.data.datasets import Dataset, StreamedDataset
from kwsearch.data.resize import resize_images


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
    final short batch (for training, so batch statistics never see a tiny batch). With ``shard``
    (rank, workers) it yields only worker ``rank``'s consecutive share of each batch (training
    batches must then split evenly); ``len`` and ``num_samples`` still count the whole plan.
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
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self._check_source(images, labels)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"need one mean and std per channel ({images.shape[1]})")
        rank, workers = shard
        if not 0 <= rank < workers:
            raise ValueError(f"shard must be (rank, workers) with 0 <= rank < workers, got {shard}")
        if drop_last and batch_size % workers:
            raise ValueError(f"a batch of {batch_size} does not split evenly over {workers} workers")
        self.images = images
        self.labels = labels
        # On the CPU: the plan is drawn there (its generator lives there), then moved to the device.
        self.indices = (
            torch.arange(labels.shape[0]) if indices is None else indices.to(device="cpu", dtype=torch.long)
        )
        self.batch_size = batch_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # On the device once: building them per batch would copy from the host every step.
        self._scale, self._shift = normalization_constants(self.mean, self.std, labels.device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self.dtype = dtype
        self.channels_last = channels_last
        self.shard = shard
        self._epoch = 0

    def _check_source(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if labels.device != images.device:
            raise ValueError(f"images on {images.device} but labels on {labels.device}")

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
        """Return epoch ``epoch``'s sample order (dataset indices, on the labels' device) and its
        augmentation parameters (one row per position in that order; None without augmentation).

        Everything comes from one CPU generator seeded by `epoch_seed` (order first, then the
        augmentation draws), so it depends on (seed, epoch) and the loader's settings only.
        """
        order, params = self._cpu_plan(epoch)
        device = self.labels.device
        return order.to(device), None if params is None else params.to(device)

    def _cpu_plan(self, epoch: int) -> tuple[torch.Tensor, AugmentParams | None]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(self.num_samples, generator=generator)]
        params = None
        if self.augmentation is not None:
            params = draw_params(self.num_samples, self.augmentation, generator)
        return order, params

    def batch_positions(self, start_batch: int = 0) -> Iterator[slice]:
        """This worker's positions in the epoch order, batch by batch from ``start_batch`` on: the
        whole batch for one worker, its consecutive share for worker ``rank`` of several (a share
        that would be empty, at the end of a short last batch, is left out)."""
        rank, workers = self.shard
        for batch in range(start_batch, len(self)):
            start = batch * self.batch_size
            length = min(self.batch_size, self.num_samples - start)
            low, high = start + rank * length // workers, start + (rank + 1) * length // workers
            if high > low:
                yield slice(low, high)

    def _images(self, order: torch.Tensor, positions: list[slice]) -> Iterator[torch.Tensor]:
        """The uint8 images at ``order[p]`` for each ``p`` in ``positions`` (``order`` on the CPU),
        on the training device."""
        device_order = order.to(self.images.device)
        for where in positions:
            yield self.images[device_order[where]]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield epoch ``epoch``'s batches from batch ``start_batch`` on (to resume mid-epoch):
        ``dtype`` images (B, C, H, W), normalised and, with an augmentation, augmented; and their
        int64 labels (B,)."""
        order, params = self._cpu_plan(epoch)
        device = self.labels.device
        device_order = order.to(device)
        device_params = None if params is None else params.to(device)
        positions = list(self.batch_positions(start_batch))
        for where, images in zip(positions, self._images(order, positions), strict=True):
            if device_params is not None:
                images = augment(images, self.augmentation, device_params[where])
            x = apply_normalization(images, self._scale, self._shift, self.dtype, self.channels_last)
            yield x, self.labels[device_order[where]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(self._epoch)


class StreamLoader(DeviceLoader):
    """A `DeviceLoader` whose images stay on disk: uint8 (N, C, H, W) in a memory-mapped CPU
    tensor, read batch by batch by background threads while the model trains.

    ``labels`` live on the training device; ``rows`` (optional) maps each label's position to its
    image's row (a split of one image file). The plan, the shards and the on-device augmentation
    are `DeviceLoader`'s, so both loaders yield the very same batches from the same images.
    ``readers`` threads gather up to ``prefetch`` batches ahead into pinned memory (on a GPU) and
    the copy to the device does not block; images are resized to ``resize`` (H, W) on the device
    when given.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        rows: torch.Tensor | None = None,
        resize: tuple[int, int] | None = None,
        readers: int = 4,
        prefetch: int = 6,
        **options,
    ) -> None:
        self._rows = None if rows is None else rows.to(device="cpu", dtype=torch.long)
        super().__init__(images, labels, **options)
        if readers < 1 or prefetch < 1:
            raise ValueError(f"readers and prefetch must be positive, got {readers} and {prefetch}")
        self.resize = resize
        self.readers = readers
        self.prefetch = prefetch

    def _check_source(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        rows = images.shape[0] if self._rows is None else self._rows.numel()
        if labels.shape != (rows,):
            raise ValueError(f"{rows} images but labels of shape {tuple(labels.shape)}")
        if images.device.type != "cpu":
            raise ValueError(f"streamed images are read on the CPU, got them on {images.device}")

    def _read(self, rows: torch.Tensor) -> torch.Tensor:
        # index_select releases the GIL: the page reads and the copy run beside the training step.
        pin = self.labels.device.type == "cuda"
        out = torch.empty((rows.numel(), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        return torch.index_select(self.images, 0, rows, out=out)

    def _images(self, order: torch.Tensor, positions: list[slice]) -> Iterator[torch.Tensor]:
        rows = order if self._rows is None else self._rows[order]
        device = self.labels.device
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(self.readers, thread_name_prefix="kwsearch-reader") as pool:
            try:
                for where in positions:
                    pending.append(pool.submit(self._read, rows[where]))
                    if len(pending) >= self.prefetch:
                        yield self._on_device(pending.popleft().result(), device)
                while pending:
                    yield self._on_device(pending.popleft().result(), device)
            finally:  # an abandoned epoch (the trainer reads one batch to choose its paths)
                for future in pending:
                    future.cancel()

    def _on_device(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        return images if self.resize is None else resize_images(images, self.resize)


def _stream_loader(
    dataset: StreamedDataset, split: Literal["train", "test"], batch_size: int, **options
) -> StreamLoader:
    images, labels, rows = (
        (dataset.train_images, dataset.train_labels, dataset.train_rows)
        if split == "train"
        else (dataset.test_images, dataset.test_labels, dataset.test_rows)
    )
    return StreamLoader(
        images,
        labels,
        rows=rows,
        resize=dataset.resize,
        batch_size=batch_size,
        mean=dataset.mean,
        std=dataset.std,
        **options,
    )


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
    shard: tuple[int, int] = (0, 1),
) -> DeviceLoader:
    """Return a shuffling, augmenting loader over ``dataset``'s training images (those at
    ``indices`` only, e.g. the training part of `train_val_split`): a `DeviceLoader`, or for a
    streamed data set a `StreamLoader` reading them from disk.

    ``augmentation`` None means the data set's `Dataset.default_augmentation`; pass
    ``Augmentation()`` for none. Short final batches are dropped unless ``drop_last`` is False.
    ``shard`` (rank, workers) gives a data-parallel worker its share of every batch.
    """
    options = {
        "indices": indices,
        "shuffle": True,
        "drop_last": drop_last,
        "seed": seed,
        "augmentation": dataset.default_augmentation() if augmentation is None else augmentation,
        "dtype": dtype,
        "channels_last": channels_last,
        "shard": shard,
    }
    if isinstance(dataset, StreamedDataset):
        return _stream_loader(dataset, "train", batch_size, **options)
    return DeviceLoader(
        dataset.train_images,
        dataset.train_labels,
        batch_size=batch_size,
        mean=dataset.mean,
        std=dataset.std,
        **options,
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    split: Literal["train", "test"],
    indices: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> DeviceLoader:
    """Return a loader over ``split`` in a fixed order, without augmentation, keeping the last short
    batch: ``split="train"`` with validation ``indices`` for searches (which select on validation
    and never look at the test set), ``split="test"`` for final evaluation only. With ``shard``
    each data-parallel worker evaluates its share of every batch. Raises ValueError on another
    split name."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(dataset, StreamedDataset):
        return _stream_loader(
            dataset, split, batch_size, indices=indices, dtype=dtype, channels_last=channels_last, shard=shard
        )
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
        shard=shard,
    )

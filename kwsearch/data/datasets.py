"""`load_dataset`: every built-in data set as uint8 tensors on the training device, loaded once
per process; a prepared image cache (`kwsearch.data.prepared`) either so, or streamed from disk.

A worker process runs many trials on the same data; `load_dataset` keeps each data set it loaded
(keyed by every argument, the device included) and hands the same `Dataset` object to every later
call, so a trial never re-reads, re-decodes or re-uploads its data.
"""

from __future__ import annotations

import inspect
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from kwsearch.data import sources
from kwsearch.data.augment import Augmentation
from kwsearch.data.folder import read_image_folder
from kwsearch.data.pixel_stats import channel_stats
from kwsearch.data.prepared import CachePart, ImageCache, open_image_cache
from kwsearch.data.resize import as_size, resize_images
from kwsearch.data.sources import DataSourceError
from kwsearch.data.splits import train_val_split
from kwsearch.data.synthetic import synthetic

FOLDER_IMAGE_SIZE = 32  # an image folder is read at this size unless a recipe's resolution says


class UnknownDatasetError(ValueError):
    """A data set name that is not registered; the message lists the known names."""


Loading = Literal["auto", "memory", "stream"]
STREAMED = ("prepared",)  # the data sets that can be read from disk while training


class _Augmented:
    """What both kinds of data set share: their usual training augmentation."""

    image_size: tuple[int, int]
    flip: bool

    def default_augmentation(self) -> Augmentation:
        """The usual training augmentation for this data: random crops from the image padded by an
        eighth of its height (4 pixels at 32x32, 3 at 28x28), flips where they keep the label."""
        return Augmentation(crop_padding=self.image_size[0] // 8, flip=self.flip)


@dataclass(frozen=True, eq=False)
class Dataset(_Augmented):
    """A classification data set on one device.

    ``train_images`` / ``test_images`` are uint8 (N, C, H, W); ``train_labels`` / ``test_labels``
    int64 (N,) class indices below ``num_classes``. ``mean`` / ``std`` are per channel, of the
    training pixels scaled to [0, 1] (a std below 1/255, a constant channel, is raised to 1/255).
    ``flip`` says whether a mirrored image keeps its label (the default for horizontal-flip
    augmentation: true for clothes and objects, false for digits). Compared by identity: the
    process cache hands out one object per data set.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False
    class_names: tuple[str, ...] = field(default=())

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return tuple(self.train_images.shape[-2:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.train_images.device


@dataclass(frozen=True, eq=False)
class StreamedDataset(_Augmented):
    """A prepared image cache read from disk while training: ``train_images`` / ``test_images``
    uint8 (N, C, S, S) CPU tensors memory-mapped from the cache's files (the same file for both
    when the cache has one part, ``train_rows`` / ``test_rows`` then selecting each split's rows);
    ``train_labels`` / ``test_labels`` int64 on the training device, one per row of the split.
    Batches are resized on the device to ``resize`` when given. The other fields are `Dataset`'s.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    train_rows: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor
    test_rows: torch.Tensor | None
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: tuple[int, int] | None = None
    flip: bool = True
    class_names: tuple[str, ...] = field(default=())

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image as the model sees it."""
        return self.resize or tuple(self.train_images.shape[-2:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        """The training device (where the labels live and batches go)."""
        return self.train_labels.device


@dataclass(frozen=True)
class _Raw:
    """What a reader returns: CPU tensors and the facts `load_dataset` cannot compute (and the
    pixel statistics, when the reader knows them)."""

    tensors: dict[str, torch.Tensor]
    num_classes: int
    flip: bool
    class_names: tuple[str, ...] = ()
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass(frozen=True)
class DataShape:
    """What a data set's images are, known before it is read; None where only reading tells (the
    classes of an image folder, its channels in a mode other than RGB or L)."""

    in_chans: int | None
    num_classes: int | None
    image_size: tuple[int, int]


# The published data sets' shapes (their readers' class counts come from here too).
_PUBLISHED = {
    "fashion-mnist": DataShape(1, 10, (28, 28)),
    "mnist": DataShape(1, 10, (28, 28)),
    "cifar10": DataShape(3, 10, (32, 32)),
    "cifar100": DataShape(3, 100, (32, 32)),
}


def _read_fashion_mnist(root: str | Path | None, download: bool) -> _Raw:
    return _Raw(sources.fashion_mnist(root, download), _PUBLISHED["fashion-mnist"].num_classes, flip=True)


def _read_mnist(root: str | Path | None, download: bool) -> _Raw:
    return _Raw(sources.mnist(root, download), _PUBLISHED["mnist"].num_classes, flip=False)


def _read_cifar10(root: str | Path | None, download: bool) -> _Raw:
    return _Raw(sources.cifar10(root, download), _PUBLISHED["cifar10"].num_classes, flip=True)


def _read_cifar100(root: str | Path | None, download: bool) -> _Raw:
    return _Raw(sources.cifar100(root, download), _PUBLISHED["cifar100"].num_classes, flip=True)


def _read_synthetic(root: str | Path | None, download: bool, **options: Any) -> _Raw:
    """The options are :func:`synthetic`'s own (``_OPTIONS_OF`` checks them against it)."""
    arguments = inspect.signature(synthetic).bind(**options)
    arguments.apply_defaults()
    tensors = synthetic(**arguments.arguments)
    # The class patterns are not mirror-symmetric: a flipped image would be another pattern.
    return _Raw(tensors, arguments.arguments["num_classes"], flip=False)


def _read_folder(
    root: str | Path | None,
    download: bool,
    image_size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    flip: bool = True,
    use_cache: bool = True,
) -> _Raw:
    if root is None:
        raise ValueError("the folder data set needs a root: a folder of class folders of images")
    root = Path(root)
    size = as_size(image_size if image_size is not None else FOLDER_IMAGE_SIZE)
    if (root / "train").is_dir() and (root / "test").is_dir():
        # Given splits: the training folder defines the classes, the test folder must use them.
        train_images, train_labels, classes = read_image_folder(root / "train", size, mode, use_cache)
        test_images, test_labels, test_classes = read_image_folder(root / "test", size, mode, use_cache)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataSourceError(
                f"{root / 'test'}: classes {', '.join(unknown)} are not in {root / 'train'}"
            )
        remap = torch.tensor([classes.index(name) for name in test_classes], dtype=torch.int64)
        test_labels = remap[test_labels]
    else:
        images, labels, classes = read_image_folder(root, size, mode, use_cache)
        train_index, test_index = train_val_split(labels, val_fraction=test_fraction, seed=split_seed)
        train_images, train_labels = images[train_index], labels[train_index]
        test_images, test_labels = images[test_index], labels[test_index]
    tensors = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    return _Raw(tensors, len(classes), flip=flip, class_names=classes)


def _memory_mapped(images: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only: torch warns that it could not write to it (it never does)
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(images)


def _prepared_splits(
    cache: ImageCache, test_fraction: float, split_seed: int
) -> tuple[tuple[CachePart, torch.Tensor | None], tuple[CachePart, torch.Tensor | None]]:
    """The training and test images of a cache: its two parts, or rows of its one part split as
    a folder without a split is (stratified ``test_fraction``, ``split_seed``)."""
    if "all" not in cache.parts:
        return (cache.parts["train"], None), (cache.parts["test"], None)
    part = cache.parts["all"]
    train_rows, test_rows = train_val_split(
        torch.from_numpy(part.labels), val_fraction=test_fraction, seed=split_seed
    )
    return (part, train_rows), (part, test_rows)


def _read_prepared(
    root: str | Path | None,
    download: bool,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    flip: bool = True,
) -> _Raw:
    """A prepared cache read whole into memory (its own pixel statistics, so that memory and
    stream normalise alike)."""
    cache = open_image_cache(_prepared_root(root))
    tensors = {}
    splits = _prepared_splits(cache, test_fraction, split_seed)
    for split, (part, rows) in zip(("train", "test"), splits, strict=True):
        images, labels = _memory_mapped(part.images), torch.from_numpy(part.labels)
        if rows is not None:
            images, labels = images[rows], labels[rows]
        tensors[f"{split}_images"], tensors[f"{split}_labels"] = images.clone(), labels.clone()
    stats = (cache.statistics_part.mean, cache.statistics_part.std)
    return _Raw(tensors, len(cache.classes), flip=flip, class_names=cache.classes, stats=stats)


def _prepared_root(root: str | Path | None) -> Path:
    if root is None:
        raise ValueError("the prepared data set needs a root: a folder `kwsearch prepare` wrote")
    return Path(root)


def _stream_prepared(
    root: str | Path | None,
    device: torch.device,
    size: tuple[int, int] | None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    flip: bool = True,
) -> StreamedDataset:
    cache = open_image_cache(_prepared_root(root))
    (train, train_rows), (test, test_rows) = _prepared_splits(cache, test_fraction, split_seed)

    def labels(part: CachePart, rows: torch.Tensor | None) -> torch.Tensor:
        values = torch.from_numpy(part.labels)
        return (values if rows is None else values[rows]).to(device)

    stats = cache.statistics_part
    return StreamedDataset(
        name="prepared",
        train_images=_memory_mapped(train.images),
        train_labels=labels(train, train_rows),
        train_rows=train_rows,
        test_images=_memory_mapped(test.images),
        test_labels=labels(test, test_rows),
        test_rows=test_rows,
        num_classes=len(cache.classes),
        in_chans=cache.channels,
        mean=stats.mean,
        std=tuple(max(s, 1.0 / 255.0) for s in stats.std),
        resize=None if size == (cache.size, cache.size) else size,
        flip=flip,
        class_names=cache.classes,
    )


_READERS: dict[str, Callable[..., _Raw]] = {
    "fashion-mnist": _read_fashion_mnist,
    "mnist": _read_mnist,
    "cifar10": _read_cifar10,
    "cifar100": _read_cifar100,
    "folder": _read_folder,
    "prepared": _read_prepared,
    "synthetic": _read_synthetic,
}

# Readers that pass their options on to another function take that function's options.
_OPTIONS_OF: dict[str, Callable[..., Any]] = {"synthetic": synthetic}

_CACHE: dict[tuple, Dataset | StreamedDataset] = {}
_LOCK = threading.Lock()


def dataset_names() -> tuple[str, ...]:
    """Return the names `load_dataset` knows."""
    return tuple(_READERS)


def clear_dataset_cache() -> None:
    """Forget every data set `load_dataset` kept (their memory is freed once nothing else holds them)."""
    with _LOCK:
        _CACHE.clear()


def dataset_shape(
    name: str, image_size: int | tuple[int, int] | None = None, root: str | Path | None = None, **options: Any
) -> DataShape:
    """The shape of the images :func:`load_dataset` gives for the same arguments, without reading
    any (a prepared cache: its manifest). Raises UnknownDatasetError for an unknown name and
    ValueError for an option the data set does not take, as :func:`load_dataset` does, and
    DataSourceError for a prepared cache that cannot be opened."""
    key_name = name.strip().lower()
    reader = _READERS.get(key_name)
    if reader is None:
        raise UnknownDatasetError(f"unknown data set {name!r}; known: {', '.join(_READERS)}")
    _options_for(key_name, reader, options)
    size = as_size(image_size) if image_size is not None else None
    if key_name in _PUBLISHED:
        published = _PUBLISHED[key_name]
        return DataShape(published.in_chans, published.num_classes, size or published.image_size)
    if key_name == "synthetic":
        given = inspect.signature(synthetic).bind(**options)
        given.apply_defaults()
        made = given.arguments
        return DataShape(made["channels"], made["num_classes"], size or (made["height"], made["width"]))
    if key_name == "prepared":
        cache = open_image_cache(_prepared_root(root))
        return DataShape(cache.channels, len(cache.classes), size or (cache.size, cache.size))
    mode = inspect.signature(_read_folder).parameters["mode"].default
    mode = options.get("mode", mode)
    return DataShape({"RGB": 3, "L": 1}.get(mode), None, size or as_size(FOLDER_IMAGE_SIZE))


def _device_key(device: torch.device | str) -> torch.device:
    # "cuda" and "cuda:0" are the same device for the cache when device 0 is current.
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _options_for(name: str, reader: Callable[..., _Raw], options: dict[str, Any]) -> None:
    accepted = [
        p
        for p in inspect.signature(_OPTIONS_OF.get(name, reader)).parameters
        if p not in ("root", "download", "image_size")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; it accepts {', '.join(accepted) or 'none'}"
        )


def _as_nchw(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(1) if images.dim() == 3 else images  # IDX files hold (N, H, W)


def _build(name: str, raw: _Raw, device: torch.device, size: tuple[int, int] | None) -> Dataset:
    t = raw.tensors
    train_images = _as_nchw(t["train_images"]).to(device)
    test_images = _as_nchw(t["test_images"]).to(device)
    if size is not None:
        # Once here, on the device (fast there), rather than in every trial's loop.
        train_images, test_images = resize_images(train_images, size), resize_images(test_images, size)
    mean, std = channel_stats(train_images) if raw.stats is None else raw.stats
    # A constant channel has std 0; one grey level instead keeps normalisation finite.
    std = tuple(max(s, 1.0 / 255.0) for s in std)
    return Dataset(
        name=name,
        train_images=train_images,
        train_labels=t["train_labels"].to(device=device, dtype=torch.int64),
        test_images=test_images,
        test_labels=t["test_labels"].to(device=device, dtype=torch.int64),
        num_classes=raw.num_classes,
        in_chans=train_images.shape[1],
        mean=mean,
        std=std,
        flip=raw.flip,
        class_names=raw.class_names,
    )


def _available_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as info:
            line = next(line for line in info if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _automatic_loading(root: str | None, size: tuple[int, int] | None, device: torch.device) -> str:
    """Memory when a prepared cache's images, at the training size, take at most half of what is
    free on the device (the rest is the model's); stream otherwise."""
    cache = open_image_cache(_prepared_root(root))
    height, width = size or (cache.size, cache.size)
    images = sum(part.labels.size for part in cache.parts.values())
    needed = images * cache.channels * height * width
    return "memory" if needed <= _available_memory(device) // 2 else "stream"


def load_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = True,
    device: torch.device | str = "cpu",
    image_size: int | tuple[int, int] | None = None,
    loading: Loading = "auto",
    **options: Any,
) -> Dataset | StreamedDataset:
    """Return data set ``name`` on ``device``, loading it only the first time in this process.

    ``name`` is one of `dataset_names`: ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``
    (files found or downloaded as `kwsearch.data.sources` describes; ``root`` is a folder to look
    in first), ``folder`` (``root`` holds one folder of images per class, or ``train/`` and
    ``test/`` folders of them; options ``mode``, ``test_fraction``, ``split_seed``, ``flip``,
    ``use_cache``), ``prepared`` (``root`` is an image cache `kwsearch.data.prepare_image_cache`
    wrote; options ``test_fraction``, ``split_seed`` for a cache without a split, ``flip``) or
    ``synthetic`` (options ``num_train``, ``num_test``, ``channels``, ``height``, ``width``,
    ``num_classes``, ``seed``, ``noise``). ``image_size`` ((H, W) or a side) resizes every image
    once at load (folder images are read at that size, 32 by default).

    ``loading`` says where the images live: ``memory`` (a `Dataset`, tensors on ``device``),
    ``stream`` (a `StreamedDataset` read from disk batch by batch, resized on the device: the
    ``prepared`` data set only) or ``auto`` (memory, except a prepared cache whose images at the
    training size would take more than half of the device's free memory).

    Later calls with equal arguments return the very same object, whose tensors every trial shares:
    never modify them in place. (A folder changed on disk after its first load in this process is
    seen only after `clear_dataset_cache`.) Raises UnknownDatasetError (a
    ValueError) for an unknown name, ValueError for an option the data set does not take, a
    bad value or streaming asked of a data set held in memory, and DataSourceError when files
    cannot be found, fetched, verified or read (a prepared cache that is partial or damaged).
    """
    key_name = name.strip().lower()
    reader = _READERS.get(key_name)
    if reader is None:
        raise UnknownDatasetError(f"unknown data set {name!r}; known: {', '.join(_READERS)}")
    _options_for(key_name, reader, options)
    if loading not in ("auto", "memory", "stream"):
        raise ValueError(f"loading must be auto, memory or stream, got {loading!r}")
    if loading == "stream" and key_name not in STREAMED:
        raise ValueError(
            f"{name}: streaming reads an image cache from disk (data set `prepared`, written by "
            "`kwsearch prepare`); this data set is held in memory"
        )
    device = _device_key(device)
    size = as_size(image_size) if image_size is not None else None
    resolved_root = str(Path(root).expanduser().resolve()) if root is not None else None
    if loading == "auto":
        loading = _automatic_loading(resolved_root, size, device) if key_name in STREAMED else "memory"
    # `download` is left out: it changes where files may come from, not what they hold. Option
    # values go in by repr so that lists (unhashable) can be options too.
    key = (
        key_name,
        resolved_root,
        str(device),
        size,
        loading,
        tuple(sorted((k, repr(v)) for k, v in options.items())),
    )
    # One lock around the load: two threads asking at once must not both read the files.
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        if loading == "stream":
            dataset = _stream_prepared(resolved_root, device, size, **options)
            _CACHE[key] = dataset
            return dataset
        if "image_size" in inspect.signature(reader).parameters:
            raw, size = reader(resolved_root, download, image_size=size, **options), None
        else:
            raw = reader(resolved_root, download, **options)
        dataset = _build(key_name, raw, device, size)
        _CACHE[key] = dataset
        return dataset

"""Data sets kwsearch trains on: sources (find, download, verify), `load_dataset` (tensors on the
training device, cached per process), image folders prepared once into an on-disk cache (read in
memory or streamed), proxy controls (stratified subsets, validation splits, resolution), on-device
augmentation, the `DeviceLoader` and the `StreamLoader`."""

from kwsearch.data.augment import (
    Augmentation,
    AugmentParams,
    apply_normalization,
    augment,
    draw_params,
    hflip,
    normalization_constants,
    normalize,
    random_crop,
)
from kwsearch.data.cifar import read_cifar_archive
from kwsearch.data.datasets import (
    STREAMED,
    Dataset,
    DataShape,
    StreamedDataset,
    UnknownDatasetError,
    clear_dataset_cache,
    dataset_names,
    dataset_shape,
    load_dataset,
)
from kwsearch.data.folder import read_image_folder
from kwsearch.data.idx import read_idx_bytes
from kwsearch.data.loader import DeviceLoader, StreamLoader, epoch_seed, eval_loader, train_loader
from kwsearch.data.pixel_stats import channel_stats
from kwsearch.data.prepared import (
    ImageCache,
    PrepareSummary,
    open_image_cache,
    prepare_image_cache,
    verify_image_cache,
)
from kwsearch.data.resize import resize_images
from kwsearch.data.sources import (
    CIFAR10,
    CIFAR100,
    FASHION_MNIST,
    MNIST,
    DatasetSpec,
    DataSourceError,
    FileSpec,
    cifar10,
    cifar100,
    fashion_mnist,
    file_paths,
    locate_files,
    mnist,
)
from kwsearch.data.splits import stratified_subset, train_val_split
from kwsearch.data.synthetic import synthetic

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "FASHION_MNIST",
    "MNIST",
    "STREAMED",
    "AugmentParams",
    "Augmentation",
    "DataShape",
    "DataSourceError",
    "Dataset",
    "DatasetSpec",
    "DeviceLoader",
    "FileSpec",
    "ImageCache",
    "PrepareSummary",
    "StreamLoader",
    "StreamedDataset",
    "UnknownDatasetError",
    "apply_normalization",
    "augment",
    "channel_stats",
    "cifar10",
    "cifar100",
    "clear_dataset_cache",
    "dataset_names",
    "dataset_shape",
    "draw_params",
    "epoch_seed",
    "eval_loader",
    "fashion_mnist",
    "file_paths",
    "hflip",
    "load_dataset",
    "locate_files",
    "mnist",
    "normalization_constants",
    "normalize",
    "open_image_cache",
    "prepare_image_cache",
    "random_crop",
    "read_cifar_archive",
    "read_idx_bytes",
    "read_image_folder",
    "resize_images",
    "stratified_subset",
    "synthetic",
    "train_loader",
    "train_val_split",
    "verify_image_cache",
]

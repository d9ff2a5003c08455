"""Data sets kwsearch trains on."""

from kwsearch.data.idx import read_idx_bytes
from kwsearch.data.sources import (
    FASHION_MNIST,
    DatasetSpec,
    DataSourceError,
    FileSpec,
    fashion_mnist,
    locate_files,
)

__all__ = [
    "FASHION_MNIST",
    "DataSourceError",
    "DatasetSpec",
    "FileSpec",
    "fashion_mnist",
    "locate_files",
    "read_idx_bytes",
]

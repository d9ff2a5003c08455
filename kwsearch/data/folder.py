"""A folder of class folders of images (``root/<class>/<image>``), read once with Pillow, resized
to one size and kept as a uint8 tensor file beside the images.

The tensor file ``<root>/.kwsearch-cache-<H>x<W>-<mode>.pt`` records a digest of the image file
list with sizes and modification times; a folder whose files changed no longer matches it and is
read again. It is written to a temporary file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from kwsearch.atomic import torch_save_atomically
from kwsearch.data.resize import as_size
from kwsearch.data.sources import DataSourceError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_MODES = {"RGB": 3, "L": 1}


def cache_path(root: str | Path, size: int | tuple[int, int], mode: str = "RGB") -> Path:
    """Return the path of the tensor file that caches ``root`` at ``size`` in Pillow ``mode``."""
    height, width = as_size(size)
    return Path(root) / f".kwsearch-cache-{height}x{width}-{mode}.pt"


def list_images(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Return the class names (sorted) and every image as (path, class index), sorted by path.
    Raises DataSourceError when ``root`` is missing or holds no images."""
    if not root.is_dir():
        raise DataSourceError(f"{root}: no such folder (expected one sub-folder of images per class)")
    classes, files = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name[0] != "."
        )
        if images:
            files.extend((path, len(classes)) for path in images)
            classes.append(folder.name)
    if not files:
        raise DataSourceError(
            f"{root}: no images found; expected root/<class>/<image> with suffixes "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return classes, files


def fingerprint(root: Path, files: list[tuple[Path, int]], size: tuple[int, int], mode: str) -> str:
    """A digest of ``files`` (paths under ``root``, sizes, modification times) read at ``size`` in
    ``mode``: it changes when any file is added, removed or rewritten."""
    digest = hashlib.sha256(f"{size[0]}x{size[1]}-{mode}\n".encode())
    for path, _ in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_images(files: list[tuple[Path, int]], size: tuple[int, int], mode: str) -> torch.Tensor:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:  # an optional dependency: only image folders need it
        raise DataSourceError("reading an image folder needs Pillow: `pip install pillow`") from error
    height, width = size
    out = np.empty((len(files), height, width, _MODES[mode]), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as image:
                # Pillow's bilinear resize widens its filter when it shrinks: antialiased.
                resized = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                out[i] = np.asarray(resized).reshape(height, width, -1)
        except (UnidentifiedImageError, OSError) as error:
            raise DataSourceError(f"{path}: cannot read the image ({error})") from error
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _load_cache(path: Path, key: str) -> dict | None:
    try:
        cached = torch.load(path, weights_only=True)
    except Exception:  # missing, damaged, or from an incompatible version: read the images again
        return None
    return cached if isinstance(cached, dict) and cached.get("key") == key else None


def _save_cache(path: Path, payload: dict) -> None:
    try:
        torch_save_atomically(payload, path)
    except OSError as error:  # a read-only data folder still loads, only without the cache
        warnings.warn(f"could not write the image cache {path}: {error}", stacklevel=3)


def read_image_folder(
    root: str | Path, size: int | tuple[int, int], mode: str = "RGB", use_cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Read every image under ``root/<class>/`` converted to Pillow ``mode`` ("RGB" or "L") and
    resized to ``size`` ((H, W) or a square side).

    Returns uint8 images (N, C, H, W), int64 labels (N,) (class indices in sorted class-name order)
    and the class names. Uses and refreshes the folder's tensor cache unless ``use_cache`` is False.
    Raises DataSourceError when the folder is missing or holds no images, an image cannot be read,
    or Pillow is not installed; ValueError on a bad size or mode.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
    root = Path(root)
    size = as_size(size)
    classes, files = list_images(root)
    key = fingerprint(root, files, size, mode)
    path = cache_path(root, size, mode)
    cached = _load_cache(path, key) if use_cache else None
    if cached is not None:
        return cached["images"], cached["labels"], tuple(cached["classes"])
    images = _read_images(files, size, mode)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    if use_cache:
        _save_cache(path, {"key": key, "images": images, "labels": labels, "classes": list(classes)})
    return images, labels, tuple(classes)

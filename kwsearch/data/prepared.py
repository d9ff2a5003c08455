"""Image folders larger than memory: decoded once into a cache of uint8 files on disk, which
training reads memory-mapped (whole into memory, or batch by batch while it trains).

A cache folder holds, per part (``train`` and ``test`` when the image folder has ``train/`` and
``val/`` or ``test/`` folders, the ImageNet layout; else one part ``all``):

- ``<part>.images``: every image as uint8 (C, S, S), one after another in file order: converted
  to the Pillow mode, resized (antialiased) so that its shorter side is S, the centre S x S kept;
- ``<part>.labels.npy``: int64 class indices (sorted class-folder names of the training part);

and ``manifest.json``, written last, with the size, mode, classes, each part's count, the digest
of the source files it was made from, a BLAKE2 digest per chunk of images and the training
pixels' mean and standard deviation. While a preparation runs, ``<part>.progress`` records each
finished chunk (one JSON line each, appended and flushed), so an interrupted preparation resumes
where it stopped. Opening a cache refuses one without a manifest (partial) and one whose files do
not have the sizes the manifest gives (truncated, damaged); `verify_image_cache` re-reads every
chunk against its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwsearch.atomic import write_text_atomically
from kwsearch.data.folder import fingerprint, list_images
from kwsearch.data.pixel_stats import stats_from_histograms
from kwsearch.data.sources import DataSourceError

FORMAT = "kwsearch-image-cache"
VERSION = 1
MANIFEST = "manifest.json"
MODES = {"RGB": 3, "L": 1}


@dataclass(frozen=True)
class CachePart:
    """One part of an opened cache: ``images`` uint8 (N, C, S, S) memory-mapped read-only,
    ``labels`` int64 (N,), the pixel statistics of the part, and its files."""

    name: str
    images: np.memmap
    labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    images_file: Path
    digests: tuple[str, ...]


@dataclass(frozen=True)
class ImageCache:
    """An opened, structurally checked cache: its folder, image side ``size``, Pillow ``mode``,
    channels, class names, images per digest ``chunk`` and ``parts`` by name."""

    path: Path
    size: int
    mode: str
    channels: int
    classes: tuple[str, ...]
    chunk: int
    parts: dict[str, CachePart]

    @property
    def statistics_part(self) -> CachePart:
        """The part whose pixels normalise training: ``train``, or ``all`` without a split."""
        return self.parts.get("train") or self.parts["all"]


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_image_cache` did: images per part, chunks in all, chunks found done by an
    earlier, interrupted preparation, and seconds."""

    path: str
    parts: dict[str, int]
    chunks: int
    reused: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _images_file(cache: Path, part: str) -> Path:
    return cache / f"{part}.images"


def _labels_file(cache: Path, part: str) -> Path:
    return cache / f"{part}.labels.npy"


def _progress_file(cache: Path, part: str) -> Path:
    return cache / f"{part}.progress"


# -- preparing -------------------------------------------------------------------------------------


def _source_parts(source: Path) -> dict[str, Path]:
    """The parts of an image folder: its given split, or the whole folder."""
    test = next((source / name for name in ("val", "test") if (source / name).is_dir()), None)
    if (source / "train").is_dir() and test is not None:
        return {"train": source / "train", "test": test}
    return {"all": source}


def _decode(path: Path, size: int, mode: str) -> np.ndarray:
    """One image as uint8 (size, size, C): shorter side resized to ``size``, centre kept."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            scale = size / min(width, height)
            target = (max(size, round(width * scale)), max(size, round(height * scale)))
            # A JPEG decodes straight at the smallest power-of-two reduction still >= target.
            image.draft(mode, target)
            # Pillow's bilinear widens its filter when it shrinks: antialiased.
            resized = image.convert(mode).resize(target, Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as error:
        raise DataSourceError(f"{path}: cannot read the image ({error})") from error
    left, top = (target[0] - size) // 2, (target[1] - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size))).reshape(size, size, -1)


def _prepare_chunk(
    images: int, start: int, paths: list[str], size: int, mode: str
) -> tuple[str, list[list[int]]]:
    """Decode one chunk of images into its place (``start``) in the open image file ``images`` (a
    file descriptor); return the digest of the chunk's bytes and each channel's pixel histogram."""
    channels = MODES[mode]
    block = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        block[i] = _decode(Path(path), size, mode)
    chunk = np.ascontiguousarray(block.transpose(0, 3, 1, 2))
    os.pwrite(images, memoryview(chunk).cast("B"), start * chunk[0].nbytes if len(chunk) else 0)
    histograms = [np.bincount(chunk[:, c].reshape(-1), minlength=256).tolist() for c in range(channels)]
    return _digest(chunk), histograms


def _digest(chunk: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(chunk)).cast("B"), digest_size=16).hexdigest()


def _read_progress(file: Path, header: dict[str, Any]) -> dict[int, tuple[str, list[list[int]]]]:
    """The chunks a preparation with ``header`` finished before, from its progress file (none when
    there is no file or it belongs to other settings or sources; a torn last line is ignored)."""
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return {}
    done = {}
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        if json.loads(lines[0]) != header:
            return {}
        for line in lines[1:]:
            entry = json.loads(line)
            done[int(entry["chunk"])] = (entry["digest"], entry["histograms"])
    return done


def _progress_bar(total: int, description: str, enabled: bool | None):
    """A rich progress bar on a terminal, nothing otherwise: a context manager yielding a function
    that advances it."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return contextlib.nullcontext(lambda n: None)

    @contextlib.contextmanager
    def bar() -> Iterator:
        from rich.progress import Progress

        with Progress() as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)

    return bar()


def prepare_image_cache(
    source: str | Path,
    out: str | Path,
    size: int,
    *,
    mode: str = "RGB",
    workers: int | None = None,
    chunk: int = 512,
    progress: bool | None = None,
) -> PrepareSummary:
    """Prepare (or finish preparing) the cache of image folder ``source`` in folder ``out``: every
    image at shorter side ``size``, centre ``size`` x ``size`` kept, in Pillow ``mode`` (``RGB`` or
    ``L``), decoded by ``workers`` threads (default: one per core; Pillow decodes and resizes
    without holding the interpreter lock), ``chunk`` images per task.

    ``source`` holds one folder of images per class, or ``train/`` and ``val/`` (or ``test/``)
    folders of them. Chunks an interrupted preparation finished are kept; a complete cache of the
    same files and settings is left as it is. A progress bar shows on a terminal unless
    ``progress`` is False. Raises DataSourceError for a missing or empty folder, test classes the
    training folder lacks, or an image that cannot be read (the chunks done so far are kept), and
    ValueError for a bad size, mode, chunk or worker count.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    started = time.perf_counter()
    source, cache = Path(source).resolve(), Path(out)
    listings = {part: list_images(folder) for part, folder in _source_parts(source).items()}
    classes = listings.get("train", listings.get("all"))[0]
    if "test" in listings:
        unknown = sorted(set(listings["test"][0]) - set(classes))
        if unknown:
            raise DataSourceError(
                f"{_source_parts(source)['test']}: classes {', '.join(unknown)} are not in {source / 'train'}"
            )
    headers = {
        part: {
            "root": str(source),
            "source": str(folder),
            "fingerprint": fingerprint(folder, listings[part][1], (size, size), mode),
            "count": len(listings[part][1]),
            "size": size,
            "mode": mode,
            "chunk": chunk,
        }
        for part, folder in _source_parts(source).items()
    }
    counts = {part: header["count"] for part, header in headers.items()}
    if _is_complete(cache, headers):
        chunks = sum(len(part.digests) for part in open_image_cache(cache).parts.values())
        return PrepareSummary(str(cache), counts, chunks, chunks, time.perf_counter() - started)
    cache.mkdir(parents=True, exist_ok=True)
    # From here on the folder is a preparation in progress, never a cache a reader could open.
    (cache / MANIFEST).unlink(missing_ok=True)
    parts, chunks, reused = {}, 0, 0
    for part, (part_classes, files) in listings.items():
        header = headers[part]
        remap = [classes.index(name) for name in part_classes]
        labels = np.array([remap[label] for _, label in files], dtype=np.int64)
        done, total = _prepare_part(cache, part, header, [str(p) for p, _ in files], workers, progress)
        digests = [done[i][0] for i in range(total)]
        histograms = np.sum([done[i][1] for i in range(total)], axis=0)
        mean, std = stats_from_histograms(torch.from_numpy(histograms))
        np.save(_labels_file(cache, part), labels)
        parts[part] = {**header, "digests": digests, "mean": list(mean), "std": list(std)}
        chunks += total
        reused += sum(1 for i in done if done[i][2])
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "size": size,
        "mode": mode,
        "channels": MODES[mode],
        "classes": list(classes),
        "chunk": chunk,
        "parts": parts,
    }
    write_text_atomically(json.dumps(manifest, indent=1), cache / MANIFEST)
    for part in parts:
        _progress_file(cache, part).unlink(missing_ok=True)
    return PrepareSummary(str(cache), counts, chunks, reused, time.perf_counter() - started)


def _is_complete(cache: Path, headers: dict[str, dict[str, Any]]) -> bool:
    """Whether ``cache`` is a complete cache of exactly these parts, files and settings (in chunks
    of any size)."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
        parts = manifest["parts"]
        return (
            manifest["version"] == VERSION
            and set(parts) == set(headers)
            and all(
                parts[name][k] == value
                for name, header in headers.items()
                for k, value in header.items()
                if k != "chunk"
            )
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _prepare_part(
    cache: Path, part: str, header: dict[str, Any], paths: list[str], workers: int, progress: bool | None
) -> tuple[dict[int, tuple[str, list[list[int]], bool]], int]:
    """Decode the chunks of ``part`` not done yet; return every chunk's (digest, histograms, whether
    an earlier preparation did it) and the number of chunks."""
    count, size, mode, chunk = header["count"], header["size"], header["mode"], header["chunk"]
    file, log = _images_file(cache, part), _progress_file(cache, part)
    nbytes = count * MODES[mode] * size * size
    earlier = _read_progress(log, header)
    if not earlier or not file.is_file() or file.stat().st_size != nbytes:
        earlier = {}
        with open(file, "wb") as images:  # sparse: the chunks fill it in any order
            images.truncate(nbytes)
        write_text_atomically(json.dumps(header) + "\n", log)
    done = {index: (*entry, True) for index, entry in earlier.items()}
    total = -(-count // chunk)
    pending = [index for index in range(total) if index not in done]
    with (
        _progress_bar(count, f"preparing {part}", progress) as advance,
        ThreadPoolExecutor(workers, thread_name_prefix="kwsearch-prepare") as pool,
        open(file, "r+b") as images,
        open(log, "a") as journal,
    ):
        advance(count - sum(min(chunk, count - index * chunk) for index in pending))
        futures = {
            pool.submit(
                _prepare_chunk,
                images.fileno(),
                index * chunk,
                paths[index * chunk : (index + 1) * chunk],
                size,
                mode,
            ): index
            for index in pending
        }
        try:
            for future in as_completed(futures):
                index = futures[future]
                digest, histograms = future.result()
                # The images reach the disk before the journal says they did.
                os.fdatasync(images.fileno())
                journal.write(json.dumps({"chunk": index, "digest": digest, "histograms": histograms}) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                done[index] = (digest, histograms, False)
                advance(min(chunk, count - index * chunk))
        finally:  # an unreadable image: stop at once, keeping the chunks journalled so far
            for future in futures:
                future.cancel()
    return done, total


# -- reading ---------------------------------------------------------------------------------------


def _refuse_partial(cache: Path) -> None:
    logs = sorted(cache.glob("*.progress"))
    if not logs:
        raise DataSourceError(
            f"{cache}: not a prepared image cache (no {MANIFEST}); prepare one with "
            f"`kwsearch prepare SOURCE {cache} --size N`"
        )
    lines = logs[0].read_text().splitlines()
    try:
        header = json.loads(lines[0])
        total, root, size = -(-int(header["count"]) // int(header["chunk"])), header["root"], header["size"]
    except (ValueError, IndexError, KeyError, TypeError):
        raise DataSourceError(f"{logs[0]}: damaged; delete {cache} and prepare it again") from None
    raise DataSourceError(
        f"{cache}: the preparation was interrupted ({logs[0].name}: {len(lines) - 1} of {total} chunks "
        f"done), so the cache is partial; run `kwsearch prepare {root} {cache} --size {size}` again to "
        "finish it"
    )


def _damaged(file: Path, reason: str) -> DataSourceError:
    return DataSourceError(
        f"{file}: {reason}: the cache is damaged; delete {file.parent} and prepare it again"
    )


def open_image_cache(path: str | Path) -> ImageCache:
    """Open the cache in folder ``path``, checking its structure: a manifest, and image and label
    files of the sizes it gives. The images stay on disk (memory-mapped, read-only).

    Raises DataSourceError naming the file: no cache there, a partial cache (an interrupted
    preparation: it says how to finish it), a damaged manifest or another format version, or a
    missing, truncated or inconsistent image or label file.
    """
    cache = Path(path)
    if not cache.is_dir():
        raise DataSourceError(
            f"{cache}: no such folder; prepare an image cache there with "
            f"`kwsearch prepare SOURCE {cache} --size N`"
        )
    manifest_file = cache / MANIFEST
    if not manifest_file.is_file():
        _refuse_partial(cache)
    try:
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest["version"] != VERSION:
            raise ValueError(f"format version {manifest['version']}; this kwsearch reads version {VERSION}")
        size, mode, channels = int(manifest["size"]), manifest["mode"], int(manifest["channels"])
        classes, chunk, described = tuple(manifest["classes"]), int(manifest["chunk"]), manifest["parts"]
        if MODES.get(mode) != channels or not described or not set(described) <= {"train", "test", "all"}:
            raise ValueError("inconsistent mode, channels or parts")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise _damaged(manifest_file, f"not a readable manifest ({error})") from None
    parts = {}
    for name, entry in described.items():
        try:
            count, digests = int(entry["count"]), tuple(entry["digests"])
            mean, std = tuple(entry["mean"]), tuple(entry["std"])
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(manifest_file, f"part {name!r} is incomplete ({error})") from None
        images_file, labels_file = _images_file(cache, name), _labels_file(cache, name)
        expected = count * channels * size * size
        if not images_file.is_file():
            raise _damaged(images_file, "missing")
        actual = images_file.stat().st_size
        if actual != expected:
            raise _damaged(
                images_file,
                f"{actual:,} bytes, but {count:,} images of {channels}x{size}x{size} take {expected:,}",
            )
        if len(digests) != -(-count // chunk):
            raise _damaged(manifest_file, f"part {name!r} lists {len(digests)} chunk digests")
        try:
            labels = np.load(labels_file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise _damaged(labels_file, f"not readable ({error})") from None
        if labels.shape != (count,) or labels.dtype != np.int64:
            found = f"{labels.dtype} labels of shape {labels.shape}"
            raise _damaged(labels_file, f"{found}, expected {count} int64")
        if count and (labels.min() < 0 or labels.max() >= len(classes)):
            raise _damaged(labels_file, f"labels outside 0..{len(classes) - 1}")
        images = np.memmap(images_file, dtype=np.uint8, mode="r", shape=(count, channels, size, size))
        parts[name] = CachePart(name, images, labels, mean, std, images_file, digests)
    return ImageCache(cache, size, mode, channels, classes, chunk, parts)


def verify_image_cache(path: str | Path, progress: bool | None = None) -> int:
    """Re-read every image of the cache in ``path`` against the digests recorded when it was
    prepared; return the number of chunks checked. Raises DataSourceError as `open_image_cache`
    does, and naming the image file and the images of the first chunk that differs."""
    cache = open_image_cache(path)
    total = sum(len(part.digests) for part in cache.parts.values())
    with _progress_bar(total, "verifying", progress) as advance:
        for part in cache.parts.values():
            for index, expected in enumerate(part.digests):
                start = index * cache.chunk
                chunk = part.images[start : start + cache.chunk]
                if _digest(chunk) != expected:
                    end = start + chunk.shape[0] - 1
                    raise _damaged(part.images_file, f"images {start}-{end} differ from what was prepared")
                advance(1)
    return total

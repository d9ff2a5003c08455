"""Finding, downloading and verifying data set files.

A data set is a handful of files with known SHA-256 digests. They are looked for, in order, in
the folder the caller names, in ``$KWSEARCH_DATA_DIR/<dataset>``, in the system folder a
package installs (Debian's ``dataset-fashion-mnist``), and in the download cache
``~/.cache/kwsearch/<dataset>``; missing ones are downloaded into the cache. Digests are taken
over the *decompressed* bytes of ``.gz`` files, so a repackaged copy (Debian recompresses the
archives) verifies the same as the original download.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kwsearch.data.idx import read_idx_bytes

DATA_DIR_ENV = "KWSEARCH_DATA_DIR"


class DataSourceError(RuntimeError):
    """A data set's files could not be found, fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set: its name and the SHA-256 of its decompressed contents."""

    name: str
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[FileSpec, ...]
    system_dirs: tuple[str, ...]
    mirrors: tuple[str, ...]
    install_hint: str


FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    files=(
        FileSpec(
            "train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        ),
        FileSpec(
            "train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        ),
        FileSpec(
            "t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        ),
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    install_hint="on Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist`",
)


def cache_dir(dataset: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kwsearch" / dataset


def _search_dirs(spec: DatasetSpec, root: str | Path | None) -> list[Path]:
    dirs = [Path(root)] if root is not None else []
    if DATA_DIR_ENV in os.environ:
        dirs.append(Path(os.environ[DATA_DIR_ENV]) / spec.name)
    dirs.extend(Path(d) for d in spec.system_dirs)
    dirs.append(cache_dir(spec.name))
    return dirs


def _verified_contents(path: Path, file: FileSpec) -> bytes:
    # Compression follows the published name: a download in progress is named *.part.
    raw = path.read_bytes()
    data = gzip.decompress(raw) if file.name.endswith(".gz") else raw
    digest = hashlib.sha256(data).hexdigest()
    if digest != file.sha256:
        raise DataSourceError(
            f"{path}: SHA-256 of the contents is {digest}, expected {file.sha256}. "
            "The file is damaged or not the published one: delete it and run again."
        )
    return data


def _download(file: FileSpec, mirrors: Sequence[str], target: Path, timeout: float) -> str | None:
    """Fetch ``file`` from the first mirror that serves a verified copy; return None on success,
    else the reasons each mirror failed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file.name
        partial = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            _verified_contents(partial, file)
        except (urllib.error.URLError, OSError, DataSourceError, ValueError) as error:
            partial.unlink(missing_ok=True)
            reasons.append(f"{url}: {error}")
            continue
        os.replace(partial, target)  # only a verified file ever takes the final name
        return None
    return "; ".join(reasons)


def locate_files(
    spec: DatasetSpec,
    root: str | Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> dict[str, bytes]:
    """Return the verified, decompressed contents of every file of ``spec`` by file name.

    Raises DataSourceError when a file is found but fails its checksum, or is found nowhere and
    cannot be downloaded; the message lists where it looked and how to install the data.
    """
    dirs = _search_dirs(spec, root)
    contents: dict[str, bytes] = {}
    for file in spec.files:
        found = next((d / file.name for d in dirs if (d / file.name).is_file()), None)
        if found is None:
            target = cache_dir(spec.name) / file.name
            failure = (
                _download(file, mirrors or spec.mirrors, target, timeout) if download else "download disabled"
            )
            if failure is not None:
                looked = ", ".join(str(d) for d in dirs)
                raise DataSourceError(
                    f"{spec.name}: {file.name} not found (looked in {looked}) and could not be downloaded "
                    f"({failure}). Install it ({spec.install_hint}), or put the files in "
                    f"${DATA_DIR_ENV}/{spec.name}/ or in a folder you pass as the data root."
                )
            found = target
        contents[file.name] = _verified_contents(found, file)
    return contents


def fashion_mnist(root: str | Path | None = None, download: bool = True, **kwargs) -> dict[str, torch.Tensor]:
    """Fashion-MNIST as uint8 tensors: ``train_images`` (60000, 28, 28), ``train_labels`` (60000,),
    ``test_images`` (10000, 28, 28), ``test_labels`` (10000,)."""
    contents = locate_files(FASHION_MNIST, root=root, download=download, **kwargs)
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    return {key: read_idx_bytes(contents[name], name) for key, name in names.items()}

"""Finding, downloading and verifying data set files.

A data set is a handful of files with known SHA-256 digests. They are looked for, in order, in
the folder the caller names, in ``$KWSEARCH_DATA_DIR/<dataset>``, in the system folder a
package installs (Debian's ``dataset-fashion-mnist``), and in the download cache
``~/.cache/kwsearch/<dataset>``; missing ones are downloaded into the cache. Digests are taken
over the *decompressed* bytes of ``.gz`` files, so a repackaged copy (Debian recompresses the
archives) verifies the same as the original download. Archives that are only ever used as
published (the CIFAR ``.tar.gz`` files) are verified over the file's own bytes instead.

Built in: Fashion-MNIST and MNIST (IDX files), CIFAR-10 and CIFAR-100 (the python archives).
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
from typing import Literal

import torch

from kwsearch.data.cifar import read_cifar_archive
from kwsearch.data.idx import read_idx_bytes

DATA_DIR_ENV = "KWSEARCH_DATA_DIR"


class DataSourceError(RuntimeError):
    """A data set's files could not be found, fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set: its name and a SHA-256 digest.

    With ``digest_of="contents"`` (the default) the digest is of the decompressed contents of a
    ``.gz`` file, and those contents are what `locate_files` returns. With ``digest_of="file"`` it
    is of the file exactly as published, and the file's bytes are returned undecompressed: for
    archives whose publishers give digests of the archive only.
    """

    name: str
    sha256: str
    digest_of: Literal["contents", "file"] = "contents"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set's files live: its files with digests, system folders, download mirrors,
    and the install hint an error message gives."""

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

# SHA-256 of the decompressed IDX files (47,040,016 / 60,008 / 7,840,016 / 10,008 bytes). The
# mirrors serve identical .gz files (MD5 f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d... as
# torchvision lists them); digests of the contents also accept a copy someone re-gzipped.
MNIST = DatasetSpec(
    name="mnist",
    files=(
        FileSpec(
            "train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
        ),
        FileSpec(
            "train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
        ),
        FileSpec(
            "t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
        ),
    ),
    system_dirs=(),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    install_hint="download the four .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/",
)

# The CIFAR archives are verified as published (their SHA-256 over the .tar.gz bytes; the
# publisher's page gives MD5 c58f30108f718f92721af3b95e74349a and eb9058c3a382ffc7106e4002c42a8d85
# for the same two files, 170,498,071 and 169,001,437 bytes).
CIFAR10 = DatasetSpec(
    name="cifar10",
    files=(
        FileSpec(
            "cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            digest_of="file",
        ),
    ),
    system_dirs=(),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    install_hint="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
)

CIFAR100 = DatasetSpec(
    name="cifar100",
    files=(
        FileSpec(
            "cifar-100-python.tar.gz",
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
            digest_of="file",
        ),
    ),
    system_dirs=(),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    install_hint="download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
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
    decompress = file.digest_of == "contents" and file.name.endswith(".gz")
    data = gzip.decompress(raw) if decompress else raw
    digest = hashlib.sha256(data).hexdigest()
    if digest != file.sha256:
        raise DataSourceError(
            f"{path}: SHA-256 of the {file.digest_of} is {digest}, expected {file.sha256}. "
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


def file_paths(spec: DatasetSpec, root: str | Path | None = None) -> dict[str, Path | None]:
    """Where each file of ``spec`` lies now, searched in the order :func:`locate_files` searches
    (None for a file found nowhere); nothing is downloaded or verified."""
    dirs = _search_dirs(spec, root)

    def found(name: str) -> Path | None:
        return next((d / name for d in dirs if (d / name).is_file()), None)

    return {file.name: found(file.name) for file in spec.files}


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
    paths = file_paths(spec, root)
    contents: dict[str, bytes] = {}
    for file in spec.files:
        found = paths[file.name]
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


_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _idx_dataset(
    spec: DatasetSpec, root: str | Path | None, download: bool, **kwargs
) -> dict[str, torch.Tensor]:
    contents = locate_files(spec, root=root, download=download, **kwargs)
    return {key: read_idx_bytes(contents[name], name) for key, name in _IDX_NAMES.items()}


def fashion_mnist(root: str | Path | None = None, download: bool = True, **kwargs) -> dict[str, torch.Tensor]:
    """Fashion-MNIST as uint8 tensors: ``train_images`` (60000, 28, 28), ``train_labels`` (60000,),
    ``test_images`` (10000, 28, 28), ``test_labels`` (10000,).

    Raises DataSourceError as `locate_files` does; ``kwargs`` go to it (mirrors, timeout).
    """
    return _idx_dataset(FASHION_MNIST, root, download, **kwargs)


def mnist(
    root: str | Path | None = None, download: bool = True, spec: DatasetSpec = MNIST, **kwargs
) -> dict[str, torch.Tensor]:
    """MNIST digits, with the same keys, shapes and dtypes as `fashion_mnist`.

    ``spec`` replaces the built-in file list (tests serve made-up files with their own digests).
    Raises DataSourceError as `locate_files` does.
    """
    return _idx_dataset(spec, root, download, **kwargs)


def cifar10(
    root: str | Path | None = None, download: bool = True, spec: DatasetSpec = CIFAR10, **kwargs
) -> dict[str, torch.Tensor]:
    """CIFAR-10 from ``cifar-10-python.tar.gz``: uint8 ``train_images`` (50000, 3, 32, 32), int64
    ``train_labels`` (50000,), ``test_images`` (10000, 3, 32, 32), ``test_labels`` (10000,).

    ``spec`` replaces the built-in archive entry (tests). Raises DataSourceError as `locate_files`
    does, and ValueError when the archive's contents are not in the CIFAR python format.
    """
    return _cifar_dataset(spec, "cifar10", root, download, **kwargs)


def cifar100(
    root: str | Path | None = None, download: bool = True, spec: DatasetSpec = CIFAR100, **kwargs
) -> dict[str, torch.Tensor]:
    """CIFAR-100 (the 100 fine labels) from ``cifar-100-python.tar.gz``, with the keys, shapes and
    dtypes of `cifar10`. Raises as `cifar10` does."""
    return _cifar_dataset(spec, "cifar100", root, download, **kwargs)


def _cifar_dataset(
    spec: DatasetSpec, kind: Literal["cifar10", "cifar100"], root: str | Path | None, download: bool, **kwargs
) -> dict[str, torch.Tensor]:
    (file,) = spec.files
    contents = locate_files(spec, root=root, download=download, **kwargs)
    return read_cifar_archive(contents[file.name], kind, name=file.name)

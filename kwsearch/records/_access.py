"""Where a study is stored, and who may write it: the Optuna storage behind a URL, and the lock
that keeps one driver per study."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna


class StoreError(ValueError):
    """A study that cannot be read: an unknown name, a storage that cannot be opened."""


class StudyBusy(RuntimeError):
    """Another kwsearch process is running this study."""


def default_storage(run_dir: Path) -> str:
    """A study's storage unless it names one: SQLite in its folder under runs/."""
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


Storage = str | optuna.storages.BaseStorage  # a URL, or a storage object (in-memory: tests, notebooks)


def storage_name(storage: Storage) -> str:
    """What a message calls ``storage``: its URL, or its kind."""
    return storage if isinstance(storage, str) else type(storage).__name__


def open_storage(url: Storage, *, create: bool = True) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url`` (a storage object is returned as it is). With ``create``
    False a SQLite file that does not exist is refused rather than created (reading commands
    never create storage). Raises StoreError."""
    if not isinstance(url, str):
        return url
    if not create and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) != ":memory:" and not path.is_file():
            raise StoreError(f"{url}: no such study database")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as error:  # SQLAlchemy's: a URL it cannot parse, a server that is not there
        raise StoreError(f"{url}: cannot open the storage ({type(error).__name__}: {error})") from None


@contextmanager
def driver_lock(run_dir: Path) -> Iterator[None]:
    """One driver per study; the OS releases the lock when the driver dies, even by kill -9."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "driver.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise StudyBusy(
                f"{run_dir}: another kwsearch process ({handle.read().strip() or 'unknown pid'}) "
                "runs this study"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield

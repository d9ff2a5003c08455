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
        raise StoreError(f"{url}: cannot open the storage ({describe_error(error)})") from None


# How long a database server may take to answer before its storage is refused.
CONNECT_TIMEOUT_S = 10


def check_storage(url: str) -> None:
    """Raise StoreError unless the storage at ``url`` can be opened or created, creating nothing:
    a URL SQLAlchemy cannot read, a SQLite file in a folder that does not exist, a database server
    that does not answer within CONNECT_TIMEOUT_S or refuses the connection."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception as error:  # SQLAlchemy's ArgumentError, a ValueError for a bad port...
        raise StoreError(f"{url}: not a storage URL ({error})") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return
        path = Path(parsed.database)
        if path.exists() and not path.is_file():
            raise StoreError(f"{url}: {path} is not a file")
        if not path.exists() and not path.parent.is_dir():
            raise StoreError(f"{url}: the folder {path.parent} does not exist")
        return
    answers_in_time = parsed.get_backend_name() in ("postgresql", "mysql")
    timeout = {"connect_timeout": CONNECT_TIMEOUT_S} if answers_in_time else {}
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=timeout)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # no driver for it, a server that is not there or refuses
        raise StoreError(f"{url}: cannot connect ({describe_error(error)})") from None


def describe_error(error: Exception) -> str:
    """A database driver's error as one line: its kind and the first line of its message
    (SQLAlchemy's run over several, with the SQL and a link)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def check_free(run_dir: Path) -> None:
    """Raise StudyBusy when a driver holds ``run_dir``'s lock now; creates nothing (a study's
    checks run before its lock is taken, and they may take seconds: a second driver need not
    wait for them to be refused)."""
    try:
        with open(run_dir / "driver.lock") as handle:  # read-only: never creates it
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released as the file closes
            except BlockingIOError:
                raise StudyBusy(_busy(run_dir, handle.read())) from None
    except FileNotFoundError:  # never run, or refused: nobody holds it
        return


def _busy(run_dir: Path, holder: str) -> str:
    return f"{run_dir}: another kwsearch process ({holder.strip() or 'unknown pid'}) runs this study"


@contextmanager
def driver_lock(run_dir: Path) -> Iterator[None]:
    """One driver per study; the OS releases the lock when the driver dies, even by kill -9.
    Leaves nothing behind when nothing else was written in ``run_dir`` (a study refused by what
    was checked under the lock): the lock file, and the folders it created for it, are removed."""
    created = [folder for folder in [run_dir, *run_dir.parents] if not folder.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / "driver.lock"
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise StudyBusy(_busy(run_dir, handle.read())) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            if all(path == lock for path in run_dir.iterdir()):
                lock.unlink()
                for folder in created:  # the deepest first
                    try:
                        folder.rmdir()
                    except OSError:  # something else was written there meanwhile
                        break

"""Finding a stored study from what a user types: a study file, or the name of a stored study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kwsearch.records import default_storage
from kwsearch.search.study import Study, StudyError, load_study, name_problem


@dataclass(frozen=True)
class StoredStudy:
    name: str
    storage: str
    study: Study | None  # the validated study file, when one was given
    # what finds it again on a command line (replay, calibrate): the study file or name, and the
    # --storage and --runs-dir it was found through when they are not the defaults
    arguments: tuple[str, ...] = ()


def locate_study(target: str, storage: str | None = None, runs_dir: Path = Path("runs")) -> StoredStudy:
    """The study ``target`` names: a study file (its name; its storage unless ``storage`` is given)
    or a bare name (``storage``, else SQLite under ``runs_dir``). Raises StudyError for a bad study
    file and for a name with no storage."""
    study = None
    arguments = [target]
    if storage is not None:
        arguments += ["--storage", storage]
    if runs_dir != Path("runs"):  # also where a replay keeps its models
        arguments += ["--runs-dir", str(runs_dir)]
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        study = load_study(target)
        name, storage = study.name, storage or study.settings.storage
    else:
        name = target
        problem = name_problem(name)
        if problem:
            raise StudyError(f"{target!r} is neither a study file nor a study's name ({problem})")
    if storage is None:
        database = runs_dir / name / "study.db"
        if not database.is_file():
            raise StudyError(
                f"unknown study {name!r}: no {database} "
                "(run its search first, or give --runs-dir or --storage)"
            )
        storage = default_storage(runs_dir / name)
    return StoredStudy(name, storage, study, tuple(arguments))

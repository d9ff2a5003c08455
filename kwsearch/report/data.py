"""A study read back from its storage into tables: one row per trial, one row per epoch.

The report reads only what :mod:`kwsearch.search.records` says a study stores; everything the
page shows, and the CSV and Parquet files beside it, comes from :class:`StudyData`.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial

from kwsearch.search.records import (
    REFERENCES_SUFFIX,
    REPLAYS_SUFFIX,
    front_of,
    normalized_hypervolume,
    objective_point,
    references_name,
    replays_name,
    status_of,
)

COSTS = ("params", "effective_params", "macs")


class ReportError(ValueError):
    """A report that cannot be made: unknown study, unreadable storage."""


@dataclass
class StudyData:
    """Everything a report shows, read from one study's storage."""

    name: str
    storage: str
    attrs: dict[str, Any]  # the study's user attributes (settings, objectives, budget, ...)
    trials: pd.DataFrame  # one row per search trial (and one per reference, kind == "reference")
    history: pd.DataFrame  # one row per (trial, epoch) of trials that trained
    replays: pd.DataFrame  # one row per full-recipe replay (may be empty)
    dimensions: dict[str, list[Any] | None]  # searched parameter -> its choices in order (None: numeric)
    target: str  # what `kwsearch replay` is given: the study file, or the name
    baseline_config: dict[str, Any] | None = None
    front: list[int] = field(default_factory=list)  # Pareto-optimal trial numbers

    @property
    def objectives(self) -> list[str]:
        return list(self.attrs.get("objectives") or ["accuracy", "params"])

    @property
    def search(self) -> pd.DataFrame:
        return self.trials[self.trials["kind"] == "search"]

    @property
    def references(self) -> pd.DataFrame:
        return self.trials[(self.trials["kind"] == "reference") & (self.trials["status"] == "complete")]

    @property
    def complete(self) -> pd.DataFrame:
        return self.search[self.search["status"] == "complete"]

    def counts(self) -> dict[str, int]:
        return self.search["status"].value_counts().to_dict() if len(self.trials) else {}

    def normalized_hypervolume(self, points: list[tuple[float, ...]]) -> float:
        return (
            normalized_hypervolume(points, self.attrs["reference_point"]) if self.has_reference_point else 0.0
        )

    @property
    def has_reference_point(self) -> bool:
        return bool(self.attrs.get("reference_point"))


def replay_command(target: str, number: int) -> str:
    return f"kwsearch replay {shlex.quote(target)} --trials {number}"


def load(storage: str | optuna.storages.BaseStorage, name: str, target: str | None = None) -> StudyData:
    """Read study ``name`` (and its references and replays) from ``storage`` (a URL or an Optuna
    storage); ``target`` is what replay commands name (default: the study's name).

    Raises ReportError when the storage holds no study of that name."""
    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as error:  # a URL SQLAlchemy cannot open
        raise ReportError(f"{storage}: cannot open the storage ({error})") from None
    if name not in names:
        known = ", ".join(n for n in names if not n.endswith((REFERENCES_SUFFIX, REPLAYS_SUFFIX))) or "none"
        raise ReportError(f"unknown study {name!r} in {storage} (studies there: {known})")
    study = optuna.load_study(study_name=name, storage=storage)
    attrs = dict(study.user_attrs)
    objectives = list(attrs.get("objectives") or ["accuracy", "params"])
    trials = study.get_trials(deepcopy=False)
    references = _load_trials(storage, references_name(name), names)
    rows = [_row(t, objectives, "search", target or name) for t in trials]
    rows += [_row(t, objectives, "reference", target or name) for t in references]
    table = pd.DataFrame(rows, columns=_columns(rows))
    front = sorted(t.number for t in front_of(trials, objectives))
    if len(table):
        table["pareto"] = (table["kind"] == "search") & table["number"].isin(front)
    history = pd.DataFrame(
        [
            {"kind": kind, "number": t.number, "label": t.user_attrs.get("reference"), **epoch}
            for kind, group in (("search", trials), ("reference", references))
            for t in group
            for epoch in t.user_attrs.get("history") or []
        ]
    )
    data = StudyData(
        name=name,
        storage=storage if isinstance(storage, str) else type(storage).__name__,
        attrs=attrs,
        trials=table,
        history=history,
        replays=_replays(storage, name, names),
        dimensions=_dimensions(trials),
        target=target or name,
        front=front,
    )
    data.baseline_config = _baseline_config(data, references)
    return data


def _load_trials(
    storage: str | optuna.storages.BaseStorage, name: str, names: list[str]
) -> list[FrozenTrial]:
    if name not in names:
        return []
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _row(trial: FrozenTrial, objectives: list[str], kind: str, target: str) -> dict[str, Any]:
    attrs = trial.user_attrs
    costs = attrs.get("costs") or {}
    history = attrs.get("history") or []
    status = status_of(trial)
    row: dict[str, Any] = {
        "kind": kind,
        "number": trial.number,
        "label": attrs.get("reference"),
        "status": status,
        # the last epoch's accuracy (a pruned trial's accuracy when it stopped); None without one
        "accuracy": history[-1]["val_accuracy"] if history else None,
        **{name: costs.get(name) for name in COSTS},
        "trained": kind == "reference" or bool(attrs.get("trained")),  # handed to a trainer
        "epochs": len(history),
        "seconds": attrs.get("seconds"),
        "train_seconds": sum(h.get("train_seconds", 0.0) for h in history) if history else None,
        "seed": attrs.get("seed"),
        "started": trial.datetime_start,
        "finished": trial.datetime_complete,
        "duplicate_of": attrs.get("duplicate_of"),
        "error": attrs.get("error"),
        "config": json.dumps(attrs.get("config"), sort_keys=True) if "config" in attrs else None,
        "replay": replay_command(target, trial.number) if kind == "search" else None,
    }
    for key, value in trial.params.items():
        row[f"param:{key}"] = value
    return row


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    base = [c for c in columns if not c.startswith("param:")]
    return [*base, *sorted(c for c in columns if c.startswith("param:"))] or [
        "kind",
        "number",
        "status",
        "accuracy",
        *COSTS,
    ]


def _dimensions(trials: list[FrozenTrial]) -> dict[str, list[Any] | None]:
    """Each searched parameter and its choices in the space's order (None for numbers)."""
    dimensions: dict[str, list[Any] | None] = {}
    for trial in trials:
        for key, distribution in trial.distributions.items():
            if key not in dimensions:
                dimensions[key] = (
                    list(distribution.choices) if isinstance(distribution, CategoricalDistribution) else None
                )
    return dimensions


def _baseline_config(data: StudyData, references: list[FrozenTrial]) -> dict[str, Any] | None:
    """The static baseline's config (what budgets are relative to): the ``static`` reference's,
    else rebuilt from the stored settings."""
    for trial in references:
        if trial.user_attrs.get("reference") == "static" and "config" in trial.user_attrs:
            return trial.user_attrs["config"]
    settings = data.attrs.get("settings")
    if not settings:
        return None
    try:
        from kwsearch.search.runner import static_baseline_config
        from kwsearch.search.study import parse_study

        source = data.attrs.get("source")
        study = parse_study(settings, Path(source) if source else None)
        return static_baseline_config(study)
    except Exception:  # a space file moved since: the report diffs against nothing
        return None


def _replays(storage: str | optuna.storages.BaseStorage, name: str, names: list[str]) -> pd.DataFrame:
    """Full-recipe replays (see kwsearch.search.records): one row per complete replay, with the
    proxy trial's number, the seed and the full accuracy (test accuracy, else validation)."""
    rows = []
    for trial in _load_trials(storage, replays_name(name), names):
        attrs = trial.user_attrs
        accuracy = attrs.get("test_accuracy")
        accuracy = attrs.get("val_accuracy") if not present(accuracy) else accuracy
        if attrs.get("status") != "complete" or "proxy_trial" not in attrs or not present(accuracy):
            continue
        rows.append(
            {"number": int(attrs["proxy_trial"]), "seed": attrs.get("seed"), "full_accuracy": accuracy}
        )
    return pd.DataFrame(rows, columns=["number", "seed", "full_accuracy"])


def present(value: Any) -> bool:
    """Not None and not NaN (what pandas puts in a cell a trial has no value for)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def point_of(row: pd.Series, objectives: list[str]) -> tuple[float, ...]:
    return objective_point({name: row[name] for name in objectives}, objectives)

"""A study read back from its record into tables: one row per trial, one row per epoch.

Everything the page shows, and the CSV and Parquet files beside it, comes from :class:`StudyData`,
read through :class:`kwsearch.records.StudyStore`.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from optuna.distributions import CategoricalDistribution

from kwsearch.calibrate import Calibration, calibration_of
from kwsearch.records import (
    MEASURED,
    Storage,
    StoreError,
    StudyRecord,
    StudyStore,
    TrialRecord,
    normalized_hypervolume,
    objective_point,
    resolved_reference_point,
)
from kwsearch.stats import (
    Claim,
    Estimate,
    FrontNoise,
    ProxyAgreement,
    accuracy_estimate,
    front_noise,
    proxy_agreement,
    published_claims,
)

# the counts, then what workers measured (milliseconds, on the device in the "device" column)
COSTS = ("params", "effective_params", "macs", *MEASURED)


class ReportError(ValueError):
    """A report that cannot be made: unknown study, unreadable storage."""


@dataclass
class StudyData:
    """Everything a report shows, read from one study's record."""

    name: str
    storage: str
    record: StudyRecord
    trials: pd.DataFrame  # one row per search trial (and one per baseline, kind == "baseline")
    history: pd.DataFrame  # one row per (trial, epoch) of trials that trained
    replays: pd.DataFrame  # one row per complete full-recipe replay (may be empty)
    agreement: ProxyAgreement  # proxy against full accuracy of the replayed trials
    noise: FrontNoise  # accuracies with their intervals; the front on them; what is tied with it
    claims: list[Claim]  # the paper's orderings among the baselines, on this proxy
    dimensions: dict[str, list[Any] | None]  # searched parameter -> its choices in order (None: numeric)
    target: list[str]  # what finds the study on a command line: its file or name, and options
    front: list[int] = field(default_factory=list)  # Pareto-optimal trial numbers
    calibration: Calibration | None = None  # how well the proxy ranks (None: never calibrated)

    @property
    def objectives(self) -> list[str]:
        return self.record.objectives

    @property
    def settings(self) -> dict[str, Any]:
        return self.record.settings

    @property
    def baseline_config(self) -> dict[str, Any] | None:
        return self.record.baseline_config

    @property
    def search(self) -> pd.DataFrame:
        return self.trials[self.trials["kind"] == "search"]

    @property
    def baselines(self) -> pd.DataFrame:
        return self.trials[(self.trials["kind"] == "baseline") & (self.trials["status"] == "complete")]

    @property
    def complete(self) -> pd.DataFrame:
        return self.search[self.search["status"] == "complete"]

    def counts(self) -> dict[str, int]:
        return self.search["status"].value_counts().to_dict() if len(self.trials) else {}

    def normalized_hypervolume(self, points: list[tuple[float, ...]]) -> float:
        point = self.record.reference_point
        return normalized_hypervolume(points, point) if point else 0.0

    @property
    def has_reference_point(self) -> bool:
        return bool(self.record.reference_point)


def replay_command(target: Sequence[str], numbers: Iterable[int]) -> str:
    """The `kwsearch replay` command that trains trials ``numbers`` again; ``target`` the words
    that find the study (:attr:`StudyData.target`)."""
    return f"kwsearch replay {shlex.join(target)} --trials {','.join(str(n) for n in numbers)}"


def load(storage: Storage, name: str, target: str | Sequence[str] | None = None) -> StudyData:
    """Read study ``name`` (its trials, baselines, replays and calibration) from the storage at
    ``storage``; ``target`` is what replay commands name the study by: a study file or name, or
    the words of one with its options (``["demo", "--runs-dir", "elsewhere"]``; default: the
    study's name).

    Raises ReportError when the storage cannot be read or holds no study of that name."""
    target = [target] if isinstance(target, str) else list(target or [name])
    try:
        store = StudyStore.open(storage, name)
    except StoreError as error:
        raise ReportError(str(error)) from None
    # a study created by a search that stopped before writing its record has no trials either
    record = store.record or StudyRecord.from_attributes(name, {})
    objectives = record.objectives
    trials, baselines, replays = store.trials(), store.baselines(), store.replays()
    # a measured cost without a budget: its reference point from what was measured
    point = resolved_reference_point(record.reference_point, objectives, trials + baselines)
    record = replace(record, reference_point=point)
    confirmed: dict[int, list[float]] = {}
    for run in store.confirmations():
        if run.status == "complete":
            confirmed.setdefault(run.confirms, []).append(run.accuracy)
    noise = front_noise(trials, objectives, images=record.proxy_val_images, extra_runs=confirmed)
    baseline_estimates = {
        t.baseline: accuracy_estimate([t.accuracy], _images(t) or record.proxy_val_images)
        for t in baselines
        if t.status == "complete" and t.history
    }
    rows = [_row(t, "search", target, noise.estimates.get(t.number)) for t in trials]
    rows += [_row(t, "baseline", target, baseline_estimates.get(t.baseline)) for t in baselines]
    table = pd.DataFrame(rows, columns=_columns(rows))
    for column in table.columns:
        if column.startswith("param:"):  # the values as sampled: an int choice stays an int
            table[column] = pd.Series([row.get(column) for row in rows], index=table.index, dtype=object)
    front = noise.front
    if len(table):
        table["pareto"] = (table["kind"] == "search") & table["number"].isin(front)
        table["tied"] = (table["kind"] == "search") & table["number"].isin(noise.tied)
    history = pd.DataFrame(
        [
            {"kind": kind, "number": t.number, "label": t.baseline, **epoch}
            for kind, group in (("search", trials), ("baseline", baselines))
            for t in group
            for epoch in t.history
        ]
    )
    complete_replays = [r for r in replays if r.status == "complete" and present(r.test_accuracy)]
    return StudyData(
        name=name,
        storage=store.url,
        record=record,
        trials=table,
        history=history,
        replays=pd.DataFrame(
            [
                {"number": r.proxy_trial, "seed": r.seed, "full_accuracy": r.test_accuracy}
                for r in complete_replays
            ],
            columns=["number", "seed", "full_accuracy"],
        ),
        agreement=proxy_agreement(trials, replays, objectives),
        noise=noise,
        claims=published_claims(baseline_estimates),
        dimensions=_dimensions(trials),
        target=target,
        front=front,
        calibration=calibration_of(store),
    )


def _images(trial: TrialRecord) -> int | None:
    images = trial.history[-1].get("val_images") if trial.history else None
    return int(images) if images else None


def _row(trial: TrialRecord, kind: str, target: list[str], estimate: Estimate | None) -> dict[str, Any]:
    costs = trial.costs.as_dict() if trial.costs else {}
    row: dict[str, Any] = {
        "kind": kind,
        "number": trial.number,
        "label": trial.baseline,
        "status": trial.status,
        # the last epoch's accuracy (a pruned trial's accuracy when it stopped); None without one;
        # a complete trial's is its config's mean over every run (seeds, confirmation runs)
        "accuracy": estimate.value if estimate else trial.accuracy,
        "accuracy_low": estimate.low if estimate else None,  # its 95% interval
        "accuracy_high": estimate.high if estimate else None,
        "runs": estimate.runs if estimate else None,
        "val_images": _images(trial),  # the last epoch's validation images
        "temperature": trial.history[-1].get("temperature") if trial.history else None,  # reached
        **{name: costs.get(name) for name in COSTS},
        "device": costs.get("device"),  # where the measured costs were measured
        "trained": trial.trained,  # handed to a trainer
        "epochs": len(trial.history),
        "seconds": trial.seconds,
        "train_seconds": trial.train_seconds,
        "seed": trial.seed,
        "started": trial.started,
        "finished": trial.finished,
        "duplicate_of": trial.duplicate_of,
        "error": trial.error,
        "config": json.dumps(trial.config, sort_keys=True) if trial.config is not None else None,
        "replay": replay_command(target, [trial.number]) if kind == "search" and trial.replayable else None,
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


def _dimensions(trials: list[TrialRecord]) -> dict[str, list[Any] | None]:
    """Each searched parameter and its choices in the space's order (None for numbers)."""
    dimensions: dict[str, list[Any] | None] = {}
    for trial in trials:
        for key, distribution in trial.distributions.items():
            if key not in dimensions:
                dimensions[key] = (
                    list(distribution.choices) if isinstance(distribution, CategoricalDistribution) else None
                )
    return dimensions


def present(value: Any) -> bool:
    """Not None and not NaN (what pandas puts in a cell a trial has no value for)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def point_of(row: pd.Series, objectives: list[str]) -> tuple[float, ...]:
    return objective_point({name: row[name] for name in objectives}, objectives)

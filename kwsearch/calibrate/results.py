"""Which stored runs answer a calibration: each (config, proxy or full, seed) it needs, and the
finished run that trained it, wherever the study keeps it.

A proxy run is any complete run of the config with that seed by the study's proxy recipe: a search
trial, a baseline, a confirmation run (a front member trained with another seed), or a calibration
run. A full run is a complete replay of the config with that
seed by the calibration's full recipe, or a calibration run. Configs are matched as stored: search
trials and replays store the config as sampled from the space, baselines the model config it
parses to, and a calibration keeps both of each of its configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from kwsearch.records import CalibrationPlan, CalibrationRecord, History, ReplayRecord, TrialRecord

Kind = Literal["proxy", "full"]


@dataclass(frozen=True)
class Unit:
    """One run a calibration needs: config ``index`` of the plan, by ``kind``, with ``seed``."""

    index: int
    kind: Kind
    seed: int

    def describe(self) -> str:
        return f"{self.kind} config {self.index} seed {self.seed}"


@dataclass(frozen=True)
class Finished:
    """The finished run that answers a unit: its history and where it is stored. ``reused``: a
    search trial, baseline, confirmation run or replay (not trained by a calibration)."""

    history: History
    source: str
    reused: bool

    @property
    def accuracy(self) -> float:
        return accuracy_of(self.history)


def accuracy_of(history: History) -> float:
    """What a run's accuracy is: the full recipe's last test accuracy (it evaluates the test set),
    the proxy's last validation accuracy (it never looks at the test set)."""
    last = history[-1]
    return last["test_accuracy"] if "test_accuracy" in last else last["val_accuracy"]


def units(plan: CalibrationPlan) -> list[Unit]:
    """Every run the plan needs: the proxy runs first (cheap), then the full runs."""
    indices = range(len(plan.configs))
    return [Unit(i, "proxy", s) for i in indices for s in plan.seeds] + [
        Unit(i, "full", s) for i in indices for s in plan.full_seeds
    ]


def key(config: dict[str, Any] | None) -> str:
    """A config's identity: its JSON with sorted keys."""
    return json.dumps(config, sort_keys=True)


def finished_runs(
    plan: CalibrationPlan,
    trials: list[TrialRecord],
    baselines: list[TrialRecord],
    confirmations: list[TrialRecord],
    replays: list[ReplayRecord],
    runs: list[CalibrationRecord],
) -> dict[Unit, Finished]:
    """The finished run of each unit of ``plan`` that has one (the first found, in the order
    search trials, baselines, confirmation runs, replays, calibration runs)."""
    sampled = {key(c.config): i for i, c in enumerate(plan.configs)}
    modelled = {key(c.model): i for i, c in enumerate(plan.configs)}
    wanted = set(units(plan))
    found: dict[Unit, Finished] = {}

    def offer(index: int | None, kind: Kind, seed: int | None, history: History, source: str, reused: bool):
        unit = Unit(index, kind, seed) if index is not None and seed is not None else None
        if unit in wanted and unit not in found:
            found[unit] = Finished(history, source, reused)

    for trial in trials:
        if trial.status == "complete":
            offer(
                sampled.get(key(trial.config)),
                "proxy",
                trial.seed,
                trial.history,
                f"trial {trial.number}",
                True,
            )
    for trial in baselines:
        if trial.status == "complete":
            index = modelled.get(key(trial.config))
            offer(index, "proxy", trial.seed, trial.history, f"baseline {trial.baseline}", True)
    for run in confirmations:
        if run.status == "complete":
            index = sampled.get(key(run.config))
            offer(index, "proxy", run.seed, run.history, f"confirmation {run.number}", True)
    for replay in replays:
        if replay.status == "complete" and replay.recipe == {**plan.full_recipe, "seed": replay.seed}:
            index = sampled.get(key(replay.config))
            offer(index, "full", replay.seed, replay.history, f"replay {replay.number}", True)
    for run in runs:
        if run.status == "complete":
            index = sampled.get(key(run.config))
            offer(index, run.kind, run.seed, run.history, f"calibration run {run.number}", False)
    return found

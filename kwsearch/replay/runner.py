"""Run or resume a replay: the chosen proxy trials trained with the study's replay recipe, once per
seed, each as one Ray Tune trial that checkpoints every epoch into ``runs/<study>/replays/
trial<N>-seed<S>/``.

Results go to the study ``<name>.replays`` in the study's storage (see
:mod:`kwsearch.search.records`) as runs report. Running the same replay again skips the runs stored
complete and resumes every other one from its last checkpoint; a run a killed driver left RUNNING
in the storage is continued under its own trial.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.search import Searcher

from kwsearch.models import parse_model_config
from kwsearch.replay.analysis import rank_agreement, replay_results
from kwsearch.replay.export import write_run_files
from kwsearch.replay.select import ReplayError, select_trials
from kwsearch.replay.trainable import REPLAY_METRICS, train_replay_run
from kwsearch.search.execution import gpu_share, ray_session, run_tune, trial_threads
from kwsearch.search.locate import locate_study
from kwsearch.search.records import replays_name
from kwsearch.search.runner import driver_lock, open_storage
from kwsearch.search.study import StudySettings
from kwsearch.train import Recipe, RecipeError, load_recipe


@dataclass
class ReplayTarget:
    """A stored study to replay: its name, settings and storage."""

    name: str
    settings: StudySettings
    storage: str
    search: optuna.Study


def resolve_target(target: str, *, storage: str | None = None, runs_dir: Path = Path("runs")) -> ReplayTarget:
    """The study named by ``target``: a study file (its settings as they are now, so an edited
    replay section applies) or the name of a stored study (the settings it was searched with).
    Raises StudyError for a bad study file or a name with no storage, ReplayError for a storage
    without that study."""
    found = locate_study(target, storage, runs_dir)
    name, storage = found.name, found.storage
    settings = found.study.settings if found.study is not None else None
    try:
        search = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ReplayError(f"unknown study {name!r} in {storage}") from None
    if settings is None:
        settings = StudySettings.model_validate(search.user_attrs["settings"])
    return ReplayTarget(name, settings, storage, search)


@dataclass
class ReplayRun:
    """One (proxy trial, seed) to train, and where its replay is stored."""

    proxy_trial: int
    seed: int
    config: dict[str, Any]
    costs: dict[str, float]
    folder: Path
    trial_id: int | None = None  # the replay trial, once it exists (a killed driver's is reused)
    number: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of earlier, interrupted attempts


@dataclass
class ReplaySummary:
    """What ``kwsearch replay --json`` prints."""

    study: str
    storage: str
    trials: list[int]  # the proxy trials replayed
    seeds: list[int]
    trained: int  # runs trained (or resumed) by this call
    skipped: int  # runs stored complete before this call
    failed: list[dict[str, Any]]  # runs that failed in this call: proxy_trial, seed, error
    results: dict[int, dict[str, Any]]  # proxy trial -> replay_results entry
    agreement: dict[str, Any]  # rank_agreement
    folders: dict[str, str]  # "trial<N>-seed<S>" -> the run's folder

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "results": {str(k): v for k, v in self.results.items()}}


def replay_recipe(settings: StudySettings, recipe_file: str | Path | None) -> Recipe:
    """The study's replay recipe (or the one in ``recipe_file``); the test set is always evaluated."""
    recipe = settings.replay.recipe
    if recipe_file is not None:
        try:
            recipe = load_recipe(recipe_file)
        except RecipeError as error:
            raise ReplayError(str(error)) from None
    return Recipe.model_validate({**recipe.model_dump(), "evaluate_test": True})


def _run_folder(runs_dir: Path, name: str, number: int, seed: int) -> Path:
    return (runs_dir / name / "replays" / f"trial{number}-seed{seed}").resolve()


def _recipe_record(recipe: Recipe) -> dict[str, Any]:
    return {k: v for k, v in recipe.model_dump(mode="json").items() if k != "seed"}


def _open_replays(target: ReplayTarget, recipe: Recipe) -> optuna.Study:
    objectives = target.search.user_attrs.get("objectives") or ["accuracy", "params"]
    replays = optuna.create_study(
        storage=target.search._storage,
        study_name=replays_name(target.name),
        directions=["maximize"] + ["minimize"] * (len(objectives) - 1),
        load_if_exists=True,
    )
    stored = replays.user_attrs.get("recipe")
    wanted = _recipe_record(recipe)
    if stored is None:
        replays.set_user_attr("recipe", wanted)
        replays.set_user_attr("objectives", objectives)
    elif stored != wanted:
        changed = ", ".join(
            f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in wanted if stored.get(k) != wanted.get(k)
        )
        raise ReplayError(
            f"study {target.name!r} was replayed with another recipe ({changed}); replays of one study share "
            f"one recipe so that they compare: restore it, or delete study {replays_name(target.name)!r} "
            "and its runs/<study>/replays folder to start over"
        )
    return replays


def plan_runs(
    chosen: list[FrozenTrial], seeds: list[int], replays: optuna.Study, runs_dir: Path, name: str
) -> tuple[list[ReplayRun], int]:
    """The runs still to train (resumed ones carry their replay trial) and how many are complete."""
    stored: dict[tuple[int, int], list[FrozenTrial]] = {}
    for trial in replays.get_trials(deepcopy=False):
        key = (trial.user_attrs.get("proxy_trial"), trial.user_attrs.get("seed"))
        stored.setdefault(key, []).append(trial)
    runs, complete = [], 0
    for proxy in chosen:
        for seed in seeds:
            earlier = stored.get((proxy.number, seed), [])
            if any(t.user_attrs.get("status") == "complete" for t in earlier):
                complete += 1
                continue
            run = ReplayRun(
                proxy.number,
                seed,
                proxy.user_attrs["config"],
                proxy.user_attrs.get("costs") or {},
                _run_folder(runs_dir, name, proxy.number, seed),
            )
            interrupted = [t for t in earlier if t.state == TrialState.RUNNING]
            if interrupted:  # the driver that ran it died: continue the same record
                trial = interrupted[-1]
                run.trial_id, run.number = trial._trial_id, trial.number
                run.history = trial.user_attrs.get("history") or []
                run.seconds = trial.user_attrs.get("seconds", 0.0)
            runs.append(run)
    return runs, complete


@dataclass
class _Live:
    run: ReplayRun
    started: float
    final: dict[str, Any] | None = None
    error: str | None = None


class ReplaySearcher(Searcher):
    """Hands Ray Tune one pending run per trial and writes what the runs report to the replays
    study: every epoch's metrics as they come, and the finished run's record."""

    def __init__(
        self,
        replays: optuna.Study,
        runs: list[ReplayRun],
        recipe: Recipe,
        data: dict[str, Any],
        objectives: list[str],
        on_finish: Callable[[ReplayRun, str], None] = lambda run, status: None,
    ) -> None:
        super().__init__()
        self.replays = replays
        self.pending = list(runs)
        self.recipe = recipe
        self.data = data
        self.objectives = objectives
        self.on_finish = on_finish
        self.live: dict[str, _Live] = {}
        self.failed: list[dict[str, Any]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the state is the storage (see OptunaBudgetSearcher.__getstate__)

    @property
    def _storage(self) -> optuna.storages.BaseStorage:
        return self.replays._storage

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.pending:
            return Searcher.FINISHED
        run = self.pending.pop(0)
        recipe = self.recipe.model_copy(update={"seed": run.seed})
        if run.trial_id is None:
            trial = self.replays.ask()
            run.trial_id, run.number = trial._trial_id, trial.number
            attrs = {
                "proxy_trial": run.proxy_trial,
                "seed": run.seed,
                "config": run.config,
                "costs": run.costs,
                "recipe": recipe.model_dump(mode="json"),
                "export": str(run.folder),
            }
            for key, value in attrs.items():
                self._storage.set_trial_user_attr(run.trial_id, key, value)
        write_run_files(run.folder, parse_model_config(run.config), recipe, self.data)
        self.live[trial_id] = _Live(run, time.time())
        return {"model": run.config, "recipe": recipe.model_dump(mode="json"), "folder": str(run.folder)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        if "error" in result:
            live.error = result["error"]
            self._storage.set_trial_user_attr(live.run.trial_id, "traceback", result.get("traceback", ""))
        elif "finished" in result:
            live.final = result
        elif "epoch" in result:
            metrics = {k: result[k] for k in REPLAY_METRICS if k in result}
            # a resumed (or retried) run reports from its checkpoint's epoch on
            live.run.history = [h for h in live.run.history if h["epoch"] < metrics["epoch"]] + [metrics]
            self._storage.set_trial_user_attr(live.run.trial_id, "history", live.run.history)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self.live.get(trial_id)
        if live is not None and live.final is None and result and not error:
            self.on_trial_result(trial_id, result)
        live = self.live.pop(trial_id, None)
        if live is None:
            return
        run = live.run
        store = self._storage.set_trial_user_attr
        store(run.trial_id, "seconds", run.seconds + time.time() - live.started)
        if error or live.error is not None or live.final is None:
            reason = live.error or "the run's worker failed"
            store(run.trial_id, "status", "failed")
            store(run.trial_id, "error", reason)
            self.replays.tell(run.number, state=TrialState.FAIL, skip_if_finished=True)
            self.failed.append({"proxy_trial": run.proxy_trial, "seed": run.seed, "error": reason})
            self.on_finish(run, "failed")
            return
        history = json.loads(live.final["history"])
        last = history[-1]
        store(run.trial_id, "history", history)
        store(run.trial_id, "val_accuracy", last["val_accuracy"])
        store(run.trial_id, "test_accuracy", last.get("test_accuracy"))
        store(run.trial_id, "resumed_from_epoch", int(live.final["resumed_from_epoch"]))
        store(run.trial_id, "status", "complete")
        values = [last["test_accuracy"]] + [float(run.costs.get(name, 0.0)) for name in self.objectives[1:]]
        self.replays.tell(run.number, values=values, skip_if_finished=True)
        self.on_finish(run, "complete")


def run_replay(
    target: str,
    *,
    top: int | None = None,
    trials: list[int] | None = None,
    seeds: list[int] | None = None,
    recipe: str | Path | None = None,
    storage: str | None = None,
    address: str | None = None,
    runs_dir: Path = Path("runs"),
    on_finish: Callable[[ReplayRun, str], None] = lambda run, status: None,
) -> ReplaySummary:
    """Replay study ``target`` (a study file or a stored study's name): the ``trials`` named, or
    ``top`` spread along its front, each trained by the replay recipe once per seed (the study's
    ``replay.seeds`` unless ``seeds``). Returns what was trained and how the ranking held.

    Raises ReplayError (StudyError for a bad study file) for a replay that cannot run, and
    StudyBusy when another process replays this study.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = resolve_target(target, storage=storage, runs_dir=runs_dir)
    settings = found.settings
    seeds = list(dict.fromkeys(seeds if seeds is not None else settings.replay.seeds))
    if not seeds:
        raise ReplayError("--seeds: give at least one seed")
    full = replay_recipe(settings, recipe)
    objectives = found.search.user_attrs.get("objectives") or settings.objectives
    chosen = select_trials(
        found.search.get_trials(deepcopy=False), objectives, study_name=found.name, top=top, numbers=trials
    )
    run_dir = runs_dir / found.name / "replays"
    with driver_lock(run_dir):
        replays = _open_replays(found, full)
        runs, complete = plan_runs(chosen, seeds, replays, runs_dir, found.name)
        failed: list[dict[str, Any]] = []
        if runs:
            with ray_session(address) as cluster:
                searcher = ReplaySearcher(
                    replays, runs, full, settings.data.model_dump(), objectives, on_finish=on_finish
                )
                # a full training keeps a GPU busy: a whole one with "auto" (proxy trials share one)
                gpus = gpu_share(settings.resources.gpu, cluster, auto=1.0, where="resources.gpu")
                trainable = tune.with_parameters(
                    train_replay_run, data=settings.data.model_dump(), threads=trial_threads(settings)
                )
                run_tune(trainable, searcher, settings, run_dir, gpus)
                failed = searcher.failed
        results = replay_results(replays.get_trials(deepcopy=False))
        replays.set_user_attr("summary", {str(k): v for k, v in results.items()})
    numbers = [t.number for t in chosen]
    return ReplaySummary(
        study=found.name,
        storage=found.storage,
        trials=numbers,
        seeds=seeds,
        trained=len(runs),
        skipped=complete,
        failed=failed,
        results={n: results[n] for n in numbers if n in results},
        agreement=rank_agreement(found.name, found.search._storage),
        folders={
            f"trial{n}-seed{s}": str(_run_folder(runs_dir, found.name, n, s)) for n in numbers for s in seeds
        },
    )

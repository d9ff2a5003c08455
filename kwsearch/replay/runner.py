"""Run or resume a replay: the chosen proxy trials trained with the study's replay recipe, once per
seed, each a run that checkpoints every epoch into ``runs/<study>/replays/trial<N>-seed<S>/``.

Results are stored beside the study (:meth:`kwsearch.records.StudyStore.replays`) as runs report.
Running the same replay again skips the runs stored complete and resumes every other one from its
last checkpoint; a run a killed driver left RUNNING in the storage is continued under its own
record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from kwsearch.execution import (
    Driver,
    Outcome,
    Run,
    check_workers,
    cluster_total,
    gpus_per_run,
    ray_session,
    run_tune,
)
from kwsearch.models import parse_model_config
from kwsearch.records import (
    Costs,
    History,
    ReplayWriter,
    StoreError,
    StudyStore,
    TrialRecord,
    driver_lock,
)
from kwsearch.replay.export import write_run_files
from kwsearch.replay.select import ReplayError, select_trials
from kwsearch.search.locate import locate_study
from kwsearch.search.study import StudySettings
from kwsearch.stats import ProxyAgreement, ReplayResult, proxy_agreement, replay_results
from kwsearch.train import Recipe, RecipeError, load_recipe


@dataclass
class ReplayTarget:
    """A stored study to replay: its name, settings and store."""

    name: str
    settings: StudySettings
    store: StudyStore


def resolve_target(target: str, *, storage: str | None = None, runs_dir: Path = Path("runs")) -> ReplayTarget:
    """The study named by ``target``: a study file (its settings as they are now, so an edited
    replay section applies) or the name of a stored study (the settings it was searched with).
    Raises StudyError for a bad study file or a name with no storage, ReplayError for a storage
    without that study."""
    found = locate_study(target, storage, runs_dir)
    try:
        store = StudyStore.open(found.storage, found.name)
    except StoreError as error:
        raise ReplayError(str(error)) from None
    if found.study is not None:
        settings = found.study.settings
    else:
        settings = StudySettings.model_validate(store.record.settings)
    return ReplayTarget(found.name, settings, store)


@dataclass
class ReplayRun:
    """One (proxy trial, seed) to train, and where its replay is stored."""

    proxy_trial: int
    seed: int
    config: dict[str, Any]
    costs: Costs | None
    folder: Path
    resumes: int | None = None  # the replay a killed driver left running, continued
    history: History = field(default_factory=list)  # its epochs so far
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
    results: dict[int, ReplayResult]  # proxy trial -> its replays
    agreement: ProxyAgreement
    folders: dict[str, str]  # "trial<N>-seed<S>" -> the run's folder

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "results": {str(k): v.as_dict() for k, v in self.results.items()},
            "agreement": {"study": self.study, **self.agreement.as_dict()},
        }


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


def check_recipe(target: ReplayTarget, recipe: Recipe) -> None:
    """One recipe per study's replays, so that they compare: the first replay fixes it (it is
    stored as the runs start). Raises ReplayError for another recipe than the stored one. (A
    recipe stored by an earlier release reads with the fields added since at their defaults,
    which train as it did.)"""
    stored = target.store.replay_recipe()
    wanted = _recipe_record(recipe)
    if stored is not None:
        stored = _recipe_record(Recipe.model_validate(stored))
    if stored is not None and stored != wanted:
        changed = ", ".join(
            f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in wanted if stored.get(k) != wanted.get(k)
        )
        raise ReplayError(
            f"study {target.name!r} was replayed with another recipe ({changed}); replays of one study share "
            f"one recipe so that they compare: restore it, or delete study {target.name + '.replays'!r} "
            "and its runs/<study>/replays folder to start over"
        )


def plan_runs(
    chosen: list[TrialRecord], seeds: list[int], store: StudyStore, runs_dir: Path, name: str
) -> tuple[list[ReplayRun], int]:
    """The runs still to train (resumed ones carry their replay) and how many are complete."""
    stored: dict[tuple[int, int], list] = {}
    for replay in store.replays():
        stored.setdefault((replay.proxy_trial, replay.seed), []).append(replay)
    runs, complete = [], 0
    for proxy in chosen:
        for seed in seeds:
            earlier = stored.get((proxy.number, seed), [])
            if any(r.status == "complete" for r in earlier):
                complete += 1
                continue
            run = ReplayRun(
                proxy.number, seed, proxy.config, proxy.costs, _run_folder(runs_dir, name, proxy.number, seed)
            )
            interrupted = [r for r in earlier if r.status == "running"]
            if interrupted:  # the driver that ran it died: continue the same record
                run.resumes = interrupted[-1].number
                run.history = interrupted[-1].history
                run.seconds = interrupted[-1].seconds
            runs.append(run)
    return runs, complete


class ReplayPolicy:
    """Hands the driver one pending run at a time and writes what the runs report to the
    study's replays: every epoch as it comes, and the finished run's record."""

    def __init__(
        self,
        store: StudyStore,
        runs: list[ReplayRun],
        recipe: Recipe,
        data: dict[str, Any],
        objectives: list[str],
        on_finish: Callable[[ReplayRun, str], None] = lambda run, status: None,
    ) -> None:
        self.store = store
        self.pending = list(runs)
        self.recipe = recipe
        self.data = data
        self.objectives = objectives
        self.on_finish_callback = on_finish
        self.failed: list[dict[str, Any]] = []

    def next_run(self) -> Run | None:
        if not self.pending:
            return None
        replay = self.pending.pop(0)
        recipe = self.recipe.model_copy(update={"seed": replay.seed})
        model = parse_model_config(replay.config)
        if replay.resumes is not None:
            writer = self.store.reopen_replay(replay.resumes)
        else:
            writer = self.store.ask_replay()
            writer.start(
                proxy_trial=replay.proxy_trial,
                seed=replay.seed,
                config=replay.config,
                costs=replay.costs,
                recipe=recipe.model_dump(mode="json"),
                export=replay.folder,
            )
        write_run_files(replay.folder, model, recipe, self.data)
        return Run(
            key=f"replay:{replay.proxy_trial}:{replay.seed}",
            model=model,
            recipe=recipe,
            folder=replay.folder,
            history=replay.history,
            handle=(replay, writer),
        )

    def on_epoch(self, run: Run, history: History) -> None:
        _, writer = run.handle
        writer.record_history(history)

    def on_finish(self, run: Run, outcome: Outcome) -> None:
        replay, writer = run.handle
        writer: ReplayWriter
        seconds = replay.seconds + outcome.seconds
        if outcome.traceback:
            writer.record_traceback(outcome.traceback)
        if outcome.kind != "finished":
            reason = outcome.error or "the run's worker failed"
            writer.fail(reason, seconds=seconds)
            self.failed.append({"proxy_trial": replay.proxy_trial, "seed": replay.seed, "error": reason})
            self.on_finish_callback(replay, "failed")
            return
        costs = replay.costs.as_dict() if replay.costs else {}
        values = [outcome.history[-1]["test_accuracy"]] + [
            float(costs.get(name) or 0.0) for name in self.objectives[1:]
        ]
        writer.complete(
            outcome.history, seconds=seconds, resumed_from_epoch=outcome.resumed_from_epoch, values=values
        )
        self.on_finish_callback(replay, "complete")


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

    Raises ReplayError (StudyError for a bad study file, ClusterError for a Ray cluster that
    cannot run it) for a replay that cannot run, and StudyBusy when another process replays
    this study.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = resolve_target(target, storage=storage, runs_dir=runs_dir)
    settings = found.settings
    seeds = list(dict.fromkeys(seeds if seeds is not None else settings.replay.seeds))
    if not seeds:
        raise ReplayError("--seeds: give at least one seed")
    full = replay_recipe(settings, recipe)
    objectives = found.store.record.objectives
    proxy_trials = found.store.trials()
    chosen = select_trials(proxy_trials, objectives, study_name=found.name, top=top, numbers=trials)
    run_dir = runs_dir / found.name / "replays"
    check_recipe(found, full)
    with driver_lock(run_dir):
        check_recipe(found, full)  # again under the lock: another replay may have started meanwhile
        runs, complete = plan_runs(chosen, seeds, found.store, runs_dir, found.name)
        failed: list[dict[str, Any]] = []
        if runs:
            with ray_session(address) as node:
                # a full training keeps a GPU busy: a whole one with "auto" (proxy trials share one)
                gpus = gpus_per_run(settings.resources, node, auto=1.0, where=f"{target}: resources")
                if full.workers > 1:
                    where = f"{target}: replay.recipe.workers"
                    check_workers(full.workers, settings.resources.cpu, gpus, cluster_total(), where)
                if found.store.replay_recipe() is None:
                    found.store.set_replay_recipe(_recipe_record(full))
                data = settings.data.model_dump()
                policy = ReplayPolicy(found.store, runs, full, data, objectives, on_finish=on_finish)
                run_tune(
                    Driver(policy),
                    data=data,
                    resources=settings.resources,
                    gpus=gpus,
                    retries=settings.retries,
                    run_dir=run_dir,
                    workers=full.workers,
                )
                failed = policy.failed
    replays = found.store.replays()
    results = replay_results(replays)
    numbers = [t.number for t in chosen]
    return ReplaySummary(
        study=found.name,
        storage=found.store.url,
        trials=numbers,
        seeds=seeds,
        trained=len(runs),
        skipped=complete,
        failed=failed,
        results={n: results[n] for n in numbers if n in results},
        agreement=proxy_agreement(proxy_trials, replays, objectives),
        folders={
            f"trial{n}-seed{s}": str(_run_folder(runs_dir, found.name, n, s)) for n in numbers for s in seeds
        },
    )

"""Run or resume a study's calibration: its configs trained by the proxy recipe (once per proxy
seed) and by the full recipe (once per full seed) on Ray, each run checkpointing every epoch into
``runs/<study>/calibration/<kind>-config<I>-seed<S>/``; runs the study has already (search trials,
baselines, confirmation runs, replays) are reused, not trained again.

The plan (configs, seeds, recipes) is stored with the first run, so running the same command again
measures the same configs even when the search has grown since: it skips the finished runs, and
continues each run a killed or interrupted driver left unfinished from its last checkpoint under
its own record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from kwsearch.calibrate.analysis import TARGET, Calibration, calibration_of, stored_runs
from kwsearch.calibrate.results import Unit, accuracy_of, key, units
from kwsearch.calibrate.select import MIN_CONFIGS, CalibrationError, choose_configs
from kwsearch.execution import Driver, Outcome, Run, gpus_per_run, ray_session, run_tune
from kwsearch.models import parse_model_config
from kwsearch.records import (
    CalibrationConfig,
    CalibrationPlan,
    CalibrationWriter,
    History,
    StoreError,
    StudyStore,
    driver_lock,
)
from kwsearch.replay.export import write_run_files
from kwsearch.replay.runner import replay_recipe
from kwsearch.search.budget import ResolvedBudget
from kwsearch.search.preflight import prepare_search
from kwsearch.search.runner import open_store
from kwsearch.search.study import Study
from kwsearch.search.summary import noise_of
from kwsearch.train import Recipe

DEFAULT_CONFIGS = 8
DEFAULT_SEEDS = 2  # two proxy seeds: the least that measures the proxy's own noise
SAMPLE_SEED = 0  # the configs drawn from the space are the same for every calibration


@dataclass
class PendingRun:
    """One run to train, and the record a killed driver left unfinished (continued)."""

    unit: Unit
    config: CalibrationConfig
    recipe: Recipe
    folder: Path
    resumes: int | None = None
    history: History = field(default_factory=list)  # its epochs so far
    seconds: float = 0.0  # wall time of earlier, interrupted attempts


@dataclass
class CalibrationSummary:
    """What ``kwsearch calibrate --json`` prints: the calibration, and what this call did."""

    study: str
    storage: str
    folder: str
    trained: int  # runs trained to their end (or continued to it) by this call
    failed: list[dict[str, Any]]  # runs that failed in this call: kind, config, seed, error
    interrupted: bool  # stopped by Ctrl-C: the same command continues it
    calibration: Calibration

    def as_dict(self) -> dict[str, Any]:
        found = self.calibration.as_dict()
        return {
            "study": self.study,
            "storage": self.storage,
            "folder": self.folder,
            "interrupted": self.interrupted,
            "failed": self.failed,
            **found,
            "runs": {**found["runs"], "trained": self.trained},
        }


def check_options(configs: int | None, seeds: int | None, target: float | None) -> None:
    """Raise CalibrationError for an option no calibration takes."""
    if configs is not None and configs < MIN_CONFIGS:
        raise CalibrationError(f"--configs: a calibration ranks {MIN_CONFIGS} or more configs, got {configs}")
    if seeds is not None and seeds < 1:
        raise CalibrationError(f"--seeds: at least 1, got {seeds}")
    if target is not None and not -1 < target <= 1:
        raise CalibrationError(f"--target: a Spearman's rho above -1 and at most 1, got {target}")


def settle_plan(
    study: Study,
    store: StudyStore | None,
    budget: ResolvedBudget,
    folder: Path,
    *,
    configs: int | None,
    seeds: int | None,
    target: float | None,
) -> CalibrationPlan:
    """The stored plan (more proxy seeds or a new target when asked for), or a new one when the
    study (``store``: None when it is not stored yet) was never calibrated. Writes nothing. Raises
    CalibrationError for options, or study settings, that contradict the stored plan, naming
    what differs, and for a space with too few configs to calibrate."""
    stored = store.calibration_plan() if store is not None else None
    if stored is None:
        plan = _new_plan(study, store, budget, configs or DEFAULT_CONFIGS, seeds or DEFAULT_SEEDS)
    else:
        plan = _continued_plan(study, stored, store.url, folder, configs, seeds)
    if target is not None:
        plan = replace(plan, target=target)
    return plan


def _full_recipe(study: Study) -> dict[str, Any]:
    return replay_recipe(study.settings, None).model_dump(mode="json")


def _full_seeds(study: Study) -> list[int]:
    return list(dict.fromkeys(study.settings.replay.seeds))


def _new_plan(
    study: Study, store: StudyStore | None, budget: ResolvedBudget, configs: int, seeds: int
) -> CalibrationPlan:
    settings = study.settings
    trials = {t.number: t for t in store.trials()} if store is not None and store.record else {}
    front = [trials[n] for n in noise_of(store, list(trials.values())).front] if trials else []
    return CalibrationPlan(
        configs=choose_configs(study.space, budget, settings.objectives, configs, front, SAMPLE_SEED),
        seeds=[settings.proxy.seed + i for i in range(seeds)],
        full_seeds=_full_seeds(study),
        proxy_recipe=settings.proxy.model_dump(mode="json"),
        full_recipe=_full_recipe(study),
        target=TARGET,
        sample_seed=SAMPLE_SEED,
        created=time.time(),
    )


def _continued_plan(
    study: Study, stored: CalibrationPlan, storage: str, folder: Path, configs: int | None, seeds: int | None
) -> CalibrationPlan:
    """``stored``, with the proxy seeds raised to ``seeds``."""
    start_over = (
        f"or start the calibration over: `optuna delete-study --study-name {study.name}.calibration "
        f"--storage {storage}` and remove {folder}"
    )
    calibrated = f"since study {study.name!r} was calibrated"
    if configs is not None and configs != len(stored.configs):
        count = len(stored.configs)
        raise CalibrationError(
            f"--configs {configs}: study {study.name!r} was calibrated with {count} configs; "
            f"give --configs {count} (or leave it out), {start_over}"
        )
    full = _full_recipe(study)
    # a recipe stored by an earlier release, with the fields added since at their defaults
    stored_full = Recipe.model_validate(stored.full_recipe).model_dump(mode="json")
    if stored_full != full:
        changed = ", ".join(
            f"{k}: {stored_full.get(k)!r} -> {full.get(k)!r}"
            for k in full
            if stored_full.get(k) != full.get(k)
        )
        raise CalibrationError(
            f"{study.where}: replay.recipe: {changed} {calibrated}; restore it, {start_over}"
        )
    if stored.full_seeds != _full_seeds(study):
        raise CalibrationError(
            f"{study.where}: replay.seeds: {stored.full_seeds} -> {_full_seeds(study)} {calibrated}; "
            f"restore them, {start_over}"
        )
    if seeds is not None and seeds < len(stored.seeds):
        raise CalibrationError(
            f"--seeds {seeds}: study {study.name!r} was calibrated with {len(stored.seeds)} proxy seeds; "
            "give as many or more"
        )
    more = [stored.seeds[0] + i for i in range(len(stored.seeds), seeds or 0)]
    return replace(stored, seeds=stored.seeds + more)


def pending_runs(plan: CalibrationPlan, store: StudyStore, folder: Path) -> list[PendingRun]:
    """The runs of ``plan`` that no stored run answers, each with the record a killed driver left
    running (to continue) when there is one."""
    found = stored_runs(plan, store)
    sampled = {key(c.config): i for i, c in enumerate(plan.configs)}
    unfinished = {}
    for run in store.calibration_runs():
        index = sampled.get(key(run.config))
        if run.status == "running" and index is not None:
            unfinished[Unit(index, run.kind, run.seed)] = run
    pending = []
    for unit in units(plan):
        if unit in found:
            continue
        recipe = plan.proxy_recipe if unit.kind == "proxy" else plan.full_recipe
        run = PendingRun(
            unit,
            plan.configs[unit.index],
            Recipe.model_validate({**recipe, "seed": unit.seed}),
            folder / f"{unit.kind}-config{unit.index}-seed{unit.seed}",
        )
        if unit in unfinished:
            earlier = unfinished[unit]
            run.resumes, run.history, run.seconds = earlier.number, earlier.history, earlier.seconds
        pending.append(run)
    return pending


class CalibrationPolicy:
    """Hands the driver one pending run at a time and writes what the runs report to the study's
    calibration: every epoch as it comes, and the finished run's record."""

    def __init__(
        self,
        store: StudyStore,
        runs: list[PendingRun],
        data: dict[str, Any],
        objectives: list[str],
        progress: Callable[[str], None],
    ) -> None:
        self.store = store
        self.pending = list(runs)
        self.data = data
        self.objectives = objectives
        self.progress = progress
        self.failed: list[dict[str, Any]] = []
        self.ended = 0  # runs trained to their end (complete or failed)
        self.stopped = 0  # runs Ray stopped before their last epoch (left to continue)

    def next_run(self) -> Run | None:
        if not self.pending:
            return None
        run = self.pending.pop(0)
        model = parse_model_config(run.config.config)
        if run.resumes is not None:
            writer = self.store.reopen_calibration(run.resumes)
        else:
            writer = self.store.ask_calibration()
            writer.start(
                kind=run.unit.kind,
                seed=run.unit.seed,
                config=run.config.config,
                costs=run.config.costs,
                recipe=run.recipe.model_dump(mode="json"),
                export=run.folder,
            )
        write_run_files(run.folder, model, run.recipe, self.data)
        unit = run.unit
        return Run(
            key=f"calibrate:{unit.kind}:{unit.index}:{unit.seed}",
            model=model,
            recipe=run.recipe,
            folder=run.folder,
            history=run.history,
            handle=(run, writer),
        )

    def on_epoch(self, run: Run, history: History) -> None:
        _, writer = run.handle
        writer.record_history(history)

    def on_finish(self, run: Run, outcome: Outcome) -> None:
        pending, writer = run.handle
        writer: CalibrationWriter
        unit = pending.unit
        seconds = pending.seconds + outcome.seconds
        if outcome.traceback:
            writer.record_traceback(outcome.traceback)
        if outcome.kind == "stopped":  # no scheduler stops a calibration run: it was interrupted
            self.stopped += 1
            return
        self.ended += 1
        if outcome.kind == "failed":
            reason = outcome.error or "the run's worker failed"
            writer.fail(reason, seconds=seconds)
            self.failed.append({"kind": unit.kind, "config": unit.index, "seed": unit.seed, "error": reason})
            self.progress(f"{unit.describe()}: failed: {reason}")
            return
        accuracy = accuracy_of(outcome.history)
        costs = pending.config.costs
        values = [accuracy] + [float(getattr(costs, name) or 0) for name in self.objectives[1:]]
        writer.complete(
            outcome.history, seconds=seconds, resumed_from_epoch=outcome.resumed_from_epoch, values=values
        )
        measured = "validation" if unit.kind == "proxy" else "test"
        self.progress(f"{unit.describe()}: complete, {measured} accuracy {accuracy:.4f} ({seconds:.1f} s)")


def run_calibration(
    study: Study,
    *,
    configs: int | None = None,
    seeds: int | None = None,
    target: float | None = None,
    storage: str | None = None,
    address: str | None = None,
    runs_dir: Path = Path("runs"),
    progress: Callable[[str], None] = lambda line: None,
) -> CalibrationSummary:
    """Calibrate ``study`` (or continue its calibration): ``configs`` configs spread over the
    space's cost range, each trained by the proxy recipe with ``seeds`` seeds and by the full
    recipe with the study's replay seeds. ``progress`` is told a line as runs finish.

    Raises CalibrationError (StudyError for a study that cannot run, ClusterError for a Ray cluster
    that cannot run it) for bad input, and StudyBusy when another process calibrates this study.
    """
    settings = study.settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_options(configs, seeds, target)
    setup = prepare_search(study, storage=storage, runs_dir=runs_dir)
    folder = (setup.run_dir / "calibration").resolve()
    with driver_lock(folder):
        try:
            existing = StudyStore.open(setup.storage, study.name)
        except StoreError:
            existing = None  # calibrated before it is searched: the study is created below
        plan = settle_plan(study, existing, setup.budget, folder, configs=configs, seeds=seeds, target=target)
        # Ray is asked whether it can place a run before the study or its plan is stored
        idle = existing is not None and not pending_runs(plan, existing, folder)
        with contextlib.nullcontext({}) if idle else ray_session(address) as node:
            # a proxy shares a GPU like a search trial does; a full run keeps a whole one busy
            gpus = (
                {}
                if idle
                else {
                    kind: gpus_per_run(settings.resources, node, auto, where=f"{study.where}: resources")
                    for kind, auto in (("proxy", 0.25), ("full", 1.0))
                }
            )
            store = open_store(study, setup.storage, setup.budget, setup.baseline)
            if plan != store.calibration_plan():
                store.write_calibration_plan(plan)
            pending = pending_runs(plan, store, folder)
            needed = len(units(plan))
            progress(
                f"{study.name}: calibrating {len(plan.configs)} configs with {len(plan.seeds)} proxy and "
                f"{len(plan.full_seeds)} full seed(s): {needed - len(pending)} of {needed} runs stored, "
                f"{len(pending)} to train"
            )
            failed: list[dict[str, Any]] = []
            trained, interrupted = 0, False
            data = settings.data.model_dump()
            for kind in ("proxy", "full"):
                runs = [r for r in pending if r.unit.kind == kind]
                if not runs:
                    continue
                policy = CalibrationPolicy(store, runs, data, settings.objectives, progress)
                driver = Driver(policy)
                run_tune(
                    driver,
                    data=data,
                    resources=settings.resources,
                    gpus=gpus[kind],
                    retries=settings.retries,
                    run_dir=folder,
                )
                failed += policy.failed
                trained += policy.ended
                # Ray Tune ends its run on Ctrl-C: runs cut off or never started wait for next time
                if driver.unfinished or policy.pending or policy.stopped:
                    interrupted = True
                    break
        calibration = calibration_of(store)
    return CalibrationSummary(
        study=study.name,
        storage=store.url,
        folder=str(folder),
        trained=trained,
        failed=failed,
        interrupted=interrupted,
        calibration=calibration,
    )

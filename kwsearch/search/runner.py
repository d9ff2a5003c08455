"""Run or resume a study that passed its checks (:mod:`kwsearch.search.preflight`): the Ray
cluster's own check, the storage, Ray Tune.

Running the same study again continues it: finished trials are kept, trials a killed driver left
RUNNING are put back to WAITING and re-run under their own trial numbers (Optuna returns a
resumed trial's stored parameters), and the count of trained trials reaches the budget.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from kwsearch.execution import Driver, gpus_per_run, ray_session, run_tune
from kwsearch.models import ModelConfig, ModelConfigError, parse_model_config
from kwsearch.records import (
    MEASURED,
    Costs,
    StudyRecord,
    StudyStore,
    check_free,
    driver_lock,
    objective_point,
)
from kwsearch.search.budget import ResolvedBudget, costs_of
from kwsearch.search.policy import SearchPlan, SearchPolicy
from kwsearch.search.preflight import (
    FEASIBILITY_PROBES,
    SearchSetup,
    check_same_study,
    fingerprint,
    prepare_search,
    static_baseline_config,
)
from kwsearch.search.progress import SearchProgress
from kwsearch.search.samplers import make_sampler
from kwsearch.search.scheduler import ParetoScheduler, ParetoSuccessiveHalving
from kwsearch.search.space import Dimension
from kwsearch.search.study import Study, StudyError, data_shape
from kwsearch.search.summary import StudySummary, summarize
from kwsearch.search.trackers import TrackerError, Trackers
from kwsearch.versions import software_versions


def _reference_point(study: Study, budget: ResolvedBudget, baseline: Costs) -> list[float | None]:
    """Accuracy 0 and, per cost, 10% beyond the budget's limit (so a config at the limit still
    adds volume); without a limit, 10% beyond the largest cost among the baselines and the
    space's largest configs (every choice, numbers at their highest: probed, not all); None for
    a measured cost without a limit, which no config's description bounds (it is resolved from
    the measurements when read: :func:`kwsearch.records.resolved_reference_point`)."""
    objectives = study.settings.objectives[1:]
    unlimited = [name for name in objectives if name not in budget.limits and name not in MEASURED]
    costs = [baseline]
    if unlimited:
        for config in study.baseline_configs().values():
            costs.append(costs_of(parse_model_config(config)))

        def every_choice_highest_number(dimension: Dimension) -> list[Any]:
            d = dimension.distribution
            return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.high]

        for config, _ in study.space.enumerate(every_choice_highest_number, limit=FEASIBILITY_PROBES // 4):
            try:
                costs.append(costs_of(parse_model_config(config), macs="macs" in unlimited))
            except ModelConfigError:
                continue
    point: list[float | None] = [0.0]
    for name in objectives:
        limit = budget.limits.get(name)
        if limit is None and name in MEASURED:
            point.append(None)
            continue
        point.append(1.1 * (limit if limit is not None else max(getattr(c, name) or 0 for c in costs)))
    return point


def open_store(study: Study, storage: str, budget: ResolvedBudget, baseline: Costs) -> StudyStore:
    """The study's store, created (and its record written) or continued (and checked to be the
    same study)."""
    directions = ["maximize"] + ["minimize"] * (len(study.settings.objectives) - 1)
    store = StudyStore.create(
        storage, study.name, directions=directions, sampler=make_sampler(study.settings.sampler)
    )
    stored = store.record
    if stored is None:
        store.write_record(
            StudyRecord(
                name=study.name,
                settings=json.loads(study.settings.model_dump_json()),
                objectives=study.settings.objectives,
                budget=budget.limits,
                baseline_config=static_baseline_config(study),
                baseline_costs=baseline,
                reference_point=_reference_point(study, budget, baseline),
                fingerprint=fingerprint(study),
                source=str(study.source) if study.source else None,
                started=time.time(),
                software=software_versions(),
            )
        )
    else:
        check_same_study(study, stored, storage)
    return store


def enqueue_grid(study: Study, store: StudyStore) -> None:
    """Every combination times every seed, once (combinations already stored are skipped)."""
    stored = [t.params for t in store.trials()]
    for combination in study.space.grid():
        for seed in study.settings.sampler.seeds:
            params = {**combination, "seed": seed}
            if params not in stored:
                store.enqueue(params)
                stored.append(params)


def seed_halving(halving: ParetoSuccessiveHalving, store: StudyStore, objectives: list[str]) -> None:
    """Let the finished trials' epochs meet new trials at every rung."""
    for trial in store.trials():
        if trial.status not in ("complete", "pruned") or trial.costs is None:
            continue
        values = trial.costs.as_dict()
        if any(values.get(name) is None for name in objectives[1:]):
            continue  # a measured cost it was never measured for
        for epoch in halving.rungs:
            if epoch <= len(trial.history):
                values["accuracy"] = trial.history[epoch - 1]["val_accuracy"]
                halving.record(str(trial.number), epoch, objective_point(values, objectives))


def pending_baselines(study: Study, store: StudyStore) -> dict[str, ModelConfig]:
    done = {t.baseline for t in store.baselines() if t.status == "complete"}
    return {
        label: parse_model_config(config, f"{study.where}: baselines.{label}")
        for label, config in study.baseline_configs().items()
        if label not in done
    }


def run_search(
    study: Study,
    *,
    trials: int | None = None,
    storage: str | None = None,
    address: str | None = None,
    runs_dir: str | Path = Path("runs"),
    progress: bool | None = None,
) -> StudySummary:
    """Run ``study`` (or continue it) until its budget is spent; return the summary.

    Raises StudyError for a study that cannot run (exit code 2 on the command line),
    ClusterError for a Ray cluster that cannot run it, and StudyBusy when another process runs it;
    a refused study leaves nothing behind.
    """
    runs_dir = Path(runs_dir)
    check_free(runs_dir / study.name)
    setup = prepare_search(study, storage=storage, runs_dir=runs_dir)
    with driver_lock(setup.run_dir):
        return run_prepared(setup, trials=trials, address=address, progress=progress)


def run_prepared(
    setup: SearchSetup, *, trials: int | None = None, address: str | None = None, progress: bool | None = None
) -> StudySummary:
    """Run a study that passed :func:`kwsearch.search.preflight.prepare_search`, under its
    driver's lock. The Ray cluster is asked first whether it can place a trial at all (ClusterError
    when not); only then is the study created in its storage."""
    study, run_dir = setup.study, setup.run_dir
    settings = study.settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trackers = Trackers(settings.log, study.name, run_dir)
    except TrackerError as error:
        raise StudyError(f"{study.where}: {error}") from None
    with ray_session(address) as node:
        gpus = gpus_per_run(settings.resources, node, auto=0.25, where=f"{study.where}: resources")
        store = open_store(study, setup.storage, setup.budget, setup.baseline)
        store.set_gpus_per_trial(gpus)
        store.requeue_interrupted()
        grid = settings.sampler.name == "grid"
        if grid:
            enqueue_grid(study, store)
        halving = ParetoSuccessiveHalving(settings.early_stopping, settings.proxy.epochs)
        seed_halving(halving, store, settings.objectives)
        wanted = trials if trials is not None else settings.budget.trials
        unlimited = grid or settings.budget.wall_clock or settings.budget.gpu_hours
        if wanted is None and not unlimited:
            wanted = 20  # never an endless search by accident
        store.set_trial_budget(wanted)  # the study file's, or --trials: what the report states
        plan = SearchPlan(
            space=study.space,
            objectives=settings.objectives,
            budget=setup.budget,
            recipe=settings.proxy,
            trials=wanted,
            deadline=time.time() + settings.budget.wall_clock if settings.budget.wall_clock else None,
            gpu_seconds=settings.budget.gpu_hours * 3600 if settings.budget.gpu_hours else None,
            gpus_per_trial=gpus,
            grid_seeds=settings.sampler.seeds if grid else None,
            baselines=pending_baselines(study, store),
            sampler_seed=settings.sampler.seed,
            confirm=settings.confirm,
            checkpoints=(run_dir / "checkpoints").resolve(),
            measure_size=data_shape(study).image_size if study.measures else None,
        )

        def budget_line(summary: StudySummary) -> str:
            spent = summary.complete + summary.pruned + summary.failed
            target = f"/{wanted}" if wanted else ""
            return f"trained {spent}{target}  trial time {summary.trial_seconds / 60:.1f} min"

        with SearchProgress(store, budget_line, enabled=progress, trials=wanted) as view:
            policy = SearchPolicy(store, plan, halving, on_change=view.changed, trackers=trackers)
            driver = Driver(policy)
            try:
                run_tune(
                    driver,
                    data=settings.data.model_dump(),
                    resources=settings.resources,
                    gpus=gpus,
                    retries=settings.retries,
                    run_dir=run_dir,
                    scheduler=ParetoScheduler(halving),
                )
            finally:
                trackers.close()
    summary = summarize(store)
    summary.stop_reason = policy.stop_reason
    # Ray Tune ends its run on Ctrl-C; runs still live then were cut off and re-run next time
    summary.interrupted = bool(driver.unfinished)
    return summary

"""Run or resume a study: storage, budget resolution, the feasibility check, Ray Tune.

Running the same study again continues it: finished trials are kept, trials a killed driver left
RUNNING are put back to WAITING and re-run under their own trial numbers (Optuna returns a
resumed trial's stored parameters), and the count of trained trials reaches the budget.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from kwsearch.models import ModelConfigError, parse_model_config
from kwsearch.search.budget import Costs, ResolvedBudget, costs_of
from kwsearch.search.execution import gpu_share, ray_session, run_tune, trial_threads
from kwsearch.search.locate import default_storage
from kwsearch.search.progress import SearchProgress
from kwsearch.search.records import StudySummary, objective_point, references_name, summarize
from kwsearch.search.samplers import make_sampler
from kwsearch.search.scheduler import ParetoScheduler, ParetoSuccessiveHalving
from kwsearch.search.searcher import OptunaBudgetSearcher, SearchPlan
from kwsearch.search.space import Dimension
from kwsearch.search.study import Study, StudyError
from kwsearch.versions import software_versions

# How many configs of the space (every choice, numbers at their lowest) are accounted before the
# study starts to tell whether any can meet the budget.
FEASIBILITY_PROBES = 64


class StudyBusy(RuntimeError):
    """Another kwsearch process is running this study."""


def open_storage(url: str) -> optuna.storages.BaseStorage:
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


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


def static_baseline_config(study: Study) -> dict[str, Any]:
    config, _ = study.space.sample(Dimension.lowest)
    return {**config, "conv": {"family": "static"}}


def resolve_budget(study: Study) -> tuple[ResolvedBudget, Costs]:
    """The budget's absolute limits and the static baseline's costs they are relative to."""
    try:
        baseline = costs_of(parse_model_config(static_baseline_config(study)))
    except ModelConfigError as error:
        raise StudyError(f"{study.space.source}: the static baseline: {error}") from None
    limits = {
        name: limit.resolve(getattr(baseline, name)) for name, limit in study.settings.budget.limits().items()
    }
    return ResolvedBudget(limits), baseline


def check_feasible(study: Study, budget: ResolvedBudget) -> None:
    """Raise StudyError when no probed config of the space meets the budget."""
    if not budget.limits:
        return

    def every_choice_lowest_number(dimension: Dimension) -> list[Any]:
        d = dimension.distribution
        return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low]

    smallest: Costs | None = None
    for config, _ in study.space.enumerate(every_choice_lowest_number, limit=FEASIBILITY_PROBES):
        try:
            costs = costs_of(parse_model_config(config), macs=budget.counts_macs)
        except ModelConfigError:
            continue
        if budget.feasible(costs):
            return
        if smallest is None or costs.params < smallest.params:
            smallest = costs
    found = (
        f"the smallest config found: {budget.describe(smallest)}" if smallest else "no valid config was found"
    )
    raise StudyError(f"{study.where}: budget: no config of the space can meet it ({found})")


def _fingerprint(study: Study) -> dict[str, Any]:
    """What must not change between runs of one stored study."""
    s = study.settings
    return json.loads(
        json.dumps(
            {
                "space": study.space.tree,
                "data": s.data.model_dump(),
                "proxy": s.proxy.model_dump(mode="json"),
                "objectives": s.objectives,
                "limits": {k: v.model_dump() for k, v in s.budget.limits().items()},
                "sampler": s.sampler.name,
            },
            default=str,
        )
    )


def _reference_point(study: Study, budget: ResolvedBudget, baseline: Costs) -> list[float]:
    """Accuracy 0 and, per cost, 10% beyond the budget's limit (so a config at the limit still
    adds volume); without a limit, 10% beyond the largest cost among the references and the
    space's largest configs (every choice, numbers at their highest: probed, not all)."""
    objectives = study.settings.objectives[1:]
    unlimited = [name for name in objectives if name not in budget.limits]
    costs = [baseline]
    if unlimited:
        for config in study.reference_configs().values():
            costs.append(costs_of(parse_model_config(config)))

        def every_choice_highest_number(dimension: Dimension) -> list[Any]:
            d = dimension.distribution
            return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.high]

        for config, _ in study.space.enumerate(every_choice_highest_number, limit=FEASIBILITY_PROBES // 4):
            try:
                costs.append(costs_of(parse_model_config(config), macs="macs" in unlimited))
            except ModelConfigError:
                continue
    point = [0.0]
    for name in objectives:
        limit = budget.limits.get(name)
        point.append(1.1 * (limit if limit is not None else max(getattr(c, name) or 0 for c in costs)))
    return point


def open_studies(study: Study, storage: str, budget: ResolvedBudget, baseline: Costs):
    """The search study and its reference study, created or loaded (and checked to be the same)."""
    directions = ["maximize"] + ["minimize"] * (len(study.settings.objectives) - 1)
    sampler = make_sampler(study.settings.sampler)
    backend = open_storage(storage)
    search = optuna.create_study(
        storage=backend, study_name=study.name, directions=directions, sampler=sampler, load_if_exists=True
    )
    fingerprint = _fingerprint(study)
    stored = search.user_attrs.get("fingerprint")
    if stored is None:
        search.set_user_attr("fingerprint", fingerprint)
        search.set_user_attr("settings", json.loads(study.settings.model_dump_json()))
        search.set_user_attr("source", str(study.source) if study.source else None)
        search.set_user_attr("objectives", study.settings.objectives)
        search.set_user_attr("budget", budget.limits)
        search.set_user_attr("baseline", baseline.as_dict())
        search.set_user_attr("reference_point", _reference_point(study, budget, baseline))
        search.set_user_attr("started", time.time())
        search.set_user_attr("software", software_versions())
    elif stored != fingerprint:
        changed = sorted(k for k in fingerprint if fingerprint[k] != stored.get(k))
        raise StudyError(
            f"{study.where}: {', '.join(changed)}: differ from study {study.name!r} stored in {storage}; "
            "give the search another --name to start a new study"
        )
    references = optuna.create_study(
        storage=backend, study_name=references_name(study.name), directions=directions, load_if_exists=True
    )
    return search, references


def requeue_interrupted(study: optuna.Study) -> int:
    """Put trials a dead driver left RUNNING back to WAITING; return how many."""
    storage = study._storage
    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in interrupted:
        storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
    return len(interrupted)


def enqueue_grid(study: Study, search: optuna.Study) -> None:
    """Every combination times every seed, once (combinations already stored are skipped)."""
    stored = [t.params for t in search.get_trials(deepcopy=False)]
    for combination in study.space.grid():
        for seed in study.settings.sampler.seeds:
            params = {**combination, "seed": seed}
            if params not in stored:
                search.enqueue_trial(params, skip_if_exists=False)
                stored.append(params)


def seed_halving(halving: ParetoSuccessiveHalving, search: optuna.Study, objectives: list[str]) -> None:
    for trial in search.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        history = trial.user_attrs.get("history") or []
        costs = trial.user_attrs.get("costs")
        if not costs or trial.user_attrs.get("status") == "infeasible":
            continue
        for epoch in halving.rungs:
            if epoch <= len(history):
                values = {"accuracy": history[epoch - 1]["val_accuracy"], **costs}
                halving.record(str(trial.number), epoch, objective_point(values, objectives))


def pending_references(study: Study, references: optuna.Study) -> dict[str, dict[str, Any]]:
    done = {
        t.user_attrs.get("reference")
        for t in references.get_trials(deepcopy=False)
        if t.user_attrs.get("status") == "complete"
    }
    return {label: config for label, config in study.reference_configs().items() if label not in done}


def run_search(
    study: Study,
    *,
    trials: int | None = None,
    storage: str | None = None,
    address: str | None = None,
    runs_dir: Path = Path("runs"),
    progress: bool | None = None,
) -> StudySummary:
    """Run ``study`` (or continue it) until its budget is spent; return the summary.

    Raises StudyError for a study that cannot run (exit code 2 on the command line) and
    StudyBusy when another process runs it.
    """
    from ray import tune  # Ray loads in seconds: only once a search really runs

    from kwsearch.search.trainable import run_trial

    settings = study.settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = runs_dir / study.name
    with driver_lock(run_dir), ExitStack() as stack:
        # everything that can reject the study runs before Ray starts (seconds)
        budget, baseline = resolve_budget(study)
        check_feasible(study, budget)
        storage = storage or settings.storage or default_storage(run_dir)
        search, references = open_studies(study, storage, budget, baseline)
        cluster = stack.enter_context(ray_session(address))
        gpus = gpu_share(settings.resources.gpu, cluster, auto=0.25, where=f"{study.where}: resources.gpu")
        search.set_user_attr("gpus_per_trial", gpus)
        requeue_interrupted(search)
        requeue_interrupted(references)
        grid = settings.sampler.name == "grid"
        if grid:
            enqueue_grid(study, search)
        halving = ParetoSuccessiveHalving(settings.early_stopping, settings.proxy.epochs)
        seed_halving(halving, search, settings.objectives)
        wanted = trials if trials is not None else settings.budget.trials
        unlimited = grid or settings.budget.wall_clock or settings.budget.gpu_hours
        if wanted is None and not unlimited:
            wanted = 20  # never an endless search by accident
        plan = SearchPlan(
            space=study.space,
            objectives=settings.objectives,
            budget=budget,
            recipe=settings.proxy.model_dump(mode="json"),
            epochs=settings.proxy.epochs,
            trials=wanted,
            deadline=time.time() + settings.budget.wall_clock if settings.budget.wall_clock else None,
            gpu_seconds=settings.budget.gpu_hours * 3600 if settings.budget.gpu_hours else None,
            gpus_per_trial=gpus,
            grid_seeds=settings.sampler.seeds if grid else None,
            references=pending_references(study, references),
            sampler_seed=settings.sampler.seed,
        )

        def budget_line(summary: StudySummary) -> str:
            spent = summary.complete + summary.pruned + summary.failed
            target = f"/{wanted}" if wanted else ""
            return f"trained {spent}{target}  trial time {summary.trial_seconds / 60:.1f} min"

        with SearchProgress(search, references, budget_line, enabled=progress) as view:
            searcher = OptunaBudgetSearcher(search, references, plan, halving, on_change=view.changed)
            trainable = tune.with_parameters(
                run_trial, data=settings.data.model_dump(), threads=trial_threads(settings)
            )
            run_tune(
                trainable,
                searcher,
                settings,
                run_dir,
                gpus,
                scheduler=ParetoScheduler(halving),
            )
        summary = summarize(search, references)
        summary.stop_reason = searcher.stop_reason
        # Ray Tune ends its run on Ctrl-C; trials still live then were cut off and re-run next time
        summary.interrupted = bool(searcher.live)
        return summary

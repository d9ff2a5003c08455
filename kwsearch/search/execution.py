"""Ray for searches and replays: one session per driver, the GPU share of each trial, and the
Ray Tune run that a searcher (proposing trials) drives."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kwsearch.search.study import StudyError, StudySettings


@contextmanager
def ray_session(address: str | None) -> Iterator[dict[str, float]]:
    """Ray for one driver: a local instance (or the cluster at ``address``); yields the cluster's
    resources. Leaves an instance it did not start (a test's, a notebook's) running. Raises
    StudyError when the cluster at ``address`` cannot be joined."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError) as error:
            if address is None:
                raise
            raise StudyError(f"--address {address}: cannot join the Ray cluster ({error})") from None
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield ray.cluster_resources()
    finally:
        if started_here:
            ray.shutdown()


def gpu_share(wanted: float | str, cluster: dict[str, float], auto: float, where: str) -> float:
    """GPUs per trial: ``wanted``, or for ``auto`` the share ``auto`` where the cluster has GPUs
    and none elsewhere. Raises StudyError (naming ``where``) when the cluster has too few."""
    available = cluster.get("GPU", 0.0)
    if wanted == "auto":
        return auto if available else 0.0
    if wanted > available:
        raise StudyError(f"{where}: {wanted} per trial, but the Ray cluster has {available:g} GPUs")
    return wanted


def trial_threads(settings: StudySettings) -> int:
    """torch threads per trial: the study's, or one per CPU the trial holds."""
    return settings.resources.threads or max(1, int(settings.resources.cpu))


def run_tune(
    trainable: Callable,
    searcher,
    settings: StudySettings,
    run_dir: Path,
    gpus: float,
    scheduler=None,
) -> None:
    """Run ``trainable`` as Ray Tune trials until ``searcher`` has nothing more to propose. Ray's
    result folders (``run_dir/ray``) are scratch: the searcher writes the study's storage."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": settings.resources.cpu, "gpu": gpus}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=settings.resources.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str((run_dir / "ray").resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.retries),
        ),
    )
    tuner.fit()

"""Ray for searches, replays and calibrations: one session per driver, the GPU share of each run,
and the Ray Tune run that a driver (proposing runs) feeds."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class ClusterError(ValueError):
    """A Ray cluster that cannot be joined or cannot give what was asked (bad input: exit 2)."""


@contextmanager
def ray_session(address: str | None) -> Iterator[dict[str, float]]:
    """Ray for one driver: a local instance (or the cluster at ``address``); yields the cluster's
    resources. Leaves an instance it did not start (a test's, a notebook's) running. Raises
    ClusterError when the cluster at ``address`` cannot be joined."""
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
            raise ClusterError(f"--address {address}: cannot join the Ray cluster ({error})") from None
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield ray.cluster_resources()
    finally:
        if started_here:
            ray.shutdown()


def gpu_share(wanted: float | str, cluster: dict[str, float], auto: float, where: str) -> float:
    """GPUs per run: ``wanted``, or for ``auto`` the share ``auto`` where the cluster has GPUs
    and none elsewhere. Raises ClusterError (naming ``where``) when the cluster has too few."""
    available = cluster.get("GPU", 0.0)
    if wanted == "auto":
        return auto if available else 0.0
    if wanted > available:
        raise ClusterError(f"{where}: {wanted} per trial, but the Ray cluster has {available:g} GPUs")
    return wanted


def check_workers(workers: int, cpus: float, gpus: float, cluster: dict[str, float], where: str) -> None:
    """Refuse a run of ``workers`` data-parallel workers of ``cpus`` CPUs and ``gpus`` GPUs each
    that the cluster cannot hold at once (its Ray Train run would wait for them forever). Raises
    ClusterError naming ``where``."""
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        needed, available = workers * each, cluster.get(name, 0.0)
        if needed > available:
            raise ClusterError(
                f"{where}: {workers} workers of {each:g} {name}s each need {needed:g}, but the Ray cluster "
                f"has {available:g}"
            )


class Resources(Protocol):
    """What each run holds (a study's ``resources`` settings)."""

    cpu: float
    max_concurrent: int | None
    torch_threads: int


def run_tune(
    driver,
    *,
    data: dict[str, Any],
    resources: Resources,
    gpus: float,
    retries: int,
    run_dir: Path,
    scheduler=None,
) -> None:
    """Run the one trainable on ``data`` as Ray Tune trials, each holding ``resources`` and
    ``gpus`` (a run of several data-parallel workers: each of its workers), until ``driver`` has
    nothing more to propose; a run whose worker dies is restarted up to ``retries`` times. Ray's
    result folders (``run_dir/ray``) are scratch: the driver's policy writes the study's storage."""
    from ray import tune

    from kwsearch.execution._trainable import train_run

    def trial_resources(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        if config["recipe"].workers == 1:
            return tune.PlacementGroupFactory([{"CPU": resources.cpu, "GPU": gpus}])
        # A data-parallel run's workers (a Ray Train run) hold its CPUs and GPUs; its trial only
        # waits for them. Ray refuses a trial that asks for nothing: it asks for one byte of memory.
        return tune.PlacementGroupFactory([{"memory": 1}])

    trainable = tune.with_parameters(
        train_run, data=data, threads=resources.torch_threads, cpus=resources.cpu, gpus=gpus
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources),
        tune_config=tune.TuneConfig(
            search_alg=driver,
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=resources.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str((run_dir / "ray").resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=retries),
        ),
    )
    tuner.fit()

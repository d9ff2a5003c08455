"""Ray for searches, replays and calibrations: one session per driver, the GPU share of each run,
and the Ray Tune run that a driver (proposing runs) feeds."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class ClusterError(ValueError):
    """A Ray cluster that cannot be joined or cannot give what was asked (bad input: exit 2)."""


# Ray Tune's limit on the runs it places at once (read when a Tune run starts).
PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
# Ray's setting for starting idle worker processes with the first driver (read when Ray starts).
PRESTART_ENV = "RAY_prestart_worker_first_driver"
# How long the Ray cluster named by --address may take to accept a connection.
CONNECT_TIMEOUT_S = 5


def _check_reachable(address: str) -> None:
    """Raise ClusterError unless something accepts connections at ``address`` (HOST:PORT, or
    ray://HOST:PORT): Ray itself retries an address nobody listens on for ever."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address}: not HOST:PORT (or auto, local)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ClusterError(f"--address {address}: no Ray cluster answers there ({reason})") from None


@contextmanager
def ray_session(address: str | None) -> Iterator[dict[str, float]]:
    """Ray for one driver: a local instance (or the cluster at ``address``); yields the most of
    each resource (CPU, GPU) one node of the cluster has: what one run can be given.
    Leaves an instance it did not start (a test's, a notebook's) running, and stops one it
    started however the block ends. Raises ClusterError when the cluster at ``address`` cannot
    be joined (within CONNECT_TIMEOUT_S when nothing listens there)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # A Ray started here starts no idle worker processes ahead of time (one per CPU): Ray Tune's
    # actors ask for a runtime environment of their own, so they never take those, which cost half
    # a CPU-second each as the search started, on the cores its first runs wait for. (Read by a
    # Ray started here only.)
    os.environ.setdefault(PRESTART_ENV, "0")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address not in (None, "auto", "local"):
            _check_reachable(address)
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
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        yield {key: max(node.get(key, 0.0) for node in nodes) for key in ("CPU", "GPU")}
    finally:
        if started_here:
            ray.shutdown()


def check_workers(workers: int, cpus: float, gpus: float, cluster: dict[str, float], where: str) -> None:
    """Refuse a run of ``workers`` data-parallel workers of ``cpus`` CPUs and ``gpus`` GPUs each
    that the cluster (``cluster``: its nodes' resources together, :func:`cluster_total`) cannot
    hold at once: its Ray Train run would wait for them for ever. Raises ClusterError naming
    ``where``."""
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        needed, available = workers * each, cluster.get(name, 0.0)
        if needed > available:
            raise ClusterError(
                f"{where}: {workers} workers of {each:g} {name}s each need {needed:g}, but the Ray cluster "
                f"has {available:g}"
            )


def cluster_total() -> dict[str, float]:
    """The CPUs and GPUs of every node of the Ray cluster together (a data-parallel run's
    workers may be placed on several nodes)."""
    import ray

    total = ray.cluster_resources()
    return {key: float(total.get(key, 0.0)) for key in ("CPU", "GPU")}


class Resources(Protocol):
    """What each run holds (a study's ``resources`` settings)."""

    cpu: float
    gpu: float | str  # or "auto"
    max_concurrent: int | None
    torch_threads: int


def gpus_per_run(resources: Resources, node: dict[str, float], auto: float, where: str) -> float:
    """GPUs each run holds: ``resources.gpu``, or for ``auto`` the share ``auto`` where the
    cluster has GPUs and none elsewhere. Raises ClusterError (naming ``where``.cpu or .gpu) when
    no node of the cluster (``node``: the most of each resource one has) can hold a run's CPUs
    or GPUs: Ray would wait for ever to place it."""
    for key, wanted in (("cpu", resources.cpu), ("gpu", resources.gpu)):
        available = node.get(key.upper(), 0.0)
        if wanted != "auto" and wanted > available:
            raise ClusterError(
                f"{where}.{key}: {wanted:g} per run, but no node of the Ray cluster has more than "
                f"{available:g} {key.upper()}s"
            )
    if resources.gpu == "auto":
        return auto if node.get("GPU", 0.0) else 0.0
    return resources.gpu


def concurrent_runs(resources: Resources, gpus: float, cluster: dict[str, float], workers: int = 1) -> int:
    """How many runs of ``workers`` data-parallel workers of ``resources.cpu`` CPUs and ``gpus``
    GPUs each ``cluster`` (its resources together) holds at once, at most
    ``resources.max_concurrent``; at least 1."""
    fits = [cluster.get("CPU", 0.0) / (resources.cpu * workers)] if resources.cpu else []
    if gpus:
        fits.append(cluster.get("GPU", 0.0) / (gpus * workers))
    runs = int(min(fits)) if fits else 1
    if resources.max_concurrent:
        runs = min(runs, resources.max_concurrent)
    return max(runs, 1)


def run_tune(
    driver,
    *,
    data: dict[str, Any],
    resources: Resources,
    gpus: float,
    retries: int,
    run_dir: Path,
    scheduler=None,
    workers: int = 1,
) -> None:
    """Run the one trainable on ``data`` as Ray Tune trials, each holding ``resources`` and
    ``gpus`` (a run of ``workers`` data-parallel workers: each of its workers), until ``driver``
    has nothing more to propose; a run whose worker dies is restarted up to ``retries`` times. Ray's
    result folders (``run_dir/ray``) are scratch: the driver's policy writes the study's storage."""
    from ray import tune

    from kwsearch.execution._trainable import train_run

    # Ray Tune places one proposed run at a time by default: at the start, every slot but the first
    # waited for the run before it to be placed (a worker process started, its imports) before its
    # own was proposed. Ray Tune may now place as many at once as the cluster holds; the driver
    # proposes them (Driver.slots) and, beyond them, one run at a time as before.
    slots = concurrent_runs(resources, gpus, cluster_total(), workers)
    driver.slots = slots

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
            # no callbacks: given any, Ray Tune imports every tracker integration it counts for its
            # usage statistics (W&B's alone 1 to 3 s); the driver learns of starts from the runs
        ),
    )
    user_set = PENDING_ENV in os.environ  # a user's own setting stands
    if not user_set:
        os.environ[PENDING_ENV] = str(slots)
    try:
        tuner.fit()
    finally:
        if not user_set:
            del os.environ[PENDING_ENV]

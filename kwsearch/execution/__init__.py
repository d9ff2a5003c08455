"""Training runs on Ray: one driver that policies (search, replay, calibration) tell what to run
next, one trainable, and the Ray session they run in."""

from kwsearch.execution._driver import WAIT, Driver, Outcome, Run, RunPolicy
from kwsearch.execution._ray import (
    ClusterError,
    check_workers,
    cluster_total,
    concurrent_runs,
    gpus_per_run,
    ray_session,
    run_tune,
)
from kwsearch.execution._trainable import METRICS

__all__ = [
    "METRICS",
    "WAIT",
    "ClusterError",
    "Driver",
    "Outcome",
    "Run",
    "RunPolicy",
    "check_workers",
    "cluster_total",
    "concurrent_runs",
    "gpus_per_run",
    "ray_session",
    "run_tune",
]

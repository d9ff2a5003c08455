"""The one Ray Tune trainable: train one model config by one recipe with the one trainer, report
every epoch, then the whole history. Proxy trials, baselines and replays all run it; a run given a
folder checkpoints every epoch there and resumes from it. Runs in a Ray worker, where the data set
is loaded once per process and reused by every run that worker takes (``reuse_actors``).

A recipe of several ``workers`` trains data-parallel: the trial launches one Ray Train run
(``TorchTrainer``, DDP over gloo on CPUs or NCCL on GPUs) whose workers each run the same trainer
on their share of every batch and report, as one, what a single process would; the trial passes
their reports on to Ray Tune. Checkpoints and resumption are the trainer's (rank 0 writes the
run's folder, every worker resumes from it), so a killed replay resumes alike on any number of
workers.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from kwsearch.train import ONE, DataParallel, Workers, default_device, train_model
from kwsearch.train.timing import measure_costs

# Per-epoch metrics reported to Ray (numbers only; the trainer's None temperature is left out).
METRICS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_images",
    "test_loss",
    "test_accuracy",
    "test_images",
    "lr",
    "temperature",
    "train_seconds",
    "epoch_seconds",
    *("started_at", "setup_seconds", "ended_at", "process"),  # where a run's time went (fit's)
)


def _train(
    config: dict[str, Any],
    data: dict[str, Any],
    report: Callable[[dict[str, Any]], None],
    device: torch.device,
    workers: Workers = ONE,
    started_at: float | None = None,
) -> None:
    """Train the run, reporting each epoch's metrics, then ``finished`` with the whole history (a
    resumed run's earlier epochs included) and the epoch it resumed from. Its set-up counts from
    ``started_at`` (default: the trainer's start)."""
    folder = config.get("folder")
    result = train_model(
        config["model"],
        data["name"],
        config["recipe"],
        device=device,
        data_root=data.get("root"),
        data_options=data.get("options"),
        checkpoint_dir=Path(folder) if folder else None,
        on_epoch=lambda metrics: report(
            {k: float(metrics[k]) for k in METRICS if metrics.get(k) is not None}
        ),
        progress=False,
        workers=workers,
        started_at=started_at,
    )
    report(
        {
            "finished": 1.0,
            "resumed_from_epoch": float(result.resumed_from_epoch),
            "history": json.dumps(result.history),
        }
    )


def train_run(config: dict[str, Any], data: dict[str, Any], threads: int, cpus: float, gpus: float) -> None:
    """Train ``config["model"]`` (a validated ModelConfig) by ``config["recipe"]`` (a Recipe) on
    ``data``, checkpointing into ``config["folder"]`` when it names one: in this process, or by
    the recipe's ``workers`` data-parallel workers of ``cpus`` CPUs and ``gpus`` GPUs each. A run
    with ``config["measure"]`` is timed first (:func:`_measure`) and not trained when a measured
    cost is over its limit. A failure is reported (message and traceback; a worker's own) before
    it is raised, so the study records why."""
    torch.set_num_threads(threads)
    # The run's time, and its set-up, count from here: timing its measured costs is part of it.
    started_at = time.time()
    tune.report({"started_at": started_at})  # tells the driver the run is in a worker
    try:
        if config.get("measure") and not _measure(config, default_device()):
            return
        if config["recipe"].workers > 1:
            _train_data_parallel(config, data, threads, cpus, gpus)
        else:
            # Ray sets CUDA_VISIBLE_DEVICES to the run's GPU (share)
            _train(config, data, tune.report, default_device(), started_at=started_at)
    except Exception as error:
        failure, where = _worker_failure(error)
        tune.report({"error": f"{type(failure).__name__}: {failure}", "traceback": where})
        raise


def _measure(config: dict[str, Any], device: torch.device) -> bool:
    """Time the run's model on ``device`` (Ray set it to the run's GPU share, or this process's
    CPUs; a data-parallel run's first worker's kind of device), report what was measured, and
    return whether every measured cost is within ``config["measure"]["limits"]``."""
    spec, model = config["measure"], config["model"]
    measured = measure_costs(model, (model.in_chans, *spec["image_size"]), config["recipe"], device)
    tune.report({"measured": json.dumps(measured)})
    return all(measured[name] <= limit for name, limit in spec.get("limits", {}).items())


def _worker_failure(error: Exception) -> tuple[BaseException, str]:
    """The exception that failed the run and its traceback: a data-parallel run's lowest failed
    rank's own (Ray Train wraps it, with its traceback as text), else ``error``'s."""
    from ray.train import WorkerGroupError

    if isinstance(error, WorkerGroupError) and error.worker_failures:
        return error.worker_failures[min(error.worker_failures)], str(error)
    return error, traceback.format_exc()


def _train_data_parallel(
    config: dict[str, Any], data: dict[str, Any], threads: int, cpus: float, gpus: float
):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config={"run": config, "data": data, "threads": threads},
        scaling_config=ScalingConfig(
            num_workers=config["recipe"].workers,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": cpus, "GPU": gpus},
        ),
        run_config=RunConfig(
            name="data-parallel",
            storage_path=tune.get_context().get_trial_dir(),  # Ray's scratch, like the trial's own
            callbacks=[TuneReportCallback()],
            # the trial is the run that Ray Tune retries (`retries`), resuming from the checkpoint
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()


def _data_parallel_worker(loop: dict[str, Any]) -> None:
    """One data-parallel worker: the same training on its share of every batch. Every worker
    reports (Ray Train's report is a barrier); rank 0's reports reach Ray Tune."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(loop["threads"])
    _train(loop["run"], loop["data"], ray.train.report, ray.train.torch.get_device(), DataParallel())

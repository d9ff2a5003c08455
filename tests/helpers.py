"""Shared test tools: a trained-looking parameter state, the plain per-sample reference, an
interrupted training run, a driver killed mid-run, and a local HTTP mirror for download tests."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def randomize_(module: nn.Module, seed: int = 1) -> nn.Module:
    """Overwrite every parameter and norm statistic with random values, so tests do not run
    on the special structure of an initial state (zero biases, unit norms, one-hot bias...)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) * 1.5 + 0.5)
    return module


def per_sample_conv(x, weights, biases, stride, padding, dilation, groups):
    """Reference: a loop over samples, each convolved with its own kernel by F.convNd.

    ``weights`` is a list of (O, C/groups, *K) tensors, ``biases`` a list of (O,) tensors or None.
    """
    conv = _CONV[x.dim() - 2]
    outputs = []
    for b in range(x.shape[0]):
        bias = None if biases is None else biases[b]
        outputs.append(conv(x[b : b + 1], weights[b], bias, stride, padding, dilation, groups))
    return torch.cat(outputs)


def interrupt_after_epoch(train: Callable[..., object], epoch: int) -> None:
    """Call ``train(on_epoch=...)`` and stop it, as a crash would, once epoch ``epoch`` has been
    checkpointed (for resumption tests)."""

    class Interrupt(Exception):
        pass

    def stop(metrics):
        if metrics["epoch"] == epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(on_epoch=stop)


def checkpoint_epoch(folder) -> int:
    """The last epoch checkpointed in ``folder`` (0 when there is no checkpoint yet)."""
    from kwsearch.train.checkpoint import load_checkpoint

    try:
        saved = load_checkpoint(folder)
    except Exception:  # not there yet, or being written
        return 0
    return saved["epoch"] if saved else 0


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (read from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_when_a_run_is_half_done(command, folders, epochs: int, timeout=240) -> None:
    """Start ``command`` in its own session; SIGKILL it (and every process it started, Ray's
    included) once the checkpoint in one of ``folders`` is past its first epoch and short of its
    last (``epochs``)."""
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            assert process.poll() is None, "the command finished before it could be interrupted"
            if any(1 <= checkpoint_epoch(f) < epochs for f in folders):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no run reached its first checkpoint in time")
    finally:
        started = descendants(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        for child in started:  # any that left the session (Ray's own daemons)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.wait()


def session_members(sid: int) -> list[str]:
    """Command lines of the live processes in session ``sid`` (zombies left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue
    return found


def wait_for_no_members(sid: int, seconds: float) -> list[str]:
    """Wait until session ``sid`` is empty; kill what is left after ``seconds`` and return it."""
    deadline = time.time() + seconds
    while (members := session_members(sid)) and time.time() < deadline:
        time.sleep(0.5)
    for stat in Path("/proc").glob("[0-9]*/stat") if members else ():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                os.kill(int(stat.parent.name), signal.SIGKILL)
    return members


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6) -> None:
    """Relative error of the whole tensor (max abs difference over max abs value) below ``rtol``."""
    scale = expected.abs().max().clamp_min(1e-12)
    error = ((actual - expected).abs().max() / scale).item()
    assert error < rtol, f"relative error {error:.3g} >= {rtol}"


@contextmanager
def serving(folder):
    """Serve ``folder`` over HTTP on the loopback interface; yields the base URL."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# -- tiny searches ---------------------------------------------------------------------------------

TINY_SPACE = {
    "backbone": "resnet18_cifar",
    "num_classes": 4,
    "in_chans": 1,
    "input_size": [12, 12],
    "width": 0.0625,
    "conv": {"family": "static"},
}
TINY_DATA = {
    "name": "synthetic",
    "options": {"num_classes": 4, "height": 12, "width": 12, "channels": 1, "num_train": 320, "num_test": 64},
}
TINY_PROXY = {"epochs": 2, "batch_size": 64, "val_size": 64, "augment": False}


def tiny_study(name: str, space: dict | None = None, **settings) -> dict:
    """A study mapping over the tiny space (overrides merged in), on generated 12x12 data, that
    trains each trial in well under a second on one CPU."""
    study = {
        "name": name,
        "space": {**TINY_SPACE, **(space or {})},
        "data": TINY_DATA,
        "proxy": TINY_PROXY,
        "early_stopping": False,
        "resources": {"cpu": 1, "max_concurrent": 2, "threads": 1},
        "baselines": [],
    }
    study.update(settings)
    return study


def stored_trials(run_dir, name: str):
    """The trials of study ``name`` in the default storage under ``run_dir``, as Optuna stores
    them (what its samplers read; :func:`status_of` says what kwsearch made of each)."""
    import optuna

    url = f"sqlite:///{run_dir / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def status_of(trial) -> str:
    """What a stored Optuna trial is to kwsearch: complete, pruned, failed, infeasible, duplicate..."""
    from kwsearch.records import TrialRecord

    return TrialRecord.from_frozen(trial).status


def ray_trials(run_dir) -> dict[str, dict]:
    """Every trial Ray Tune was given, from its experiment state files (one per driver run): Ray's
    trial id -> {config, last_result}. What reached a trainer, read from Ray's side: the config's
    ``key`` (the trial number, or ``baseline:LABEL``), ``model`` and ``recipe`` (the parsed
    objects, which Ray stores pickled) and ``cost_point`` (None for baselines)."""
    import json

    from ray import cloudpickle

    def decode(value):
        if isinstance(value, dict) and value.get("_type") == "CLOUDPICKLE_FALLBACK":
            return cloudpickle.loads(bytes.fromhex(value["value"]))
        return value

    trials = {}
    for path in sorted((run_dir / "ray" / "tune").glob("experiment_state-*.json")):
        for trial_json, metadata in json.loads(path.read_text())["trial_data"]:
            trial = json.loads(trial_json)
            runtime = json.loads(metadata)
            config = {key: decode(value) for key, value in trial["config"].items()}
            trials[trial["trial_id"]] = {"config": config, "last_result": runtime["last_result"]}
    return trials


# -- studies written whole through the record (no training): what summaries and reports read ----

SPACE_WIDTHS = [0.15625, 0.25, 0.5]  # 0.15625: a value that four significant digits would change


def trial_record(number: int, status: str, params: int, accuracies: list[float], **fields):
    """A stored search trial of a KernelWarehouse space (``width`` from SPACE_WIDTHS, default
    0.25; ``ratio``, its cell_num_ratio, default ``number + 1`` so each trial is a config of its
    own) with one epoch per accuracy over 1,000 validation images, 10 s each, started ``ago``
    seconds before now (default 100); ``fields`` go to the record (error, seed...)."""
    import datetime

    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from kwsearch.records import Costs, TrialRecord

    width, ratio = fields.pop("width", 0.25), float(fields.pop("ratio", number + 1))
    started = datetime.datetime.now() - datetime.timedelta(seconds=fields.pop("ago", 100))
    history = [
        {"epoch": e, "val_accuracy": a, "val_images": 1000, "epoch_seconds": 10.0}
        for e, a in enumerate(accuracies, start=1)
    ]
    return TrialRecord(
        number=number,
        status=status,
        params={"width": width, "conv.kw.cell_num_ratio": ratio},
        distributions={
            "width": CategoricalDistribution(SPACE_WIDTHS),
            "conv.kw.cell_num_ratio": FloatDistribution(0.5, 64.0),
        },
        config={
            "backbone": "resnet18_cifar",
            "width": width,
            "conv": {"family": "kw", "cell_num_ratio": ratio},
        },
        costs=Costs(params, params, 40 * params),
        history=history,
        seed=fields.pop("seed", 0),
        seconds=None if status == "running" else 10.0 * len(accuracies),
        trained=status not in ("infeasible", "duplicate"),
        started=started,
        finished=None if status == "running" else started + datetime.timedelta(seconds=30),
        **fields,
    )


def study_of(
    trials: list,
    *,
    name: str = "written",
    storage=None,
    epochs: int = 3,
    trial_budget: int = 8,
    params_limit: float = 1e6,
    objectives: tuple[str, ...] = ("accuracy", "params"),
):
    """A study of ``trials`` (:func:`trial_record`; baselines where ``baseline`` is set) stored
    whole in ``storage`` (default in memory), under a budget of ``params_limit`` parameters (the
    reference point 10% beyond it)."""
    import optuna

    from kwsearch.records import Costs, StudyRecord, StudyStore

    store = StudyStore.create(
        storage or optuna.storages.InMemoryStorage(),
        name,
        directions=["maximize"] + ["minimize"] * (len(objectives) - 1),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    store.write_record(
        StudyRecord(
            name=name,
            settings={
                "proxy": {"epochs": epochs},
                "sampler": {"name": "random", "seed": 0},
                "budget": {"trials": trial_budget},
            },
            objectives=list(objectives),
            budget={"params": params_limit},
            baseline_config={"backbone": "resnet18_cifar", "width": 0.25, "conv": {"family": "static"}},
            baseline_costs=Costs(300_000, 300_000, 9_000_000),
            reference_point=[0.0] + [1.1 * params_limit] * (len(objectives) - 1),
        )
    )
    store.add(trials)
    return store


# ResNet18's 3x3 layers at 112 px, batch 32: (in, out, input side, stride) and the path of DY-CNN
# and ODConv that bench/ops.py timed fastest on a CPU (docs/benchmarks.md, "the cost model's
# per-sample kernels"): the cost model on a CPU must choose the same.
RESNET18_LAYERS_TIMED_ON_A_CPU = [
    (64, 64, 28, 1, "assemble"),
    (128, 128, 14, 1, "assemble"),
    (128, 256, 14, 2, "bank"),
    (256, 256, 7, 1, "bank"),
]


def assert_cpu_takes_timed_path_gpu_estimate_unchanged(costs: dict, timed: str) -> None:
    """On a CPU the cost model chooses ``timed`` among ``costs``; on a GPU each path's estimate is
    what it was before the per-sample kernels' passes were counted (none are, there)."""
    from kwsearch.nn.cost import cheapest

    assert cheapest(costs, torch.device("cpu")) == timed
    before = {path: replace(c, per_sample_kernels=0.0) for path, c in costs.items()}
    assert [c.time("cuda") for c in costs.values()] == [c.time("cuda") for c in before.values()]

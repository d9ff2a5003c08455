"""A tiny search of a small discrete space (four configs, one over budget) asked for more trials
than the space has: no proposal is wasted on a repeat after the first, the search stops when every
config was proposed, the summary says what the proposals bought, and optuna-dashboard, started on
loopback against the stored study, shows it as it is (objective names, the infeasible config
infeasible, duplicates failed, each config once on its Pareto front)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from kwsearch.records import StudyStore, default_storage
from kwsearch.search import load_study
from kwsearch.search.runner import run_search
from tests.helpers import tiny_study

pytestmark = pytest.mark.slow

# static at two widths, KernelWarehouse at two: the wider KernelWarehouse net is over 4x the static
# baseline's parameters, the other three fit
SPACE = {"width": {"choice": [0.0625, 0.125]}, "conv": {"family": {"choice": ["static", "kw"]}}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The study searched (random sampler, ten trials wanted of a space of four configs)."""
    import ray

    folder = tmp_path_factory.mktemp("dashboard")
    study = tiny_study(
        "small", SPACE, sampler={"name": "random", "seed": 0}, budget={"trials": 10, "params": "4x"}
    )
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(study))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = run_search(load_study(path), runs_dir=folder / "runs", progress=False)
    finally:
        ray.shutdown()
    storage = default_storage(folder / "runs" / "small")
    return summary, storage, StudyStore.open(storage, "small").trials()


def _identity(trial) -> str:
    return json.dumps(trial.config, sort_keys=True)


def test_a_small_space_is_proposed_through_without_wasted_repeats(searched):
    summary, _, trials = searched
    # every config of the space was proposed; each repeat was followed by a config never proposed
    first = {}
    for trial in trials:
        first.setdefault(_identity(trial), trial.number)
    assert len(first) == 4
    for trial in trials[:-1]:
        if first[_identity(trial)] < trial.number:
            following = trials[trial.number + 1]
            assert following.explored and first[_identity(following)] == following.number
    assert summary.stop_reason and "every config of the space (4) was proposed" in summary.stop_reason
    assert summary.complete == 3 and summary.infeasible >= 1
    assert summary.proposals == len(trials) == summary.trials + summary.duplicates
    assert f"{summary.proposals} proposals for 3 trained trials" in "\n".join(summary.lines())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard(searched):
    """optuna-dashboard serving the study's storage on loopback; yields its address."""
    _, storage, _ = searched
    command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert command, "optuna-dashboard is a dev dependency (make setup installs it)"
    port = _free_port()
    server = subprocess.Popen(
        [command, storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{address}/api/studies")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_optuna_dashboard_shows_the_study_as_it_is(searched, dashboard):
    summary, _, trials = searched
    studies = {s["study_name"]: s["study_id"] for s in _get(f"{dashboard}/api/studies")["study_summaries"]}
    detail = _get(f"{dashboard}/api/studies/{studies['small']}")
    assert detail["objective_names"] == ["accuracy", "params"]
    shown = {t["number"]: t for t in detail["trials"]}
    for trial in trials:
        seen = shown[trial.number]
        if trial.status == "infeasible":  # the dashboard marks a trial infeasible by a constraint > 0
            assert seen["state"] == "Complete" and max(seen["constraints"]) > 0
        elif trial.status == "duplicate":
            assert seen["state"] == "Fail" and trial.duplicate_of is not None
        else:
            assert seen["state"] == "Complete" and all(c <= 0 for c in seen["constraints"])
    assert sum(t["state"] == "Complete" for t in detail["trials"]) == summary.complete + summary.infeasible
    # its Pareto list: trained configs only, each once
    front = [trials[t["number"]] for t in detail["best_trials"]]
    assert front and all(t.status == "complete" for t in front)
    assert len({_identity(t) for t in front}) == len(front)

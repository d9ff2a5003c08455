"""The Ray driver without Ray: how far it proposes ahead of the runs going, and what a run's wall
time counts from; how many runs a cluster holds at once."""

import time
from types import SimpleNamespace

import pytest

from kwsearch.execution import Driver, Run, concurrent_runs
from kwsearch.models import parse_model_config
from kwsearch.train import Recipe


class Policy:
    """Proposes runs without end and keeps how each ended."""

    def __init__(self) -> None:
        self.proposed = 0
        self.outcomes = []

    def next_run(self) -> Run:
        self.proposed += 1
        model = parse_model_config(
            {"backbone": "resnet18_cifar", "num_classes": 4, "conv": {"family": "static"}}
        )
        return Run(key=str(self.proposed), model=model, recipe=Recipe())

    def on_epoch(self, run, history) -> None:
        pass

    def on_finish(self, run, outcome) -> None:
        self.outcomes.append(outcome)


def test_free_slots_get_runs_at_once_and_one_more_waits_once_the_others_are_in_workers():
    driver = Driver(Policy())
    driver.slots = 2

    def start(trial_id):  # the trainable's first report, from its worker
        driver.on_trial_result(trial_id, {"started_at": time.time()})

    assert driver.suggest("t0") is not None and driver.suggest("t1") is not None  # both slots at once
    assert driver.suggest("t2") is None  # neither run is in a worker yet
    start("t0")
    assert driver.suggest("t2") is None
    start("t1")
    assert driver.suggest("t2") is not None  # ready for the next slot to free
    assert driver.suggest("t3") is None and driver.policy.proposed == 3  # nothing more asked of the policy
    driver.on_trial_complete("t0", error=True)
    assert driver.suggest("t3") is None  # t2 takes the free slot: nothing is proposed before it starts
    start("t2")
    assert driver.suggest("t3") is not None
    driver.on_trial_complete("t1", error=True)
    driver.on_trial_complete("t2", error=True)
    assert driver.suggest("t4") is not None  # a free slot: at once, t3 not started yet
    assert driver.policy.proposed == 5


def test_a_runs_wall_time_counts_from_its_start_in_a_worker(monkeypatch):
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr("kwsearch.execution._driver.time.time", lambda: clock.now)
    driver = Driver(Policy())
    driver.suggest("placed")
    driver.suggest("never reported")
    clock.now = 200.0
    driver.on_trial_result("placed", {"started_at": 130.0})  # the trainable's first report
    driver.on_trial_result(  # the trainer's own start comes later (a data-parallel run's workers')
        "placed", {"epoch": 1, "val_accuracy": 0.5, "started_at": 135.0, "setup_seconds": 2.0}
    )
    driver.on_trial_result("placed", {"epoch": 2, "val_accuracy": 0.6, "ended_at": 190.0})
    driver.on_trial_complete("placed", error=True)
    driver.on_trial_complete("never reported", error=True)
    placed, never = driver.policy.outcomes
    assert placed.seconds == pytest.approx(70.0)  # not the 30 s it waited for a slot
    assert never.seconds == pytest.approx(100.0)  # no start known: from its proposal
    assert [h["epoch"] for h in placed.history] == [1, 2]
    assert placed.history[0]["setup_seconds"] == 2.0


@pytest.mark.parametrize(
    ("cpu", "gpus", "max_concurrent", "cluster", "workers", "runs"),
    [
        (1, 0.0, None, {"CPU": 2.0}, 1, 2),
        (1, 0.0, 1, {"CPU": 2.0}, 1, 1),
        (2, 0.0, None, {"CPU": 3.0}, 1, 1),
        (1, 0.25, None, {"CPU": 16.0, "GPU": 1.0}, 1, 4),
        (4, 0.0, None, {"CPU": 2.0}, 1, 1),  # never none
        (1, 0.0, None, {"CPU": 4.0}, 2, 2),  # data-parallel runs hold every worker's CPUs
        (1, 1.0, None, {"CPU": 16.0, "GPU": 4.0}, 4, 1),  # and GPUs
    ],
)
def test_concurrent_runs_are_what_the_cluster_holds(cpu, gpus, max_concurrent, cluster, workers, runs):
    resources = SimpleNamespace(cpu=cpu, gpu=gpus, max_concurrent=max_concurrent, torch_threads=1)
    assert concurrent_runs(resources, gpus, cluster, workers) == runs

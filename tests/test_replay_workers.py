"""A replay whose recipe has two workers trains its config data-parallel through Ray Train on the
CPU (gloo), under the one driver: killed with `kill -9` in the middle, it resumes from its last
checkpoint on both workers, stores every epoch once, and its model loads back with
`kwsearch.load`."""

import sys

import pytest
import torch
import yaml

import kwsearch
from kwsearch.data import eval_loader, load_dataset
from kwsearch.records import StudyStore
from kwsearch.replay.runner import run_replay
from kwsearch.search import load_study
from kwsearch.search.runner import run_search
from kwsearch.train import evaluate, load_recipe
from kwsearch.train.checkpoint import load_checkpoint
from tests.helpers import TINY_DATA, checkpoint_epoch, kill_when_a_run_is_half_done, tiny_study

pytestmark = pytest.mark.slow

EPOCHS = 4
STUDY = tiny_study(
    "pair",
    space={"conv": {"family": "kw"}},
    budget={"trials": 1},
    # 16 images a step, 8 on each worker
    replay={
        "recipe": {"epochs": EPOCHS, "batch_size": 16, "val_size": 64, "augment": False, "workers": 2},
        "seeds": [0],
    },
)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The study searched (one trial), with one Ray instance for this module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    root = tmp_path_factory.mktemp("workers")
    path = root / "pair.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    assert run_search(load_study(path), runs_dir=root / "runs", progress=False).complete == 1
    yield path, root / "runs"
    ray.shutdown()


def test_a_two_worker_replay_resumes_after_kill_9_on_both_workers(searched):
    path, runs = searched
    folder = runs / "pair" / "replays" / "trial0-seed0"
    command = [sys.executable, "-c", "from kwsearch.cli import main; main()", "replay", str(path)]
    kill_when_a_run_is_half_done([*command, "--trials", "0", "--runs-dir", str(runs)], [folder], EPOCHS)
    interrupted = checkpoint_epoch(folder)
    assert 1 <= interrupted < EPOCHS

    summary = run_replay(str(path), trials=[0], runs_dir=runs)
    assert summary.trained == 1 and not summary.failed, summary.failed
    store = StudyStore.open(summary.storage, "pair")
    (record,) = store.replays()  # the interrupted run kept its record
    assert record.status == "complete" and record.recipe["workers"] == 2
    assert [h["epoch"] for h in record.history] == list(range(1, EPOCHS + 1))
    assert record.resumed_from_epoch == interrupted
    # the metrics are the whole sets', though each worker saw half of every batch
    assert record.history[-1]["val_images"] == 64 and record.history[-1]["test_images"] == 64

    saved = load_checkpoint(folder)
    assert saved["epoch"] == EPOCHS and len(saved["worker_rng"]) == 2
    model = kwsearch.load(folder)
    dataset = load_dataset("synthetic", **TINY_DATA["options"])
    recipe = load_recipe(folder / "recipe.yaml")
    assert recipe.workers == 2
    _, accuracy = evaluate(model, eval_loader(dataset, 64, split="test"), torch.device("cpu"), recipe)
    assert accuracy == record.history[-1]["test_accuracy"]


def test_more_workers_than_the_cluster_holds_are_refused_before_they_wait_forever():
    from kwsearch.execution import ClusterError, check_workers

    check_workers(2, 1.0, 0.0, {"CPU": 2.0}, "replay.recipe.workers")
    with pytest.raises(
        ClusterError,
        match=r"replay.recipe.workers: 4 workers of 1 CPUs each need 4, but the Ray cluster has 2",
    ):
        check_workers(4, 1.0, 0.0, {"CPU": 2.0}, "replay.recipe.workers")
    with pytest.raises(ClusterError, match="8 workers of 1 GPUs each need 8, but the Ray cluster has 4"):
        check_workers(8, 1.0, 1.0, {"CPU": 64.0, "GPU": 4.0}, "replay.recipe.workers")

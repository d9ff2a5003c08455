"""A replay of a tiny study on generated data: it runs through Ray Tune, survives `kill -9` of its
driver (every run resumes from its last checkpoint), skips finished runs, stores results linked to
the proxy trials, and its models load back with `kwsearch.load`."""

import sys

import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

import kwsearch
from kwsearch.cli import app
from kwsearch.data import eval_loader, load_dataset
from kwsearch.models import load_model_config
from kwsearch.records import StudyStore
from kwsearch.replay.runner import run_replay
from kwsearch.search import load_study, summarize
from kwsearch.search.runner import run_search
from kwsearch.train import evaluate, load_recipe, train_model
from tests.helpers import checkpoint_epoch, kill_when_a_run_is_half_done

pytestmark = pytest.mark.slow

DATA = {
    "name": "synthetic",
    "options": {"num_classes": 4, "height": 12, "width": 12, "channels": 1, "num_train": 320, "num_test": 64},
}
EPOCHS = 6
STUDY = {
    "name": "tiny",
    "space": {
        "backbone": "resnet18_cifar",
        "num_classes": 4,
        "in_chans": 1,
        "input_size": [12, 12],
        "width": {"choice": [0.0625, 0.125]},
        "conv": {"family": {"choice": ["static", "kw"]}},
    },
    "data": DATA,
    "proxy": {"epochs": 2, "batch_size": 64, "val_size": 64, "augment": False},
    "early_stopping": False,
    "sampler": {"name": "grid"},
    "resources": {"cpu": 1, "max_concurrent": 2, "threads": 1},
    "references": [],
    # small batches: epochs long enough (about a second) to interrupt one in the middle
    "replay": {
        "recipe": {"epochs": EPOCHS, "batch_size": 16, "val_size": 64, "augment": False},
        "seeds": [0, 1],
    },
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The tiny study searched (a grid of four configs), with one Ray instance for this module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    root = tmp_path_factory.mktemp("replay")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    summary = run_search(load_study(path), runs_dir=root / "runs", progress=False)
    assert summary.complete == 4
    yield path, root / "runs"
    ray.shutdown()


def replays_of(runs):
    storage = f"sqlite:///{runs / 'tiny' / 'study.db'}"
    return optuna.load_study(study_name="tiny.replays", storage=storage).get_trials()


def test_replay_resumes_after_kill_9_skips_finished_runs_and_exports_models(searched):
    path, runs = searched
    folders = [runs / "tiny" / "replays" / f"trial{n}-seed{s}" for n in (0, 3) for s in (0, 1)]
    command = [
        sys.executable,
        "-c",
        "from kwsearch.cli import main; main()",
        "replay",
        str(path),
        "--trials",
        "0,3",
    ]
    kill_when_a_run_is_half_done([*command, "--runs-dir", str(runs)], folders, EPOCHS)
    interrupted = {f.name: checkpoint_epoch(f) for f in folders}
    half_done = {name: epoch for name, epoch in interrupted.items() if 1 <= epoch < EPOCHS}
    assert half_done
    stored = replays_of(runs)
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in stored)  # the dead driver's

    summary = run_replay(str(path), trials=[0, 3], runs_dir=runs)
    assert summary.trials == [0, 3] and summary.seeds == [0, 1] and not summary.failed
    finished_before = sum(1 for epoch in interrupted.values() if epoch == EPOCHS)
    assert summary.trained + summary.skipped == 4 and summary.trained >= len(half_done)
    trials = replays_of(runs)
    complete = [t for t in trials if t.user_attrs["status"] == "complete"]
    assert len(complete) == 4 and len(trials) == 4  # the interrupted runs kept their records
    search = {t.number: t for t in optuna.load_study(study_name="tiny", storage=summary.storage).get_trials()}
    for trial in complete:
        attrs = trial.user_attrs
        name = f"trial{attrs['proxy_trial']}-seed{attrs['seed']}"
        assert attrs["config"] == search[attrs["proxy_trial"]].user_attrs["config"]
        assert attrs["recipe"]["seed"] == attrs["seed"] and attrs["recipe"]["epochs"] == EPOCHS
        # every epoch once, though trained in two processes
        assert [h["epoch"] for h in attrs["history"]] == list(range(1, EPOCHS + 1))
        assert attrs["test_accuracy"] == attrs["history"][-1]["test_accuracy"] == trial.values[0]
        assert trial.values[1] == search[attrs["proxy_trial"]].user_attrs["costs"]["params"]
        assert attrs["seconds"] > 0 and attrs["export"] == str((runs / "tiny" / "replays" / name).resolve())
        if name in half_done:  # resumed from its checkpoint, not started over
            assert attrs["resumed_from_epoch"] == half_done[name]
        elif interrupted[name] == 0:
            assert attrs["resumed_from_epoch"] == 0
    assert summary.results[0].seeds == [0, 1] and summary.results[0].test_accuracy_std >= 0
    assert finished_before <= summary.skipped + len(half_done)

    # again: nothing is trained, no checkpoint is touched
    stamps = {f: (f / "last.pt").stat().st_mtime_ns for f in folders}
    again = run_replay(str(path), trials=[3, 0], runs_dir=runs)
    assert again.trained == 0 and again.skipped == 4
    assert {f: (f / "last.pt").stat().st_mtime_ns for f in folders} == stamps
    assert len(replays_of(runs)) == 4

    # the exported model loads in one call and gives the stored test accuracy
    folder = folders[-1]
    record = next(t for t in complete if t.user_attrs["export"] == str(folder.resolve()))
    model = kwsearch.load(folder)
    assert not model.training
    dataset = load_dataset("synthetic", **DATA["options"])
    recipe = load_recipe(folder / "recipe.yaml")
    _, accuracy = evaluate(model, eval_loader(dataset, 64, split="test"), torch.device("cpu"), recipe)
    assert accuracy == record.user_attrs["test_accuracy"]
    same = kwsearch.load(folder / "last.pt")
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), same(x))

    # the folder's files are the run itself: training with them continues the checkpoint
    continued = train_model(
        load_model_config(folder / "model.yaml"),
        yaml.safe_load((folder / "data.yaml").read_text())["name"],
        recipe,
        data_options=DATA["options"],
        checkpoint_dir=folder,
        progress=False,
    )
    assert continued.resumed_from_epoch == EPOCHS and continued.history == record.user_attrs["history"]


def test_replay_command_top_k_and_its_errors(searched):
    path, runs = searched
    cli = CliRunner()

    def replay(*args):
        return cli.invoke(app, ["replay", *args, "--runs-dir", str(runs)])

    result = replay(str(path), "--top", "2", "--seeds", "0")
    assert result.exit_code == 0, result.output
    store = StudyStore.open(f"sqlite:///{runs / 'tiny' / 'study.db'}", "tiny")
    costs = {t.number: t.costs.params for t in store.trials() if t.costs}
    front = sorted(summarize(store).pareto, key=lambda n: costs[n])
    # both ends of the front, each once with seed 0 (the other test may have replayed them already)
    assert f"replayed trials {front[0]}, {front[-1]} with seeds 0:" in result.output
    assert "front of the replayed" in result.output

    longer = runs.parent / "longer.yaml"
    longer.write_text(yaml.safe_dump({**STUDY["replay"]["recipe"], "epochs": EPOCHS + 1}))

    for args, message in [
        (("nosuch", "--top", "1"), "unknown study 'nosuch'"),
        (("tiny", "--trials", "99999"), "study 'tiny' has no trial 99999"),
        (("tiny", "--trials", "1", "--top", "2"), "--top and --trials"),
        (("tiny",), "either --top K or --trials"),
        (("tiny", "--trials", "x"), "--trials: comma-separated integers"),
        (
            ("tiny", "--trials", "0", "--recipe", str(longer)),
            f"another recipe (epochs: {EPOCHS} -> {EPOCHS + 1})",
        ),
    ]:
        result = replay(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output

"""Tiny searches run in this process on generated data, sharing one local Ray instance: each
sampler, grid ablations, budgets that keep configs from the trainer, early stopping, failures."""

import json
from collections import Counter

import pytest
import yaml
from optuna.trial import TrialState

from kwsearch.records import TrialRecord
from kwsearch.search import load_study
from kwsearch.search.runner import run_search
from tests.helpers import TINY_DATA, TINY_PROXY, ray_trials, status_of, stored_trials, tiny_study

pytestmark = pytest.mark.slow

SEARCHED = {
    "width": {"choice": [0.0625, 0.09375, 0.125]},
    "conv": {
        "family": {"choice": ["static", "kw"]},
        "kw": {"cell_num_ratio": {"choice": [1, 2]}},
    },
}


@pytest.fixture(scope="module", autouse=True)
def _ray():
    """One Ray instance for every search here (run_search leaves a running one alone)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def search(tmp_path, study: dict, **kwargs):
    path = tmp_path / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    summary = run_search(load_study(path), runs_dir=tmp_path / "runs", progress=False, **kwargs)
    run_dir = tmp_path / "runs" / study["name"]
    return summary, stored_trials(run_dir, study["name"]), run_dir


def trained(trials):
    return [t for t in trials if t.user_attrs.get("trained")]


@pytest.mark.parametrize(
    "sampler",
    [
        {"name": "tpe", "seed": 1},
        {"name": "nsga2", "seed": 1, "options": {"population_size": 4}},
        {"name": "gp", "seed": 1},
        {"name": "random", "seed": 1},
    ],
    ids=lambda s: s["name"],
)
def test_each_sampler_finishes_a_tiny_search_with_the_trials_asked(tmp_path, sampler):
    study = tiny_study(sampler["name"], SEARCHED, sampler=sampler, budget={"trials": 4})
    summary, trials, run_dir = search(tmp_path, study)
    assert summary.stop_reason is None
    assert len(trained(trials)) == 4
    assert summary.complete == 4 and summary.failed == summary.pruned == summary.infeasible == 0
    assert summary.trials == 4
    assert summary.pareto and set(summary.pareto) <= {t.number for t in trained(trials)}
    assert 0 <= summary.hypervolume <= 1
    for trial in trained(trials):
        assert status_of(trial) == "complete" and trial.state == TrialState.COMPLETE
        assert [h["epoch"] for h in trial.user_attrs["history"]] == [1, 2]
        assert trial.values[0] == trial.user_attrs["history"][-1]["val_accuracy"]
        assert trial.values[1] == trial.user_attrs["costs"]["params"]
    # nothing is trained twice: each trained (config, seed) is distinct
    identities = [
        json.dumps([t.user_attrs["config"], t.user_attrs["seed"]], sort_keys=True) for t in trained(trials)
    ]
    assert len(set(identities)) == len(identities)
    assert sorted(int(t["config"]["key"]) for t in ray_trials(run_dir).values()) == sorted(
        t.number for t in trained(trials)
    )


def test_grid_trains_every_combination_once_per_seed_and_resumes_to_nothing(tmp_path):
    space = {"conv": {"family": {"choice": ["static", "kw"]}, "kw": {"cell_num_ratio": {"choice": [1, 2]}}}}
    study = tiny_study("grid", space, sampler={"name": "grid", "seeds": [0, 1]}, baselines=["static"])
    summary, trials, run_dir = search(tmp_path, study)
    combinations = Counter(
        (t.params["conv.family"], t.params.get("conv.kw.cell_num_ratio"), t.user_attrs["seed"])
        for t in trained(trials)
    )
    expected = {(f, r, s) for f, r in [("static", None), ("kw", 1), ("kw", 2)] for s in (0, 1)}
    assert set(combinations) == expected
    assert set(combinations.values()) == {1}
    assert summary.complete == 6 == summary.trials
    # the seed reaches the trainer's recipe
    seeds = Counter(
        t["config"]["recipe"].seed for t in ray_trials(run_dir).values() if t["config"]["cost_point"]
    )
    assert seeds == {0: 3, 1: 3}
    assert set(summary.baselines) == {"static"}

    again, trials_after, _ = search(tmp_path, study)
    assert len(trials_after) == len(trials)
    assert again.complete == 6
    assert len(ray_trials(run_dir)) == 7  # six trials and the baseline, none trained again


def test_over_budget_configs_never_reach_the_trainer(tmp_path):
    # 4x the static baseline (46,476): the static nets and the narrowest kw net fit, wider kw nets do not
    study = tiny_study(
        "budget", SEARCHED, sampler={"name": "random", "seed": 3}, budget={"trials": 3, "params": "4x"}
    )
    summary, trials, run_dir = search(tmp_path, study)
    limit = 4 * 46476
    infeasible = [t for t in trials if status_of(t) == "infeasible"]
    assert infeasible, "the random sampler should have proposed over-budget configs"
    assert summary.infeasible == len(infeasible)
    for trial in infeasible:
        assert trial.user_attrs["costs"]["params"] > limit
        assert trial.user_attrs["error"].startswith("over budget: params")
        constraints = TrialRecord.from_frozen(trial).constraints
        assert constraints["params"] > 0 and constraints["buildable"] == 0
        assert "history" not in trial.user_attrs and "trained" not in trial.user_attrs
        assert trial.number not in summary.pareto
    assert len(trained(trials)) == 3 == summary.complete
    assert summary.hypervolume > 0  # the reference point lies 10% beyond the limit
    for trial in trained(trials):
        assert trial.user_attrs["costs"]["params"] <= limit
        assert all(c <= 0 for c in trial.constraints.values())
    # Ray's own record: exactly the trained trials reached a trainer, and each ran to the end
    reached = [t for t in ray_trials(run_dir).values() if t["config"]["cost_point"]]
    assert sorted(int(t["config"]["key"]) for t in reached) == sorted(t.number for t in trained(trials))
    assert all(len(json.loads(t["last_result"]["history"])) == 2 for t in reached)
    assert all(t["config"]["cost_point"][0] <= limit for t in reached)


def test_a_config_proposed_again_is_stored_a_duplicate_and_never_built_again(tmp_path, monkeypatch):
    from kwsearch.search.budget import MetaBuild

    built = Counter()

    class CountedBuild(MetaBuild):  # the real build, counted per config
        def __init__(self, config) -> None:
            built[config.model_dump_json()] += 1
            super().__init__(config)

    monkeypatch.setattr("kwsearch.search.policy.MetaBuild", CountedBuild)
    # two configs to train: with this seed the random sampler proposes the first one twice
    space = {"width": {"choice": [0.0625, 0.09375]}, "conv": {"family": "static"}}
    study = tiny_study("again", space, sampler={"name": "random", "seed": 1}, budget={"trials": 2})
    summary, trials, _ = search(tmp_path, study)
    duplicates = [t for t in trials if status_of(t) == "duplicate"]
    assert duplicates and summary.duplicates == len(duplicates) and summary.complete == 2
    assert sorted(built.values()) == [1, 1]  # each config built when first proposed, only then
    for duplicate in duplicates:
        original = trials[duplicate.user_attrs["duplicate_of"]]
        assert duplicate.params == original.params
        assert duplicate.user_attrs["costs"] == original.user_attrs["costs"]
        assert original.user_attrs["costs"]["macs"] > 0


def test_early_stopped_trials_are_stored_pruned_never_complete(tmp_path):
    # equal costs (dropout adds no parameters): the rung ranks by accuracy alone
    study = tiny_study(
        "pruned",
        {"dropout": {"float": [0.0, 0.5]}},
        proxy={**tiny_study("x")["proxy"], "epochs": 3},
        # TPE past its startup trials reads the pruned ones (multi-objective TPE once raised on them)
        sampler={"name": "tpe", "seed": 0, "options": {"n_startup_trials": 2}},
        budget={"trials": 6},
        early_stopping={"min_epochs": 1, "reduction_factor": 2},
        resources={"cpu": 1, "max_concurrent": 1, "threads": 1},
    )
    summary, trials, run_dir = search(tmp_path, study)
    pruned = [t for t in trials if status_of(t) == "pruned"]
    assert pruned and summary.pruned == len(pruned)
    assert summary.pruned + summary.complete == 6 == len(trained(trials))
    for trial in pruned:
        assert trial.state == TrialState.PRUNED
        history = trial.user_attrs["history"]
        assert 1 <= len(history) < 3
        # the metrics it was stopped on are kept in its history (not as Optuna intermediate
        # values, on which multi-objective TPE raises)
        assert trial.intermediate_values == {}
        assert history[-1]["epoch"] == len(history)
        assert trial.number not in summary.pareto
    for trial in trials:
        if status_of(trial) == "complete":
            assert len(trial.user_attrs["history"]) == 3
    # a stopped trial's last report to Ray is the epoch it was stopped on (a finished one's is
    # its whole history)
    ray_epochs = {
        int(t["config"]["key"]): t["last_result"].get("epoch") for t in ray_trials(run_dir).values()
    }
    assert all(ray_epochs[t.number] == len(t.user_attrs["history"]) for t in pruned)


def test_a_failing_trial_is_recorded_with_its_error_while_the_study_completes(tmp_path):
    # a 3-class head on 4-class data fails inside the trainer, in the Ray worker
    study = tiny_study(
        "failing",
        {"num_classes": {"choice": [3, 4]}, "width": {"choice": [0.0625, 0.09375, 0.125]}},
        sampler={"name": "random", "seed": 0},
        budget={"trials": 4},
    )
    summary, trials, _ = search(tmp_path, study)
    failed = [t for t in trials if status_of(t) == "failed"]
    assert failed and summary.failed == len(failed)
    for trial in failed:
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["config"]["num_classes"] == 3
        assert "num_classes" in trial.user_attrs["error"]
        assert trial.user_attrs["error"].startswith("ModelConfigError")
        assert "Traceback" in trial.user_attrs["traceback"]
    assert len(trained(trials)) == 4 == summary.failed + summary.complete
    assert summary.complete >= 1
    assert all(t.user_attrs["config"]["num_classes"] == 4 for t in trials if status_of(t) == "complete")


def test_a_tiny_search_over_slak_settings_matches_effective_parameters(tmp_path):
    """SLaK's dimensions (kernel sizes per stage, N, sparsity, prune rate, update frequency,
    growth, width factor) are searched end to end, with effective (non-zero) parameters as the
    objective and the budget: the stored costs tell dense and effective counts apart."""
    space = {
        "backbone": "slak_nano",
        "input_size": [16, 16],  # patch 2 and three downsamplings: 16 pixels at least
        "width": 0.0625,
        "backbone_args": {
            "patch_size": 2,
            "kernel_size": {"choice": [[7, 5, 5, 3], [9, 7, 5, 5]]},
            "width_factor": {"choice": [1.0, 1.3]},
        },
        "conv": {
            "family": "slak",
            "small_kernel": 3,
            "sparsity": {"choice": [0.0, 0.5]},
            "sparse_init": {"choice": ["erk", "uniform"]},
            "prune_rate": {"choice": [0.3, 0.5]},
            "update_frequency": {"choice": [2, 4]},
            "growth": {"choice": ["random", "gradient"]},
        },
    }
    study = tiny_study(
        "slak",
        space,
        objectives=["accuracy", "effective_params"],
        budget={"trials": 3, "effective_params": "1.5x"},
        sampler={"name": "random", "seed": 3},
        data={**TINY_DATA, "options": {**TINY_DATA["options"], "height": 16, "width": 16}},
    )
    summary, trials, _ = search(tmp_path, study)
    assert summary.stop_reason is None and summary.complete == 3
    for trial in trained(trials):
        costs, config = trial.user_attrs["costs"], trial.user_attrs["config"]
        assert config["conv"]["family"] == "slak"
        assert trial.values[1] == costs["effective_params"]
        if config["conv"]["sparsity"] > 0:
            assert costs["effective_params"] < costs["params"]
        else:
            assert costs["effective_params"] == costs["params"]
    for trial in trials:
        if status_of(trial) == "infeasible":  # over the effective budget, never trained
            assert "effective_params" in trial.user_attrs["error"]


@pytest.fixture
def postgres_url():
    """A private PostgreSQL server on loopback for one test (Debian's `postgresql`, installed by
    `make setup`), stopped and removed afterwards."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed: bash scripts/install_system_packages.sh postgresql")
    bindir = bins[-1].parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="kwsearch-pg-"))
    if as_postgres:
        shutil.chown(data, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = lambda *args: subprocess.run([*as_postgres, *args], check=True, capture_output=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_a_study_in_postgresql_runs_and_resumes(tmp_path, postgres_url):
    """Any SQLAlchemy URL holds a study: the same search in PostgreSQL, then continued there."""
    import optuna

    study = tiny_study("pg", SEARCHED, budget={"trials": 2}, sampler={"name": "random", "seed": 5})
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(study))
    runs = tmp_path / "runs"
    first = run_search(load_study(path), runs_dir=runs, storage=postgres_url, progress=False)
    assert first.complete == 2 and not (runs / "pg" / "study.db").exists()
    stored = optuna.load_study(study_name="pg", storage=postgres_url)
    before = {t.number: t.values for t in trained(stored.get_trials())}
    second = run_search(load_study(path), runs_dir=runs, storage=postgres_url, trials=3, progress=False)
    assert second.complete == 3
    after = {t.number: t.values for t in trained(stored.get_trials())}
    assert len(after) == 3 and all(after[n] == values for n, values in before.items())


def test_bad_backbone_arguments_of_every_backbone_are_infeasible_or_refused(tmp_path):
    """Through `kwsearch search`: an argument only building can reject (a patch that does not
    divide the image, an even or miscounted kernel) is stored infeasible naming it, and the study
    completes; an argument of the wrong type is refused before anything runs."""
    from typer.testing import CliRunner

    from kwsearch.cli import app

    tiny = {"backbone": "resnet18_cifar", "width": 0.0625}
    models = {
        "baseline": tiny,  # the lowest choice: what the static baseline is built from
        "deit": {"backbone": "deit_tiny", "width": 0.25, "backbone_args": {"img_size": 12, "patch_size": 5}},
        "convnext": {"backbone": "convnext_nano", "backbone_args": {"kernel_size": 4}},
        "slak": {"backbone": "slak_nano", "backbone_args": {"kernel_size": [7, 5, 5]}},
        "mobilenet": {"backbone": "mobilenetv2_050", "backbone_args": {"static_pointwise_below": -1}},
    }
    space = {"model": {"merge": models}}
    study = tiny_study("badargs", space, sampler={"name": "grid"})
    path = tmp_path / "badargs.yaml"
    path.write_text(yaml.safe_dump(study))
    result = CliRunner().invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    trials = {t.params["model"]: t for t in stored_trials(tmp_path / "runs" / "badargs", "badargs")}
    assert status_of(trials["baseline"]) == "complete"
    for label, argument in (("deit", "patch_size"), ("convnext", "kernel_size"), ("slak", "kernel_size")):
        assert status_of(trials[label]) == "infeasible", label
        assert f"backbone_args.{argument}" in trials[label].user_attrs["error"], trials[label].user_attrs
    for backbone, args in (("resnet18_cifar", {"handover": "maybe"}), ("deit_tiny", {"patch_size": "two"})):
        wrong = tiny_study("wrongtype", {"backbone": backbone, "backbone_args": args})
        path.write_text(yaml.safe_dump(wrong))
        result = CliRunner().invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2 and f"backbone_args.{next(iter(args))}" in result.output, result.output
        assert not (tmp_path / "runs" / "wrongtype" / "study.db").exists()


def test_a_study_whose_trials_all_failed_exits_1_saying_why(tmp_path):
    """Every trial diverges (lr 1e6): the search spends its budget, stores them failed, and the
    command ends with exit 1 and the most common error, not 0 as if it had a result."""
    from typer.testing import CliRunner

    from kwsearch.cli import app

    study = tiny_study(
        "diverging",
        {"width": {"choice": [0.0625, 0.125]}},
        proxy={**TINY_PROXY, "lr": 1e6, "warmup_epochs": 0},
        sampler={"name": "random", "seed": 0},
        budget={"trials": 2},
    )
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(study))
    result = CliRunner().invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["failed"] == summary["trials"] == 2 and summary["complete"] == 0
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(
        "error: diverging: no trial completed: 2 trials failed; 2 of them with TrainingDiverged:"
    )
    assert "lower the learning rate" in error


def test_each_run_records_its_set_up_and_one_worker_process_trains_every_run(tmp_path):
    """One run at a time: Ray hands each run to the worker process of the run before (which keeps
    the data set it loaded), and each run's first epoch records the run's start in its worker and
    its set-up before the first training step; every epoch records when it ended and where."""
    resources = {"cpu": 1, "max_concurrent": 1, "threads": 1}
    study = tiny_study("timings", SEARCHED, sampler={"name": "random", "seed": 0}, budget={"trials": 3})
    summary, trials, _ = search(tmp_path, {**study, "resources": resources})
    assert summary.complete == 3
    workers = set()
    for trial in trained(trials):
        first, *later = trial.user_attrs["history"]
        assert (
            first["started_at"] + first["setup_seconds"] + first["epoch_seconds"] <= first["ended_at"] + 1e-3
        )
        assert first["setup_seconds"] > 0
        assert all("started_at" not in e and "setup_seconds" not in e for e in later)
        assert all(e["ended_at"] > first["ended_at"] for e in later)
        # its wall time counts from its start in the worker, at least to its last epoch's end
        assert trial.user_attrs["seconds"] >= later[-1]["ended_at"] - first["started_at"]
        workers |= {e["process"] for e in trial.user_attrs["history"]}
    assert len(workers) == 1

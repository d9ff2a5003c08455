"""Measured costs as objectives and budgets: the timing itself, the study fields and their bad
input, the stored records (old ones without them still load), and tiny searches on generated data
through a real Ray instance that measure every trained config and baseline, search accuracy
against latency, and refuse configs over a measured budget without training them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.models import parse_model_config
from kwsearch.records import MEASURED, Costs, TrialRecord, default_storage, resolved_reference_point
from kwsearch.report import load, write_report
from kwsearch.search import load_study
from kwsearch.search.runner import run_search
from kwsearch.search.study import StudyError
from kwsearch.train import Recipe
from kwsearch.train.timing import measure_costs
from tests.helpers import TINY_SPACE, ray_trials, stored_trials, tiny_study

SEARCHED = {"width": {"choice": [0.0625, 0.125]}, "conv": {"family": {"choice": ["static", "kw"]}}}


def write(tmp_path, study: dict):
    path = tmp_path / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def positive_and_finite(measured: dict) -> bool:
    return all(isinstance(measured[n], float) and 0 < measured[n] < math.inf for n in MEASURED)


# -- the timing ---------------------------------------------------------------------------------


def test_a_config_is_timed_on_the_device_without_touching_the_runs_random_numbers():
    config = parse_model_config({**TINY_SPACE, "conv": {"family": "kw"}})
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    measured = measure_costs(config, (1, 12, 12), Recipe(batch_size=8), torch.device("cpu"), repeats=2)
    assert torch.equal(torch.rand(3), expected)  # the run trains as it would have untimed
    assert positive_and_finite(measured)
    assert measured["device"].startswith("cpu: ") and "threads" in measured["device"]


# -- the study file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"objectives": ["accuracy", "latency_s"]}, "objectives.1"),
        ({"budget": {"latency_ms": -1}}, "budget.latency_ms"),
        ({"budget": {"train_ms_per_image": "2x"}}, "budget.train_ms_per_image"),
    ],
    ids=["unknown objective", "negative budget", "relative measured budget"],
)
def test_bad_measured_objectives_and_budgets_are_refused_naming_file_and_field(tmp_path, settings, field):
    path = write(tmp_path, tiny_study("bad", **settings))
    with pytest.raises(StudyError, match=f"{path}: {field}"):
        load_study(path)
    result = CliRunner().invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert field in result.output
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_study_measures_when_an_objective_or_a_budget_names_a_measured_cost(tmp_path):
    assert not load_study(write(tmp_path, tiny_study("counts"))).measures
    assert load_study(write(tmp_path, tiny_study("asked", measure=True))).measures
    assert load_study(write(tmp_path, tiny_study("o", objectives=["accuracy", "latency_ms"]))).measures
    assert load_study(write(tmp_path, tiny_study("b", budget={"latency_batch_ms": 3}))).measures


# -- the records --------------------------------------------------------------------------------


def test_costs_store_their_measurement_and_costs_stored_before_measurements_still_load():
    counted = Costs(100, 90, 1000)
    assert Costs.from_dict(counted.as_dict()) == counted
    assert set(counted.as_dict()) == {"params", "effective_params", "macs"}  # what older releases stored
    measured = counted.with_measured(
        {"train_ms_per_image": 0.5, "latency_ms": 1.5, "latency_batch_ms": 9.0, "device": "cpu: x"}
    )
    assert Costs.from_dict(measured.as_dict()) == measured
    assert measured.measured["latency_ms"] == 1.5 and measured.device == "cpu: x"
    # an objective a trial was never measured for: not on a front
    old = TrialRecord(0, "complete", costs=counted, history=[{"val_accuracy": 0.5}])
    assert old.objectives(["accuracy", "params"]) == {"accuracy": 0.5, "params": 100}
    assert old.objectives(["accuracy", "latency_ms"]) is None
    new = TrialRecord(1, "complete", costs=measured, history=[{"val_accuracy": 0.5}])
    assert new.objectives(["accuracy", "latency_ms"]) == {"accuracy": 0.5, "latency_ms": 1.5}
    # a measured objective without a budget: its reference is 10% beyond the largest measured
    objectives = ["accuracy", "latency_ms"]
    assert resolved_reference_point([0.0, None], objectives, [old, new]) == pytest.approx([0.0, 1.65])
    assert resolved_reference_point([0.0, None], objectives, [old]) is None
    assert resolved_reference_point([0.0, 5.5], objectives, [old]) == [0.0, 5.5]


# -- searches -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_search_of_accuracy_against_latency_measures_every_trained_config_and_baseline(tmp_path, _ray):
    study = tiny_study(
        "latency",
        SEARCHED,
        objectives=["accuracy", "latency_ms"],
        budget={"trials": 3},
        sampler={"name": "random", "seed": 1},
        baselines=["static"],
    )
    path = write(tmp_path, study)
    runs = tmp_path / "runs"
    summary = run_search(load_study(path), runs_dir=runs, progress=False)
    trials = stored_trials(runs / "latency", "latency")
    trained = [t for t in trials if t.user_attrs.get("trained")]
    assert len(trained) == 3 and summary.complete == 3
    for trial in trained:
        costs = trial.user_attrs["costs"]
        assert positive_and_finite(costs) and costs["device"].startswith("cpu: ")
        assert trial.values[1] == costs["latency_ms"]  # what Optuna was told
    # the front is on latency; the hypervolume's reference is resolved from the measurements
    assert summary.pareto and summary.objectives == ["accuracy", "latency_ms"]
    assert all(summary.front_costs[n]["latency_ms"] > 0 for n in summary.pareto)
    assert summary.reference_point[1] > 0 and 0 < summary.hypervolume <= 1
    printed = "\n".join(summary.lines())
    assert " ms" in printed and "times measured on cpu: " in printed

    data = load(default_storage(runs / "latency"), "latency", target=str(path))
    baseline = data.baselines.iloc[0]
    assert baseline["label"] == "static" and baseline["latency_ms"] > 0 and baseline["train_ms_per_image"] > 0
    page = write_report(data, tmp_path / "latency.html").html.read_text()
    assert "against latency, batch 1 (ms)" in page and "against training time per image (ms)" in page
    assert "Times (ms) were measured by the workers before training" in page


@pytest.mark.slow
def test_a_config_over_a_measured_budget_is_stored_infeasible_and_never_trained(tmp_path, _ray):
    study = tiny_study(
        "too_slow",
        SEARCHED,
        budget={"trials": 2, "latency_ms": 1e-9},  # no network answers in a femtosecond
        sampler={"name": "random", "seed": 1},
    )
    summary = run_search(load_study(write(tmp_path, study)), runs_dir=tmp_path / "runs", progress=False)
    trials = stored_trials(tmp_path / "runs" / "too_slow", "too_slow")
    records = [TrialRecord.from_frozen(t) for t in trials]
    assert records and all(r.status in ("infeasible", "duplicate") for r in records)
    assert summary.complete == 0 and summary.infeasible >= 4  # every config of the space, each once
    infeasible = [r for r in records if r.status == "infeasible"]
    for record in infeasible:
        assert not record.trained and not record.history
        assert record.error.startswith("over budget: latency_ms ") and record.error.count(" ms") == 2
        assert record.costs.latency_ms > 0 and record.constraints["latency_ms"] > 0
    # each config was timed by a worker once; its repeats were judged on that measurement
    timed = [r for r in infeasible if "measured by trial" not in r.error]
    assert len({str(r.config) for r in timed}) == len(timed) == 4
    assert "space is exhausted" in (summary.stop_reason or "")


@pytest.mark.slow
def test_a_config_is_timed_once_and_its_other_seeds_reuse_the_measurement(tmp_path, _ray):
    study = tiny_study(
        "once",
        objectives=["accuracy", "train_ms_per_image"],
        sampler={"name": "grid", "seeds": [0, 1]},
        resources={"cpu": 1, "max_concurrent": 1, "threads": 1},
    )
    summary = run_search(load_study(write(tmp_path, study)), runs_dir=tmp_path / "runs", progress=False)
    assert summary.complete == 2
    trials = stored_trials(tmp_path / "runs" / "once", "once")
    first, second = sorted(trials, key=lambda t: t.number)
    assert positive_and_finite(first.user_attrs["costs"])
    assert second.user_attrs["costs"] == first.user_attrs["costs"]  # not timed again
    # of the two runs Ray was given, one was asked to time its model
    runs = ray_trials(tmp_path / "runs" / "once").values()
    assert sorted(run["config"]["measure"] is None for run in runs) == [False, True]


def test_early_stopping_ranks_a_trial_on_the_latency_its_worker_measured():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from kwsearch.search.scheduler import ParetoScheduler, ParetoSuccessiveHalving
    from kwsearch.search.study import EarlyStopping

    scheduler = ParetoScheduler(ParetoSuccessiveHalving(EarlyStopping(reduction_factor=2), epochs=4))
    fast, slow = (SimpleNamespace(config={"key": key, "cost_point": ["latency_ms"]}) for key in "01")
    for trial, latency in ((fast, 1.0), (slow, 2.0)):
        measured = {"latency_ms": latency, "device": "cpu: x"}
        assert (
            scheduler.on_trial_result(None, trial, {"measured": json.dumps(measured)})
            == TrialScheduler.CONTINUE
        )
    # equally accurate at the first rung: the slower one is dominated and stopped
    assert scheduler.on_trial_result(None, fast, {"epoch": 1, "val_accuracy": 0.5}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, slow, {"epoch": 1, "val_accuracy": 0.5}) == TrialScheduler.STOP

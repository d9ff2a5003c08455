"""The study's record: trials written through the writers read back as they were written (and as
Optuna's samplers must see them), records round-trip whole, a dead driver's trials come back, and
a study stored by the first release (schema 1, tests/data/schema1) still loads, reports, replays,
and gives the same rank agreement in the report and in `kwsearch replay`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.records import SCHEMA, Costs, ReplayRecord, StudyRecord, StudyStore, TrialRecord
from kwsearch.report import load, write_report
from kwsearch.search import summarize

SCHEMA1 = Path(__file__).parent / "data" / "schema1"
OBJECTIVES = ["accuracy", "params"]


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def new_store(name: str = "s") -> StudyStore:
    store = StudyStore.create(
        optuna.storages.InMemoryStorage(),
        name,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    store.write_record(
        StudyRecord(
            name=name,
            settings={"sampler": {"name": "random"}},
            objectives=OBJECTIVES,
            budget={"params": 1000.0},
            baseline_config={"backbone": "resnet18_cifar", "conv": {"family": "static"}},
            baseline_costs=Costs(250, 250, 9000),
            reference_point=[0.0, 1100.0],
        )
    )
    return store


def test_a_study_record_round_trips_and_says_its_schema():
    store = new_store()
    record = store.record
    assert record.schema == SCHEMA == 3
    assert store.search.metric_names == OBJECTIVES  # what optuna-dashboard names the objectives
    assert record.baseline_costs == Costs(250, 250, 9000) and record.budget == {"params": 1000.0}
    assert record.baseline_config["conv"] == {"family": "static"}
    store.set_gpus_per_trial(0.25)
    assert store.record.gpus_per_trial == 0.25 and store.record.reference_point == [0.0, 1100.0]
    assert store.record.trial_budget is None  # no search ran yet
    store.set_trial_budget(12)
    assert store.record.trial_budget == 12 and store.record.gpus_per_trial == 0.25


def test_each_way_a_trial_ends_is_read_back_and_told_to_optuna_as_samplers_need():
    store = new_store()
    costs = Costs(400, 400, 5000)
    outcomes = {}
    for status in ("complete", "pruned", "failed", "infeasible"):
        writer = store.ask()
        writer.trial.suggest_categorical("width", [1, 2])
        writer.propose({"width": 1, "status": status}, seed=3)
        writer.set_costs(costs)
        writer.constrain({"buildable": 0.0, "params": -0.6 if status != "infeasible" else 0.4})
        if status != "infeasible":
            writer.mark_trained()
            writer.record_history([{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.7}])
        values = {"complete": [0.7, 400.0], "infeasible": [0.0, 400.0]}.get(status)
        writer.finish(status, values=values, seconds=2.5, error="why" if status != "complete" else None)
        outcomes[writer.number] = status
    original = store.trial(0)
    repeat = store.ask()
    repeat.propose(original.config, seed=3)
    repeat.duplicate(original)
    running = store.ask()
    running.propose({"width": 2}, seed=0)

    records = {t.number: t for t in store.trials()}
    frozen = {t.number: t for t in store.search.get_trials()}
    for number, status in outcomes.items():
        assert records[number].status == status
        assert records[number].costs == costs and records[number].seed == 3
    assert records[0].objectives(OBJECTIVES) == {"accuracy": 0.7, "params": 400}
    assert records[1].accuracy == 0.7 and records[1].objectives(OBJECTIVES) is None  # pruned
    assert records[2].error == "why" and records[2].seconds == 2.5
    assert records[3].constraints == {"buildable": 0.0, "params": 0.4} and not records[3].trained
    assert records[4].status == "duplicate" and records[4].duplicate_of == 0
    assert records[5].status == "running"
    # what Optuna's samplers read: infeasible configs complete with their constraints; a duplicate
    # failed (its config's result is its original's)
    assert [frozen[n].state for n in range(6)] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.RUNNING,
    ]
    assert frozen[3].values == [0.0, 400.0] and frozen[4].values is None
    # the samplers see the values in order; optuna-dashboard reads them as one list
    assert list(frozen[3].constraints.values()) == [0.0, 0.4]
    assert frozen[3].system_attrs["constraints"] == [0.0, 0.4]
    assert frozen[0].intermediate_values == {}  # history lives in the record, not here


def test_a_dead_drivers_trials_run_again_under_their_numbers_keeping_their_constraints():
    store = new_store()
    writer = store.ask()
    width = writer.trial.suggest_categorical("width", [1, 2])
    writer.propose({"width": width}, seed=0)
    writer.constrain({"buildable": 0.0, "params": -0.5})
    baseline = store.ask_baseline()
    baseline.propose({"width": 1}, seed=0, baseline="static")
    assert store.requeue_interrupted() == 2
    assert store.has_waiting()
    again = store.ask()
    assert again.number == writer.number and again.trial.params == {"width": width}
    again.constrain({"buildable": 0.0, "params": 0.9})  # Optuna keeps the first values
    again.finish("failed", seconds=1.0, error="x")
    assert store.trial(0).constraints == {"buildable": 0.0, "params": -0.5}
    assert [b.status for b in store.baselines()] == ["waiting"]


def test_records_written_whole_read_back_equal():
    store = new_store()
    trial = TrialRecord(
        number=0,
        status="complete",
        params={"width": 2},
        distributions={"width": CategoricalDistribution([1, 2])},
        config={"width": 2},
        costs=Costs(300, 200, 10),
        constraints={"buildable": 0.0},
        history=[{"epoch": 1, "val_accuracy": 0.8}],
        seed=1,
        seconds=3.0,
        trained=True,
    )
    baseline = TrialRecord(
        number=0,
        status="complete",
        config={},
        costs=Costs(1, 1, 1),
        baseline="static",
        history=[{"epoch": 1, "val_accuracy": 0.5}],
        trained=True,
    )
    replay = ReplayRecord(
        number=0,
        status="complete",
        proxy_trial=0,
        seed=4,
        config={"width": 2},
        costs=Costs(300, 200, 10),
        recipe={"epochs": 1},
        test_accuracy=0.9,
        seconds=7.0,
        export=Path("/x/trial0-seed4"),
    )
    store.add([trial, baseline])
    store.add_replays([replay])
    (read,) = store.trials()
    assert {**read.__dict__, "started": None, "finished": None} == {
        **trial.__dict__,
        "started": None,
        "finished": None,
    }
    assert store.baselines()[0].baseline == "static"
    assert store.replays() == [replay]


@pytest.fixture
def schema1(tmp_path):
    """A copy of the study the first release stored (reading must not depend on the copy's place)."""
    shutil.copy(SCHEMA1 / "study.db", tmp_path / "study.db")
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_a_schema1_study_reads_back_as_that_release_summarized_it(schema1):
    store = StudyStore.open(schema1, "v1study")
    record = store.record
    assert record.schema == 1 and record.objectives == OBJECTIVES
    # schema 1 stored no baseline config: it is the static baseline trial's
    static = next(t for t in store.baselines() if t.baseline == "static")
    assert record.baseline_config == static.config and record.baseline_costs.params == 46476
    then = json.loads((SCHEMA1 / "search.json").read_text())
    now = summarize(store).as_dict()
    for key in ("trials", "complete", "pruned", "infeasible", "duplicates", "pareto"):
        assert now[key] == then[key], key
    assert now["baselines"] == then["references"]  # the first release's name for them
    assert now["hypervolume"] == pytest.approx(then["hypervolume"])
    assert {r.proxy_trial for r in store.replays()} == {7, 12, 21} and len(store.replays()) == 6


def test_a_schema1_study_reports_and_replays_with_one_rank_agreement(schema1, tmp_path):
    """The report and `kwsearch replay --json` print the same agreement for the same study, and
    replaying the old study's trials again trains nothing."""
    page = write_report(load(schema1, "v1study"), tmp_path / "old.html").html.read_text()
    then = json.loads((SCHEMA1 / "replay.json").read_text())["agreement"]

    def replay(trials: str, seeds: str) -> dict:
        args = ["replay", "v1study", "--trials", trials, "--seeds", seeds, "--storage", schema1, "--json"]
        result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])

    summary = replay("7,12,21", "0,1")
    assert summary["trained"] == 0 and summary["skipped"] == 6
    agreement = summary["agreement"]
    assert agreement["pairs"] == then["pairs"]  # as that release paired them
    for name in ("spearman", "kendall"):
        assert agreement[name]["value"] == then[name]["value"]
    data = load(schema1, "v1study")
    assert data.agreement.as_dict() == {k: v for k, v in agreement.items() if k != "study"}
    for line in data.agreement.describe():
        assert line in page
    # a trial the first release did not replay trains now, with the recipe stored then
    assert replay("6", "0")["trained"] == 1
    new = [r for r in StudyStore.open(schema1, "v1study").replays() if r.proxy_trial == 6]
    assert [r.status for r in new] == ["complete"] and len(new[0].history) == 3

"""`kwsearch calibrate`: the configs it picks, which stored runs it reuses, the agreement, noise and
cheaper proxies on hand-computed learning curves, and a tiny calibration on generated data end to
end (a search and a replay first, then a calibration killed with SIGKILL and resumed, its JSON, its
refusals, and the report's section)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from kwsearch.calibrate import analyse
from kwsearch.calibrate.results import Finished, Unit, finished_runs, key
from kwsearch.calibrate.select import CalibrationError, choose_configs, spread_by_cost
from kwsearch.cli import app
from kwsearch.models import parse_model_config
from kwsearch.records import (
    CalibrationConfig,
    CalibrationPlan,
    CalibrationRecord,
    Costs,
    ReplayRecord,
    StudyStore,
    TrialRecord,
    default_storage,
)
from kwsearch.replay.runner import run_replay
from kwsearch.report import load, write_report
from kwsearch.search import load_study, parse_study, summarize
from kwsearch.search.budget import ResolvedBudget, costs_of
from kwsearch.search.runner import run_search
from tests.helpers import checkpoint_epoch, kill_when_a_run_is_half_done, ray_trials, tiny_study
from tests.test_report_cases import open_in_chromium

FULL = {"epochs": 3, "batch_size": 64, "val_size": 64, "augment": False, "evaluate_test": True}


# -- which configs ------------------------------------------------------------------------------


def test_spread_by_cost_takes_both_ends_and_evenly_spaced_quantiles():
    assert spread_by_cost(10, 4) == [0, 3, 6, 9]  # step 3
    assert spread_by_cost(8, 3) == [0, 4, 7]  # step 3.5: 3.5 rounds up
    assert spread_by_cost(9, 3) == [0, 4, 8]
    assert spread_by_cost(7, 1) == [3]
    assert spread_by_cost(3, 5) == [0, 1, 2]
    assert spread_by_cost(5, 0) == []


def tiny_space(**searched):
    return parse_study(tiny_study("s", searched)).space


def test_configs_are_drawn_the_same_way_every_time_within_the_budget_and_spread_over_cost():
    space = tiny_space(
        width={"choice": [0.0625, 0.09375, 0.125]}, conv={"family": {"choice": ["static", "kw"]}}
    )
    # the six configs of the space, by parameters; the budget leaves out the largest
    every = sorted(
        costs_of(parse_model_config({**config, "conv": {"family": family}})).params
        for config in [{**space.tree, "width": w} for w in (0.0625, 0.09375, 0.125)]
        for family in ("static", "kw")
    )
    budget = ResolvedBudget({"params": every[-2]})
    chosen = choose_configs(space, budget, ["accuracy", "params"], 3, front=[], seed=0)
    again = choose_configs(space, budget, ["accuracy", "params"], 3, front=[], seed=0)
    assert chosen == again
    params = [c.costs.params for c in chosen]
    assert params == [every[0], every[2], every[4]]  # both ends of the five feasible, and the middle
    assert all(c.trial is None and c.costs.macs > 0 for c in chosen)
    assert chosen[0].model == parse_model_config(chosen[0].config).model_dump(mode="json")

    # the front's members come first; the rest is drawn
    member = TrialRecord(
        7, "complete", config=chosen[1].config, costs=chosen[1].costs, history=[{"val_accuracy": 1}]
    )
    with_front = choose_configs(space, budget, ["accuracy", "params"], 3, front=[member], seed=0)
    assert [c.trial for c in with_front] == [None, 7, None]
    assert [c.costs.params for c in with_front] == [every[0], every[2], every[4]]

    with pytest.raises(CalibrationError, match="1 distinct config"):
        choose_configs(tiny_space(), ResolvedBudget({}), ["accuracy", "params"], 4, front=[], seed=0)


# -- which runs answer it -----------------------------------------------------------------------


def a_plan(count: int, seeds=(0, 1), full_seeds=(0,), epochs: int = 3, target=0.9) -> CalibrationPlan:
    return CalibrationPlan(
        configs=[
            CalibrationConfig(
                {"width": i}, {"width": i, "parsed": True}, Costs(100 * (i + 1), 100 * (i + 1), 10)
            )
            for i in range(count)
        ],
        seeds=list(seeds),
        full_seeds=list(full_seeds),
        proxy_recipe={"epochs": epochs, "seed": 0},
        full_recipe={**FULL, "seed": 0},
        target=target,
        sample_seed=0,
    )


def test_proxy_runs_come_from_trials_baselines_confirmations_and_full_runs_from_replays_of_the_recipe():
    plan = a_plan(3)
    history = [{"epoch": 1, "val_accuracy": 0.5}]
    full = [{"epoch": 1, "val_accuracy": 0.6, "test_accuracy": 0.7}]
    trials = [
        TrialRecord(3, "complete", config={"width": 0}, seed=0, history=history),
        TrialRecord(4, "pruned", config={"width": 1}, seed=0, history=history),  # stopped early
        TrialRecord(5, "complete", config={"width": 1}, seed=9, history=history),  # another seed
        TrialRecord(6, "complete", config={"width": 7}, seed=0, history=history),  # not calibrated
    ]
    baselines = [TrialRecord(0, "complete", config={"width": 2, "parsed": True}, seed=1, baseline="static")]
    confirmations = [TrialRecord(0, "complete", config={"width": 0}, seed=1, history=history, confirms=3)]
    replays = [
        ReplayRecord(0, "complete", 3, 0, {"width": 0}, None, {**FULL, "seed": 0}, history=full),
        ReplayRecord(1, "complete", 4, 0, {"width": 1}, None, {**FULL, "seed": 0, "epochs": 9}, history=full),
    ]
    runs = [
        CalibrationRecord(0, "complete", "full", 0, {"width": 2}, None, None, history=full),
        CalibrationRecord(1, "running", "full", 0, {"width": 1}, None, None, history=full[:0]),
        CalibrationRecord(2, "complete", "proxy", 0, {"width": 0}, None, None, history=history),
    ]
    found = finished_runs(plan, trials, baselines, confirmations, replays, runs)
    assert {unit: (f.source, f.reused) for unit, f in found.items()} == {
        Unit(0, "proxy", 0): ("trial 3", True),  # before the calibration's own run of it
        Unit(0, "proxy", 1): ("confirmation 0", True),  # trial 3 trained again with seed 1
        Unit(2, "proxy", 1): ("baseline static", True),  # matched by its parsed config
        Unit(0, "full", 0): ("replay 0", True),  # replay 1 has another recipe
        Unit(2, "full", 0): ("calibration run 0", False),
    }
    assert found[Unit(0, "full", 0)].accuracy == 0.7 and found[Unit(0, "proxy", 0)].accuracy == 0.5


# -- what it finds --------------------------------------------------------------------------------


def curve(val_accuracy, train_loss, val_loss=0.3, test_accuracy=None):
    """A learning curve: one epoch per value of ``val_accuracy`` (one second each)."""
    history = [
        {"epoch": e + 1, "val_accuracy": a, "train_loss": t, "val_loss": val_loss, "epoch_seconds": 1.0}
        for e, (a, t) in enumerate(zip(val_accuracy, train_loss, strict=True))
    ]
    if test_accuracy is not None:
        history[-1]["test_accuracy"] = test_accuracy
    return history


# Five configs whose full accuracy rises with their index. After epoch 3 (the proxy) both seeds'
# mean ranks them exactly so; after epoch 1 configs 0 and 1 swap (one adjacent swap); after epoch 2
# also 2 and 3; the summed training loss ranks them backwards; the last validation loss ties.
FULL_ACCURACY = [0.5, 0.6, 0.7, 0.8, 0.9]
EPOCH1 = [0.30, 0.20, 0.40, 0.50, 0.60]
EPOCH2 = [0.35, 0.30, 0.55, 0.50, 0.70]
SEED0 = [0.40, 0.50, 0.60, 0.70, 0.80]
SEED1 = [0.52, 0.46, 0.62, 0.74, 0.80]  # ranks configs 0 and 1 the other way round
TRAIN_LOSS = [1.0, 1.1, 1.2, 1.3, 1.4]


def hand_found(plan: CalibrationPlan, configs: int = 5) -> dict:
    found = {}
    for i in range(configs):
        for seed, last in ((0, SEED0[i]), (1, SEED1[i])):
            history = curve([EPOCH1[i], EPOCH2[i], last], [TRAIN_LOSS[i]] * 3)
            found[Unit(i, "proxy", seed)] = Finished(
                history, f"trial {i}" if seed == 0 else "ours", seed == 0
            )
        full = curve([0.0], [0.0], test_accuracy=FULL_ACCURACY[i])
        found[Unit(i, "full", 0)] = Finished(full, "ours", reused=False)
    return found


def test_agreement_noise_and_cheaper_proxies_on_hand_computed_curves():
    plan = a_plan(5, target=0.85)
    found = analyse(plan, hand_found(plan))
    assert found.complete and found.runs == {"total": 15, "done": 15, "reused": 5}
    rows = found.configs
    assert [r["proxy_mean"] for r in rows] == pytest.approx([0.46, 0.48, 0.61, 0.72, 0.80])
    assert [r["full_mean"] for r in rows] == FULL_ACCURACY and all(r["full_std"] is None for r in rows)
    # the proxy's mean ranks exactly as full training: rho = tau = 1, the top 2 shared
    assert found.agreement.n == 5
    assert found.agreement.spearman.value == pytest.approx(1.0)
    assert found.agreement.kendall.value == pytest.approx(1.0) and found.agreement.top_k.value == 1.0
    assert found.agreement.spearman.bootstrap_ci95 == pytest.approx([1.0, 1.0])
    # seeds differ by 0.12, 0.04, 0.02, 0.04, 0: the standard deviation of two values is |a - b|/sqrt 2
    assert found.noise.proxy_seed_std == pytest.approx(0.22 / 5 / math.sqrt(2))
    # seed 1 swaps configs 0 and 1: rho = 1 - 6*2/(5*24) = 0.9, tau = (9 - 1)/10 = 0.8
    assert found.noise.seed_agreement.spearman.value == pytest.approx(0.9)
    assert found.noise.seed_agreement.kendall.value == pytest.approx(0.8)
    assert found.noise.full_seed_std is None  # one full seed

    cheap = {c.name: c for c in found.cheap_proxies}
    assert list(cheap) == ["val_accuracy@1", "val_accuracy@2", "val_accuracy@3", "train_loss_sum", "val_loss"]
    assert [cheap[n].cost for n in cheap] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert [cheap[n].seconds for n in cheap] == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert cheap["val_accuracy@1"].spearman.value == pytest.approx(0.9)  # one adjacent swap
    assert cheap["val_accuracy@2"].spearman.value == pytest.approx(0.8)  # two: 1 - 6*4/120
    assert cheap["val_accuracy@3"].spearman.value == pytest.approx(1.0)
    assert cheap["train_loss_sum"].spearman.value == pytest.approx(-1.0)  # more loss, more accuracy here
    assert cheap["val_loss"].spearman is None  # the same for every config: no ranking
    # at target 0.85, accuracy after the first epoch meets it by its estimate (not by its interval)
    assert [n for n, c in cheap.items() if c.meets_target] == ["val_accuracy@1", "val_accuracy@3"]
    assert found.cheapest.name == "val_accuracy@1" and not found.cheapest.interval_meets_target
    assert cheap["val_accuracy@3"].interval_meets_target
    assert any(
        "A cheaper proxy reaches the target: validation accuracy after epoch 1" in v for v in found.verdict
    )
    assert any("trust its ranking" in v for v in found.verdict)
    stricter = analyse(replace(plan, target=0.95), hand_found(plan))
    assert stricter.cheapest.name == "val_accuracy@3"
    assert any("No cheaper proxy reaches the target" in v for v in stricter.verdict)
    assert set(found.as_dict()) == {
        "complete", "target", "seeds", "full_seeds", "runs", "configs", "agreement", "noise",
        "cheap_proxies", "cheapest", "verdict",
    }  # fmt: skip


def test_an_unfinished_calibration_ranks_what_has_finished_and_says_so():
    plan = a_plan(5)
    found = hand_found(plan)
    del found[Unit(4, "full", 0)], found[Unit(3, "proxy", 1)]
    result = analyse(plan, found)
    assert not result.complete and result.runs["done"] == 13
    assert result.agreement.n == 4  # config 4 has no full run
    assert result.configs[3]["proxy_mean"] == 0.70 and result.configs[3]["proxy_std"] is None
    assert result.verdict[0].startswith("The calibration is not finished (13 of 15 runs)")
    # seed against seed over the configs with both seeds: 0, 1, 2 and 4 (config 3 lacks seed 1)
    assert result.noise.seed_agreement.n == 4 and result.noise.seed_agreement.spearman is not None
    too_few = analyse(plan, {u: f for u, f in found.items() if u.index < 2})
    assert too_few.agreement.spearman is None and too_few.cheapest is None
    assert "Not enough to tell: 2 of 5 configs" in too_few.verdict[-1]


# -- a tiny calibration, end to end ----------------------------------------------------------------

FULL_EPOCHS = 4
STUDY = tiny_study(
    "cal",
    {"width": {"choice": [0.0625, 0.125]}, "conv": {"family": {"choice": ["static", "kw"]}}},
    sampler={"name": "grid"},
    # small batches: full epochs long enough (about a second) to interrupt a run in the middle
    replay={"recipe": {"epochs": FULL_EPOCHS, "batch_size": 16, "val_size": 64, "augment": False}},
)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The tiny study searched (its grid of four configs), trial 0 replayed, then calibrated with
    four configs: the calibration killed with SIGKILL once a full run is midway, and resumed by
    the same command with --json. Yields the study file, the runs folder, the calibration runs
    stored at the kill, the checkpoints then, and the resumed command's JSON. One Ray instance
    serves this module (the killed calibration starts its own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    root = tmp_path_factory.mktemp("calibrate")
    path, runs = root / "cal.yaml", root / "runs"
    path.write_text(yaml.safe_dump(STUDY))
    assert run_search(load_study(path), runs_dir=runs, progress=False).complete == 4
    assert run_replay(str(path), trials=[0], runs_dir=runs).trained == 1

    folder = runs / "cal" / "calibration"
    command = [sys.executable, "-c", "from kwsearch.cli import main; main()", "calibrate", str(path)]
    full_folders = [folder / f"full-config{i}-seed0" for i in range(4)]
    kill_when_a_run_is_half_done(
        [*command, "--configs", "4", "--runs-dir", str(runs)], full_folders, FULL_EPOCHS
    )
    at_kill = StudyStore.open(default_storage(runs / "cal"), "cal").calibration_runs()
    checkpoints = {f.name: checkpoint_epoch(f) for f in full_folders}
    (folder / "ray").rename(folder / "ray-killed")  # what reaches Ray from here on is the resumed run's
    result = CliRunner().invoke(app, ["calibrate", str(path), "--runs-dir", str(runs), "--json"])
    assert result.exit_code == 0, result.output
    yield path, runs, at_kill, checkpoints, json.loads(result.stdout.strip().splitlines()[-1])
    ray.shutdown()


def test_a_calibration_reuses_the_studys_runs_and_resumes_after_kill_9(calibrated):
    _, runs, at_kill, checkpoints, summary = calibrated
    store = StudyStore.open(default_storage(runs / "cal"), "cal")
    plan = store.calibration_plan()
    trials = store.trials()
    # the four configs are the grid's, the front's members among them under their trial numbers
    assert {key(c.config) for c in plan.configs} == {key(t.config) for t in trials}
    front = set(summarize(store).pareto)
    assert {c.trial for c in plan.configs if c.trial is not None} == front
    assert plan.seeds == [0, 1] and plan.full_seeds == [0] and plan.full_recipe["epochs"] == FULL_EPOCHS
    replayed = next(i for i, c in enumerate(plan.configs) if c.config == trials[0].config)

    # reused: every seed-0 proxy run (the search's trials) and trial 0's full run (its replay)
    reused = {Unit(i, "proxy", 0) for i in range(4)} | {Unit(replayed, "full", 0)}
    stored = {Unit(next(i for i, c in enumerate(plan.configs) if c.config == r.config), r.kind, r.seed): r
              for r in store.calibration_runs()}  # fmt: skip
    assert set(stored) == {Unit(i, k, s) for i in range(4) for k, s in (("proxy", 1), ("full", 0))} - reused
    assert all(r.status == "complete" for r in stored.values())
    assert summary["runs"]["total"] == 12 and summary["runs"]["done"] == 12 and summary["runs"]["reused"] == 5

    # resumed: what had finished at the kill never reached Ray again; the run cut off continued its
    # own record from its checkpoint
    finished = {r.number for r in at_kill if r.status == "complete"}
    cut_off = {r.number for r in at_kill if r.status == "running"}
    assert cut_off, "the kill left no run unfinished"
    again = {t["config"]["key"] for t in ray_trials(runs / "cal" / "calibration").values()}
    assert again == {
        f"calibrate:{u.kind}:{u.index}:{u.seed}" for u, r in stored.items() if r.number not in finished
    }
    assert summary["runs"]["trained"] == len(again)
    for unit, run in stored.items():
        assert [h["epoch"] for h in run.history] == list(range(1, len(run.history) + 1))
        if unit.kind == "full":
            assert len(run.history) == FULL_EPOCHS and "test_accuracy" in run.history[-1]
            midway = checkpoints[run.export.name]
            if run.number in cut_off and 1 <= midway < FULL_EPOCHS:
                assert run.resumed_from_epoch == midway
        else:
            assert run.recipe["seed"] == 1 and len(run.history) == STUDY["proxy"]["epochs"]
    assert any(1 <= epoch < FULL_EPOCHS for epoch in checkpoints.values())


def test_the_json_of_a_calibration(calibrated):
    _, _, _, _, summary = calibrated
    assert set(summary) == {
        "study", "storage", "folder", "interrupted", "failed", "complete", "target", "seeds",
        "full_seeds", "runs", "configs", "agreement", "noise", "cheap_proxies", "cheapest", "verdict",
    }  # fmt: skip
    assert summary["complete"] and not summary["interrupted"] and summary["failed"] == []
    assert summary["target"] == 0.9 and summary["seeds"] == [0, 1] and summary["full_seeds"] == [0]
    assert set(summary["runs"]) == {"total", "done", "reused", "trained"}
    assert len(summary["configs"]) == 4
    for row in summary["configs"]:
        assert [r["seed"] for r in row["proxy_runs"]] == [0, 1] and len(row["full_runs"]) == 1
        assert row["proxy_runs"][0]["source"].startswith("trial ")
        assert row["params"] > 0 and 0 <= row["proxy_mean"] <= 1 and 0 <= row["full_mean"] <= 1
    assert any(row["full_runs"][0]["source"].startswith("replay ") for row in summary["configs"])
    assert set(summary["agreement"]) == {"n", "k", "spearman", "kendall", "top_k"}
    assert summary["agreement"]["n"] == 4 and summary["agreement"]["k"] == 2
    assert set(summary["noise"]) == {"proxy_seed_std", "seed_agreement", "full_seed_std"}
    assert [c["name"] for c in summary["cheap_proxies"]] == [
        "val_accuracy@1", "val_accuracy@2", "train_loss_sum", "val_loss"
    ]  # fmt: skip
    assert set(summary["cheap_proxies"][0]) == {
        "name", "label", "cost", "seconds", "spearman", "meets_target", "interval_meets_target"
    }  # fmt: skip
    assert summary["cheapest"] in {None, *(c["name"] for c in summary["cheap_proxies"])}
    assert summary["verdict"] and all(isinstance(line, str) for line in summary["verdict"])


def test_a_calibrated_study_keeps_its_plan_and_refuses_what_contradicts_it(calibrated, tmp_path):
    path, runs, _, _, _ = calibrated
    cli = CliRunner()

    def calibrate(*args, study=path):
        return cli.invoke(app, ["calibrate", str(study), "--runs-dir", str(runs), *args])

    edited = tmp_path / "cal.yaml"  # the same study, its replay recipe longer
    edited.write_text(
        yaml.safe_dump({**STUDY, "replay": {"recipe": {**STUDY["replay"]["recipe"], "epochs": 6}}})
    )
    for args, study, message in [
        (("--configs", "5"), path, "was calibrated with 4 configs; give --configs 4"),
        (("--seeds", "1"), path, "was calibrated with 2 proxy seeds"),
        (("--target", "1.5"), path, "--target: a Spearman's rho"),
        (("--configs", "2"), path, "--configs: a calibration ranks 3 or more"),
        ((), edited, f"replay.recipe: epochs: {FULL_EPOCHS} -> 6"),
    ]:
        result = calibrate(*args, study=study)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output

    # a new target changes the verdict, not the runs: nothing is trained
    result = calibrate("--target", "0.5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["target"] == 0.5 and summary["runs"]["trained"] == 0 and summary["complete"]
    store = StudyStore.open(default_storage(runs / "cal"), "cal")
    assert store.calibration_plan().target == 0.5

    # and the report shows it
    data = load(default_storage(runs / "cal"), "cal", target=str(path))
    assert data.calibration is not None and data.calibration.runs["done"] == 12
    page = write_report(data, tmp_path / "cal.html").html.read_text()
    assert "<h2 id='proxy-fidelity'>Proxy fidelity</h2>" in page and "Cheaper proxies" in page
    assert "href='#proxy-fidelity'" in page
    assert data.calibration.verdict[-1].replace("'", "&#x27;") in page
    browsed = open_in_chromium(tmp_path / "cal.html", tmp_path)  # the fidelity plots draw, no error
    assert browsed.console == []
    assert browsed.dom.count('class="main-svg"') >= page.count('class="plotly-graph-div"') >= 2

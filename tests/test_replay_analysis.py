"""Replay without Ray: rank correlations on a hand-computed case, the proxy-versus-full pairs read
from a storage written by hand, and which trials `--top K` and `--trials` pick."""

import math

import optuna
import pytest
from scipy import stats

from kwsearch.replay import ReplayError, correlation, rank_agreement, select_trials, spread_along_front
from kwsearch.search.records import replays_name


def test_rank_correlations_on_a_known_case():
    # ranks 1..5 against 2,1,4,3,5: d = -1,1,-1,1,0, so rho = 1 - 6*4/(5*24) = 0.8;
    # of the 10 pairs, (1,2) and (3,4) are discordant: tau = (8 - 2)/10 = 0.6
    found = correlation([0.1, 0.2, 0.3, 0.4, 0.5], [0.62, 0.61, 0.64, 0.63, 0.65])
    rho, tau = found["spearman"], found["kendall"]
    assert rho["value"] == pytest.approx(0.8) and tau["value"] == pytest.approx(0.6)
    assert rho["n"] == tau["n"] == 5
    # Spearman's p from t = rho sqrt((n-2)/(1-rho^2)) with n-2 degrees of freedom
    t = 0.8 * math.sqrt(3 / (1 - 0.64))
    assert rho["p_value"] == pytest.approx(2 * stats.t.sf(t, 3))
    # Kendall's exact p for n = 5: 2 * P(at most 2 discordant pairs) = 2 * (1 + 4 + 9)/120
    assert tau["p_value"] == pytest.approx(28 / 120)
    # Fisher's z: tanh(atanh(r) -+ 1.96 sqrt(v/(n-k))), v, k = 1.06, 3 (rho) and 0.437, 4 (tau)
    for r, v, k, got in ((0.8, 1.06, 3, rho["ci95"]), (0.6, 0.437, 4, tau["ci95"])):
        half = 1.959964 * math.sqrt(v / (5 - k))
        assert got == pytest.approx(
            [math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)], abs=1e-5
        )
    assert rho["ci95"] == pytest.approx([-0.3170, 0.9873], abs=1e-4)


def test_correlations_need_three_pairs_and_variation():
    assert correlation([0.1, 0.2], [0.3, 0.4]) == {"spearman": None, "kendall": None}
    assert correlation([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]) == {"spearman": None, "kendall": None}
    four = correlation([0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4])
    assert four["spearman"]["ci95"] is not None and four["kendall"]["ci95"] is None  # tau's needs n > 4


def _search_trial(study, number_accuracy_params, status="complete"):
    accuracy, params = number_accuracy_params
    attrs = {
        "status": status,
        "config": {"width": params},
        "costs": {"params": params, "effective_params": params, "macs": 10 * params},
        "history": [{"epoch": 1, "val_accuracy": accuracy}],
    }
    state = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
    study.add_trial(
        optuna.trial.create_trial(
            state=state.get(status, optuna.trial.TrialState.FAIL),
            values=[accuracy, params] if status == "complete" else None,
            user_attrs=attrs,
        )
    )


@pytest.fixture
def stored():
    storage = optuna.storages.InMemoryStorage()
    search = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    search.set_user_attr("objectives", ["accuracy", "params"])
    # the front: 0 (cheap), 1, 2, 3 (accurate); 4 is dominated, 5 was pruned
    for point in [(0.5, 100), (0.6, 200), (0.7, 300), (0.8, 400), (0.55, 350)]:
        _search_trial(search, point)
    _search_trial(search, (0.3, 150), status="pruned")
    replays = optuna.create_study(
        storage=storage, study_name=replays_name("s"), directions=["maximize", "minimize"]
    )
    full = {(0, 0): 0.70, (0, 1): 0.72, (2, 0): 0.80, (3, 0): 0.75, (4, 0): 0.90, (5, 0): 0.1}
    for (number, seed), accuracy in full.items():
        replays.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, 1.0],
                user_attrs={
                    "proxy_trial": number,
                    "seed": seed,
                    "status": "complete",
                    "test_accuracy": accuracy,
                },
            )
        )
    replays.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, user_attrs={"proxy_trial": 1, "seed": 0, "status": "failed"}
        )
    )
    return storage, search


def test_rank_agreement_pairs_each_replayed_trial_with_its_proxy(stored):
    storage, _ = stored
    found = rank_agreement("s", storage)
    pairs = {p["trial"]: p for p in found["pairs"]}
    assert sorted(pairs) == [0, 2, 3, 4]  # 1 failed its replay; 5's proxy was pruned
    assert found["not_compared"] == [5]
    assert pairs[0]["full_accuracy"] == pytest.approx(0.71) and pairs[0]["seeds"] == 2
    assert pairs[0]["full_std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    assert pairs[2]["proxy_accuracy"] == 0.7 and pairs[2]["params"] == 300 and pairs[2]["full_std"] == 0.0
    # proxy order 0 < 4 < 2 < 3 against full 0 < 3 < 2 < 4
    expected = stats.spearmanr([0.5, 0.7, 0.8, 0.55], [0.71, 0.8, 0.75, 0.9]).statistic
    assert found["spearman"]["value"] == pytest.approx(expected)
    # the replayed front by full accuracy and params: 0 (100), 2 (300), 4 (350, 0.9); 3 is dominated
    # by 4 and 5 by 0
    assert found["front"] == [0, 2, 4]


def test_top_k_spreads_along_the_front_and_keeps_both_ends(stored):
    _, search = stored
    trials = search.get_trials()
    front = [trials[i] for i in (0, 1, 2, 3)]
    assert [t.number for t in spread_along_front(front, ["accuracy", "params"], 2)] == [0, 3]
    assert [t.number for t in spread_along_front(front, ["accuracy", "params"], 1)] == [0]
    assert [t.number for t in spread_along_front(front, ["accuracy", "params"], 9)] == [0, 1, 2, 3]
    three = select_trials(trials, ["accuracy", "params"], study_name="s", top=3)
    assert [t.number for t in three][0::2] == [0, 3] and len(three) == 3
    # not the three most accurate (1, 2, 3): the cheap end is kept
    assert 0 in [t.number for t in three]


def test_spread_prefers_the_emptiest_stretch_of_the_front():
    storage = optuna.storages.InMemoryStorage()
    search = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    # a crowded cheap end (0-3) and one lone trial (4) between it and the accurate end (5)
    for point in [(0.50, 100), (0.51, 110), (0.52, 120), (0.53, 130), (0.70, 500), (0.90, 1000)]:
        _search_trial(search, point)
    picked = select_trials(search.get_trials(), ["accuracy", "params"], study_name="x", top=3)
    assert [t.number for t in picked] == [0, 4, 5]


def test_named_trials_are_checked(stored):
    _, search = stored
    trials = search.get_trials()
    objectives = ["accuracy", "params"]
    assert [t.number for t in select_trials(trials, objectives, study_name="s", numbers=[2, 5, 2])] == [2, 5]
    with pytest.raises(ReplayError, match="study 's' has no trial 17"):
        select_trials(trials, objectives, study_name="s", numbers=[17])
    with pytest.raises(ReplayError, match="either --top K or --trials"):
        select_trials(trials, objectives, study_name="s", top=2, numbers=[1])
    with pytest.raises(ReplayError, match="--top: must be >= 1"):
        select_trials(trials, objectives, study_name="s", top=0)
    pruned_only = [t for t in trials if t.number == 5]
    with pytest.raises(ReplayError, match="study 's' has no complete trials"):
        select_trials(pruned_only, objectives, study_name="s", top=2)

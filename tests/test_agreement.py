"""Rank agreement on hand-computed cases, the proxy-versus-full pairs of a study's records, and
which trials `--top K` and `--trials` pick."""

import math

import numpy as np
import pytest
from scipy import stats

from kwsearch.records import Costs, ReplayRecord, TrialRecord, spread_along_front
from kwsearch.replay import ReplayError, select_trials
from kwsearch.stats import default_top_k, proxy_agreement, rank_agreement
from kwsearch.stats._rank import RESAMPLES, _resample_indices

OBJECTIVES = ["accuracy", "params"]


def test_rank_correlations_on_a_known_case():
    # ranks 1..5 against 2,1,4,3,5: d = -1,1,-1,1,0, so rho = 1 - 6*4/(5*24) = 0.8;
    # of the 10 pairs, (1,2) and (3,4) are discordant: tau = (8 - 2)/10 = 0.6
    found = rank_agreement([0.1, 0.2, 0.3, 0.4, 0.5], [0.62, 0.61, 0.64, 0.63, 0.65])
    rho, tau = found["spearman"], found["kendall"]
    assert rho.value == pytest.approx(0.8) and tau.value == pytest.approx(0.6)
    assert rho.n == tau.n == 5
    # Spearman's p from t = rho sqrt((n-2)/(1-rho^2)) with n-2 degrees of freedom
    t = 0.8 * math.sqrt(3 / (1 - 0.64))
    assert rho.p_value == pytest.approx(2 * stats.t.sf(t, 3))
    # Kendall's exact p for n = 5: 2 * P(at most 2 discordant pairs) = 2 * (1 + 4 + 9)/120
    assert tau.p_value == pytest.approx(28 / 120)
    # Fisher's z: tanh(atanh(r) -+ 1.96 sqrt(v/(n-k))), v, k = 1.06, 3 (rho) and 0.437, 4 (tau)
    for r, v, k, got in ((0.8, 1.06, 3, rho.ci95), (0.6, 0.437, 4, tau.ci95)):
        half = 1.959964 * math.sqrt(v / (5 - k))
        assert got == pytest.approx(
            [math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)], abs=1e-5
        )
    assert rho.ci95 == pytest.approx([-0.3170, 0.9873], abs=1e-4)


def test_top_k_overlap_and_its_chance_p_value_by_hand():
    # top 2 by proxy: positions 4, 3; by full: 4, 2 -> one shared of two
    found = rank_agreement([0.1, 0.2, 0.3, 0.4, 0.5], [0.62, 0.61, 0.64, 0.63, 0.65])["top_k"]
    assert default_top_k(5) == 2 and found.value == 0.5
    # P(at least 1 of the proxy's 2 among the full's 2 of 5 at random) = 1 - C(3,2)/C(5,2) = 0.7
    assert found.p_value == pytest.approx(0.7)
    exact = rank_agreement([1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60], top_k=3)["top_k"]
    assert exact.value == 1.0 and exact.p_value == pytest.approx(1 / 20)  # 1 / C(6,3)
    assert exact.bootstrap_ci95 == [1.0, 1.0]


def test_bootstrap_intervals_are_the_percentiles_of_a_plain_resampling():
    rng = np.random.default_rng(5)
    proxy, full = rng.random(9), rng.random(9)
    found = rank_agreement(proxy, full, seed=3)
    indices = _resample_indices(9, 3)
    assert indices.shape == (RESAMPLES, 9)
    for name, test in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        values = []
        for row in indices:
            x, y = proxy[row], full[row]
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                values.append(test(x, y).statistic)
        expected = [np.percentile(values, 2.5), np.percentile(values, 97.5)]
        assert found[name].bootstrap_ci95 == pytest.approx(expected, abs=1e-9)
        assert found[name].bootstrap_ci95[0] <= found[name].value <= found[name].bootstrap_ci95[1]
    assert rank_agreement(proxy, full, seed=3) == found  # the same figures every time


def test_agreement_needs_three_pairs_and_variation():
    empty = {"spearman": None, "kendall": None, "top_k": None}
    assert rank_agreement([0.1, 0.2], [0.3, 0.4]) == empty
    assert rank_agreement([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]) == empty
    three = rank_agreement([0.1, 0.2, 0.3], [0.1, 0.3, 0.2])
    assert three["spearman"].ci95 is None and three["spearman"].bootstrap_ci95 is None
    four = rank_agreement([0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4])
    assert four["spearman"].ci95 is not None and four["kendall"].ci95 is None  # tau's needs n > 4


def _trial(number, accuracy, params, status="complete"):
    return TrialRecord(
        number=number,
        status=status,
        config={"width": params},
        costs=Costs(params, params, 10 * params),
        history=[{"epoch": 1, "val_accuracy": accuracy}],
        trained=True,
    )


@pytest.fixture
def trials():
    # the front: 0 (cheap), 1, 2, 3 (accurate); 4 is dominated, 5 was pruned
    points = [(0.5, 100), (0.6, 200), (0.7, 300), (0.8, 400), (0.55, 350)]
    return [_trial(n, a, p) for n, (a, p) in enumerate(points)] + [_trial(5, 0.3, 150, "pruned")]


@pytest.fixture
def replays():
    full = {(0, 0): 0.70, (0, 1): 0.72, (2, 0): 0.80, (3, 0): 0.75, (4, 0): 0.90, (5, 0): 0.1}
    done = [
        ReplayRecord(
            number=i,
            status="complete",
            proxy_trial=n,
            seed=s,
            config=None,
            costs=None,
            recipe=None,
            test_accuracy=a,
        )
        for i, ((n, s), a) in enumerate(full.items())
    ]
    failed = ReplayRecord(
        number=6, status="failed", proxy_trial=1, seed=0, config=None, costs=None, recipe=None
    )
    return [*done, failed]


def test_proxy_agreement_pairs_each_replayed_trial_with_its_proxy(trials, replays):
    found = proxy_agreement(trials, replays, OBJECTIVES)
    pairs = {p["trial"]: p for p in found.pairs}
    assert sorted(pairs) == [0, 2, 3, 4]  # 1 failed its replay; 5's proxy was pruned
    assert found.not_compared == [5]
    assert pairs[0]["full_accuracy"] == pytest.approx(0.71) and pairs[0]["seeds"] == 2
    assert pairs[0]["full_std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    assert pairs[2]["proxy_accuracy"] == 0.7 and pairs[2]["params"] == 300 and pairs[2]["full_std"] == 0.0
    # proxy order 0 < 4 < 2 < 3 against full 0 < 3 < 2 < 4
    expected = stats.spearmanr([0.5, 0.7, 0.8, 0.55], [0.71, 0.8, 0.75, 0.9]).statistic
    assert found.spearman.value == pytest.approx(expected)
    # the replayed front by full accuracy and params: 0 (100), 2 (300), 4 (350, 0.9); 3 is dominated
    # by 4 and 5 by 0
    assert found.front == [0, 2, 4]
    lines = found.describe()
    assert lines[0].startswith(f"Spearman rho {expected:.3f} (95% CI ") and len(lines) == 3


def test_top_k_spreads_along_the_front_and_keeps_both_ends(trials):
    front = trials[:4]
    assert [t.number for t in spread_along_front(front, OBJECTIVES, 2)] == [0, 3]
    assert [t.number for t in spread_along_front(front, OBJECTIVES, 1)] == [0]
    assert [t.number for t in spread_along_front(front, OBJECTIVES, 9)] == [0, 1, 2, 3]
    three = select_trials(trials, OBJECTIVES, study_name="s", top=3)
    assert [t.number for t in three][0::2] == [0, 3] and len(three) == 3
    # not the three most accurate (1, 2, 3): the cheap end is kept
    assert 0 in [t.number for t in three]


def test_spread_prefers_the_emptiest_stretch_of_the_front():
    # a crowded cheap end (0-3) and one lone trial (4) between it and the accurate end (5)
    points = [(0.50, 100), (0.51, 110), (0.52, 120), (0.53, 130), (0.70, 500), (0.90, 1000)]
    picked = select_trials(
        [_trial(n, a, p) for n, (a, p) in enumerate(points)], OBJECTIVES, study_name="x", top=3
    )
    assert [t.number for t in picked] == [0, 4, 5]


def test_named_trials_are_checked(trials):
    assert [t.number for t in select_trials(trials, OBJECTIVES, study_name="s", numbers=[2, 5, 2])] == [2, 5]
    with pytest.raises(ReplayError, match="study 's' has no trial 17"):
        select_trials(trials, OBJECTIVES, study_name="s", numbers=[17])
    with pytest.raises(ReplayError, match="either --top K or --trials"):
        select_trials(trials, OBJECTIVES, study_name="s", top=2, numbers=[1])
    with pytest.raises(ReplayError, match="--top: must be >= 1"):
        select_trials(trials, OBJECTIVES, study_name="s", top=0)
    with pytest.raises(ReplayError, match="study 's' has no complete trials"):
        select_trials(trials[5:], OBJECTIVES, study_name="s", top=2)

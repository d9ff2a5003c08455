"""Accuracy intervals, differences, what is tied with a front, and the paper's orderings, against
hand-computed values."""

import math

import pytest
from scipy import stats

from kwsearch.records import Costs, TrialRecord
from kwsearch.stats import (
    Estimate,
    accuracy_estimate,
    difference,
    front_noise,
    published_claims,
    significantly_better,
    wilson_interval,
)

Z = 1.959963984540054


def test_wilson_interval_by_hand():
    # p = 0.72, n = 1000: centre (p + z^2/2n) / (1 + z^2/n), half z/(1 + z^2/n) sqrt(p(1-p)/n + z^2/4n^2)
    z2 = Z * Z
    centre = (0.72 + z2 / 2000) / (1 + z2 / 1000)
    half = Z / (1 + z2 / 1000) * math.sqrt(0.72 * 0.28 / 1000 + z2 / 4e6)
    assert wilson_interval(0.72, 1000) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0.72, 1000) == pytest.approx((0.6914, 0.7469), abs=1e-4)  # the issue's +-0.028
    low, high = wilson_interval(1.0, 64)
    assert high == 1.0 and low == pytest.approx(64 / (64 + z2))  # all correct: still an interval


def test_several_seeds_give_a_t_interval_never_narrower_than_all_their_images():
    found = accuracy_estimate([0.70, 0.74, 0.72], 1000)
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert found.value == pytest.approx(0.72) and found.runs == 3
    assert (found.low, found.high) == pytest.approx((0.72 - half, 0.72 + half))
    agreeing = accuracy_estimate([0.72, 0.72], 1000)  # two seeds equal by chance
    assert (agreeing.low, agreeing.high) == pytest.approx(wilson_interval(0.72, 2000))
    unknown = accuracy_estimate([0.72], None)
    assert not unknown.known and "unknown" in unknown.describe()


def test_a_difference_by_mover_and_what_is_significant():
    a, b = Estimate(0.80, 0.75, 0.84), Estimate(0.70, 0.66, 0.75)
    d, low, high = difference(a, b)
    assert d == pytest.approx(0.10)
    assert low == pytest.approx(0.10 - math.hypot(0.05, 0.05))
    assert high == pytest.approx(0.10 + math.hypot(0.04, 0.04))
    assert significantly_better(a, b) and not significantly_better(b, a)
    assert not significantly_better(Estimate(0.72, 0.69, 0.75), Estimate(0.70, 0.67, 0.73))
    assert difference(a, Estimate(0.7, None, None)) is None


def _trial(number, accuracy, params, *, config=None, seed=0, images=100):
    return TrialRecord(
        number=number,
        status="complete",
        config=config or {"n": number},
        costs=Costs(params, params, params),
        history=[{"epoch": 1, "val_accuracy": accuracy, "val_images": images}],
        seed=seed,
        trained=True,
    )


def test_what_is_tied_with_the_front_and_whether_the_front_is_within_noise():
    # 100 images each: +-0.09 around 0.7, so 0.70 vs 0.74 is within noise and 0.40 vs 0.90 is not
    trials = [
        _trial(0, 0.40, 100),  # cheap, clearly worse
        _trial(1, 0.70, 200),
        _trial(2, 0.74, 300),  # a dearer step that buys nothing beyond noise
        _trial(3, 0.72, 400),  # dominated by 2, but not beyond noise: tied
        _trial(4, 0.40, 500),  # dominated beyond noise by 1 and 2
    ]
    noise = front_noise(trials, ["accuracy", "params"])
    assert noise.front == [0, 1, 2]
    assert noise.tied == [3]
    assert noise.flat_steps == [(1, 2)] and not noise.within_noise
    assert noise.estimates[1].images == 100
    lines = noise.describe()
    assert "1 to 2" in lines[0] and "statistically tied" in lines[1]
    within = front_noise(trials[1:3], ["accuracy", "params"])
    assert within.within_noise and "within noise" in within.describe()[0]


def test_a_config_run_with_several_seeds_and_confirmations_is_read_on_its_mean():
    config = {"width": 1}
    trials = [_trial(0, 0.90, 100, config=config), _trial(1, 0.80, 100, config=config, seed=1)]
    trials.append(_trial(2, 0.86, 150))
    noise = front_noise(trials, ["accuracy", "params"], extra_runs={0: [0.70]})
    mean = (0.90 + 0.80 + 0.70) / 3
    assert noise.estimates[0].value == pytest.approx(mean) == noise.estimates[1].value
    assert noise.estimates[0].runs == 3
    # on its own run trial 0 (0.90) would dominate trial 2; on the mean, 2 is on the front too
    assert noise.front == [0, 1, 2]


def test_a_record_without_its_image_count_takes_the_study_s():
    trial = TrialRecord(
        number=0,
        status="complete",
        config={},
        costs=Costs(1, 1, 1),
        history=[{"epoch": 1, "val_accuracy": 0.5}],
    )
    assert front_noise([trial], ["accuracy", "params"], images=64).estimates[0].images == 64
    assert not front_noise([trial], ["accuracy", "params"]).estimates[0].known


def test_the_published_orderings_with_their_verdicts():
    claims = published_claims(
        {
            "static": Estimate(0.70, 0.67, 0.73),
            "kw_1x": Estimate(0.71, 0.68, 0.74),  # within noise of static
            "kw_4x": Estimate(0.80, 0.77, 0.83),  # above both beyond noise
            "kw_1d2x": Estimate(0.60, 0.57, 0.63),  # below static beyond noise
        }
    )
    found = {(c.higher, c.lower): c.verdict for c in claims}
    assert found == {
        ("kw_1d2x", "static"): "reversed",
        ("kw_1x", "static"): "cannot tell",
        ("kw_4x", "static"): "holds",
        ("kw_1x", "kw_1d2x"): "holds",
        ("kw_4x", "kw_1x"): "holds",
    }
    text = next(c for c in claims if c.higher == "kw_1x" and c.lower == "static").describe()
    assert text.startswith("KW 1x above static: +0.0100 (95% CI ") and "cannot tell" in text
    assert published_claims({"static": Estimate(0.7, 0.6, 0.8)}) == []

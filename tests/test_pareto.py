"""Pareto analysis and the Pareto-aware successive halving that early stopping uses."""

import math
import random

import pytest
from optuna._hypervolume import compute_hypervolume

from kwsearch.pareto import crowding_distance, dominates, hypervolume, non_dominated_sort, rank
from kwsearch.search.scheduler import ParetoSuccessiveHalving, rungs
from kwsearch.search.study import EarlyStopping


def test_dominates_needs_no_worse_everywhere_and_better_somewhere():
    assert dominates((1, 2), (2, 2))
    assert not dominates((1, 2), (1, 2))
    assert not dominates((1, 3), (2, 2))


def test_non_dominated_sort_of_a_hand_computed_2d_case():
    points = [(1, 3), (2, 2), (3, 1), (2, 3), (3, 3), (2, 2)]
    # (2, 3) is dominated by (1, 3) and (2, 2); (3, 3) by (2, 3); equal points share a front
    assert non_dominated_sort(points) == [[0, 1, 2, 5], [3], [4]]


def test_crowding_distance_keeps_the_extremes_and_sums_normalised_gaps():
    points = [(1, 3), (2, 2), (3, 1), (2.5, 1.5)]
    distance = crowding_distance(points, [0, 1, 2, 3])
    assert distance[0] == distance[2] == math.inf
    # objective 0 sorted 0, 1, 3, 2 (range 2); objective 1 sorted 2, 3, 1, 0 (range 2)
    assert distance[1] == pytest.approx((2.5 - 1) / 2 + (3 - 1.5) / 2)
    assert distance[3] == pytest.approx((3 - 2) / 2 + (2 - 1) / 2)
    assert rank(points) == [0, 2, 1, 3]


def test_hypervolume_of_hand_computed_2d_and_3d_fronts():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(3 + 2 + 1)
    # a dominated point and one outside the reference box add nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4)) == pytest.approx(6)
    assert hypervolume([(5, 0)], (4, 4)) == 0.0
    assert hypervolume([(1, 1, 1)], (2, 2, 2)) == pytest.approx(1)
    # two boxes of volume 4 and 2 overlapping in a unit cube
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(5)


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_hypervolume_matches_optuna_on_random_fronts(dims):
    import numpy as np

    rng = random.Random(dims)
    for _ in range(5):
        points = [tuple(rng.random() for _ in range(dims)) for _ in range(12)]
        reference = (1.1,) * dims
        expected = compute_hypervolume(np.array(points), np.array(reference))
        assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-9)


def test_rungs_are_geometric_distinct_and_never_the_last_epoch():
    assert rungs(EarlyStopping(min_epochs=1, reduction_factor=2), 8) == [1, 2, 4]
    assert rungs(EarlyStopping(min_epochs=1, reduction_factor=3), 9) == [1, 3]
    assert rungs(EarlyStopping(min_epochs=2, reduction_factor=1.2), 4) == [2, 3]
    assert rungs(EarlyStopping(min_epochs=3), 3) == []
    assert rungs(EarlyStopping(enabled=False), 10) == []


def test_a_small_less_accurate_model_on_the_front_survives_a_rung():
    halving = ParetoSuccessiveHalving(EarlyStopping(min_epochs=1, reduction_factor=2), epochs=4)
    assert halving.rungs == [1, 2]
    # (minus accuracy, parameters)
    assert halving.decide("large", 1, (-0.9, 1000.0))
    assert not halving.decide("dominated", 1, (-0.8, 2000.0))
    small = (-0.5, 100.0)
    accuracies = sorted([0.9, 0.8, 0.5], reverse=True)
    keep = math.ceil(3 / 2)
    assert accuracies.index(0.5) >= keep  # ranking by accuracy alone would stop it
    assert halving.decide("small", 1, small)
    assert halving.stopped == {"dominated"}
    # epochs that are no rung never stop a trial
    assert halving.decide("dominated", 3, (-0.1, 5000.0))


def test_halving_seeded_from_storage_ranks_new_trials_against_finished_ones():
    halving = ParetoSuccessiveHalving(EarlyStopping(min_epochs=1, reduction_factor=2), epochs=4)
    for key, epoch, point in [("0", 1, (-0.9, 100.0)), ("1", 1, (-0.8, 50.0)), ("2", 2, (-0.9, 100.0))]:
        halving.record(key, epoch, point)
    assert not halving.decide("3", 1, (-0.7, 200.0))
    assert "3" in halving.stopped

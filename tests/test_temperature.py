"""Temperature schedules and setting the temperature of every dynamic layer of a model."""

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from kwsearch.nn import (
    KW_DEFAULT_SCHEDULE,
    SOFTMAX_DEFAULT_SCHEDULE,
    ConvFactory,
    ConvSpecError,
    TemperatureControlled,
    TemperatureSchedule,
    parse_spec,
    set_temperature,
)


@pytest.mark.parametrize(
    ("shape", "midpoint"),
    [("linear", 5.5), ("cosine", 5.5), ("exponential", math.sqrt(10.0)), ("step", 10.0 - 9.0 * 2 / 4)],
)
def test_each_shape_runs_from_start_to_end_and_holds(shape, midpoint):
    schedule = TemperatureSchedule(shape=shape, start=10.0, end=1.0, epochs=4)
    assert schedule.value(0, total_epochs=100) == pytest.approx(10.0)
    assert schedule.value(2, total_epochs=100) == pytest.approx(midpoint)
    assert schedule.value(4, total_epochs=100) == pytest.approx(1.0)
    assert schedule.value(50, total_epochs=100) == pytest.approx(1.0)


def test_cosine_is_slow_at_both_ends_and_linear_is_not():
    cosine = TemperatureSchedule(shape="cosine", start=1, end=0, epochs=10)
    linear = TemperatureSchedule(shape="linear", start=1, end=0, epochs=10)
    assert 1 - cosine.value(1, 10) < 1 - linear.value(1, 10)
    assert cosine.value(9, 10) < linear.value(9, 10)


def test_step_schedule_holds_between_drops():
    schedule = TemperatureSchedule(shape="step", start=1, end=0, epochs=8, steps=4)
    assert [schedule.value(e, 8) for e in (0, 1.9, 2, 3.99, 4, 7.9, 8)] == [1, 1, 0.75, 0.75, 0.5, 0.25, 0]


def test_fractional_duration_scales_with_training_length():
    schedule = TemperatureSchedule(start=1, end=0, fraction=0.25)
    assert schedule.duration(40) == 10
    assert schedule.value(5, total_epochs=40) == pytest.approx(0.5)
    assert schedule.value(5, total_epochs=20) == pytest.approx(0.0)


def test_evaluated_per_iteration_within_an_epoch():
    schedule = TemperatureSchedule(start=1, end=0, epochs=20)
    values = [schedule.value(3 + i / 10, total_epochs=100) for i in range(11)]
    assert all(a > b for a, b in itertools.pairwise(values)), "changes within an epoch"


@pytest.mark.parametrize("shape", ["linear", "cosine", "step", "exponential"])
def test_a_fraction_anneals_a_proxy_and_its_replay_alike(shape):
    schedule = TemperatureSchedule(shape=shape, start=1.0, end=0.01, fraction=0.3)
    progress = [i / 40 for i in range(41)]
    proxy = [schedule.value(p * 3, total_epochs=3) for p in progress]
    replay = [schedule.value(p * 30, total_epochs=30) for p in progress]
    assert proxy == pytest.approx(replay, rel=1e-12)
    # an absolute duration does not: 2 epochs are most of a 3-epoch proxy, a sliver of the replay
    absolute = TemperatureSchedule(shape=shape, start=1.0, end=0.01, epochs=2)
    assert absolute.value(0.5 * 3, 3) != pytest.approx(absolute.value(0.5 * 30, 30))


def test_published_defaults_are_fractions_of_the_published_runs():
    # KernelWarehouse: 1 -> 0 over 20 of 300 epochs (OSVAI/KernelWarehouse main.py defaults)
    assert (KW_DEFAULT_SCHEDULE.start, KW_DEFAULT_SCHEDULE.end) == (1.0, 0.0)
    assert KW_DEFAULT_SCHEDULE.duration(300) == pytest.approx(20)
    assert KW_DEFAULT_SCHEDULE.value(10, 300) == pytest.approx(0.5)
    # DY-CNN / ODConv: 30 -> 1 over 10 of 100 epochs (ODConv's ResNet recipe)
    assert SOFTMAX_DEFAULT_SCHEDULE.value(0, 100) == 30.0
    assert SOFTMAX_DEFAULT_SCHEDULE.value(5, 100) == pytest.approx(15.5)
    assert SOFTMAX_DEFAULT_SCHEDULE.value(10, 100) == pytest.approx(1.0)
    # a 3-epoch proxy anneals over its first fifteenth too, and ends at the schedule's end
    assert KW_DEFAULT_SCHEDULE.value(0.1, 3) == pytest.approx(0.5)
    assert KW_DEFAULT_SCHEDULE.final_value(3) == 0.0


def test_final_value_and_whether_a_run_finishes_the_schedule():
    absolute = TemperatureSchedule(start=1.0, end=0.0, epochs=20)
    assert not absolute.finishes_within(3)
    assert absolute.final_value(3) == pytest.approx(0.85)  # the quickstart's 3 epochs
    assert absolute.finishes_within(20) and absolute.final_value(20) == 0.0
    assert absolute.finishes_within(30) and absolute.final_value(30) == 0.0
    relative = TemperatureSchedule(start=30.0, end=1.0, fraction=1.0)
    assert all(relative.finishes_within(e) and relative.final_value(e) == 1.0 for e in (1, 3, 300))


@pytest.mark.parametrize(
    ("family", "given", "expected"),
    [
        # a duration alone keeps the family's start and end (ODConv's 30 -> 1, not the class's 1 -> 0)
        ("odconv", {"epochs": 5}, {"start": 30.0, "end": 1.0, "epochs": 5.0, "fraction": None}),
        ("dyconv", {"shape": "cosine"}, {"shape": "cosine", "start": 30.0, "fraction": 0.1}),
        ("kw", {"start": 0.5}, {"start": 0.5, "end": 0.0, "fraction": 20 / 300}),
        ("kw", {"fraction": 0.5}, {"start": 1.0, "fraction": 0.5, "epochs": None}),
    ],
)
def test_a_partial_schedule_is_completed_from_the_family_default(family, given, expected):
    schedule = parse_spec({"family": family, "temperature": given})[1].temperature
    assert {key: getattr(schedule, key) for key in expected} == expected


def test_softmax_families_refuse_a_temperature_that_reaches_zero():
    with pytest.raises(ConvSpecError, match=r"conv\.temperature: .*must be > 0"):
        parse_spec({"family": "odconv", "temperature": {"start": 1, "end": 0, "epochs": 5}})
    with pytest.raises(ConvSpecError, match=r"conv\.temperature"):
        parse_spec({"family": "dyconv", "temperature": {"end": 0}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start": 1, "end": 0}, "exactly one of 'epochs' and 'fraction'"),
        ({"epochs": 5, "fraction": 0.5}, "exactly one of 'epochs' and 'fraction'"),
        ({"shape": "exponential", "start": 1, "end": 0, "epochs": 5}, "exponential schedule needs"),
        ({"shape": "sawtooth", "epochs": 5}, "shape"),
        ({"epochs": 5, "warmup": 2}, "warmup"),
        ({"fraction": 1.5}, "fraction"),
    ],
)
def test_bad_schedules_are_rejected_with_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        TemperatureSchedule(**fields)


def test_set_temperature_reaches_every_dynamic_layer_and_nothing_else():
    factory = ConvFactory({"family": "kw", "sharing_range": ["layer"]})
    model = nn.Sequential(
        factory.conv(4, 8, 3, padding=1, name="a_layer0"),
        nn.BatchNorm2d(8),
        factory.conv(8, 8, 3, padding=1, name="a_layer1"),
        factory.conv(8, 8, 3, padding=1, name="stem", dynamic=False),
    )
    factory.finalize(model)
    assert set_temperature(model, 0.25) == 2
    layers = [m for m in model.modules() if isinstance(m, TemperatureControlled)]
    assert [float(m.temperature) for m in layers] == [0.25, 0.25]
    assert all("temperature" in key for key in model.state_dict() if key.endswith("temperature"))
    assert sum(key.endswith("temperature") for key in model.state_dict()) == 2


def test_temperature_changes_the_output():
    factory = ConvFactory({"family": "kw"})
    model = factory.finalize(nn.Sequential(factory.conv(4, 4, 3, padding=1))).eval()
    x = torch.randn(2, 4, 5, 5)
    set_temperature(model, 1.0)
    at_one = model(x)
    set_temperature(model, 0.0)
    assert not torch.allclose(model(x), at_one)


def test_initial_temperature_is_the_schedule_start():
    factory = ConvFactory(
        {"family": "kw", "temperature": {"shape": "cosine", "start": 0.7, "end": 0, "epochs": 3}}
    )
    layer = factory.conv(4, 4, 3)
    assert float(layer.temperature) == pytest.approx(0.7)
    assert factory.options.temperature.shape == "cosine"

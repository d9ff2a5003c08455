"""What a search prints: the summary a piped search ends with, the lines it prints as trials
finish, and the live view (a row per running trial, the time left), on studies written whole
through the record; and the one format for costs they share."""

from __future__ import annotations

import io
import re

import optuna
import pytest
from rich.console import Console

from kwsearch.formats import format_cost, format_duration, format_millions, format_value
from kwsearch.search import summarize
from kwsearch.search.progress import SearchProgress, time_left
from tests.helpers import study_of, trial_record


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def panel_text(view: SearchProgress) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(view.render())
    return console.export_text()


def budget_line(summary) -> str:
    return "trained"


# -- one format for costs ---------------------------------------------------------------------


def test_costs_are_written_exactly_so_that_close_configs_differ():
    assert format_cost(328_000) == "328,000" and format_cost(328_100) == "328,100"
    assert format_cost(1_403_567.0) == "1,403,567" and format_cost(None) == "–"
    assert format_value(0.15625) == "0.15625" and format_value(0.1) == "0.1" and format_value("kw") == "kw"
    assert format_millions([1_403_567, 1_403_667]) == ["1.4036", "1.4037"]
    assert format_millions([1_400_000, 2_500_000]) == ["1.40", "2.50"]
    assert format_duration(45) == "45 s" and format_duration(200) == "3 min 20 s"
    assert format_duration(7500) == "2 h 05 min"


def test_the_live_view_and_the_piped_lines_tell_apart_trials_100_parameters_apart(capsys):
    store = study_of(
        [trial_record(0, "complete", 328_000, [0.5, 0.6, 0.7]), trial_record(1, "complete", 328_100, [0.8])]
    )
    view = SearchProgress(store, budget_line, enabled=False)
    view.changed(force=True)
    printed = capsys.readouterr().err
    assert "params 328,000" in printed and "params 328,100" in printed
    assert "0.328M" not in printed
    view.interactive = True
    panel = panel_text(view)
    assert "328,100" in panel and "0.328M" not in panel


# -- the summary a search ends with --------------------------------------------------------------


def test_the_summary_ends_with_each_front_member_its_accuracy_interval_and_costs():
    store = study_of(
        [
            trial_record(0, "complete", 300_000, [0.5, 0.70]),
            trial_record(1, "complete", 600_000, [0.6, 0.80]),
            trial_record(2, "complete", 900_000, [0.6, 0.75]),  # dominated
            trial_record(3, "infeasible", 2_000_000, [], error="over budget"),
        ]
    )
    lines = summarize(store).lines()
    members = [line for line in lines if line.lstrip().startswith("trial")]
    assert len(members) == 2  # the front, cheapest first
    assert members[0].split()[:3] == ["trial", "0", "0.7000"]
    assert "(95% CI 0.6709 to 0.7276)" in members[0]  # Wilson over 1,000 images
    assert "params 300,000" in members[0] and "MACs 12,000,000" in members[0]
    assert "params 600,000" in members[1] and "MACs 24,000,000" in members[1]


# -- the live view ---------------------------------------------------------------------------------


def test_the_live_view_has_a_row_per_running_trial_and_the_time_left():
    store = study_of(
        [
            trial_record(0, "complete", 300_000, [0.5, 0.6, 0.7]),
            trial_record(1, "running", 400_000, [0.55], ago=65),
            trial_record(2, "running", 500_000, [], ago=5),
        ]
    )
    view = SearchProgress(store, budget_line, enabled=True, trials=5)
    panel = panel_text(view)
    running = [line for line in panel.splitlines() if "/3 " in line]
    assert len(running) == 2, panel
    assert "1/3" in running[0] and "0.5500" in running[0] and "1 min 0" in running[0]  # 65 s ago
    assert "0/3" in running[1] and re.search(r"│ +\d s │", running[1])  # 5 s ago
    # 5 wanted, 3 started: 2 more trials of 30 s; 2 and 3 epochs of 10 s to go; two at a time
    assert f"time left about {format_duration((2 * 30 + 20 + 30) / 2)}" in panel
    unbudgeted = SearchProgress(store, budget_line, enabled=True)  # a wall clock or a grid
    assert "time left" not in panel_text(unbudgeted)


def test_time_left_counts_running_epochs_and_the_trials_not_started():
    done = trial_record(0, "complete", 300_000, [0.5, 0.6, 0.7])  # 3 epochs of 10 s: 30 s a trial
    running = trial_record(1, "running", 400_000, [0.55])  # 2 epochs to go: 20 s
    # 4 wanted, 2 trained or training: 2 more of 30 s and the running one's 20 s, one at a time
    # (as many at a time as run now)
    assert time_left([done, running], wanted=4, epochs=3) == pytest.approx((2 * 30 + 20) / 1)
    second = trial_record(2, "running", 400_000, [0.55, 0.6])  # 1 epoch to go: 10 s
    assert time_left([done, running, second], wanted=4, epochs=3) == pytest.approx((30 + 20 + 10) / 2)
    assert time_left([running], wanted=4, epochs=3) is None  # no trial finished: no trial time yet
    assert time_left([done, running], wanted=None, epochs=3) is None  # no trial budget
    assert time_left([done], wanted=1, epochs=3) == 0.0

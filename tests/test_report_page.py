"""The report read the way a researcher reads it: hover boxes, replay commands, the header, the
tables with intervals, values of the space, the table of errors, the accuracy axis. Each test
here is a defect a new user met (issue 15), on studies written whole through the record."""

from __future__ import annotations

import html
import re
import shlex
from pathlib import Path

import optuna
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bench.report import synthetic_study
from kwsearch.cli import app
from kwsearch.records import StudyStore, default_storage
from kwsearch.replay import select_trials
from kwsearch.report import StudyData, analysis, figures, load, write_report
from kwsearch.search.locate import locate_study
from kwsearch.stats import wilson_interval
from tests.helpers import study_of, trial_record

HOSTILE = "<script>x</script>"


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def synthetic(trials: int = 40, **kwargs):
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, trials=trials, **kwargs)
    return load(storage, "synthetic")


def written(trials: list, tmp_path: Path, **kwargs) -> tuple[StudyData, str]:
    """The data and the page of a study of ``trials`` (:func:`tests.helpers.study_of`)."""
    storage = optuna.storages.InMemoryStorage()
    store = study_of(trials, storage=storage, **kwargs)
    data = load(storage, store.name)
    return data, write_report(data, tmp_path / "r.html").html.read_text()


def section(page: str, heading: str) -> str:
    """The page's text from ``heading`` to the next section heading."""
    start = page.index(heading)
    end = page.find("<h2", start + 1)
    return page[start : end if end > 0 else len(page)]


# -- hover boxes ----------------------------------------------------------------------------------


def test_hover_boxes_name_their_trial_and_show_config_values_escaped_once():
    data = synthetic(label=HOSTILE, statuses={"complete": 0.7, "infeasible": 0.3})
    fig = figures.accuracy_vs_cost(data, "params")
    boxes = [text for trace in fig.data if trace.name != "baselines" and trace.text for text in trace.text]
    assert len(boxes) == len(data.search)
    assert all(box.startswith("<b>trial ") for box in boxes)
    assert not any("nan" in box for box in boxes)
    # plotly decodes &lt; &gt; &amp; in hover text but shows &quot; as typed
    assert all('backbone: "resnet18_cifar"' in box and "&quot;" not in box for box in boxes)
    odconv = [box for box in boxes if "odconv" in box]
    assert odconv and all("odconv&lt;script&gt;x&lt;/script&gt;" in box for box in odconv)
    assert not any("<script" in box for box in boxes)
    baselines = next(trace for trace in fig.data if trace.name == "baselines")
    assert [box.split("</b>")[0] for box in baselines.hovertext] == [
        f"<b>baseline static{HOSTILE.replace('<', '&lt;').replace('>', '&gt;')}",
        f"<b>baseline kw_1x{HOSTILE.replace('<', '&lt;').replace('>', '&gt;')}",
    ]


# -- replay commands ------------------------------------------------------------------------------


def replay_arguments(command: str) -> dict:
    """``command`` parsed by the real `kwsearch replay` (nothing runs): its arguments by name."""
    words = shlex.split(command)
    assert words[:2] == ["kwsearch", "replay"]
    replay = typer.main.get_command(app).commands["replay"]
    return replay.make_context("replay", words[2:]).params


def replays_what_it_names(command: str) -> list[int]:
    """The trials ``command`` would replay, found as `kwsearch replay` finds them."""
    given = replay_arguments(command)
    found = locate_study(given["study"], given["storage"], given["runs_dir"])
    trials = StudyStore.open(found.storage, found.name).trials()
    numbers = [int(n) for n in given["trials"].split(",")]
    chosen = select_trials(trials, ["accuracy", "params"], study_name=found.name, numbers=numbers)
    return [t.number for t in chosen]


def test_only_trained_trials_offer_a_replay_command_and_it_finds_the_study_by_name(tmp_path):
    runs = tmp_path / "elsewhere"
    (runs / "made").mkdir(parents=True)
    storage = default_storage(runs / "made")
    trials = [
        trial_record(0, "complete", 300_000, [0.5, 0.7]),
        trial_record(1, "pruned", 400_000, [0.4]),
        trial_record(2, "failed", 500_000, [], error="RuntimeError: diverged"),
        trial_record(3, "infeasible", 2_000_000, [], error="over budget"),
        trial_record(4, "duplicate", 300_000, [], duplicate_of=0),
        trial_record(5, "complete", 600_000, [0.5, 0.8]),
    ]
    study_of(trials, name="made", storage=storage)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "made", "--runs-dir", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out.with_suffix(".csv")).set_index("number")
    assert table.loc[[3, 4], "replay"].isna().all()  # never trained: nothing to replay
    for number in (0, 1, 2, 5):
        assert replays_what_it_names(table.loc[number, "replay"]) == [number]
    page = out.read_text()
    front = re.search(r"Replay the whole front: <code>(.*?)</code>", page).group(1)
    assert replays_what_it_names(html.unescape(front)) == [0, 5]
    infeasible = section(page, "Accuracy against cost")
    assert "--trials 3" not in infeasible and "--trials 4" not in infeasible


def test_a_report_from_a_storage_url_replays_from_that_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'other.db'}"
    study_of([trial_record(0, "complete", 300_000, [0.7])], name="made", storage=storage)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "made", "--storage", storage, "--out", str(out)])
    assert result.exit_code == 0, result.output
    command = pd.read_csv(out.with_suffix(".csv"))["replay"][0]
    assert replay_arguments(command)["storage"] == storage
    assert replays_what_it_names(command) == [0]


# -- the header -----------------------------------------------------------------------------------


def test_the_header_gives_the_trial_budget_the_search_last_ran_with(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    store = study_of([trial_record(0, "complete", 300_000, [0.7])], storage=storage, trial_budget=8)
    store.set_trial_budget(10)  # what `kwsearch search --trials 10` stores
    page = write_report(load(storage, "written"), tmp_path / "r.html").html.read_text()
    assert "trials: 10" in page and "trials: 8" not in page
    assert "1 trained trial(s) of 10" in page


# -- tables with intervals, values of the space, errors ---------------------------------------------


def test_interval_tables_keep_accuracies_within_0_and_1_and_counts_non_negative(tmp_path):
    data, page = written(
        [
            trial_record(0, "complete", 100, [0.1]),  # two widely apart trials at width 0.25
            trial_record(1, "complete", 10_000, [0.6]),
            trial_record(2, "complete", 500_000, [0.9], width=0.5),
            *(trial_record(n, "complete", 200_000, [0.25], width=0.15625) for n in (3, 4, 5)),
        ],
        tmp_path,
    )
    width = analysis.effects(data)["width"].set_index("value")
    quarter = width.loc[0.25]
    assert 0.0 <= quarter["accuracy low"] < quarter["accuracy"] == pytest.approx(0.35)
    assert quarter["accuracy"] < quarter["accuracy high"] <= 1.0
    assert 0.0 <= quarter["params low"] < quarter["params"] < quarter["params high"]
    # three trials that agree: never narrower than the binomial noise of their 3,000 images
    alike = width.loc[0.15625]
    assert (alike["accuracy low"], alike["accuracy high"]) == pytest.approx(wilson_interval(0.25, 3000))
    cells = re.findall(r"<td[^>]*>(.*?)</td>", section(page, "Objectives by value"))
    assert "0.3500 (95% CI 0.0000 to 1.0000)" in cells
    assert not any("±" in cell or "-" in cell for cell in cells)


def test_values_of_the_space_are_printed_exactly(tmp_path):
    _, page = written(
        [
            trial_record(0, "complete", 100_000, [0.6], width=0.15625, ratio=1.0),
            trial_record(1, "complete", 200_000, [0.7], width=0.25, ratio=2.0),
        ],
        tmp_path,
    )
    assert ">0.15625<" in section(page, "Objectives by value")
    assert "width: 0.15625" in section(page, "Top configurations")
    assert "0.1562<" not in page and "0.1562," not in page and "0.1562 " not in page


def test_the_error_table_orders_numbers_as_numbers(tmp_path):
    over = "over budget: params {} > 1,000,000"
    _, page = written(
        [
            trial_record(0, "complete", 300_000, [0.7]),
            trial_record(1, "infeasible", 10_500_000, [], error=over.format("10,500,000")),
            trial_record(2, "infeasible", 2_100_000, [], error=over.format("2,100,000")),
            trial_record(3, "infeasible", 1_050_000, [], error=over.format("1,050,000")),
        ],
        tmp_path,
    )
    shown = re.findall(r"params ([\d,]+) &gt;", section(page, "Failed and infeasible trials"))
    assert shown == ["1,050,000", "2,100,000", "10,500,000"]


# -- the accuracy axis ----------------------------------------------------------------------------


def test_configs_without_an_accuracy_are_drawn_apart_from_the_accuracy_axis():
    data = synthetic(trials=60, statuses={"complete": 0.6, "failed": 0.1, "infeasible": 0.3})
    assert {"failed", "infeasible"} <= set(data.search["status"])
    fig = figures.accuracy_vs_cost(data, "params")
    on_accuracy = [t for t in fig.data if t.yaxis in (None, "y") and t.y is not None]
    apart = [t for t in fig.data if t.yaxis not in (None, "y")]
    assert {t.name for t in apart} >= {figures.CAPTIONS["infeasible"]}
    lowest = data.search["accuracy"].dropna().min()
    assert min(min(t.y) for t in on_accuracy) >= lowest > 0.3  # no marker at 0 stretches the axis
    shown = sum(len(t.x) for t in fig.data if t.name in figures.CAPTIONS.values())
    assert shown == (data.search["status"] != "duplicate").sum()  # every trial is still drawn

"""The views researchers expect from Optuna and W&B, on studies written whole through the record:
parallel coordinates and slice plots of the space, the table of all trials (sorted and filtered
by its script in a real browser), learning curves of any trial, the front as a paper's Markdown
and LaTeX table, and several studies compared on one page."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.records import normalized_hypervolume
from kwsearch.report import curves, load, paper_tables, space, trials_table, write_report
from kwsearch.report.compare import compare
from tests.helpers import study_of, trial_record
from tests.test_report_cases import assert_plots_rendered, open_in_chromium

MEMBERS = {0: (300_000, 0.70), 1: (400_000, 0.72), 2: (600_000, 0.80)}  # the front: params, accuracy


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def trials() -> list:
    """Five complete trials (0, 1, 2 on the front; 3 and 7 dominated), a pruned, an infeasible
    and a failed one, and the static baseline."""
    return [
        trial_record(0, "complete", 300_000, [0.5, 0.6, 0.70], width=0.25),
        trial_record(1, "complete", 400_000, [0.55, 0.65, 0.72], width=0.15625),
        trial_record(2, "complete", 600_000, [0.6, 0.7, 0.80], width=0.5),
        trial_record(3, "complete", 800_000, [0.6, 0.7, 0.78], width=0.5),
        trial_record(4, "pruned", 450_000, [0.5], width=0.25),
        trial_record(5, "infeasible", 2_000_000, [], width=0.5, error="over budget"),
        trial_record(6, "failed", 500_000, [], width=0.25, error="RuntimeError: diverged"),
        trial_record(7, "complete", 350_000, [0.4, 0.5, 0.60], width=0.25),
        trial_record(0, "complete", 250_000, [0.5, 0.6, 0.65], baseline="static"),
    ]


def written(tmp_path: Path, name: str = "written", storage=None, **kwargs):
    storage = storage or optuna.storages.InMemoryStorage()
    study_of(trials(), name=name, storage=storage, **kwargs)
    data = load(storage, name)
    return data, write_report(data, tmp_path / f"{name}.html")


# -- the space --------------------------------------------------------------------------------------


def test_parallel_coordinates_draw_every_complete_trial_through_every_axis(tmp_path):
    data, _ = written(tmp_path)
    found = space.space_trials(data)
    assert found.numbers == [0, 1, 2, 3, 7]
    assert [s.name for s in found.settings] == ["width", "conv.kw.cell_num_ratio"]
    fig = space.plot_parallel_coordinates(found)
    titles = [a.text for a in fig.layout.annotations if a.text.startswith("<b>")]
    axes = ["width", "conv.kw.cell_num_ratio", "parameters", "MACs", "proxy accuracy"]
    assert titles == [f"<b>{axis}</b>" for axis in axes]
    lines = [t for t in fig.data if t.mode == "lines"]
    polylines = [
        (text, y)
        for t in lines
        for text, y in zip(t.text[::6], [t.y[i : i + 5] for i in range(0, len(t.y), 6)], strict=True)
    ]
    assert sorted(int(text.split()[1].split("<")[0]) for text, _ in polylines) == [0, 1, 2, 3, 7]
    assert all(len(y) == 5 for _, y in polylines)  # a vertex on each axis
    assert polylines[-1][0].startswith("trial 2<br>")  # the most accurate, drawn last: on top
    by_trial = {int(text.split()[1].split("<")[0]): y for text, y in polylines}
    # width's choices evenly spaced in the space's order: 0.15625, 0.25, 0.5
    assert [by_trial[n][0] for n in (1, 0, 2)] == [0.0, 0.5, 1.0]
    assert by_trial[2][4] == 1.0 and by_trial[7][4] == 0.0  # the accuracy axis: least to greatest


def test_slice_plots_give_accuracy_against_each_setting_in_the_space_order(tmp_path):
    data, _ = written(tmp_path)
    fig = space.plot_slices(space.space_trials(data))
    width, ratio = fig.data
    assert list(width.x) == ["0.25", "0.15625", "0.5", "0.5", "0.25"]  # exact, trials 0 1 2 3 7
    assert list(width.y) == pytest.approx([0.70, 0.72, 0.80, 0.78, 0.60])
    assert list(fig.layout.xaxis.categoryarray) == ["0.15625", "0.25", "0.5"]
    assert list(ratio.x) == [1.0, 2.0, 3.0, 4.0, 8.0]  # a number: to scale


# -- all trials, their curves ---------------------------------------------------------------------


def test_the_table_of_all_trials_holds_every_trial_and_baseline_with_exact_values(tmp_path):
    data, files = written(tmp_path)
    frame = trials_table.trials_frame(data)
    assert list(frame["trial"]) == [*range(8), "baseline static"]
    assert list(frame.columns[:6]) == ["trial", "status", "front", "accuracy", "ci_low", "ci_high"]
    assert "effective_params" not in frame  # dense: the same as params
    assert list(frame["front"][:4]) == ["yes", "yes", "yes", "tied"]  # 0.78 against 0.80: within noise
    page = files.html.read_text()
    assert "<td class='n' data-v='0.15625'>0.15625</td>" in page  # exact, and sorted as a number


def test_curves_are_there_for_every_trial_that_finished_an_epoch(tmp_path):
    data, _ = written(tmp_path)
    found = curves.curve_data(data)
    assert sorted(found, key=int) == ["0", "1", "2", "3", "4", "7"]  # not only the front's
    assert found["4"] == {"epoch": [1], "accuracy": [0.5]}


HARNESS = """<script>
window.addEventListener("load", () => {
  const out = {};
  const table = document.getElementById("trials-table");
  const heads = Array.from(table.tHead.rows[0].cells);
  const at = (name) => heads.findIndex((th) => th.textContent === name);
  const shown = () => Array.from(table.tBodies[0].rows).filter((row) => row.style.display !== "none");
  heads[at("accuracy")].click();
  heads[at("accuracy")].click();
  out.sorted = shown().map((row) => row.cells[at("trial")].textContent);
  const input = document.getElementById("trials-filter");
  input.value = "status:complete params<500000";
  input.dispatchEvent(new Event("input"));
  out.filtered = shown().map((row) => row.cells[at("trial")].textContent);
  out.count = document.getElementById("trials-count").textContent;
  out.opened = document.getElementById("learning-curves").data.map((trace) => trace.name);
  table.querySelector("a[data-trial='7']").click();
  out.clicked = document.getElementById("learning-curves").data.map((trace) => trace.name);
  const pre = document.createElement("pre");
  pre.id = "harness";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""


@pytest.mark.slow
def test_in_a_browser_the_table_sorts_and_filters_and_a_click_shows_a_curve(tmp_path):
    _, files = written(tmp_path)
    page = files.html.read_text()
    driven = tmp_path / "driven.html"
    driven.write_text(page.replace("</body>", HARNESS))
    browsed = open_in_chromium(driven, tmp_path)
    assert browsed.console == []
    found = json.loads(html.unescape(re.search(r'<pre id="harness">(.*?)</pre>', browsed.dom).group(1)))
    # by accuracy, highest first (the baseline 0.65 among them); no accuracy last
    assert found["sorted"][:7] == ["2", "3", "1", "0", "baseline static", "7", "4"]
    assert sorted(found["sorted"][7:]) == ["5", "6"]
    assert found["filtered"] == ["1", "0", "7"] and found["count"] == "3 of 9 shown"
    assert found["opened"] == ["trial 0", "trial 1", "trial 2"]  # the front
    assert found["clicked"] == ["trial 0", "trial 1", "trial 2", "trial 7"]


# -- the front for a paper --------------------------------------------------------------------------


def test_the_front_is_written_as_markdown_and_latex_tables_beside_the_report(tmp_path):
    _, files = written(tmp_path)
    assert files.front_md == tmp_path / "written.front.md" and files.front_tex.is_file()
    markdown = files.front_md.read_text().splitlines()
    assert markdown[0] == "| Model | Config | Params (M) | MACs (M) | Accuracy (%) | 95% CI (%) |"
    # Wilson's interval over 1,000 images: 0.7 -> 67.09 to 72.76
    assert markdown[2] == "| baseline static |  | 0.25 | 10.00 | 65.00 | 61.99–67.89 |"
    config = 'conv.cell_num_ratio: 1.0, conv.family: "kw"'  # the difference from the static baseline
    assert markdown[3] == f"| trial 0 | {config} | 0.30 | 12.00 | 70.00 | 67.09–72.76 |"
    assert [line.split(" | ")[0] for line in markdown[4:]] == ["| trial 1", "| trial 2"]
    latex = files.front_tex.read_text()
    assert latex.startswith("\\begin{tabular}{llrrrc}\n\\toprule\n")
    assert "Accuracy (\\%) & 95\\% CI (\\%) \\\\" in latex
    config = 'conv.cell\\_num\\_ratio: 1.0, conv.family: "kw"'
    assert f"trial 0 & {config} & 0.30 & 12.00 & 70.00 & 67.09--72.76 \\\\" in latex
    page = files.html.read_text()
    assert html.escape(files.front_md.read_text()) in page and "data-copy='front-tex'" in page


def test_a_config_the_front_holds_twice_is_one_row_of_the_paper_table(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    same = {"width": 0.5, "ratio": 2.0}
    study_of(
        [trial_record(n, "complete", 300_000, [0.7], **same) for n in (0, 1)],
        storage=storage,
    )
    rows = paper_tables.front_rows(load(storage, "written"))
    assert [row.model for row in rows] == ["trial 0, 1"]


# -- comparing studies ------------------------------------------------------------------------------


def test_report_of_two_studies_overlays_their_fronts_and_compares_hypervolumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'both.db'}"
    study_of(trials(), name="wide", storage=storage, params_limit=2e6)
    study_of(trials()[:2], name="narrow", storage=storage)
    out = tmp_path / "compared.html"
    result = CliRunner().invoke(app, ["report", "wide", "narrow", "--storage", storage, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    comparison = compare([load(storage, "wide"), load(storage, "narrow")])
    assert comparison.reference_point == [0.0, 2.2e6]  # each objective's worst of the two
    wide = comparison.hypervolume.set_index("study").loc["wide"]
    # the front's rectangles under the common reference point, over the box from the ideal point
    by_hand = (0.70 * 0.1e6 + 0.72 * 0.2e6 + 0.80 * 1.6e6) / 2.2e6
    assert wide["hypervolume (common reference point)"] == pytest.approx(by_hand)
    assert wide["hypervolume (own reference point)"] == pytest.approx(by_hand)  # its own is the same
    narrow = comparison.hypervolume.set_index("study").loc["narrow"]
    common, own = (0.70 * 0.1e6 + 0.72 * 1.8e6) / 2.2e6, (0.70 * 0.1e6 + 0.72 * 0.7e6) / 1.1e6
    assert narrow["hypervolume (common reference point)"] == pytest.approx(common)
    assert narrow["hypervolume (own reference point)"] == pytest.approx(own)
    page = out.read_text()
    assert "<h1>wide, narrow</h1>" in page
    markdown = out.with_suffix(".front.md").read_text()
    assert markdown.splitlines()[0].startswith("| Study | Model |")
    assert sum(line.startswith("| narrow | trial") for line in markdown.splitlines()) == 2


def test_studies_with_different_objectives_do_not_compare(tmp_path):
    storage = f"sqlite:///{tmp_path / 'both.db'}"
    study_of(trials()[:2], name="by_params", storage=storage)
    study_of(trials()[:2], name="by_macs", storage=storage, objectives=("accuracy", "macs"))
    result = CliRunner().invoke(app, ["report", "by_params", "by_macs", "--storage", storage])
    assert result.exit_code == 2
    assert "'by_params' and 'by_macs' have different objectives" in result.output


@pytest.mark.slow
def test_chromium_renders_a_comparison_without_console_errors(tmp_path):
    storage = f"sqlite:///{tmp_path / 'both.db'}"
    study_of(trials(), name="wide", storage=storage, params_limit=2e6)
    study_of(trials()[:3], name="narrow", storage=storage)
    out = tmp_path / "compared.html"
    result = CliRunner().invoke(app, ["report", "wide", "narrow", "--storage", storage, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert_plots_rendered(open_in_chromium(out, tmp_path), out.read_text())


def test_hypervolumes_side_by_side_are_those_of_the_records():
    storage = optuna.storages.InMemoryStorage()
    study_of(trials(), name="one", storage=storage)
    data = load(storage, "one")
    points = [(-accuracy, float(params)) for params, accuracy in MEMBERS.values()]
    found = compare([data, data]).hypervolume["hypervolume (own reference point)"]
    assert list(found) == pytest.approx([normalized_hypervolume(points, [0.0, 1.1e6])] * 2)

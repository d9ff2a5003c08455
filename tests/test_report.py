"""The report of a real tiny study (run_search on generated data: baselines, pruned and
infeasible trials), the `kwsearch report` command, and the page in headless Chromium."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.records import default_storage
from kwsearch.report import load, write_report
from kwsearch.search import load_study
from kwsearch.search.runner import run_search
from tests.helpers import TINY_DATA, TINY_PROXY
from tests.test_report_cases import assert_plots_rendered, open_in_chromium

pytestmark = pytest.mark.slow

STUDY = {
    "name": "tiny",
    "space": {
        "backbone": "resnet18_cifar",
        "num_classes": 4,
        "in_chans": 1,
        "input_size": [12, 12],
        "width": {"choice": [0.0625, 0.09375, 0.125]},
        "conv": {"family": {"choice": ["static", "kw"]}, "kw": {"cell_num_ratio": {"choice": [1, 2]}}},
    },
    "data": TINY_DATA,
    "proxy": TINY_PROXY,
    "budget": {"trials": 5, "params": "8x"},  # kw at width 0.125 with 2x cells is over budget
    "sampler": {"name": "random", "seed": 1},
    "resources": {"cpu": 1, "max_concurrent": 2, "threads": 1},
    "baselines": ["static", "kw_1x"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The study file and its runs folder, after a finished search."""
    import ray

    folder = tmp_path_factory.mktemp("report")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # one trial more than the file's budget, as `kwsearch search --trials 6` asks
        run_search(load_study(path), trials=6, runs_dir=folder / "runs", progress=False)
    finally:
        ray.shutdown()
    return path, folder / "runs"


def test_the_report_of_a_real_study_shows_its_front_baselines_and_budget(tiny, tmp_path):
    path, runs = tiny
    data = load(default_storage(runs / "tiny"), "tiny", target=str(path))
    files = write_report(data, tmp_path / "tiny.html")
    page = files.html.read_text()
    search = data.search
    assert data.front and set(data.front) <= set(search.loc[search["status"] == "complete", "number"])
    assert set(data.baselines["label"]) == {"static", "kw_1x"}
    for heading in ("Accuracy against cost", "Hypervolume", "Which settings matter", "Top configurations"):
        assert heading in page
    assert "budget " in page and "Pareto front" in page
    assert "trials: 6" in page and "trials: 5" not in page  # the header: the budget it ran with
    for number in data.front:
        assert f"kwsearch replay {path} --trials {number}" in page
    assert "over budget" in page  # the infeasible configs' reason
    table = pd.read_csv(files.csv)
    assert len(table) == len(search) + 2
    assert set(table.loc[table["pareto"].astype(bool), "number"]) == set(data.front)
    history = pd.read_csv(files.history_csv)
    assert {"val_accuracy", "epoch", "val_images"} <= set(history.columns)
    # every accuracy carries its interval (64 validation images); KernelWarehouse trials the
    # temperature they reached (annealed to 0 over the default 1/15 of the 2 epochs: by the end of the first)
    complete = table[(table["status"] == "complete") & (table["kind"] == "search")]
    assert (complete["accuracy_low"] <= complete["accuracy"]).all()
    assert (complete["accuracy"] <= complete["accuracy_high"]).all()
    assert (complete["accuracy_high"] - complete["accuracy_low"] > 0.1).all()  # 64 images: wide
    # which trials the pruner stops depends on the order two workers finish in, so the
    # temperature is read from every KernelWarehouse trial that trained an epoch, pruned or not
    trained = table[table["status"].isin(["complete", "pruned"]) & (table["kind"] == "search")]
    kw = trained[trained["config"].str.contains('"kw"')]
    assert len(kw) and (kw["temperature"] == 0).all()
    assert "temperature reached" in page and "95% CI" in page
    # the paper's claim among the baselines, tested on this proxy with its interval
    assert "The paper's claims on this proxy" in page and "KW 1x above static: " in page
    assert [(c.higher, c.lower) for c in data.claims] == [("kw_1x", "static")]


def test_the_command_reads_a_study_file_or_a_name(tiny, tmp_path, monkeypatch):
    path, runs = tiny
    runner = CliRunner()
    out = tmp_path / "by-file.html"
    result = runner.invoke(app, ["report", str(path), "--runs-dir", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".csv").is_file() and out.with_suffix(".parquet").is_file()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report", "tiny", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "reports" / "tiny.html").read_text()
    assert f"kwsearch replay tiny --runs-dir {runs} --trials" in page  # finds it again


def test_an_unknown_study_is_bad_input_naming_it(tiny, tmp_path):
    _, runs = tiny
    runner = CliRunner()
    result = runner.invoke(app, ["report", "nosuch", "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "nosuch" in result.output
    storage = default_storage(runs / "tiny")
    result = runner.invoke(app, ["report", "nosuch", "--storage", storage])
    assert result.exit_code == 2 and "unknown study 'nosuch'" in result.output and "tiny" in result.output


def test_chromium_renders_the_real_report_and_its_views_without_console_errors(tiny, tmp_path):
    path, runs = tiny
    data = load(default_storage(runs / "tiny"), "tiny", target=str(path))
    files = write_report(data, tmp_path / "t.html")
    page = files.html.read_text()
    browsed = open_in_chromium(files.html, tmp_path)
    assert_plots_rendered(browsed, page)  # no console message; every plot drawn
    for view in ("The search space", "Accuracy against each setting", "Learning curves", "All trials"):
        assert f"<h2>{view}</h2>" in page or f"<h3>{view}</h3>" in page
    assert "The front for a paper" in page and "\\toprule" in page
    # the learning curves (drawn by the page's script) show the front's trials
    curves = browsed.dom[browsed.dom.index('id="learning-curves"') :]
    assert 'class="main-svg"' in curves[: curves.index("</svg>")]
    assert all(f"trial {n}" in curves for n in data.front)
    # the table of all trials holds each trial and baseline, and its script counted them
    table = browsed.dom[browsed.dom.index('id="trials-table"') :]
    rows = table[: table.index("</table>")].count("<tr") - 1
    assert rows == len(data.trials)
    assert f"{rows} of {rows} shown" in browsed.dom

"""Reports of studies written straight through Optuna's API with the search's schema (bench/report.py):
empty, all-failed, single-trial, still-running, grid ablations, replays, 1,000 trials; escaping of
every user-provided string, checked in the HTML and in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from PIL import Image
from plotly.offline import get_plotlyjs

from bench.report import synthetic_study
from kwsearch.report import analysis, default_output, load, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCRIPT = "<script>alert(1)</script>"
# what the injected strings would do if they ran: the browser test looks for these effects
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
PARETO_BLUE = (31, 119, 180)


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def report(tmp_path: Path, name: str = "synthetic", **kwargs) -> tuple[str, Path]:
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, name=name, **kwargs)
    files = write_report(load(storage, name), default_output(name, tmp_path))
    return files.html.read_text(), files.html


# -- edge cases -----------------------------------------------------------------------------------


def test_an_empty_study_says_it_has_no_trials(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="bare", directions=["maximize", "minimize"])
    files = write_report(load(storage, "bare"), tmp_path / "bare.html")
    page = files.html.read_text()
    assert "no trials yet" in page
    assert pd.read_csv(files.csv).empty


def test_an_all_failed_study_says_so_and_lists_the_errors(tmp_path):
    page, _ = report(tmp_path, trials=5, statuses={"failed": 1.0})
    assert "All 5 finished trial(s) failed" in page
    assert "CUDA out of memory" in page
    assert "No Pareto-optimal trial yet" in page


def test_a_single_trial_study_renders_with_a_message(tmp_path):
    page, _ = report(tmp_path, trials=1, statuses={"complete": 1.0})
    assert "One complete trial" in page
    assert "importances need at least two" in page
    assert "kwsearch replay synthetic --trials 0" in page


def test_a_running_study_is_reported_as_a_snapshot(tmp_path):
    page, _ = report(tmp_path, trials=20, statuses={"complete": 0.5, "running": 0.5})
    assert "still running" in page
    assert "Pareto front" in page


def test_a_grid_ablation_gets_paired_differences_against_the_first_choice(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, name="grid", grid_seeds=[0, 1, 2], statuses={"complete": 1.0})
    data = load(storage, "grid")
    paired = analysis.paired_differences(data)
    assert set(paired) == {"width", "conv.family"}
    family = paired["conv.family"]
    assert family["baseline"].eq("static").all()
    assert list(family["value"]) == ["dyconv", "odconv", "kw"]
    # within budget: widths 0.25 and 0.5 for dynamic families (x3 seeds); static fits at every width
    assert family["pairs"].gt(0).all()
    width = paired["width"].set_index("value")
    assert (width["Δ params"] > 0).all()  # wider costs more, in every pair
    page = write_report(data, tmp_path / "grid.html").html.read_text()
    assert "Paired differences" in page and "pairs" in page


def test_replays_give_proxy_against_full_with_rank_correlations(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, trials=60, replays=8, statuses={"complete": 1.0})
    data = load(storage, "synthetic")
    table = analysis.proxy_vs_full(data)
    assert len(table) == 8 and table["proxy_accuracy"].notna().all()
    assert set(data.agreement.statistics()) == {"spearman", "kendall", "top_k"}
    assert all(-1 <= s.value <= 1 for s in data.agreement.statistics().values())


def test_effects_give_a_confidence_interval_per_value(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, trials=200, statuses={"complete": 1.0})
    data = load(storage, "synthetic")
    width = analysis.effects(data)["width"]
    assert list(width["value"]) == sorted(width["value"])  # the space's order
    assert width["n"].sum() == len(data.complete)
    assert (width["accuracy low"] < width["accuracy"]).all()
    assert (width["accuracy"] < width["accuracy high"]).all()
    bins = analysis.effects(data)["conv.kw.cell_num_ratio"]  # a float: quartile bins
    assert len(bins) == 4 and bins["n"].sum() == data.complete["param:conv.kw.cell_num_ratio"].notna().sum()
    assert analysis.mean_interval(pd.Series([1.0, 1.0, 1.0]).to_numpy()) == (1.0, 1.0, 1.0)


def test_infeasible_trials_are_left_out_of_importances_and_the_front():
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, trials=300)
    data = load(storage, "synthetic")
    infeasible = set(data.search.loc[data.search["status"] == "infeasible", "number"])
    assert infeasible and not infeasible & set(data.front)
    table = analysis.importances(data)
    assert list(table.columns) == ["accuracy", "params", "macs"]
    assert table.loc["width", "accuracy"] > 0


def test_a_thousand_trial_report_is_one_file_under_10_mb_with_its_data_beside_it(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    synthetic_study(storage, trials=1000, replays=20)
    files = write_report(load(storage, "synthetic"), tmp_path / "big.html")
    assert files.html.stat().st_size < 10e6
    page = files.html.read_text()
    assert get_plotlyjs() in page  # inlined: the file opens offline
    rest = page.replace(get_plotlyjs(), "")
    assert "src=" not in rest and "<link" not in rest
    table = pd.read_csv(files.csv)
    assert (table["kind"] == "search").sum() == 1000 and (table["kind"] == "baseline").sum() == 2
    assert len(pd.read_parquet(files.parquet)) == 1002
    assert set(pd.read_csv(files.history_csv)["number"]) <= set(table["number"])


# -- escaping -------------------------------------------------------------------------------------


def hostile_report(tmp_path: Path) -> tuple[str, Path]:
    """A study named like a script, whose choice label, errors and baseline labels carry markup."""
    statuses = {"complete": 0.6, "failed": 0.2, "infeasible": 0.2}
    return report(tmp_path, name=SCRIPT, trials=40, label=HOSTILE, statuses=statuses, seed=1)


def test_every_user_string_is_escaped(tmp_path):
    page, path = hostile_report(tmp_path)
    assert path.name == "_script_alert_1___script_.html"
    rest = page.replace(get_plotlyjs(), "")  # plotly.js itself holds such strings
    assert SCRIPT not in rest and HOSTILE not in rest and "<img" not in rest
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the name, shown as text
    assert "CUDA out of memory&lt;script&gt;document.title=" in page  # an error message
    assert "odconv&lt;script&gt;" in page  # a choice label in a table
    assert "<title>kwsearch report: &lt;script&gt;" in page


# -- a real browser -------------------------------------------------------------------------------


@dataclass
class Browsed:
    dom: str  # the document after its scripts ran
    console: list[str]  # every console message (a clean page logs none)
    screenshot: Image.Image


def open_in_chromium(page: Path, tmp_path: Path) -> Browsed:
    """Load ``page`` in headless Chromium (offline): its DOM after scripts ran, its console
    messages, and a screenshot."""
    if CHROMIUM is None:
        pytest.skip("no chromium: `bash scripts/install_system_packages.sh chromium chromium-driver`")
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,2400",
        "--virtual-time-budget=15000",
    ]
    url = page.resolve().as_uri()
    dumped = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    shot = tmp_path / "screenshot.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True)
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line]
    return Browsed(dumped.stdout, console, Image.open(shot).convert("RGB"))


def assert_plots_rendered(browsed: Browsed, page: str) -> None:
    assert browsed.console == []
    plots = page.count('class="plotly-graph-div"')
    assert plots >= 3
    assert browsed.dom.count('class="main-svg"') >= plots  # plotly drew every plot
    pixels = np.asarray(browsed.screenshot, dtype=int).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # not blank
    blue = np.all(np.abs(pixels - PARETO_BLUE) < 12, axis=1).sum()
    assert blue > 30  # the Pareto-optimal points and the front are drawn


@pytest.mark.slow
def test_chromium_shows_the_hostile_strings_as_text_and_runs_none(tmp_path):
    page, path = hostile_report(tmp_path)
    browsed = open_in_chromium(path, tmp_path)
    assert_plots_rendered(browsed, page)
    title = re.search(r"<title>(.*?)</title>", browsed.dom, re.S).group(1)
    assert title == "kwsearch report: &lt;script&gt;alert(1)&lt;/script&gt;"
    assert "pwned" not in title
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in browsed.dom
    assert '<img src="x"' not in browsed.dom and "<img src=x" not in browsed.dom

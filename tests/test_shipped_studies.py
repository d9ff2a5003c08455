"""Every shipped study validates, its budget can be met, and its baselines build: `kwsearch
search studies/X.yaml` never fails on the file itself."""

from pathlib import Path

import pytest
import yaml

from kwsearch.search import load_study, parse_study
from kwsearch.search.preflight import check_feasible, resolve_budget, static_baseline_config

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.yaml"))


def test_there_are_shipped_studies():
    names = {path.stem for path in STUDIES}
    assert {"quickstart", "kw_resnet18_cifar", "family_comparison"} <= names
    assert {"kw_temperature_ablation", "kw_sharing_ablation"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_shipped_study_can_run(path):
    study = load_study(path)
    assert study.name == path.stem
    budget, baseline = resolve_budget(study)
    check_feasible(study, budget)  # raises when no config of the space meets the budget
    assert baseline.params > 0
    assert static_baseline_config(study)["conv"] == {"family": "static"}
    if study.settings.sampler.name == "grid":
        assert len(study.space.grid()) > 1


def test_quickstart_searches_kernelwarehouse_against_the_static_baseline():
    study = load_study(Path(__file__).parent.parent / "studies" / "quickstart.yaml")
    assert study.settings.data.name == "fashion-mnist"
    assert "static" in study.baseline_configs()
    config, _ = study.space.sample(lambda dimension: dimension.lowest())
    assert config["conv"]["family"] == "kw"


def test_a_study_of_the_first_release_may_call_its_baselines_references():
    path = Path(__file__).parent.parent / "studies" / "quickstart.yaml"
    data = yaml.safe_load(path.read_text())
    data["references"] = data.pop("baselines")
    assert parse_study(data, path).baseline_configs() == load_study(path).baseline_configs()

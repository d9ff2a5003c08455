"""docs/notebooks.md runs: its Python blocks, in order and in one namespace, on a tiny generated
study written where the page reads it (studies/quickstart.yaml), searched and one front member
replayed first; then what they computed is checked against the study's record."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.nn import KWConv2d
from kwsearch.records import StudyStore, default_storage
from tests.helpers import TINY_PROXY, tiny_study

pytestmark = pytest.mark.slow

PAGE = Path(__file__).parents[1] / "docs" / "notebooks.md"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_notebook_page_runs_on_a_tiny_study(tmp_path, monkeypatch):
    import ray

    import kwsearch

    monkeypatch.chdir(tmp_path)
    study = tiny_study(
        "quickstart",
        {"width": {"choice": [0.0625, 0.125]}},
        sampler={"name": "random", "seed": 0},
        budget={"trials": 2},
        baselines=["static"],
        replay={"recipe": {**TINY_PROXY, "epochs": 1, "evaluate_test": True}, "seeds": [0]},
    )
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quickstart.yaml").write_text(yaml.safe_dump(study))
    blocks = python_blocks(PAGE)
    assert len(blocks) == 5
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        kwsearch.run_search(kwsearch.load_study("studies/quickstart.yaml"), progress=False)
        replayed = CliRunner().invoke(app, ["replay", "studies/quickstart.yaml", "--top", "1"])
        assert replayed.exit_code == 0, replayed.output
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, str(PAGE), "exec"), namespace)
    finally:
        ray.shutdown()
    store = StudyStore.open(default_storage(tmp_path / "runs" / "quickstart"), "quickstart")
    table = namespace["table"]
    assert len(namespace["search"]) == len(store.trials())
    assert list(namespace["baselines"]["label"]) == ["static"]
    (replay,) = store.replays()
    assert list(namespace["replays"]["number"]) == [replay.proxy_trial]
    assert namespace["replays"]["test_accuracy"].iloc[0] == replay.test_accuracy
    assert set(namespace["front"]["number"]) == set(table[table.pareto]["number"])
    assert sum(p.numel() for p in namespace["model"].parameters()) == replay.costs.params
    assert namespace["prepare"].size == (12, 12)
    assert namespace["predicted"].shape == (4,) and namespace["predicted"].max() < 4
    converted = namespace["converted"]
    assert type(converted[0]) is torch.nn.Conv2d and isinstance(converted[3], KWConv2d)
    assert converted.kwsearch_conversion.layers == ["3", "6"]

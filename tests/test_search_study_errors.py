"""Bad study files: exit code 2 and a message naming the file and the field, before any trial."""

import copy
import re

import pytest
import yaml
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.search import StudyError, load_study

SPACE = {
    "backbone": "resnet18_cifar",
    "num_classes": 4,
    "in_chans": 1,
    "input_size": [12, 12],
    "width": {"choice": [0.0625, 0.125]},
    "conv": {"family": {"choice": ["static", "kw"]}, "kw": {"cell_num_ratio": {"choice": [1, 2]}}},
}
STUDY = {
    "name": "bad",
    "space": "space.yaml",
    "data": {"name": "synthetic", "options": {"num_classes": 4, "height": 12, "width": 12, "channels": 1}},
    "proxy": {"epochs": 2, "batch_size": 64, "val_size": 64, "augment": False},
    "budget": {"trials": 2, "params": "4x"},
    "sampler": {"name": "tpe"},
    "baselines": ["static"],
}


def with_(path, value):
    def change(study, space):
        *parents, last = path.removeprefix("@space.").split(".")
        node = space if path.startswith("@space.") else study
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def without_space_file(study, space):
    study["space"] = "missing.yaml"


def grid_over_a_continuous_float(study, space):
    study["sampler"] = {"name": "grid"}
    space["conv"]["kw"]["cell_num_ratio"] = {"float": [0.5, 4]}


CASES = {
    "unknown top-level key": (with_("epochz", 3), "epochz: Extra inputs are not permitted"),
    "wrong sampler name": (with_("sampler.name", "bayes"), "sampler.name: Input should be"),
    "budget not a number": (with_("budget.params", "half"), "budget.params: 'half' is neither a number"),
    "negative trials": (
        with_("budget.trials", -3),
        "budget.trials: Input should be greater than or equal to 1",
    ),
    "space file missing": (without_space_file, "space: .*missing.yaml: cannot read"),
    "bad distribution": (
        with_("@space.width", {"choice": [0.0625], "float": [0.1, 1]}),
        r"space.yaml: width: a distribution",
    ),
    "unknown backbone": (with_("@space.backbone", "resnet7"), r"space.yaml: backbone: 'resnet7'"),
    "unknown conv option": (with_("@space.conv.kw.warehouse_colour", {"choice": [1, 2]}), "warehouse_colour"),
    "objectives not led by accuracy": (
        with_("objectives", ["params", "accuracy"]),
        "objectives: start with accuracy",
    ),
    "zero proxy epochs": (with_("proxy.epochs", 0), "proxy.epochs"),
    "unknown baseline preset": (with_("baselines", ["static", "kw_3x"]), "baselines: .*kw_3x"),
    "grid over a continuous float": (
        grid_over_a_continuous_float,
        "sampler: grid: .*conv.kw.cell_num_ratio: a grid needs",
    ),
    "budget below every config": (with_("budget.params", 10), "budget: no config of the space can meet it"),
    "name with a slash": (with_("name", "a/b"), "name: letters, digits"),
    "proxy looks at the test set": (with_("proxy.evaluate_test", True), "proxy.evaluate_test"),
    "unknown sampler option": (with_("sampler.options", {"n_startup": 3}), "sampler.options: .*n_startup"),
    "unknown data set": (with_("data.name", "imagenet-mini"), "data.name: .*imagenet-mini"),
}


def write(tmp_path, change=None):
    study, space = copy.deepcopy(STUDY), copy.deepcopy(SPACE)
    if change is not None:
        change(study, space)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def search(path, *args):
    return CliRunner().invoke(app, ["search", str(path), "--runs-dir", str(path.parent / "runs"), *args])


def test_the_base_study_is_valid(tmp_path):
    study = load_study(write(tmp_path))
    assert study.name == "bad"
    assert set(study.space.dimensions) == {"width", "conv.family", "conv.kw.cell_num_ratio"}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_study_exits_2_naming_the_file_and_field(tmp_path, case):
    change, message = CASES[case]
    path = write(tmp_path, change)
    result = search(path)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "error: " in result.output
    assert str(tmp_path) in result.output
    import re

    assert re.search(message, result.output), result.output
    assert not (tmp_path / "runs" / "bad" / "study.db").exists()


def test_malformed_yaml_exits_2_naming_the_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("name: bad\nspace: [unclosed\n")
    result = search(path)
    assert result.exit_code == 2
    assert f"{path}: not valid YAML" in result.output


def test_a_study_that_is_not_a_mapping_exits_2(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("- just\n- a list\n")
    result = search(path)
    assert result.exit_code == 2
    assert f"{path}: a study is a mapping" in result.output


def test_trials_below_one_on_the_command_line_exits_2(tmp_path):
    result = search(write(tmp_path), "--trials", "0")
    assert result.exit_code == 2
    assert "--trials: must be >= 1" in result.output


def test_load_study_raises_study_error_with_file_and_field(tmp_path):
    with pytest.raises(StudyError, match=r"study.yaml: budget.trials"):
        load_study(write(tmp_path, with_("budget.trials", 0)))


def test_an_absolute_schedule_that_outlasts_the_proxy_warns_naming_the_field(tmp_path):
    # the proxy runs 2 epochs; 1 -> 0 over 20 epochs ends it at 0.9
    space = {"conv": {"family": {"choice": ["static", "kw"]}, "kw": {"temperature": {"epochs": 20}}}}
    study = load_study(write(tmp_path, with_("@space.conv", space["conv"])))
    assert len(study.warnings) == 1
    assert re.search(
        r"space.yaml: conv.kw.temperature: 20 epochs .* proxy's 2 \(proxy.epochs\)", study.warnings[0]
    )
    assert "ends at temperature 0.9," in study.warnings[0]
    fraction = {**space["conv"], "kw": {"temperature": {"fraction": 0.5}}}
    assert load_study(write(tmp_path, with_("@space.conv", fraction))).warnings == []

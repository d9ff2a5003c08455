"""Model configs: validation that names the file and key, building, and `kwsearch inspect`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kwsearch.models import (
    ModelConfigError,
    account,
    build_model,
    count_macs,
    load_model_config,
    parameter_split,
    parse_model_config,
)
from kwsearch.nn import warehouse_managers

KWSEARCH = Path(sys.executable).parent / "kwsearch"
KW1X = {"family": "kw", "reduction": 0.0625, "cell_num_ratio": 1, "sharing_range": ["layer", "conv"]}


def write(tmp_path, data, name="model.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backbone": "resnet19"}, "backbone: 'resnet19' is not one of"),
        ({"backbone": "resnet18", "widht": 0.5}, "widht: Extra inputs are not permitted"),
        ({"backbone": "resnet18", "width": 0}, "width: Input should be greater than 0"),
        ({"backbone": "resnet18", "num_classes": "ten"}, "num_classes: Input should be a valid integer"),
        ({"backbone": "resnet18", "conv": {"family": "kw", "cell_num_raito": 1}}, "conv.cell_num_raito"),
        ({"backbone": "resnet18", "conv": {"family": "dynamic"}}, "conv.family: 'dynamic' is not one of"),
        ({"backbone": "resnet18", "backbone_args": {"depth": 3}}, "backbone_args.depth: not an argument"),
        ({"backbone": "resnet18", "input_size": [0, 32]}, "input_size: both sides must be >= 1"),
        (["resnet18"], "a model config is a mapping"),
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ModelConfigError) as error:
        load_model_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_impossible_cell_ratio_is_found_when_building(tmp_path):
    path = write(
        tmp_path, {"backbone": "resnet18_cifar", "conv": {"family": "kw", "cell_outplane_ratio": 0.75}}
    )
    config = load_model_config(path)
    with (
        pytest.raises(ModelConfigError, match=r"model\.yaml: conv\.cell_outplane_ratio"),
        torch.device("meta"),
    ):
        build_model(config, path)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ModelConfigError, match="cannot read"):
        load_model_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("backbone: [resnet18\n")
    with pytest.raises(ModelConfigError, match="not valid YAML"):
        load_model_config(broken)


def test_width_scales_channels_and_keeps_them_divisible():
    config = parse_model_config({"backbone": "resnet18_cifar", "width": 0.3, "num_classes": 10, "conv": KW1X})
    model = build_model(config)
    assert model.conv1.out_channels == 16  # 64 * 0.3 = 19.2 -> multiple of 8
    assert model.fc.in_features == 152  # 512 * 0.3 = 153.6 -> 152
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_parameter_split_adds_up_and_separates_warehouses():
    config = parse_model_config({"backbone": "resnet18", "conv": KW1X})
    with torch.device("meta"):
        model = build_model(config)
    split = parameter_split(model)
    assert split.total == sum(p.numel() for p in model.parameters()) == 11_932_148
    warehouses = sum(p.num_parameters for m in warehouse_managers(model) for p in m.plans)
    assert split.kernels == warehouses
    assert split.static + split.kernels + split.attention == split.total
    static = parameter_split(build_model(parse_model_config({"backbone": "resnet18"}), None))
    assert (static.kernels, static.attention, static.static) == (0, 0, 11_689_512)


def test_macs_are_exact_and_include_attention_and_assembly():
    with torch.device("meta"):
        static = build_model(parse_model_config({"backbone": "resnet18"}))
        kw = build_model(parse_model_config({"backbone": "resnet18", "conv": KW1X}))
    static_macs = count_macs(static, (3, 224, 224))
    assert static_macs == 1_814_073_344  # convolutions and the classifier
    kw_macs = count_macs(kw, (3, 224, 224))
    # Same convolutions, plus per-layer attention and the assembly of every kernel from its cells.
    assembly = 0
    for manager in warehouse_managers(kw):
        for plan in manager.plans:
            assembly += sum(m.count for m in plan.mixtures) * plan.num_cells * plan.cell_numel
    assert kw_macs > static_macs + assembly
    assert kw_macs - static_macs - assembly < 0.01 * static_macs  # attention is small


def test_macs_do_not_depend_on_the_path_a_device_picks():
    with torch.device("meta"):
        model = build_model(parse_model_config({"backbone": "resnet18_cifar", "width": 0.25, "conv": KW1X}))
    first = count_macs(model, (3, 32, 32))
    for m in model.modules():
        if hasattr(m, "published_path"):
            m.path = "input_mixing" if m.dims == 2 and m.shape.groups == 1 else None
    assert count_macs(model, (3, 32, 32)) == first
    assert all(getattr(m, "path", None) in (None, "input_mixing") for m in model.modules())


def run(*args, env=None):
    return subprocess.run([str(KWSEARCH), *args], capture_output=True, text=True, timeout=120, env=env)


def test_inspect_json_matches_the_instantiated_model(tmp_path):
    data = {"backbone": "resnet18_cifar", "num_classes": 10, "in_chans": 1, "width": 0.5, "conv": KW1X}
    path = write(tmp_path, data)
    result = run("inspect", str(path), "--json", "--input-size", "28", "28")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    model = build_model(parse_model_config(data))
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["macs"] == count_macs(model, (1, 28, 28))
    assert report["input_shape"] == [1, 28, 28]
    assert [w["name"] for w in report["warehouses"]] == [f"stage{i}_layer_conv" for i in range(4)]


def test_inspect_prints_the_plan_and_bad_input_exits_2(tmp_path):
    good = run("inspect", str(write(tmp_path, {"backbone": "resnet18", "conv": KW1X})))
    assert good.returncode == 0, good.stderr
    assert "11,932,148" in good.stdout and "warehouse stage3_layer_conv: n=27" in good.stdout
    bad_path = write(
        tmp_path, {"backbone": "resnet18", "conv": {"family": "kw", "cell_inplane_ratio": 0.75}}, "b.yaml"
    )
    bad = run("inspect", str(bad_path))
    assert bad.returncode == 2
    assert f"{bad_path}: conv.cell_inplane_ratio" in bad.stderr
    assert run("inspect", str(tmp_path / "nope.yaml")).returncode == 2


def test_a_100m_parameter_model_is_accounted_on_the_meta_device():
    config = parse_model_config({"backbone": "resnet50", "conv": {**KW1X, "cell_num_ratio": 4}})
    with torch.device("meta"):
        model = build_model(config)
    report = account(model, (3, 224, 224))
    assert report.params == 102_015_144
    assert all(p.is_meta for p in model.parameters())


def test_inspect_paths_times_each_dynamic_layer_once_and_doctor_counts_the_choices(tmp_path):
    cache = tmp_path / "paths.json"
    env = {**os.environ, "KWSEARCH_PATH_CACHE": str(cache), "KWSEARCH_MEASURE_PATHS": "1"}
    data = {"backbone": "resnet18_cifar", "num_classes": 4, "in_chans": 1, "width": 0.0625, "conv": KW1X}
    path = write(tmp_path, data)
    args = ["inspect", str(path), "--json", "--input-size", "12", "12"]
    assert run(*args, env=env).returncode == 0 and not cache.exists()  # accounting never times

    def paths():
        result = run(*args, "--paths", "--batch-size", "4", "--device", "cpu", env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])["paths"]

    first, second = paths(), paths()
    assert len(first) == 19 and all(p["input"][0] == 4 for p in first)  # 16 3x3 convs, 3 shortcuts
    measured = [p for p in first if p["source"] == "measured"]
    assert measured and {p["source"] for p in first} <= {"measured", "modelled"}
    assert all(p["milliseconds"][p["path"]] == min(p["milliseconds"].values()) for p in measured)
    cached = [(p["path"], "cached" if p["source"] == "measured" else p["source"]) for p in first]
    assert [(p["path"], p["source"]) for p in second] == cached
    doctor = json.loads(run("doctor", "--json", env=env).stdout.strip().splitlines()[-1])
    assert doctor["path_cache"] == str(cache) and doctor["measure_paths"] is True
    (entries,) = json.loads(cache.read_text())["devices"].values()
    assert doctor["path_choices"] == len(entries) > 0


@pytest.mark.parametrize(
    ("options", "message"), [(["--batch-size", "0"], "--batch-size"), (["--device", "tpu:x"], "--device")]
)
def test_inspect_paths_bad_options_exit_2(tmp_path, options, message):
    result = run("inspect", str(write(tmp_path, {"backbone": "resnet18", "conv": KW1X})), "--paths", *options)
    assert result.returncode == 2 and message in result.stderr

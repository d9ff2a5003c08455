"""Path choice by timing: every choice an exact path that applies, cached per device and torch and
reused, the cached choice is what runs, a corrupt or concurrently written cache file, forced paths,
timing off, the meta device, a model left as it was. Which path wins a timing is never asserted."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kwsearch.models import account, build_model, parse_model_config
from kwsearch.nn import ConvFactory, KWConvNd, PathCache, choose_paths, measuring_enabled
from kwsearch.nn.cost import cheapest
from kwsearch.nn.path_cache import PATHS_REVISION
from kwsearch.nn.path_choice import MEASURE_ENV
from tests.helpers import randomize_

CPU = torch.device("cpu")


def mixed_model() -> nn.Sequential:
    """KernelWarehouse (3x3, 1x1, depthwise), DY-CNN and grouped ODConv layers in one network."""
    kw, dy, od = (ConvFactory({"family": f}) for f in ("kw", "dyconv", "odconv"))
    model = nn.Sequential(
        kw.conv(4, 8, 3, padding=1, name="a"),
        kw.conv(8, 8, 1, name="b"),
        kw.conv(8, 8, 3, padding=1, groups=8, name="c"),
        dy.conv(8, 8, 3, padding=1),
        od.conv(8, 8, 3, stride=2, padding=1, groups=2),
    )
    for factory in (kw, dy, od):
        factory.finalize(model)
    return model


def example() -> torch.Tensor:
    return torch.randn(4, 4, 6, 6)


def test_every_choice_is_an_exact_path_that_applies_and_the_next_model_reuses_it(tmp_path):
    file = tmp_path / "paths.json"
    model = mixed_model()
    report = choose_paths(model, example(), measure=True, cache_file=file)
    assert [entry.name for entry in report] == ["0", "1", "2", "3", "4"]
    for entry in report:
        layer = model.get_submodule(entry.name)
        applicable = set(layer.path_costs(torch.empty(entry.input.shape, device="meta")))
        assert entry.choice.path in applicable
        assert layer.chosen_paths[entry.input.shape] == entry.choice
        if len(applicable) == 1:  # the depthwise KernelWarehouse layer: grouped_conv only
            assert entry.choice.source == "only"
        elif entry.choice.source == "measured":  # the paths the cost model does not put far behind
            times = entry.choice.milliseconds
            assert len(times) > 1 and set(times) <= applicable
            assert times[entry.choice.path] == min(times.values())
        else:  # one path far ahead of the others by the cost model
            assert entry.choice.source == "modelled"
    assert any(e.choice.source == "measured" for e in report)
    assert file.exists()

    again = choose_paths(randomize_(mixed_model()), example(), measure=True, cache_file=file)
    assert [e.choice.path for e in again] == [e.choice.path for e in report]
    assert [e.choice.source for e in again] == [
        "cached" if e.choice.source == "measured" else e.choice.source for e in report
    ]


def _rewrite_every_entry(file, path: str) -> None:
    content = json.loads(file.read_text())
    for entries in content["devices"].values():
        for entry in entries.values():
            entry["path"] = path
    file.write_text(json.dumps(content))


@pytest.mark.parametrize("path", ["grouped_conv", "cell_conv", "input_mixing"])
def test_the_cached_choice_is_the_path_that_runs(tmp_path, path):
    file = tmp_path / "paths.json"
    factory = ConvFactory({"family": "kw"})
    model = nn.Sequential(factory.conv(16, 16, 3, padding=1, name="a"))
    factory.finalize(randomize_(model))
    x = torch.randn(3, 16, 3, 3)  # a small map: the cost model leaves all three paths to timing
    choose_paths(model, x, measure=True, cache_file=file)
    _rewrite_every_entry(file, path)
    layer = model[0]
    layer.chosen_paths.clear()
    (entry,) = choose_paths(model, x, measure=True, cache_file=file)
    assert (entry.choice.path, entry.choice.source) == (path, "cached")
    assert layer.select_path(x) == path
    chosen = model(x)
    layer.path = path
    assert torch.equal(chosen, model(x))


@pytest.mark.parametrize("content", [b"\x00\xff{not json", b'{"format": 1, "devices": {"cpu: ', b"[1, 2]"])
def test_a_corrupt_cache_file_is_timed_over_and_replaced(tmp_path, content):
    file = tmp_path / "paths.json"
    file.write_bytes(content)
    report = choose_paths(mixed_model(), example(), measure=True, cache_file=file)
    assert "measured" in {e.choice.source for e in report} <= {"measured", "modelled", "only"}
    stored = json.loads(file.read_text())
    (entries,) = stored["devices"].values()
    assert stored["format"] == 1 and len(entries) == sum(e.choice.source == "measured" for e in report)


def test_processes_writing_one_cache_keep_each_others_entries(tmp_path):
    file = tmp_path / "paths.json"
    first, second = PathCache(CPU, file), PathCache(CPU, file)  # both read the file before either writes
    second.store({"k2": ("bank", {"assemble": 2.0, "bank": 1.0})})
    first.store({"k1": ("assemble", {"assemble": 1.0, "bank": 2.0})})
    assert PathCache(CPU, file).lookup("k1") == ("assemble", {"assemble": 1.0, "bank": 2.0})
    assert PathCache(CPU, file).lookup("k2")[0] == "bank"

    # The same layer timed by two processes: the first to write decides for later runs...
    late, early = PathCache(CPU, file), PathCache(CPU, file)
    early.store({"k3": ("bank", {"bank": 1.0})})
    late.store({"k3": ("assemble", {"assemble": 1.0})})
    assert PathCache(CPU, file).lookup("k3")[0] == "bank"
    # ...and a process that read an entry and re-timed it replaces it.
    PathCache(CPU, file).store({"k3": ("assemble", {"assemble": 1.0})})
    assert PathCache(CPU, file).lookup("k3")[0] == "assemble"
    # Another device, torch version or revision of the paths is another section.
    assert PathCache(torch.device("meta"), file).lookup("k1") is None
    content = json.loads(file.read_text())
    ((section, entries),) = content["devices"].items()
    assert section.endswith(f"; paths r{PATHS_REVISION}")
    content["devices"] = {section.replace(f"r{PATHS_REVISION}", f"r{PATHS_REVISION - 1}"): entries}
    file.write_text(json.dumps(content))
    assert PathCache(CPU, file).lookup("k1") is None  # timed by the paths' earlier code
    assert not list(tmp_path.glob("*.tmp"))


def test_a_forced_path_is_kept(tmp_path):
    model = mixed_model()
    model[0].path = "input_mixing"
    report = choose_paths(model, example(), measure=True, cache_file=tmp_path / "paths.json")
    assert (report[0].choice.path, report[0].choice.source) == ("input_mixing", "forced")
    assert model[0].chosen_paths == {} and model[0].path == "input_mixing"


def test_with_timing_off_the_cost_model_chooses_and_nothing_is_written(tmp_path, monkeypatch):
    file = tmp_path / "paths.json"
    monkeypatch.setenv(MEASURE_ENV, "off")
    assert not measuring_enabled()
    report = choose_paths(mixed_model(), example(), cache_file=file)
    assert {e.choice.source for e in report} == {"modelled", "only"}
    assert not file.exists()
    monkeypatch.delenv(MEASURE_ENV)
    assert measuring_enabled()


def test_meta_device_models_never_time_anything(tmp_path, monkeypatch):
    file = tmp_path / "paths.json"
    monkeypatch.setenv("KWSEARCH_PATH_CACHE", str(file))
    monkeypatch.setenv(MEASURE_ENV, "1")
    with torch.device("meta"):
        model = mixed_model()
        config = parse_model_config(
            {"backbone": "resnet18_cifar", "num_classes": 4, "in_chans": 1, "conv": {"family": "kw"}}
        )
        account(build_model(config), (1, 32, 32))
    report = choose_paths(model, torch.empty(4, 4, 6, 6, device="meta"))
    assert {e.choice.source for e in report} == {"modelled", "only"}
    assert not file.exists()


def test_choosing_leaves_the_model_and_the_random_stream_as_they_were(tmp_path):
    model = randomize_(mixed_model()).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = example()
    rng = torch.get_rng_state()
    choose_paths(model, x, measure=True, cache_file=tmp_path / "paths.json")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_run_too_short_to_pay_for_timing_takes_the_cost_model_unless_a_timing_is_cached(tmp_path):
    file = tmp_path / "paths.json"
    short = choose_paths(mixed_model(), example(), measure=True, cache_file=file, steps=10)
    assert {e.choice.source for e in short} == {"modelled", "only"}
    assert not file.exists()  # nothing timed, nothing written

    # A long run times what a run of no known length times, and the choices it caches serve
    # every later run, however short.
    long = choose_paths(mixed_model(), example(), measure=True, cache_file=file, steps=1_000_000)
    unbounded = choose_paths(mixed_model(), example(), measure=True, cache_file=tmp_path / "other.json")
    assert [e.choice.source for e in long] == [e.choice.source for e in unbounded]
    assert any(e.choice.source == "measured" for e in long)
    again = choose_paths(mixed_model(), example(), measure=True, cache_file=file, steps=10)
    assert [e.choice.path for e in again] == [e.choice.path for e in long]
    assert [e.choice.source for e in again] == [
        "cached" if e.choice.source == "measured" else e.choice.source for e in long
    ]


def test_the_steps_that_pay_for_timing_grow_with_what_the_timing_costs():
    from kwsearch.nn.cost import PathCost
    from kwsearch.nn.path_choice import _timing_pays

    even = {"a": PathCost(1e6, 0), "b": PathCost(1e6, 0)}
    # Two equal paths: a warm-up and three timed passes of each, 8 passes, at 5% of the run.
    assert not _timing_pays(even, ["a", "b"], CPU, steps=159)
    assert _timing_pays(even, ["a", "b"], CPU, steps=160)
    # A path modelled 4x slower is given up after its first timed pass: 2 passes of it, 4 of the
    # other, 12 of the fastest's time.
    lopsided = {"a": PathCost(1e6, 0), "b": PathCost(4e6, 0)}
    assert not _timing_pays(lopsided, ["a", "b"], CPU, steps=239)
    assert _timing_pays(lopsided, ["a", "b"], CPU, steps=240)


def test_a_path_that_raises_is_left_out_and_never_chosen(tmp_path, monkeypatch):
    # A Triton kernel that does not compile for the device at hand must not crash the training.
    def broken(layer, x, alpha):
        raise RuntimeError("kernel failed to compile")

    monkeypatch.setitem(KWConvNd._PATHS, "input_mixing", broken)
    factory = ConvFactory({"family": "kw"})
    model = nn.Sequential(factory.conv(16, 16, 3, padding=1, name="a"))
    factory.finalize(randomize_(model))
    # a small map: the cost model leaves every path to timing, and favours input_mixing: the
    # model, run first to see each layer's input, takes it and must not end there
    x = torch.randn(3, 16, 3, 3)
    assert cheapest(model[0].path_costs(x), x.device) == "input_mixing"
    with pytest.warns(RuntimeWarning, match="'input_mixing'.*kernel failed to compile"):
        (entry,) = choose_paths(model, x, measure=True, cache_file=tmp_path / "paths.json")
    assert entry.choice.source == "measured"
    assert entry.choice.path != "input_mixing" and "input_mixing" not in entry.choice.milliseconds
    assert len(entry.choice.milliseconds) >= 2
    assert model[0].path is None  # the published path it ran on to record inputs is not kept


def test_an_error_the_published_path_raises_too_is_the_models_own(monkeypatch):
    def broken(layer, x, alpha):
        raise RuntimeError("kernel failed to compile")

    monkeypatch.setitem(KWConvNd._PATHS, "input_mixing", broken)
    monkeypatch.setitem(KWConvNd._PATHS, "grouped_conv", broken)
    factory = ConvFactory({"family": "kw"})
    model = nn.Sequential(factory.conv(16, 16, 3, padding=1, name="a"))
    factory.finalize(model)
    with pytest.raises(RuntimeError, match="kernel failed to compile"):
        choose_paths(model, torch.randn(3, 16, 3, 3), measure=False)
    assert model[0].path is None

"""Malformed input to every command, as a new user writes it: each case exits with its code (2
for bad input) and one `error:` line naming the file and field (or the option), with no
traceback, and writes nothing (the workspace's tree is the same before and after). A case that
hangs fails after BOUND_S seconds. Almost every case is refused before Ray starts and runs
in-process; the few that need a cluster to judge run as subprocesses, which must leave no
process behind."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kwsearch.cli import app
from kwsearch.search import StudyError, load_study
from kwsearch.search.preflight import prepare_search
from tests.helpers import wait_for_no_members

BOUND_S = 60  # a refusal takes seconds; more is a hang

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
MODEL = {"backbone": "resnet18_cifar", "num_classes": 10, "in_chans": 3, "width": 0.0625}
CONVNEXT = {"backbone": "convnext_nano", "num_classes": 10, "in_chans": 3, "width": 0.25}
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9) if previous else ', '.join(['lol'] * 9)}]\n"
    for previous, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)
NOT_UTF8 = "name: caf\xe9\n".encode("latin-1")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"


def study(*changes) -> Callable[[Path], None]:
    """The base study with each (path, value) pair of ``changes`` made: ``path`` is dotted
    (``@space.`` for the space file), a value of ``...`` removes the key."""

    def change(study: dict, space: dict) -> None:
        for path, value in zip(changes[::2], changes[1::2], strict=True):
            *parents, last = path.removeprefix("@space.").split(".")
            node = space if path.startswith("@space.") else study
            for key in parents:
                node = node[key]
            if value is ...:
                del node[last]
            else:
                node[last] = value

    return lambda root: write_study(root, change)


def write_study(root: Path, change=None) -> None:
    study_, space = copy.deepcopy(STUDY), copy.deepcopy(SPACE)
    if change is not None:
        change(study_, space)
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    (root / "study.yaml").write_text(yaml.safe_dump(study_))


def raw(name: str, content: str | bytes, *, base: bool = True) -> Callable[[Path], None]:
    """The base study and model, and file ``name`` holding ``content`` as it is."""

    def make(root: Path) -> None:
        if base:
            write_study(root)
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return make


def model(**fields) -> Callable[[Path], None]:
    """model.yaml: the base model with ``fields`` (None removes one)."""

    def make(root: Path) -> None:
        config = {k: v for k, v in {**MODEL, **fields}.items() if v is not None}
        (root / "model.yaml").write_text(yaml.safe_dump(config))

    return make


def convnext(**fields) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / "model.yaml").write_text(yaml.safe_dump({**CONVNEXT, **fields}))

    return make


def grid_over_a_continuous_float(root: Path) -> None:
    def change(study_, space):
        study_["sampler"] = {"name": "grid"}
        space["conv"]["kw"]["cell_num_ratio"] = {"float": [0.5, 4]}

    write_study(root, change)


def also(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for maker in makers:
            maker(root)

    return make


@dataclass
class Case:
    args: list[str]  # the command line, run in the workspace
    message: str  # a regex the one error line matches (it names the file and field, or the option)
    files: Callable[[Path], None] = write_study  # writes the inputs
    code: int = 2
    stored: bool = False  # the workspace holds study "stored" in runs/stored/study.db
    env: dict[str, str] = field(default_factory=dict)


SEARCH = ["search", "study.yaml", "--runs-dir", "runs"]
TRAIN = ["train", "model.yaml", "--data", "synthetic"]
INSPECT = ["inspect", "model.yaml"]
CALIBRATE = ["calibrate", "study.yaml", "--runs-dir", "runs"]

CASES: dict[str, Case] = {
    # -- search: the study file ----------------------------------------------------------------
    "unknown top-level key": Case(SEARCH, r"study.yaml: epochz: Extra inputs", study("epochz", 3)),
    "wrong sampler name": Case(
        SEARCH, r"study.yaml: sampler.name: Input should be", study("sampler.name", "bayes")
    ),
    "budget not a number": Case(
        SEARCH, r"study.yaml: budget.params: 'half' is neither a number", study("budget.params", "half")
    ),
    "negative budget": Case(
        SEARCH, r"study.yaml: budget.params.value: .*greater than 0", study("budget.params", -1)
    ),
    "negative trials": Case(
        SEARCH,
        r"study.yaml: budget.trials: Input should be greater than or equal to 1",
        study("budget.trials", -3),
    ),
    "wall clock not a duration": Case(
        SEARCH, r"study.yaml: budget.wall_clock: 'soon' is not a duration", study("budget.wall_clock", "soon")
    ),
    "space file missing": Case(
        SEARCH, r"study.yaml: space: .*missing.yaml: cannot read", study("space", "missing.yaml")
    ),
    "space not a file name or mapping": Case(SEARCH, r"study.yaml: space", study("space", [1, 2])),
    "no space": Case(SEARCH, r"study.yaml: space: Field required", study("space", ...)),
    "space neither a file name nor a mapping": Case(SEARCH, r"study.yaml: space.str: ", study("space", None)),
    "no data": Case(SEARCH, r"study.yaml: data: Field required", study("data", ...)),
    "bad distribution": Case(
        SEARCH,
        r"space.yaml: width: a distribution",
        study("@space.width", {"choice": [0.0625], "float": [0.1, 1]}),
    ),
    "inverted int range": Case(SEARCH, r"space.yaml: .*dropout", study("@space.dropout", {"int": [5, 1]})),
    "width out of range": Case(
        SEARCH, r"space.yaml: width: .*less than or equal to 8", study("@space.width", 9)
    ),
    "unknown backbone": Case(SEARCH, r"space.yaml: backbone: 'resnet7'", study("@space.backbone", "resnet7")),
    "unknown conv family": Case(
        SEARCH,
        r"space.yaml: .*family.*condconv",
        study("@space.conv.family", {"choice": ["static", "condconv"]}),
    ),
    "unknown conv option": Case(
        SEARCH,
        r"space.yaml: .*warehouse_colour",
        study("@space.conv.kw.warehouse_colour", {"choice": [1, 2]}),
    ),
    "objectives not led by accuracy": Case(
        SEARCH, r"study.yaml: objectives: start with accuracy", study("objectives", ["params", "accuracy"])
    ),
    "objectives repeated": Case(
        SEARCH, r"study.yaml: objectives: .*no repeats", study("objectives", ["accuracy", "params", "params"])
    ),
    "unknown objective": Case(
        SEARCH, r"study.yaml: objectives.1: ", study("objectives", ["accuracy", "flops"])
    ),
    "zero proxy epochs": Case(SEARCH, r"study.yaml: proxy.epochs: ", study("proxy.epochs", 0)),
    "zero batch size": Case(SEARCH, r"study.yaml: proxy.batch_size: ", study("proxy.batch_size", 0)),
    "validation fraction over 1": Case(SEARCH, r"study.yaml: proxy.*val_size", study("proxy.val_size", 1.5)),
    "warmup longer than the proxy": Case(
        SEARCH, r"study.yaml: proxy.*warmup_epochs", study("proxy.warmup_epochs", 5)
    ),
    "unknown optimizer": Case(SEARCH, r"study.yaml: proxy.optimizer: ", study("proxy.optimizer", "adam")),
    "proxy looks at the test set": Case(
        SEARCH, r"study.yaml: .*proxy.evaluate_test", study("proxy.evaluate_test", True)
    ),
    "proxy resolution of zero": Case(
        SEARCH, r"study.yaml: proxy.resolution: both sides must be >= 1", study("proxy.resolution", [0, 0])
    ),
    "proxy resolution below what the network takes": Case(
        SEARCH,
        r"study.yaml: proxy.resolution: \[8, 8\]: a 1x8x8 input does not pass through the network",
        study("proxy.resolution", [8, 8], "@space.backbone", "convnext_nano"),
    ),
    "data smaller than the network takes": Case(
        SEARCH,
        r"space.yaml: the network does not take synthetic's 12x12 images",
        study("@space.backbone", "convnext_nano"),
    ),
    "unknown baseline preset": Case(
        SEARCH, r"study.yaml: baselines: .*kw_3x", study("baselines", ["static", "kw_3x"])
    ),
    "baseline with an unknown model key": Case(
        SEARCH,
        r"study.yaml: baselines.mine: colour",
        study("baselines", [{"label": "mine", "model": {"colour": 1}}]),
    ),
    "grid over a continuous float": Case(
        SEARCH,
        r"study.yaml: sampler: grid: .*conv.kw.cell_num_ratio: a grid needs",
        grid_over_a_continuous_float,
    ),
    "budget below every config": Case(
        SEARCH, r"study.yaml: budget: no config of the space can meet it", study("budget.params", 10)
    ),
    "a cell ratio no warehouse can be built with": Case(
        SEARCH,
        r"space.yaml: conv.cell_inplane_ratio: gives cells",
        study("@space.conv.family", "kw", "@space.conv.kw.cell_inplane_ratio", 0.3),
    ),
    "the same without a params budget": Case(
        SEARCH,
        r"space.yaml: conv.cell_inplane_ratio: gives cells",
        study("@space.conv.family", "kw", "@space.conv.kw.cell_inplane_ratio", 0.3, "budget", {"trials": 2}),
    ),
    "a backbone argument that is no number": Case(
        SEARCH,
        r"space.yaml: backbone_args.patch_size: ",
        study("@space.backbone", "convnext_nano", "@space.backbone_args", {"patch_size": "two"}),
    ),
    "a backbone argument of the wrong type": Case(
        SEARCH,
        r"space.yaml: backbone_args.handover: Input should be a valid boolean",
        study("@space.backbone_args", {"handover": "maybe"}),
    ),
    "name with a slash": Case(SEARCH, r"study.yaml: name: 'a/b': 1 to 128 letters", study("name", "a/b")),
    "hidden name": Case(
        SEARCH, r"study.yaml: name: '.hidden': .*not starting with '.'", study("name", ".hidden")
    ),
    "name of a companion study": Case(
        SEARCH, r"study.yaml: name: 'x.replays': ends like", study("name", "x.replays")
    ),
    "--name escaping runs/": Case([*SEARCH, "--name", "../escape"], r"--name '../escape': 1 to 128 letters"),
    "--name empty": Case([*SEARCH, "--name", ""], r"--name '': 1 to 128 letters"),
    "a file name that is no study name": Case(
        ["search", "my study.yaml", "--runs-dir", "runs"],
        r"my study.yaml: the study is named after its file, 'my study'",
        raw("my study.yaml", yaml.safe_dump({k: v for k, v in STUDY.items() if k != "name"})),
    ),
    "proxy options Optuna refuses": Case(
        SEARCH,
        r"study.yaml: sampler.options: `population_size` must be greater than or equal to 2",
        study("sampler", {"name": "nsga2", "options": {"population_size": -3}}),
    ),
    "unknown sampler option": Case(
        SEARCH, r"study.yaml: sampler.options: .*n_startup", study("sampler.options", {"n_startup": 3})
    ),
    "unknown data set": Case(
        SEARCH, r"study.yaml: data.name: .*imagenet-mini", study("data.name", "imagenet-mini")
    ),
    "unknown data option": Case(
        SEARCH,
        r"study.yaml: data.options: synthetic: unknown option\(s\) colour",
        study("data.options.colour", 3),
    ),
    "a folder data set without a root": Case(
        SEARCH, r"study.yaml: data: .*root: the folder data set needs a root", study("data", "folder")
    ),
    "classes other than the data's": Case(
        SEARCH, r"space.yaml: num_classes: 10, but synthetic has 4 classes", study("@space.num_classes", 10)
    ),
    "channels other than the data's": Case(
        SEARCH, r"space.yaml: in_chans: 3, but synthetic images have 1 channels", study("@space.in_chans", 3)
    ),
    "zero CPUs": Case(SEARCH, r"study.yaml: resources.cpu: ", study("resources", {"cpu": 0})),
    "negative retries": Case(SEARCH, r"study.yaml: retries: ", study("retries", -1)),
    "early stopping that never stops": Case(
        SEARCH,
        r"study.yaml: early_stopping.reduction_factor: ",
        study("early_stopping", {"reduction_factor": 1}),
    ),
    "confirm no trial": Case(SEARCH, r"study.yaml: confirm.top: ", study("confirm", {"top": 0})),
    "replay seeds not a list": Case(SEARCH, r"study.yaml: replay.seeds: ", study("replay", {"seeds": "abc"})),
    "--trials 0": Case([*SEARCH, "--trials", "0"], r"--trials: must be >= 1"),
    # -- search: files that are not what they should be ------------------------------------------
    "malformed YAML": Case(
        SEARCH, r"study.yaml: not valid YAML", raw("study.yaml", "name: bad\nspace: [unclosed\n")
    ),
    "a study that is not a mapping": Case(
        SEARCH, r"study.yaml: a study is a mapping", raw("study.yaml", "- a\n- list\n")
    ),
    "empty study file": Case(SEARCH, r"study.yaml: the file is empty", raw("study.yaml", "")),
    "empty space file": Case(
        SEARCH, r"study.yaml: space: space.yaml: the file is empty", raw("space.yaml", "# nothing\n")
    ),
    "study file not UTF-8": Case(
        SEARCH, r"study.yaml: not UTF-8 text \(byte 0xe9", raw("study.yaml", NOT_UTF8)
    ),
    "binary space file": Case(
        SEARCH, r"study.yaml: space: space.yaml: not UTF-8 text \(byte 0x89", raw("space.yaml", PNG)
    ),
    "alias bomb in the space": Case(
        SEARCH,
        r"space.yaml: expands to more than 100,000 values",
        raw("space.yaml", "backbone: resnet18\n" + ALIAS_BOMB),
    ),
    "an alias that contains itself": Case(
        SEARCH,
        r"space.yaml: nested deeper than 64 levels",
        raw("space.yaml", "backbone: resnet18\nconv: &c {self: *c}\n"),
    ),
    "nesting deeper than anyone writes": Case(
        SEARCH, r"study.yaml: nested deeper than", raw("study.yaml", "a: " + "[" * 100 + "]" * 100 + "\n")
    ),
    "a folder as the study file": Case(
        ["search", "runs", "--runs-dir", "runs"],
        r"runs: cannot read",
        also(write_study, lambda root: (root / "runs").mkdir()),
    ),
    # -- search: storage, cluster and the study stored under the name ------------------------------
    "storage URL that is not one": Case(
        [*SEARCH, "--storage", "notaurl"], r"--storage: notaurl: not a storage URL"
    ),
    "SQLite file in a missing folder": Case(
        [*SEARCH, "--storage", "sqlite:///nowhere/study.db"],
        r"--storage: sqlite:///nowhere/study.db: the folder nowhere does not exist",
    ),
    "PostgreSQL server that is not there": Case(
        [*SEARCH, "--storage", "postgresql://nobody@127.0.0.1:1/kwsearch"],
        r"--storage: postgresql://nobody@127.0.0.1:1/kwsearch: cannot connect \(OperationalError",
    ),
    "storage in the study file that cannot be opened": Case(
        SEARCH,
        r"study.yaml: storage: sqlite:///nowhere/x.db: the folder",
        study("storage", "sqlite:///nowhere/x.db"),
    ),
    "--address nobody listens on": Case(
        [*SEARCH, "--address", "127.0.0.1:1"], r"--address 127.0.0.1:1: no Ray cluster answers there"
    ),
    "--address that is no address": Case(
        [*SEARCH, "--address", "cluster"], r"--address cluster: not HOST:PORT"
    ),
    "a study stored under the name from another file": Case(
        [*SEARCH, "--name", "stored"],
        r"study.yaml: .*space.*: differ from study 'stored' stored in",
        stored=True,
    ),
    # -- report ----------------------------------------------------------------------------------
    "report of an unknown study": Case(
        ["report", "nothing"], r"unknown study 'nothing': no runs/nothing/study.db"
    ),
    "report of a name that escapes runs/": Case(
        ["report", "../x"], r"'../x' is neither a study file nor a study's name"
    ),
    "report of a missing SQLite file": Case(
        ["report", "stored", "--storage", "sqlite:///missing.db"],
        r"sqlite:///missing.db: no such study database",
    ),
    "report of a storage URL that is not one": Case(
        ["report", "stored", "--storage", "notaurl"], r"notaurl: "
    ),
    "report of a name the storage lacks": Case(
        ["report", "other", "--storage", "sqlite:///runs/stored/study.db"],
        r"unknown study 'other' in sqlite:///runs/stored/study.db \(studies there: stored\)",
        stored=True,
    ),
    "report of a bad study file": Case(
        ["report", "study.yaml"], r"study.yaml: budget.trials", study("budget.trials", 0)
    ),
    "report of a study file that is not YAML": Case(
        ["report", "study.yaml"], r"study.yaml: not UTF-8", raw("study.yaml", PNG)
    ),
    "report of a database that is not one": Case(
        ["report", "junk"],
        r"runs/junk/study.db: cannot",
        also(
            write_study,
            lambda root: (root / "runs/junk").mkdir(parents=True),
            raw("runs/junk/study.db", PNG, base=False),
        ),
    ),
    "report --out inside a file": Case(
        ["report", "stored", "--out", "study.yaml/x.html"],
        r"--out study.yaml/x.html: .*study.yaml is a file, not a folder",
        stored=True,
    ),
    # -- replay ----------------------------------------------------------------------------------
    "replay of an unknown study": Case(["replay", "nothing", "--top", "1"], r"unknown study 'nothing'"),
    "replay with --top and --trials": Case(
        ["replay", "stored", "--top", "1", "--trials", "1"],
        r"--top and --trials exclude each other",
        stored=True,
    ),
    "replay with neither": Case(["replay", "stored"], r"give either --top K or --trials I,J", stored=True),
    "replay --trials not numbers": Case(
        ["replay", "stored", "--trials", "a,b"], r"--trials: comma-separated integers, got 'a,b'", stored=True
    ),
    "replay of a trial the study lacks": Case(
        ["replay", "stored", "--trials", "999"], r"study 'stored' has no trial 999", stored=True
    ),
    "replay --top 0": Case(["replay", "stored", "--top", "0"], r"--top: must be >= 1", stored=True),
    "replay --seeds not numbers": Case(
        ["replay", "stored", "--top", "1", "--seeds", "x"], r"--seeds: comma-separated integers", stored=True
    ),
    "replay --seeds empty": Case(
        ["replay", "stored", "--top", "1", "--seeds", ","], r"--seeds: give at least one seed", stored=True
    ),
    "replay --recipe missing": Case(
        ["replay", "stored", "--top", "1", "--recipe", "nope.yaml"], r"nope.yaml: cannot read", stored=True
    ),
    "replay --recipe empty": Case(
        ["replay", "stored", "--top", "1", "--recipe", "recipe.yaml"],
        r"recipe.yaml: the file is empty",
        raw("recipe.yaml", ""),
        stored=True,
    ),
    "replay --recipe with a bad field": Case(
        ["replay", "stored", "--top", "1", "--recipe", "recipe.yaml"],
        r"recipe.yaml: epochs: ",
        raw("recipe.yaml", "epochs: 0\n"),
        stored=True,
    ),
    "replay of a missing SQLite file": Case(
        ["replay", "stored", "--top", "1", "--storage", "sqlite:///missing.db"],
        r"sqlite:///missing.db: no such study database",
    ),
    "replay --address nobody listens on": Case(
        ["replay", "stored", "--top", "1", "--address", "127.0.0.1:1"],
        r"--address 127.0.0.1:1: no Ray cluster answers there",
        stored=True,
    ),
    # -- calibrate -------------------------------------------------------------------------------
    "calibrate --configs 2": Case(
        [*CALIBRATE, "--configs", "2"], r"--configs: a calibration ranks 3 or more configs, got 2"
    ),
    "calibrate --seeds 0": Case([*CALIBRATE, "--seeds", "0"], r"--seeds: at least 1, got 0"),
    "calibrate --target 2": Case(
        [*CALIBRATE, "--target", "2"], r"--target: a Spearman's rho above -1 and at most 1, got 2"
    ),
    "calibrate a bad study file": Case(CALIBRATE, r"study.yaml: proxy.epochs", study("proxy.epochs", 0)),
    "calibrate into a missing folder": Case(
        [*CALIBRATE, "--storage", "sqlite:///nowhere/study.db"],
        r"--storage: sqlite:///nowhere/study.db: the folder nowhere does not exist",
    ),
    "calibrate a budget nothing meets": Case(
        CALIBRATE, r"study.yaml: budget: no config", study("budget.params", 10)
    ),
    "calibrate with --address nobody listens on": Case(
        [*CALIBRATE, "--address", "127.0.0.1:1"], r"--address 127.0.0.1:1: no Ray cluster answers there"
    ),
    # -- train -----------------------------------------------------------------------------------
    "train --epochs -1": Case(
        [*TRAIN, "--epochs", "-1"],
        r"^error: --epochs -1: Input should be greater than or equal to 1$",
        model(),
    ),
    "train --epochs 0": Case([*TRAIN, "--epochs", "0"], r"--epochs 0: ", model()),
    "train --batch-size 0": Case([*TRAIN, "--batch-size", "0"], r"--batch-size 0: ", model()),
    "train --lr 0": Case([*TRAIN, "--lr", "0"], r"--lr 0.0: ", model()),
    "train --epochs below the recipe's warmup": Case(
        [*TRAIN, "--epochs", "1", "--recipe", "recipe.yaml"],
        r"--epochs 1: warmup_epochs must not exceed epochs",
        also(model(), raw("recipe.yaml", "warmup_epochs: 2\n", base=False)),
    ),
    "train --batch-size over the training images": Case(
        [*TRAIN, "--batch-size", "5000"], r"--batch-size 5000: larger than the \d+ training images", model()
    ),
    "train --train-subset below the classes": Case(
        [*TRAIN, "--train-subset", "5"],
        r"--train-subset 5: cannot draw 5 samples stratified over 10 classes",
        model(),
    ),
    "train --device tpu": Case(
        [*TRAIN, "--device", "tpu"], r"--device: 'tpu' is not a device kwsearch trains on", model()
    ),
    "train --device cuda:99": Case(
        [*TRAIN, "--device", "cuda:99"], r"--device: 'cuda:99': this machine has", model()
    ),
    "train --checkpoint-dir naming a file": Case(
        [*TRAIN, "--checkpoint-dir", "model.yaml"],
        r"--checkpoint-dir model.yaml: model.yaml is a file, not a folder",
        model(),
    ),
    "train --checkpoint-dir below a file": Case(
        [*TRAIN, "--checkpoint-dir", "model.yaml/x"],
        r"--checkpoint-dir model.yaml/x: .*model.yaml is a file",
        model(),
    ),
    "train --data unknown": Case(
        ["train", "model.yaml", "--data", "imagenet"], r"--data: 'imagenet' is not one of", model()
    ),
    "train --recipe empty": Case(
        [*TRAIN, "--recipe", "recipe.yaml"],
        r"recipe.yaml: the file is empty",
        also(model(), raw("recipe.yaml", "", base=False)),
    ),
    "train --recipe not a mapping": Case(
        [*TRAIN, "--recipe", "recipe.yaml"],
        r"recipe.yaml: a recipe is a mapping",
        also(model(), raw("recipe.yaml", "- 1\n", base=False)),
    ),
    "train --recipe with an unknown key": Case(
        [*TRAIN, "--recipe", "recipe.yaml"],
        r"recipe.yaml: epochz: ",
        also(model(), raw("recipe.yaml", "epochz: 1\n", base=False)),
    ),
    "train --recipe missing": Case([*TRAIN, "--recipe", "nope.yaml"], r"nope.yaml: cannot read", model()),
    "train --recipe not UTF-8": Case(
        [*TRAIN, "--recipe", "recipe.yaml"],
        r"recipe.yaml: not UTF-8",
        also(model(), raw("recipe.yaml", NOT_UTF8, base=False)),
    ),
    "train a missing model file": Case(TRAIN, r"model.yaml: cannot read"),
    "train an empty model file": Case(TRAIN, r"model.yaml: the file is empty", raw("model.yaml", "")),
    "train a model of other classes than the data's": Case(
        TRAIN, r"model.yaml: num_classes: 4, but synthetic has 10 classes", model(num_classes=4)
    ),
    "train a network that does not take the images": Case(
        [*TRAIN, "--recipe", "recipe.yaml"],
        r"model.yaml: synthetic.s images are 16x16 \(the recipe.s resolution\): a 3x16x16 input does not",
        also(convnext(), raw("recipe.yaml", "resolution: [16, 16]\n", base=False)),
    ),
    "train a backbone argument of the wrong type": Case(
        TRAIN, r"model.yaml: backbone_args.patch_size: ", convnext(backbone_args={"patch_size": "two"})
    ),
    # -- inspect ---------------------------------------------------------------------------------
    "inspect a missing file": Case(INSPECT, r"model.yaml: cannot read"),
    "inspect an empty file": Case(
        INSPECT, r"model.yaml: the file is empty", raw("model.yaml", "", base=False)
    ),
    "inspect a file that is not UTF-8": Case(
        INSPECT, r"model.yaml: not UTF-8", raw("model.yaml", NOT_UTF8, base=False)
    ),
    "inspect a model that is not a mapping": Case(
        INSPECT, r"model.yaml: a model config is a mapping", raw("model.yaml", "[1]\n", base=False)
    ),
    "inspect an unknown key": Case(INSPECT, r"model.yaml: colour: Extra inputs", model(colour=1)),
    "inspect an unknown backbone": Case(
        INSPECT, r"model.yaml: backbone: 'resnet7'", model(backbone="resnet7")
    ),
    "inspect --input-size 0 0": Case(
        [*INSPECT, "--input-size", "0", "0"], r"--input-size: both sides must be >= 1", model()
    ),
    "inspect a 2x2 ConvNeXt": Case(
        [*INSPECT, "--input-size", "2", "2"],
        r"--input-size: \[2, 2\]: a 3x2x2 input does not pass through the network",
        convnext(),
    ),
    "inspect a 16x16 ConvNeXt from its file": Case(
        INSPECT,
        r"model.yaml: input_size: \[16, 16\]: a 3x16x16 input does not pass",
        convnext(input_size=[16, 16]),
    ),
    "inspect a DeiT built for another size": Case(
        INSPECT,
        r"model.yaml: input_size: \[32, 32\]: .*built for img_size=224",
        model(backbone="deit_tiny", input_size=[32, 32]),
    ),
    "inspect a patch size that is no number": Case(
        INSPECT,
        r"model.yaml: backbone_args.patch_size: ",
        model(backbone="deit_tiny", backbone_args={"patch_size": "two"}),
    ),
    "inspect a patch size that does not divide the image": Case(
        INSPECT,
        r"model.yaml: backbone_args.patch_size: 5 must divide img_size=224",
        model(backbone="deit_tiny", backbone_args={"patch_size": 5}),
    ),
    "inspect a cell ratio no warehouse takes": Case(
        INSPECT,
        r"model.yaml: conv.cell_inplane_ratio: gives cells",
        model(conv={"family": "kw", "cell_inplane_ratio": 0.3}),
    ),
    "inspect an unknown conv family": Case(
        INSPECT, r"model.yaml: conv.family: ", model(conv={"family": "condconv"})
    ),
}


@pytest.fixture(scope="module")
def stored_db(tmp_path_factory) -> Path:
    """A study named "stored" as a search stores it (written through the records, no Ray)."""
    from bench.report import synthetic_study

    folder = tmp_path_factory.mktemp("stored")
    synthetic_study(f"sqlite:///{folder / 'study.db'}", name="stored", trials=12, epochs=2)
    return folder / "study.db"


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: files with their size and modification time, folders as None."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        if path.is_file()
        else None
        for path in root.rglob("*")
    }


@contextlib.contextmanager
def bounded(seconds: int):
    """Fail, rather than wait for ever, when the block takes more than ``seconds``."""

    def hang(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_one_error_line(stderr: str, message: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    others = [line for line in stderr.splitlines() if line and not line.startswith(("error: ", "warning: "))]
    assert others == [], stderr
    assert re.search(message, errors[0]), errors[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_with_one_line_and_nothing_written(case, tmp_path, monkeypatch, stored_db):
    spec = CASES[case]
    spec.files(tmp_path)
    if spec.stored:
        (tmp_path / "runs" / "stored").mkdir(parents=True)
        shutil.copy(stored_db, tmp_path / "runs" / "stored" / "study.db")
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    with bounded(BOUND_S):
        result = CliRunner().invoke(app, spec.args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == spec.code, result.output
    assert_one_error_line(result.stderr, spec.message)
    assert tree(tmp_path) == before, "a refused command wrote files"


def test_cases_cover_every_command():
    commands = {spec.args[0] for spec in CASES.values()}
    assert commands == {"search", "report", "replay", "calibrate", "train", "inspect"}
    assert len(CASES) + len(CLUSTER_CASES) >= 103


# -- what only a Ray cluster can judge: a trial it could never place --------------------------------

CLUSTER_CASES = {
    "more CPUs than any node has": (
        {"cpu": 64},
        r"study.yaml: resources.cpu: 64 per run, but no node of the Ray cluster has more than \d+ CPUs",
    ),
    "more GPUs than any node has": (
        {"gpu": 64},
        r"study.yaml: resources.gpu: 64 per run, but no node of the Ray cluster has more than \d+ GPUs",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CLUSTER_CASES)
def test_a_trial_no_node_can_hold_is_refused_before_the_study_is_created(case, tmp_path):
    """Ray starts (it is what says what the cluster has), refuses, and is stopped: exit 2 within
    the bound, no study, lock or folder written, no process of it left."""
    resources, message = CLUSTER_CASES[case]
    write_study(tmp_path, lambda study_, space: study_.update(resources=resources))
    before = tree(tmp_path)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "kwsearch"), *SEARCH],
        cwd=tmp_path,
        env={**os.environ, "RAY_DISABLE_USAGE_STATS": "1"},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=BOUND_S * 3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    leftover = wait_for_no_members(process.pid, seconds=30)
    assert process.returncode == 2, stderr
    assert_one_error_line(stderr, message)
    assert tree(tmp_path) == before
    assert leftover == [], "Ray's processes outlived the refusal"


# -- the study file, read from Python -----------------------------------------------------------------


def test_the_base_study_is_valid(tmp_path):
    write_study(tmp_path)
    study_ = load_study(tmp_path / "study.yaml")
    assert study_.name == "bad"
    assert set(study_.space.dimensions) == {"width", "conv.family", "conv.kw.cell_num_ratio"}


def test_a_choice_that_makes_no_network_is_a_warning_when_others_do(tmp_path):
    """Static networks train, KernelWarehouse ones cannot be built with this cell ratio: the study
    runs (their configs are stored infeasible) and says so up front, naming the field."""
    study("@space.conv.kw.cell_inplane_ratio", 0.3)(tmp_path)
    study_ = load_study(tmp_path / "study.yaml")
    prepare_search(study_, runs_dir=tmp_path / "runs")
    assert study_.warnings and all("conv.family=kw" in w for w in study_.warnings)
    assert "space.yaml: conv.cell_inplane_ratio: gives cells" in study_.warnings[0]
    assert not (tmp_path / "runs").exists()


def test_load_study_raises_study_error_with_file_and_field(tmp_path):
    study("budget.trials", 0)(tmp_path)
    with pytest.raises(StudyError, match=r"study.yaml: budget.trials"):
        load_study(tmp_path / "study.yaml")


def test_an_absolute_schedule_that_outlasts_the_proxy_warns_naming_the_field(tmp_path):
    # the proxy runs 2 epochs; 1 -> 0 over 20 epochs ends it at 0.9
    space = {"conv": {"family": {"choice": ["static", "kw"]}, "kw": {"temperature": {"epochs": 20}}}}
    study("@space.conv", space["conv"])(tmp_path)
    study_ = load_study(tmp_path / "study.yaml")
    assert len(study_.warnings) == 1
    assert re.search(
        r"space.yaml: conv.kw.temperature: 20 epochs .* proxy's 2 \(proxy.epochs\)", study_.warnings[0]
    )
    assert "ends at temperature 0.9," in study_.warnings[0]
    fraction = {**space["conv"], "kw": {"temperature": {"fraction": 0.5}}}
    study("@space.conv", fraction)(tmp_path)
    assert load_study(tmp_path / "study.yaml").warnings == []

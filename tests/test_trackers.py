"""Experiment trackers: a tiny search with ``log: [tensorboard, mlflow]`` streams every run's
epochs, config and costs; the event files (TensorBoard's EventAccumulator) and the MLflow store
(MlflowClient) read back what the study's storage holds; so do the offline runs of one with
``log: [wandb]`` (their ``.wandb`` files read as wandb's own protobuf records), which leaves no
wandb process behind. A tracker asked for but not installed is refused naming the field."""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import zlib
from pathlib import Path

import pytest
import yaml

from kwsearch.records import StudyStore, default_storage
from kwsearch.search import StudyError, load_study, parse_study
from kwsearch.search.runner import run_search
from tests.helpers import tiny_study

SPACE = {"width": {"choice": [0.0625, 0.125]}}


@pytest.mark.slow
def test_a_search_streams_its_runs_to_tensorboard_and_mlflow(tmp_path):
    import ray
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = tiny_study(
        "tracked",
        SPACE,
        sampler={"name": "random", "seed": 0},
        budget={"trials": 2},
        baselines=["static"],
        log=["tensorboard", {"mlflow": {"experiment": "kw-tracked"}}],
    )
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(study))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run_search(load_study(path), runs_dir=tmp_path / "runs", progress=False)
    finally:
        ray.shutdown()
    run_dir = tmp_path / "runs" / "tracked"
    store = StudyStore.open(default_storage(run_dir), "tracked")
    runs = {f"trial {t.number}": t for t in store.trials() if t.trained}
    runs |= {f"baseline {t.baseline}": t for t in store.baselines()}
    assert len(runs) == 3

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kw-tracked")
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(logged) == set(runs)
    for name, record in runs.items():
        history = [h["val_accuracy"] for h in record.history]
        # TensorBoard: one event folder per run
        events = EventAccumulator(str(run_dir / "tensorboard" / name.replace(" ", "_")))
        events.Reload()
        assert [(e.step, e.value) for e in events.Scalars("val_accuracy")] == [
            (epoch, pytest.approx(value)) for epoch, value in enumerate(history, 1)
        ]
        assert events.Scalars("params")[0].value == record.costs.params
        config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert f"width: {record.config['width']}" in config
        # MLflow: one run per kwsearch run, its config as parameters, costs and history as metrics
        run = logged[name]
        assert run.info.status == "FINISHED" and run.data.tags["kwsearch.status"] == record.status
        assert float(run.data.params["width"]) == record.config["width"]
        assert run.data.params["conv.family"] == record.config["conv"]["family"]
        assert run.data.metrics["params"] == record.costs.params
        assert run.data.metrics["accuracy"] == pytest.approx(history[-1])
        steps = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted((m.step, m.value) for m in steps) == [
            (epoch, pytest.approx(value)) for epoch, value in enumerate(history, 1)
        ]
    assert not (tmp_path / "mlruns").exists()


def test_a_tracker_not_installed_is_refused_naming_the_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python hides a module: as if not installed
    with pytest.raises(StudyError, match=r"log: mlflow: the mlflow package is not installed"):
        parse_study(tiny_study("x", log=["mlflow"]))
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(StudyError, match=r"log: wandb: the wandb package is not installed"):
        parse_study(tiny_study("x", log=[{"wandb": {"project": "p"}}]))
    with pytest.raises(StudyError, match=r"log\.mlflow\.tracking_url"):
        parse_study(tiny_study("x", log=[{"mlflow": {"tracking_url": "x"}}]))
    assert parse_study(tiny_study("x", log=["tensorboard"])).settings.log.chosen() == ["tensorboard"]


@pytest.mark.slow
def test_a_search_writes_its_runs_as_wandb_offline_runs(tmp_path):
    import ray

    study = tiny_study(
        "tracked",
        SPACE,
        sampler={"name": "random", "seed": 0},
        budget={"trials": 2},
        baselines=["static"],
        log=["wandb"],
    )
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(study))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run_search(load_study(path), runs_dir=tmp_path / "runs", progress=False)
    finally:
        ray.shutdown()
    # the service process and its threads were ended with the search
    assert not _wandb_processes()
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("wandb")]
    run_dir = tmp_path / "runs" / "tracked"
    store = StudyStore.open(default_storage(run_dir), "tracked")
    runs = {f"trial {t.number}": t for t in store.trials() if t.trained}
    runs |= {f"baseline {t.baseline}": t for t in store.baselines()}
    assert len(runs) == 3

    logged = [_offline_run(file) for file in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")]
    assert sorted(run["name"] for run in logged) == sorted(runs)
    for run in logged:
        record = runs[run["name"]]
        history = [h["val_accuracy"] for h in record.history]
        assert run["project"] == run["group"] == "tracked"
        assert run["config"]["width"] == record.config["width"]
        assert run["config"]["conv.family"] == record.config["conv"]["family"]
        assert [(row["epoch"], row["val_accuracy"]) for row in run["history"]] == [
            (epoch, pytest.approx(value)) for epoch, value in enumerate(history, 1)
        ]
        assert run["summary"]["params"] == record.costs.params
        assert run["summary"]["status"] == record.status
        assert run["summary"]["accuracy"] == pytest.approx(history[-1])
        assert run["summary"]["epochs"] == len(history)
        assert run["exit_code"] == 0
    assert not (tmp_path / "wandb").exists() and not Path("wandb").exists()


def _offline_run(path: Path) -> dict:
    """What ``wandb sync`` would upload from an offline run's ``.wandb`` file: its records
    (``wandb_internal_pb2.Record``) in LevelDB's log format, after wandb's 7-byte header."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    run: dict = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a chunk header: padding
            position += 32768 - position % 32768
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zeros: the end of what was written
            break
        chunk = data[position + 7 : position + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum
        position += 7 + length
        pending += chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = Record.FromString(pending)
            pending = b""
            _read_record(record, run)
    return run


def _read_record(record, run: dict) -> None:
    def items(updates) -> dict:
        return {".".join(u.nested_key) or u.key: json.loads(u.value_json) for u in updates}

    kind = record.WhichOneof("record_type")
    if kind == "run":
        run |= {"name": record.run.display_name, "project": record.run.project, "group": record.run.run_group}
        run["config"].update(items(record.run.config.update))
    elif kind == "config":
        run["config"].update(items(record.config.update))
    elif kind == "history":
        run["history"].append(items(record.history.item))
    elif kind == "summary":
        run["summary"].update(items(record.summary.update))
    elif kind == "exit":
        run["exit_code"] = record.exit.exit_code


def _wandb_processes() -> list[str]:
    """This process's children that are wandb's (its service, ``wandb-core``)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and "wandb" in command:
            found.append(command)
    return found


def test_a_tracker_failing_mid_search_is_dropped_and_closed(tmp_path):
    from kwsearch.search.trackers import LogSettings, Trackers

    trackers = Trackers(LogSettings.model_validate(["wandb"]), "s", tmp_path)
    trackers.start("1", "trial 1", {"width": 0.125}, {"params": 10.0})
    assert _wandb_processes()
    with pytest.warns(RuntimeWarning, match=r"log: wandb: stopped logging \(KeyError"):
        trackers.epoch("2", {"epoch": 1, "val_accuracy": 0.5})  # a run it never started
    assert not _wandb_processes()  # dropped: its open run finished, its service ended
    trackers.epoch("1", {"epoch": 1, "val_accuracy": 0.5})  # the search goes on, unlogged
    trackers.close()
    [run] = [_offline_run(file) for file in tmp_path.glob("wandb/offline-run-*/run-*.wandb")]
    assert run["name"] == "trial 1" and run["exit_code"] == 1 and run["history"] == []

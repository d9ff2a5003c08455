"""Experiment trackers: a tiny search with ``log: [tensorboard, mlflow]`` streams every run's
epochs, config and costs; the event files (TensorBoard's EventAccumulator) and the MLflow store
(MlflowClient) read back what the study's storage holds. A tracker asked for but not installed
is refused naming the field."""

from __future__ import annotations

import sys

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
    with pytest.raises(StudyError, match=r"log\.mlflow\.tracking_url"):
        parse_study(tiny_study("x", log=[{"mlflow": {"tracking_url": "x"}}]))
    assert parse_study(tiny_study("x", log=["tensorboard"])).settings.log.chosen() == ["tensorboard"]

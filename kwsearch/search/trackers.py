"""Experiment trackers a search streams its runs to (the study's ``log:``): TensorBoard event
files, an MLflow tracking store and Weights & Biases offline runs, written by the driver through
the trackers' own clients as the study's storage is (every epoch as it comes, each run's config
and costs when it starts, how it ended and its final values when it ends).

    log: [tensorboard, mlflow, wandb]               # runs/NAME/tensorboard/, mlflow/, wandb/
    log: {mlflow: {tracking_uri: http://host:5000}}  # any MLflow tracking URI

The trackers mirror the study; the study's storage stays the record: a tracker that fails while
the search runs (a tracking server gone) is dropped with a warning, the search goes on. Their
packages are optional (``pip install 'kwsearch[track]'``); a study that asks for one not
installed is refused before anything runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

# tracker -> the module its client needs
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    logdir: str | None = None  # default: runs/NAME/tensorboard


class MlflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tracking_uri: str | None = None  # default: SQLite in runs/NAME/mlflow/
    experiment: str | None = None  # default: the study's name


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dir: str | None = None  # wandb's own meaning: runs go to DIR/wandb/; default: runs/NAME
    project: str | None = None  # default: the study's name


class LogSettings(BaseModel):
    """The study's ``log:``: a list of tracker names (``[tensorboard, mlflow]``), entries of which
    may carry options (``{mlflow: {tracking_uri: ...}}``), or one mapping of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tensorboard: TensorBoardOptions | None = None
    mlflow: MlflowOptions | None = None
    wandb: WandbOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            merged: dict[str, Any] = {}
            for entry in value:
                if isinstance(entry, str):
                    merged[entry] = {}
                elif isinstance(entry, dict):
                    merged.update(entry)
                else:
                    raise ValueError(f"{entry!r}: a tracker's name, or {{name: {{options}}}}")
            value = merged
        if isinstance(value, dict):
            return {name: {} if options is None else options for name, options in value.items()}
        return value

    def chosen(self) -> list[str]:
        return [name for name in PACKAGES if getattr(self, name) is not None]

    def missing(self) -> dict[str, str]:
        """The chosen trackers whose package is not installed: name -> package."""
        return {n: PACKAGES[n] for n in self.chosen() if importlib.util.find_spec(PACKAGES[n]) is None}


class TrackerError(ValueError):
    """A tracker that cannot be opened (a tracking URI that does not answer, say)."""


class _Tracker(Protocol):
    def start(self, key: str, name: str, config: dict[str, Any], summary: dict[str, float]) -> None: ...
    def epoch(self, key: str, metrics: dict[str, float]) -> None: ...
    def finish(self, key: str, status: str, summary: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class Trackers:
    """The trackers a study chose, for its runs (``key``: the run's key to the driver, ``name``:
    what the tracker calls it, e.g. ``trial 7``). Raises TrackerError for a tracker that cannot
    be opened."""

    def __init__(self, settings: LogSettings, study: str, run_dir: Path) -> None:
        self._trackers: list[_Tracker] = []
        if settings.tensorboard is not None:
            root = settings.tensorboard.logdir
            self._trackers.append(_TensorBoard(Path(root) if root else run_dir / "tensorboard"))
        if settings.mlflow is not None:
            try:
                self._trackers.append(_Mlflow(settings.mlflow, study, run_dir / "mlflow"))
            except Exception as error:  # MLflow's, for a store it cannot open
                raise TrackerError(f"log: mlflow: cannot open the tracking store ({error})") from None
        if settings.wandb is not None:
            folder = Path(settings.wandb.dir) if settings.wandb.dir else run_dir
            try:
                (folder / "wandb").mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise TrackerError(f"log: wandb: cannot write its runs ({error})") from None
            self._trackers.append(_Wandb(folder, settings.wandb.project or study, study))

    def start(self, key: str, name: str, config: dict[str, Any], summary: dict[str, float]) -> None:
        """A run starts: its config (flattened to dotted names) and what is known before training
        (its costs, its seed)."""
        self._each("start", key, name, _flatten(config), summary)

    def epoch(self, key: str, metrics: dict[str, float]) -> None:
        self._each("epoch", key, metrics)

    def finish(self, key: str, status: str, summary: dict[str, float]) -> None:
        """A run ended (``status`` as stored: complete, pruned, failed) with its final values."""
        self._each("finish", key, status, summary)

    def close(self) -> None:
        self._each("close")

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self._trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as error:  # any client's; the storage has what the tracker misses
                self._trackers.remove(tracker)
                with contextlib.suppress(Exception):  # what it holds open (wandb: its service process)
                    tracker.close()
                warnings.warn(
                    f"log: {type(tracker).__name__.strip('_').lower()}: stopped logging "
                    f"({type(error).__name__}: {error}); the study's storage has every run",
                    RuntimeWarning,
                    stacklevel=2,
                )


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"conv": {"family": "kw"}}`` as ``{"conv.family": "kw"}``; lists as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | tuple) else value
    return flat


class _TensorBoard:
    """One event folder per run, ``ROOT/<name>``: scalars per epoch (step = epoch), the config as
    text and, when the run ends, its hyperparameters with its final values (the HParams tab)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._writers: dict[str, Any] = {}
        self._configs: dict[str, dict[str, Any]] = {}

    def start(self, key: str, name: str, config: dict[str, Any], summary: dict[str, float]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.root / name.replace(" ", "_")))
        writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))
        for metric, value in summary.items():
            writer.add_scalar(metric, value, 0)
        self._writers[key], self._configs[key] = writer, config

    def epoch(self, key: str, metrics: dict[str, float]) -> None:
        writer = self._writers[key]
        step = int(metrics["epoch"])
        for metric, value in metrics.items():
            if metric != "epoch":
                writer.add_scalar(metric, value, step)
        writer.flush()

    def finish(self, key: str, status: str, summary: dict[str, float]) -> None:
        writer = self._writers.pop(key)
        hparams = {
            k: v if isinstance(v, int | float | str | bool) else str(v)
            for k, v in self._configs.pop(key).items()
        }
        writer.add_hparams({**hparams, "status": status}, summary, run_name=".")
        writer.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _Mlflow:
    """One MLflow run per kwsearch run in the study's experiment, tagged with its key (a resumed
    run continues its MLflow run): the config as parameters, metrics per epoch (step = epoch),
    the costs and final values as metrics, the status as a tag."""

    def __init__(self, options: MlflowOptions, study: str, folder: Path) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database migrations say INFO
        folder.mkdir(parents=True, exist_ok=True)
        # MLflow 3 keeps local stores in a database (its file store is read-only now)
        uri = options.tracking_uri or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        name = options.experiment or study
        experiment = self.client.get_experiment_by_name(name)
        self.experiment = (
            experiment.experiment_id
            if experiment is not None
            # artifacts beside the database, not in the working directory (a remote store has its own)
            else self.client.create_experiment(
                name, artifact_location=None if options.tracking_uri else (folder / "artifacts").as_uri()
            )
        )
        self._runs: dict[str, str] = {}

    def start(self, key: str, name: str, config: dict[str, Any], summary: dict[str, float]) -> None:
        earlier = self.client.search_runs(
            [self.experiment], filter_string=f"tags.`kwsearch.run` = '{key}'", max_results=1
        )
        if earlier:
            run_id = earlier[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment, run_name=name, tags={"kwsearch.run": key})
            run_id = run.info.run_id
            for param, value in config.items():
                self.client.log_param(run_id, param, value)
        for metric, value in summary.items():
            self.client.log_metric(run_id, metric, value)
        self._runs[key] = run_id

    def epoch(self, key: str, metrics: dict[str, float]) -> None:
        step = int(metrics["epoch"])
        for metric, value in metrics.items():
            if metric != "epoch":
                self.client.log_metric(self._runs[key], metric, value, step=step)

    def finish(self, key: str, status: str, summary: dict[str, float]) -> None:
        run_id = self._runs.pop(key)
        for metric, value in summary.items():
            self.client.log_metric(run_id, metric, value)
        self.client.set_tag(run_id, "kwsearch.status", status)
        self.client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")

    def close(self) -> None:
        for run_id in self._runs.values():  # cut off (Ctrl-C): continued when the search is run again
            self.client.set_terminated(run_id, status="KILLED")
        self._runs.clear()


class _Wandb:
    """One Weights & Biases run per kwsearch run, always offline (``DIR/wandb/offline-run-*``,
    uploaded later, if ever, by ``wandb sync``), in the study's project and group: the config, the
    costs in the summary, every epoch's metrics (plotted against ``epoch``), and when it ends its
    final values and status in the summary (exit code 1 when it failed). Quiet: no banners, no
    console capture, no system metrics. The runs share wandb's service process, ended by
    :meth:`close` (unless the user's own ``wandb.run`` still needs it)."""

    def __init__(self, folder: Path, project: str, group: str) -> None:
        import wandb

        self.folder, self.project, self.group = folder, project, group
        self.settings = wandb.Settings(
            mode="offline",  # never the network: not WANDB_MODE, not a login
            silent=True,
            console="off",
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
            x_save_requirements=False,
            disable_git=True,
            disable_code=True,
            save_code=False,
        )
        self._runs: dict[str, Any] = {}

    def start(self, key: str, name: str, config: dict[str, Any], summary: dict[str, float]) -> None:
        import wandb

        # a run continued after Ctrl-C is a new run of the same name: offline runs cannot resume
        run = wandb.init(
            dir=str(self.folder),
            project=self.project,
            group=self.group,
            name=name,
            config=config,
            mode="offline",
            reinit="create_new",  # runs side by side, the user's wandb.run untouched
            settings=self.settings,
        )
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        run.summary.update(summary)
        self._runs[key] = run

    def epoch(self, key: str, metrics: dict[str, float]) -> None:
        self._runs[key].log(metrics)

    def finish(self, key: str, status: str, summary: dict[str, float]) -> None:
        run = self._runs.pop(key)
        run.summary.update({**summary, "status": status})
        run.finish(exit_code=1 if status == "failed" else 0)

    def close(self) -> None:
        import wandb

        try:
            for run in self._runs.values():  # cut off (Ctrl-C): run again next time, as a new run
                run.finish(exit_code=1)
        finally:
            self._runs.clear()
            if wandb.run is None:
                wandb.teardown()  # its service process and threads

"""The ``kwsearch`` command line."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import typer

from kwsearch import __version__
from kwsearch.formats import format_cost

app = typer.Typer(
    name="kwsearch",
    help="Architecture search and ablation for KernelWarehouse-style dynamic convolution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    # an option callback runs while the options are parsed, before a missing command is an error
    if asked:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    pass


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Report what this machine offers kwsearch: versions, devices, the built-in data set, the
    cache of timed execution paths."""
    import optuna
    import ray
    import torch

    from kwsearch.data import FASHION_MNIST, DataSourceError, file_paths, locate_files
    from kwsearch.nn import PathCache, measuring_enabled
    from kwsearch.train import default_device

    try:
        locate_files(FASHION_MNIST, download=False)
        fashion = "found"
        folders = sorted({str(path.parent) for path in file_paths(FASHION_MNIST).values()})
    except DataSourceError as error:
        fashion, folders = f"missing: {error}", []
    facts = {
        "kwsearch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "optuna": optuna.__version__,
        "ray": ray.__version__,
        "fashion_mnist": fashion,
        "measure_paths": measuring_enabled(),
        "fashion_mnist_folders": folders,
    }
    paths = PathCache(default_device())
    facts["path_cache"] = str(paths.file)
    facts["path_choices"] = len(paths.entries)  # timed on this machine's default device and torch
    if as_json:
        typer.echo(json.dumps(facts))
        return
    facts["fashion_mnist"] += f" in {', '.join(folders)}" if folders else ""
    del facts["fashion_mnist_folders"]
    for key, value in facts.items():
        typer.echo(f"{key:>14}: {value}")


def _bad_input(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _check_folder(option: str, folder: Path) -> None:
    """Exit 2 when ``folder`` cannot be a folder: it, or the nearest of its parents that exists,
    is a file."""
    existing = next(path for path in [folder, *folder.absolute().parents] if path.exists())
    if not existing.is_dir():
        raise _bad_input(f"{option}: {existing} is a file, not a folder")


@app.command()
def inspect(
    model_yaml: Path = typer.Argument(..., help="A model config (YAML)."),
    input_size: tuple[int, int] | None = typer.Option(
        None, "--input-size", help="Input height and width (default: the config's input_size)."
    ),
    paths: bool = typer.Option(
        False,
        "--paths",
        help="Also build the model on the device and show each dynamic layer's execution path for a "
        "training batch, timed there (or read from the cache) unless KWSEARCH_MEASURE_PATHS=0.",
    ),
    batch_size: int = typer.Option(128, "--batch-size", help="With --paths: the training batch size."),
    device: str | None = typer.Option(
        None, "--device", help="With --paths: cpu, cuda, cuda:1 ... (default: cuda if available)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Build a model on the meta device and print its parameters, MACs and warehouse plan."""
    import torch

    from kwsearch.models import ModelConfigError, account, build_model, load_model_config

    try:
        config = load_model_config(model_yaml)
        if input_size is not None and min(input_size) < 1:
            raise ModelConfigError(f"--input-size: both sides must be >= 1, got {list(input_size)}")
        if batch_size < 1:
            raise ModelConfigError(f"--batch-size: must be >= 1, got {batch_size}")
        target = _device(device) if paths else None
        with torch.device("meta"):
            model = build_model(config, model_yaml)
        height, width = input_size or config.input_size
        where = "--input-size" if input_size else f"{model_yaml}: input_size"
        try:
            report = account(model, (config.in_chans, height, width))
        except ModelConfigError as error:
            raise ModelConfigError(f"{where}: {[height, width]}: {error}") from None
    except ModelConfigError as error:
        raise _bad_input(str(error)) from None
    choices = []
    if target is not None:
        choices = _layer_paths(
            build_model(config, model_yaml), (batch_size, config.in_chans, height, width), target
        )
    if as_json:
        facts = {"model": str(model_yaml), "backbone": config.backbone, **report.as_dict()}
        if paths:
            facts["paths"] = [
                {
                    "layer": c.name,
                    "input": list(c.input.shape),
                    "path": c.choice.path,
                    "source": c.choice.source,
                    "milliseconds": dict(c.choice.milliseconds),
                }
                for c in choices
            ]
        typer.echo(json.dumps(facts))
        return
    typer.echo(f"{model_yaml}: {config.backbone}, conv family {config.conv.get('family', 'static')}")
    typer.echo(f"  parameters  {report.params:>14,}")
    typer.echo(f"    static    {report.static_params:>14,}")
    typer.echo(f"    kernels   {report.kernel_params:>14,}   (warehouse cells / kernel banks)")
    typer.echo(f"    attention {report.attention_params:>14,}")
    if report.effective_params != report.params:
        typer.echo(f"  effective   {report.effective_params:>14,}   (kept by sparse training)")
    typer.echo(f"  MACs        {report.macs:>14,}   at {config.in_chans}x{height}x{width}")
    for w in report.warehouses:
        shape = "x".join(str(d) for d in w.cell_shape)
        typer.echo(f"  warehouse {w.name}: n={w.num_cells}, cells {shape}, {w.params:,} params")
        typer.echo(f"    layers: {', '.join(w.layers)}")
    if paths:
        typer.echo(
            f"  execution paths at batch {batch_size} on {target}:" if choices else "  no dynamic layer"
        )
        for c in choices:
            times = ", ".join(f"{p} {t:.2f} ms" for p, t in c.choice.milliseconds.items())
            typer.echo(f"    {c.name:<28} {c.input.describe():<32} {c.choice.path:<15} {c.choice.source}")
            if times:
                typer.echo(f"      {times}")


def _device(name: str | None):
    """The torch device ``name`` names (default: cuda if available). Raises ModelConfigError."""
    from kwsearch.models import ModelConfigError
    from kwsearch.train import default_device, parse_device

    if name is None:
        return default_device()
    try:
        return parse_device(name)
    except ValueError as error:
        raise ModelConfigError(f"--device: {error}") from None


def _layer_paths(model, batch_shape: tuple[int, ...], device) -> list:
    """The path each dynamic layer of ``model`` takes on ``device`` for training batches of
    ``batch_shape`` under the default recipe's autocast and memory layout."""
    import torch

    from kwsearch.train import Recipe, choose_training_paths, to_channels_last

    recipe = Recipe()
    model.to(device)
    if recipe.uses_channels_last(device):
        to_channels_last(model)
    example = torch.randn(batch_shape, generator=torch.Generator().manual_seed(0)).to(device)
    return choose_training_paths(model, example, recipe)


@app.command()
def train(
    model_yaml: Path = typer.Argument(..., help="A model config (YAML)."),
    data: str = typer.Option(
        ..., "--data", help="Data set: fashion-mnist, mnist, cifar10, cifar100, folder, prepared, synthetic."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default: the recipe's)."),
    train_subset: int | None = typer.Option(
        None, "--train-subset", help="Stratified subset of N training images."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    seed: int | None = typer.Option(None, "--seed"),
    recipe_yaml: Path | None = typer.Option(
        None, "--recipe", help="A recipe (YAML); options above override it."
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="A published recipe to start from (docs/replay.md); the recipe file and options win.",
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Where the data set's files are."),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Checkpoint every epoch here and resume from it."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of the results."),
) -> None:
    """Train one model and print its metrics."""
    from kwsearch.data import DataSourceError, dataset_names
    from kwsearch.models import ModelConfigError, load_model_config
    from kwsearch.train import (
        OutOfMemory,
        RecipeError,
        TrainingDiverged,
        load_recipe,
        option_name,
        parse_device,
        train_model,
    )

    options = {
        "epochs": epochs,
        "train_subset": train_subset,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "preset": preset,
    }

    def recipe_error(message: str) -> str:
        """A data control the data cannot meet ("batch_size: ..."), blamed on where it was set."""
        field = message.split(":", 1)[0]
        if options.get(field) is not None:
            return f"{option_name(field)} {options[field]}{message[len(field) :]}"
        return f"{recipe_yaml or 'the default recipe'}: {message}"

    try:
        if data.strip().lower() not in dataset_names():
            raise _bad_input(f"--data: {data!r} is not one of {', '.join(dataset_names())}")
        try:
            target = parse_device(device) if device else None
        except ValueError as error:
            raise _bad_input(f"--device: {error}") from None
        if checkpoint_dir is not None:
            _check_folder(f"--checkpoint-dir {checkpoint_dir}", checkpoint_dir)
        config = load_model_config(model_yaml)
        recipe = load_recipe(recipe_yaml, **options)

        def report(metrics: dict) -> None:
            if not as_json:
                typer.echo(
                    f"epoch {metrics['epoch']:>3}  train loss {metrics['train_loss']:.4f}  "
                    f"val loss {metrics['val_loss']:.4f}  val acc {metrics['val_accuracy']:.4f}  "
                    f"({metrics['epoch_seconds']:.1f} s)"
                )

        try:
            result = train_model(
                config,
                data,
                recipe,
                device=target,
                data_root=data_root,
                checkpoint_dir=checkpoint_dir,
                on_epoch=report,
            )
        except RecipeError as error:
            raise _bad_input(recipe_error(str(error))) from None
    except RecipeError as error:
        raise _bad_input(str(error)) from None
    except ModelConfigError as error:
        message = str(error)
        raise _bad_input(
            message if message.startswith(str(model_yaml)) else f"{model_yaml}: {message}"
        ) from None
    except ValueError as error:  # an impossible split, a foreign checkpoint
        raise _bad_input(str(error)) from None
    except (TrainingDiverged, OutOfMemory, DataSourceError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    summary = {
        "val_accuracy": result.last["val_accuracy"],
        "val_loss": result.last["val_loss"],
        "params": result.params,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "resumed_from_epoch": result.resumed_from_epoch,
        "history": result.history,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        accuracy = summary["val_accuracy"]
        typer.echo(f"{result.params:,} parameters, val accuracy {accuracy:.4f}, {result.seconds:.1f} s")


@app.command()
def prepare(
    source: Path = typer.Argument(
        ..., help="An image folder: a folder of images per class, or train/ and val/ (or test/) of them."
    ),
    out: Path = typer.Argument(..., help="The cache folder to write: the `prepared` data set's root."),
    size: int = typer.Option(..., "--size", help="Shorter side in pixels; the centre square is kept."),
    mode: str = typer.Option("RGB", "--mode", help="RGB, or L for grey."),
    workers: int | None = typer.Option(None, "--workers", help="Decoding threads (default: one per core)."),
    verify: bool = typer.Option(False, "--verify", help="Then re-read every image against its digest."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Prepare an image folder once for training: uint8 images on disk, read in memory or streamed
    (data set `prepared`); an interrupted preparation resumes where it stopped."""
    from kwsearch.data import DataSourceError, prepare_image_cache, verify_image_cache

    try:
        summary = prepare_image_cache(source, out, size, mode=mode, workers=workers)
        verified = verify_image_cache(out) if verify else None
    except ValueError as error:
        raise _bad_input(f"{source}: {error}") from None
    except DataSourceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps({**summary.as_dict(), "verified_chunks": verified}))
        return
    parts = ", ".join(f"{part} {count:,}" for part, count in summary.parts.items())
    typer.echo(
        f"{out}: {parts} images at {size}x{size} {mode} ({summary.chunks} chunks, {summary.reused} done "
        f"before) in {summary.seconds:.1f} s" + ("; every chunk verified" if verify else "")
    )


@app.command()
def search(
    study_yaml: Path = typer.Argument(..., help="A study (YAML): space, data, proxy recipe, budget..."),
    trials: int | None = typer.Option(
        None, "--trials", help="Trained trials wanted in all (default: the study's)."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Store under this study name (default: the file's)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: sqlite under runs/NAME/)."
    ),
    address: str | None = typer.Option(None, "--address", help="Join this Ray cluster (default: local Ray)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where studies keep their files."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line: the study's summary."),
) -> None:
    """Run a study, or continue it where it stopped, and print its front."""
    from kwsearch.records import StudyBusy, check_free, driver_lock

    try:
        # a second driver is refused at once, before the study's validation takes its seconds
        check_free(runs_dir / _study_name(study_yaml, name))
    except StudyBusy as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None

    from kwsearch.search import StudyError, load_study
    from kwsearch.search.preflight import prepare_search

    try:
        study = load_study(study_yaml, name=name)
        if trials is not None and trials < 1:
            raise StudyError(f"--trials: must be >= 1, got {trials}")
        # every check that needs no Ray cluster: nothing is written before they all pass
        setup = prepare_search(study, storage=storage, runs_dir=runs_dir)
    except StudyError as error:
        raise _bad_input(str(error)) from None
    for warning in study.warnings:
        typer.echo(f"warning: {warning}", err=True)
    try:
        # the lock before Ray is even imported: a second driver is refused at once
        with driver_lock(setup.run_dir):
            from kwsearch.execution import ClusterError
            from kwsearch.search.runner import run_prepared

            try:
                summary = run_prepared(setup, trials=trials, address=address)
            except (StudyError, ClusterError) as error:
                raise _bad_input(str(error)) from None
    except StudyBusy as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    if summary.stop_reason:
        typer.echo(f"warning: stopped early: {summary.stop_reason}", err=True)
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        for line in summary.lines():
            typer.echo(line)
        typer.echo(f"storage: {setup.storage}")
    if summary.interrupted:
        typer.echo("interrupted: run the same command to continue the study", err=True)
        raise typer.Exit(code=130)
    if summary.no_result:
        typer.echo(f"error: {study.name}: {summary.no_result}", err=True)
        raise typer.Exit(code=1)


def _study_name(study_yaml: Path, name: str | None) -> str:
    """The name the study in ``study_yaml`` runs under, as far as the file says before it is
    validated (a file that cannot say is refused by the validation)."""
    from kwsearch.yaml_file import YamlFileError, read_yaml

    if name is not None:
        return name
    try:
        data = read_yaml(study_yaml)
    except YamlFileError:
        data = None
    named = data.get("name") if isinstance(data, dict) else None
    return named if isinstance(named, str) else study_yaml.stem


@app.command()
def report(
    studies: list[str] = typer.Argument(
        ..., help="A study file (YAML) or the name of a stored study; two or more: one page comparing them."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="The HTML file (default: reports/NAME.html, reports/A_vs_B.html)."
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where studies keep their files."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: the study file's, or sqlite under runs/NAME/)."
    ),
) -> None:
    """Write a study's Pareto report: one self-contained HTML file, with CSV, Parquet and the front
    as Markdown and LaTeX tables beside it; or, given several studies, one page comparing them."""
    from kwsearch.report import ReportError, default_output, load, write_comparison, write_report
    from kwsearch.search import StudyError
    from kwsearch.search.locate import locate_study

    if out is not None:
        _check_folder(f"--out {out}", out.parent)
    try:
        found = [locate_study(study, storage, runs_dir) for study in studies]
        loaded = [load(f.storage, f.name, target=f.arguments) for f in found]
        if len(loaded) > 1:
            files = write_comparison(loaded, out or default_output("_vs_".join(f.name for f in found)))
    except (StudyError, ReportError) as error:
        raise _bad_input(str(error)) from None
    if len(loaded) > 1:
        typer.echo(f"{files.html}  ({files.html.stat().st_size / 1e6:.1f} MB)")
        typer.echo(f"fronts: {files.front_md}, {files.front_tex}")
        return
    files = write_report(loaded[0], out or default_output(found[0].name))
    typer.echo(f"{files.html}  ({files.html.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"data: {files.csv}, {files.parquet}, {files.history_csv}")
    typer.echo(f"front: {files.front_md}, {files.front_tex}")


@app.command()
def replay(
    study: str = typer.Argument(..., help="A study file (YAML) or the name of a stored study."),
    top: int | None = typer.Option(None, "--top", help="Replay K trials spread along the Pareto front."),
    trials: str | None = typer.Option(None, "--trials", help="Replay these trials (numbers: I,J,...)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 (default: the study's)."),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="A recipe (YAML) instead of the study's replay."
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: the study file's, or sqlite under runs/NAME/)."
    ),
    address: str | None = typer.Option(None, "--address", help="Join this Ray cluster (default: local Ray)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where studies keep their files."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line: the replay's summary."),
) -> None:
    """Train a study's best configs with its full recipe, once per seed (or resume that), and
    print full against proxy accuracy."""
    from kwsearch.execution import ClusterError
    from kwsearch.records import StudyBusy
    from kwsearch.replay import ReplayError
    from kwsearch.replay.runner import run_replay
    from kwsearch.search import StudyError

    def numbers(option: str, text: str | None) -> list[int] | None:
        if text is None:
            return None
        try:
            return [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError:
            raise _bad_input(f"{option}: comma-separated integers, got {text!r}") from None

    def finished(run, status: str) -> None:
        typer.echo(f"trial {run.proxy_trial} seed {run.seed}: {status}", err=True)

    try:
        if top is not None and trials is not None:
            raise ReplayError("--top and --trials exclude each other: give one")
        summary = run_replay(
            study,
            top=top,
            trials=numbers("--trials", trials),
            seeds=numbers("--seeds", seeds),
            recipe=recipe,
            storage=storage,
            address=address,
            runs_dir=runs_dir,
            on_finish=finished,
        )
    except (ReplayError, StudyError, ClusterError) as error:
        raise _bad_input(str(error)) from None
    except StudyBusy as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"{summary.study}: replayed trials {', '.join(map(str, summary.trials))} with seeds "
            f"{', '.join(map(str, summary.seeds))}: {summary.trained} runs trained, "
            f"{summary.skipped} done before"
        )
        pairs = {p["trial"]: p for p in summary.agreement.pairs}
        for number, result in summary.results.items():
            mean, std = result.test_accuracy_mean, result.test_accuracy_std
            pair = pairs.get(number)
            before = ""
            if pair:
                before = f"params {format_cost(pair.get('params'))}  proxy {pair['proxy_accuracy']:.4f}  "
            typer.echo(
                f"  trial {number:>4}  {before}full {mean:.4f} ± {std:.4f}  ({len(result.seeds)} seeds)"
            )
        for line in summary.agreement.describe():
            typer.echo(f"  {line}")
        typer.echo(
            f"  front of the replayed: trials {', '.join(map(str, summary.agreement.front)) or 'none'}"
        )
        typer.echo(f"  models: {summary.folders and Path(next(iter(summary.folders.values()))).parent}")
    if summary.failed:
        for failure in summary.failed:
            typer.echo(
                f"error: trial {failure['proxy_trial']} seed {failure['seed']}: {failure['error']}", err=True
            )
        raise typer.Exit(code=1)


@app.command()
def calibrate(
    study_yaml: Path = typer.Argument(..., help="A study (YAML)."),
    configs: int | None = typer.Option(
        None, "--configs", help="Configs to measure (default 8; a calibrated study keeps its own)."
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", help="Proxy seeds per config (default 2; a calibrated study may be given more)."
    ),
    target: float | None = typer.Option(
        None, "--target", help="The Spearman's rho a proxy must reach (default 0.9)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: the study file's, or sqlite under runs/NAME/)."
    ),
    address: str | None = typer.Option(None, "--address", help="Join this Ray cluster (default: local Ray)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where studies keep their files."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line: the calibration."),
) -> None:
    """Measure how well the study's proxy ranks configs like full training (or continue that), and
    which cheaper proxy ranks well enough."""
    from kwsearch.calibrate import CalibrationError
    from kwsearch.calibrate.runner import run_calibration
    from kwsearch.execution import ClusterError
    from kwsearch.records import StudyBusy
    from kwsearch.search import StudyError, load_study

    try:
        summary = run_calibration(
            load_study(study_yaml),
            configs=configs,
            seeds=seeds,
            target=target,
            storage=storage,
            address=address,
            runs_dir=runs_dir,
            progress=lambda line: typer.echo(line, err=True),
        )
    except (CalibrationError, StudyError, ClusterError) as error:
        raise _bad_input(str(error)) from None
    except StudyBusy as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command to continue the calibration", err=True)
        raise typer.Exit(code=130) from None
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        _print_calibration(summary.calibration)
        typer.echo(f"runs: {summary.folder}")
    for failure in summary.failed:
        typer.echo(
            f"error: {failure['kind']} config {failure['config']} seed {failure['seed']}: {failure['error']}",
            err=True,
        )
    if summary.interrupted:
        typer.echo("interrupted: run the same command to continue the calibration", err=True)
        raise typer.Exit(code=130)
    if summary.failed:
        raise typer.Exit(code=1)


def _print_calibration(calibration) -> None:
    """A calibration as a person reads it: each config, the cheaper proxies, the verdict."""

    def accuracy(mean: float | None, std: float | None) -> str:
        return "   –   " if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")

    typer.echo(f"{'config':>6}  {'trial':>5}  {'params':>12}  {'proxy':<16}  full")
    for row in calibration.configs:
        trial = "" if row["trial"] is None else str(row["trial"])
        proxy, full = (
            accuracy(row["proxy_mean"], row["proxy_std"]),
            accuracy(row["full_mean"], row["full_std"]),
        )
        typer.echo(f"{row['index']:>6}  {trial:>5}  {format_cost(row['params']):>12}  {proxy:<16}  {full}")
    typer.echo("cheaper proxies (Spearman's rho against full training, 95% bootstrap interval):")
    for proxy in calibration.cheap_proxies:
        rho = proxy.spearman
        interval = rho.bootstrap_ci95 if rho else None
        figure = (
            "–"
            if rho is None
            else f"{rho.value:.3f}" + (f" ({interval[0]:.3f} to {interval[1]:.3f})" if interval else "")
        )
        mark = "  meets the target" if proxy.meets_target else ""
        typer.echo(f"  {proxy.cost:>5.0%}  {proxy.label}: {figure}{mark}")
    for line in calibration.verdict:
        typer.echo(line)


def main() -> None:
    try:
        app()
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


def _exit_now(code: int | str | None) -> None:
    """End the process the way the interpreter would, less its final garbage collection: by then
    torch, Ray, pandas and plotly have filled the heap, and collecting it only to free what the
    operating system reclaims anyway took 1.1 to 1.7 s of every command's exit. Threads are
    joined and the cleanup handlers registered with atexit run (Ray's shutdown, logging's flush,
    temporary folders), as at a normal exit; a crash (any other exception) exits normally."""
    import atexit
    import contextlib
    import os
    import sys
    import threading

    if isinstance(code, str):  # as SystemExit("message") does: the message, exit status 1
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be written
            stream.flush()
    os._exit(code or 0)

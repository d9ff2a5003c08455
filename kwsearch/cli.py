"""The ``kwsearch`` command line."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import typer

from kwsearch import __version__

app = typer.Typer(
    name="kwsearch",
    help="Architecture search and ablation for KernelWarehouse-style dynamic convolution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Report what this machine offers kwsearch: versions, devices, the built-in data set."""
    import optuna
    import ray
    import torch

    from kwsearch.data import FASHION_MNIST, DataSourceError, locate_files

    try:
        locate_files(FASHION_MNIST, download=False)
        fashion = "found"
    except DataSourceError as error:
        fashion = f"missing: {error}"
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
    }
    if as_json:
        typer.echo(json.dumps(facts))
        return
    for key, value in facts.items():
        typer.echo(f"{key:>14}: {value}")


def _bad_input(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@app.command()
def inspect(
    model_yaml: Path = typer.Argument(..., help="A model config (YAML)."),
    input_size: tuple[int, int] | None = typer.Option(
        None, "--input-size", help="Input height and width (default: the config's input_size)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Build a model on the meta device and print its parameters, MACs and warehouse plan."""
    import torch

    from kwsearch.models import ModelConfigError, account, build_model, load_model_config

    try:
        config = load_model_config(model_yaml)
        if input_size is not None and min(input_size) < 1:
            raise ModelConfigError(f"--input-size: both sides must be >= 1, got {input_size}")
        with torch.device("meta"):
            model = build_model(config, model_yaml)
    except ModelConfigError as error:
        raise _bad_input(str(error)) from None
    height, width = input_size or config.input_size
    report = account(model, (config.in_chans, height, width))
    if as_json:
        typer.echo(json.dumps({"model": str(model_yaml), "backbone": config.backbone, **report.as_dict()}))
        return
    typer.echo(f"{model_yaml}: {config.backbone}, conv family {config.conv.get('family', 'static')}")
    typer.echo(f"  parameters  {report.params:>14,}")
    typer.echo(f"    static    {report.static_params:>14,}")
    typer.echo(f"    kernels   {report.kernel_params:>14,}   (warehouse cells / kernel banks)")
    typer.echo(f"    attention {report.attention_params:>14,}")
    typer.echo(f"  MACs        {report.macs:>14,}   at {config.in_chans}x{height}x{width}")
    for w in report.warehouses:
        shape = "x".join(str(d) for d in w.cell_shape)
        typer.echo(f"  warehouse {w.name}: n={w.num_cells}, cells {shape}, {w.params:,} params")
        typer.echo(f"    layers: {', '.join(w.layers)}")


def main() -> None:
    app()

"""The ``kwsearch`` command line."""

from __future__ import annotations

import json
import platform

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


def main() -> None:
    app()

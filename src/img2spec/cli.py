"""The `img2spec` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .logs import setup_logging

app = typer.Typer(
    help="img2spec: predict SDSS-like optical spectra from Pan-STARRS grizy cutouts.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("validate-params")
def validate_params(params: Path = typer.Option(Path("params.yaml"), help="parameter file")) -> None:
    """Check params.yaml: types, ranges and unknown keys."""
    from .config import ConfigError, load_params

    try:
        load_params(params)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    typer.echo(f"{params}: OK")


@app.command()
def version() -> None:
    """Print the img2spec version."""
    from . import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover
    setup_logging()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

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


@app.command()
def tune(
    part: str = typer.Option("all", help="which study: vae, cnn or all"),
    apply: bool = typer.Option(False, "--apply", help="write the best trials' params into params.yaml (runs no trials)"),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="total trials of each study (default: params)"),
    storage: Optional[str] = typer.Option(None, help="Optuna RDB URL (default: $OPTUNA_STORAGE, else tune.storage)"),
    worker: int = typer.Option(0, min=0, help="worker index: offsets the sampler seed of parallel workers"),
    params: Path = typer.Option(Path("params.yaml"), help="parameter file"),
) -> None:
    """Optuna studies of the VAE and the CNN, every trial in MLflow (resumable; many workers may share one DB)."""
    import json

    from .config import ConfigError
    from .tuning import apply_tuned, run_tune

    setup_logging()
    try:
        if apply:
            report = apply_tuned(params, part=part, storage=storage)
        else:
            report = run_tune(params, part=part, n_trials=n_trials, storage=storage, worker=worker)
    except (ConfigError, LookupError, ValueError) as exc:
        typer.echo(f"img2spec tune: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(report, indent=2, default=str))


def main() -> None:  # pragma: no cover
    setup_logging()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

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
    rich_markup_mode=None,  # click's plain help: wraps at any width (rich's boxed tables are unreadable at 80 columns)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)
TABLE_SUFFIXES = (".fits", ".csv")
"""What `predict --table` can write (predict.writers.TableWriter)."""


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"img2spec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the img2spec version and exit."),
) -> None:
    """img2spec: predict SDSS-like optical spectra from Pan-STARRS grizy cutouts."""


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



@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="cutout FITS files, directories of them, or .csv tables of ra/dec (fetched from PS1)"),
    model: str = typer.Option("models/img2spec", "--model", "-m", help="bundle directory, DVC path (with --rev) or MLflow URI models:/img2spec@champion"),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="output directory (one spec-pred-<objid>.fits per object)"),
    rev: Optional[str] = typer.Option(None, "--rev", help="git revision (tag, branch, sha) of the DVC repo holding the bundle"),
    repo: Optional[str] = typer.Option(None, "--repo", help="DVC repo URL or path for --rev (default: this repo)"),
    table: Optional[Path] = typer.Option(None, "--table", help="also write all predictions to one .fits or .csv table (a relative path is relative to the current directory, not to --out)"),
    plot: bool = typer.Option(False, "--plot", help="a PNG per object: grizy composite + spectrum with 1-sigma band and lines"),
    per_object: bool = typer.Option(True, "--per-object/--no-per-object", help="one FITS per object (turn off with --table for survey-scale runs)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="objects per forward pass (default: the bundle's)"),
    sigma_method: Optional[str] = typer.Option(None, "--sigma", help="uncertainty: linearised (first-order, fast) or sampled (--n-samples draws); default: the bundle's"),
    n_samples: Optional[int] = typer.Option(None, "--n-samples", min=2, help="latent samples for --sigma sampled (default: the bundle's)"),
    writers: Optional[int] = typer.Option(None, "--writers", min=1, help="processes writing FITS/PNG files (default: publish.n_writers)"),
    catalogue: Optional[Path] = typer.Option(
        None, "--catalogue", "-c",
        help="CSV with objid and any of z (places the lines; else the photo-z) and rKronMag "
        "(scales to 1e-17 erg/s/cm^2/A; else normalised flux)"),
    mags: Optional[Path] = typer.Option(None, "--mags", hidden=True, help="deprecated name of --catalogue"),
    params: Path = typer.Option(Path("params.yaml"), help="parameter file (HTTP policy for fetching ra/dec tables; publish.plot_dpi)"),
) -> None:
    """Predict spectra from image cutouts with a published bundle (local, DVC revision or MLflow registry)."""
    import json

    from .config import ConfigError, Params, load_params
    from .predict.bundle import BundleError
    from .predict.runner import RunOptions, run_predict

    from typing import get_args

    from .config.publish import SigmaMethodParam

    if sigma_method is not None and sigma_method not in get_args(SigmaMethodParam):
        raise typer.BadParameter(f"{sigma_method!r}: choose {' or '.join(get_args(SigmaMethodParam))}",
                                 param_hint="--sigma")
    problem = _predict_argument_error(model, rev, out, table, plot, per_object, catalogue or mags)
    if problem:  # before TensorFlow loads: a typo costs no 10-second import
        typer.echo(f"img2spec predict: {problem}", err=True)
        raise typer.Exit(2)
    setup_logging()
    if mags is not None:
        typer.echo("img2spec predict: --mags is deprecated; use --catalogue (same CSV)", err=True)
    try:
        cfg = load_params(params) if params.is_file() else Params()
        # no TensorFlow here: the bundle's runtime imports it only if it runs the Keras models
        predictor = _load_predictor(model, rev, repo)
        opts = RunOptions(
            out_dir=out, table=table, plot=plot, per_object=per_object, batch_size=batch_size, n_samples=n_samples,
            sigma_method=sigma_method,
            catalogue=catalogue or mags, dpi=cfg.publish.plot_dpi, fetch_params=cfg, n_writers=writers or cfg.publish.n_writers,
        )
        summary = run_predict(predictor, inputs, opts)
    except (ConfigError, BundleError, ValueError, RuntimeError, OSError) as exc:
        typer.echo(f"img2spec predict: {exc}", err=True)
        raise typer.Exit(2)
    report = summary.as_dict()
    report["skipped"] = report["skipped"][:20]  # the full list is in summary.json
    typer.echo(json.dumps(report, indent=2, default=str))
    if summary.n_predicted == 0:
        raise typer.Exit(1)


@app.command()
def publish(
    params: Path = typer.Option(Path("params.yaml"), help="parameter file"),
    root: Path = typer.Option(Path("."), help="project root holding data/, models/, metrics/"),
) -> None:
    """Build models/img2spec/ and register it in MLflow (what the DVC stage `publish` runs)."""
    import json

    from .config import ConfigError, load_params
    from .paths import Paths
    from .predict.bundle import BundleError
    from .predict.publish import publish as run_publish

    setup_logging()
    try:
        report = run_publish(load_params(params), Paths(root))
    except (ConfigError, BundleError, FileNotFoundError) as exc:
        typer.echo(f"img2spec publish: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command("mock-figure")
def mock_figure(
    out: Path = typer.Option(Path("docs/mock_galaxies.png"), help="PNG to write"),
    params: Path = typer.Option(Path("params.yaml"), help="parameter file (section mock)"),
) -> None:
    """Figure of a few mock galaxies: grizy composite beside the fibre spectrum."""
    from .config import ConfigError, load_params
    from .sources.mock.figure import make_figure

    setup_logging()
    try:
        path = make_figure(load_params(params), out)
    except ConfigError as exc:
        typer.echo(f"img2spec mock-figure: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(str(path))


@app.command("mock-realism")
def mock_realism(
    out: Path = typer.Option(Path("reports/mock_realism.json"), help="JSON report to write"),
    figures: Path = typer.Option(Path("reports/realism"), help="directory for one figure per comparison (outside DVC's reports/figures)"),
    truth_dir: Path = typer.Option(Path("data/raw/truth"), help="mock truth to assess; generated if missing"),
    n: int = typer.Option(300, min=20, help="galaxies to generate when TRUTH_DIR does not exist"),
    params: Path = typer.Option(Path("params.yaml"), help="parameter file (sections mock, measure)"),
    readme: Optional[Path] = typer.Option(None, help="also render the table between <!-- realism:start/end --> here"),
) -> None:
    """The mock survey beside published SDSS Main Galaxy Sample distributions (reports/mock_realism.json)."""
    from .config import ConfigError, load_params
    from .docs import replace_section
    from .sources.mock.realism import markdown_table, run_realism

    setup_logging()
    try:
        report = run_realism(load_params(params), out, figures, truth_dir=truth_dir, n_generate=n)
    except ConfigError as exc:
        typer.echo(f"img2spec mock-realism: {exc}", err=True)
        raise typer.Exit(2)
    for c in report["checks"].values():
        typer.echo(f"{c['name']:<40} mock {c['mock']!s:>8}  SDSS {c['reference']!s:>7}  "
                   f"{'agrees' if c['agrees'] else 'DISAGREES'}")
    typer.echo(f"{report['n_agree']}/{report['n_checks']} within tolerance; {out}")
    if readme is not None and not replace_section(readme, "realism", markdown_table(report)):
        typer.echo(f"img2spec mock-realism: {readme}: no <!-- realism:start --> / <!-- realism:end --> markers", err=True)
        raise typer.Exit(1)


@app.command("readme")
def readme(
    metrics: Path = typer.Option(Path("metrics/evaluate.json"), help="evaluate stage metrics to render"),
    path: Path = typer.Option(Path("README.md"), "--readme", help="Markdown file with <!-- eval:start/end --> markers"),
) -> None:
    """Re-render the README's evaluation table from metrics/evaluate.json (run by `make repro`)."""
    import json

    from .docs import evaluation_table, measurement_table, replace_section

    if not metrics.is_file():
        typer.echo(f"img2spec readme: {metrics}: not found; run `dvc repro evaluate` first", err=True)
        raise typer.Exit(1)
    values = json.loads(metrics.read_text())
    if not replace_section(path, "eval", evaluation_table(values)):
        typer.echo(f"img2spec readme: {path}: no <!-- eval:start --> / <!-- eval:end --> markers", err=True)
        raise typer.Exit(1)
    if "measurements" in values and not replace_section(path, "measure", measurement_table(values)):
        typer.echo(f"img2spec readme: {path}: no <!-- measure:start --> / <!-- measure:end --> markers", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: evaluation table rendered from {metrics}")


@app.command("pack")
def pack_cmd(
    inputs: list[Path] = typer.Argument(..., help="5-band cutout FITS files, single-band PS1 cutout-service files, or directories of them"),
    out: Path = typer.Option(..., "--out", "-o", help="shard directory: healpix=<N>/part-<tag>-<k>.hdf5 (tag: digest of the inputs) and pack.json"),
    catalogue: Optional[Path] = typer.Option(None, "--catalogue", help="CSV objid[,ra,dec][,z][,rKronMag] packed beside the images"),
    params: Path = typer.Option(Path("params.yaml"), help="parameter file (survey.healpix_order, survey.objects_per_part, data.bands)"),
) -> None:
    """Pack cutouts into HDF5 shards partitioned by HEALPix pixel, for `img2spec survey`."""
    import json

    from .config import ConfigError, Params, load_params
    from .survey.pack import pack

    setup_logging()
    try:
        cfg = load_params(params) if params.is_file() else Params()
        report = pack(inputs, out, cfg, catalogue=catalogue)
    except (ConfigError, ValueError, OSError) as exc:
        typer.echo(f"img2spec pack: {exc}", err=True)
        raise typer.Exit(2)
    report = {k: v for k, v in report.items() if k not in ("parts", "skipped")}  # in pack.json
    typer.echo(json.dumps(report, indent=2))
    if report["n_objects_packed"] == 0:
        raise typer.Exit(1)


@app.command("survey")
def survey_cmd(
    shards: Path = typer.Argument(..., help="shard directory written by `img2spec pack`"),
    model: str = typer.Option("models/img2spec", "--model", "-m", help="bundle directory, DVC path (with --rev) or MLflow URI models:/img2spec@champion"),
    out: Path = typer.Option(..., "--out", "-o", help="output: healpix=<N>/<part>.hdf5 (latents or spectra, see --store), catalogue/ (Parquet), survey.json"),
    rev: Optional[str] = typer.Option(None, "--rev", help="git revision of the DVC repo holding the bundle"),
    repo: Optional[str] = typer.Option(None, "--repo", help="DVC repo URL or path for --rev (default: this repo)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="address of a running Dask scheduler (default: a LocalCluster from params)"),
    store: Optional[str] = typer.Option(
        None, "--store",
        help="what each shard's output holds: compact (latent mean and 1-sigma, redshift: ~0.8 KB per galaxy with the catalogue, "
        "decoded on read by `img2spec decode` or img2spec.survey.open_survey) or spectra (flux and sigma "
        "files, ~33 KB per galaxy); default: survey.store in params. One --out holds one store."),
    params: Path = typer.Option(Path("params.yaml"), help="parameter file (survey: workers, threads, retries, store)"),
    start_method: str = typer.Option(
        "auto", "--start-method",
        help="how the LocalCluster starts its workers: auto (fork on Linux: a worker inherits this process's "
        "imports and is up in ~0.1 s; spawn elsewhere), fork, forkserver or spawn (a fresh interpreter per worker)"),
) -> None:
    """Predict every shard on Dask: output shards (compact latents or spectra), a Parquet catalogue and survey.json."""
    import json

    from .config import ConfigError, Params, load_params
    from .predict.bundle import BundleError
    from .predict.bundle_info import BundleInfo
    from .survey.run import SurveyError, run_survey

    setup_logging()
    try:
        cfg = load_params(params) if params.is_file() else Params()
        # the manifest only: the workers load the networks, this process never imports TensorFlow
        bundle = _load_model(BundleInfo.load, model, rev, repo)
        report = run_survey(shards, bundle, out, cfg, scheduler=scheduler, store=store, start_method=start_method)
    except (ConfigError, BundleError, SurveyError, ValueError, RuntimeError, OSError) as exc:
        typer.echo(f"img2spec survey: {exc}", err=True)
        raise typer.Exit(2)
    report = {k: v for k, v in report.items() if k != "skipped"}  # in survey.json
    typer.echo(json.dumps(report, indent=2, default=str))
    if report["shards"]["failed"]:
        raise typer.Exit(1)


@app.command("decode")
def decode_cmd(
    survey: Path = typer.Argument(..., help="output directory of `img2spec survey`"),
    where: Optional[str] = typer.Option(None, "--where", help="pandas query on the catalogue, e.g. 'z_pred < 0.1 and bpt_class == 2'"),
    ids: Optional[list[str]] = typer.Option(None, "--ids", help="object ids (repeat the option, or comma-separate them)"),
    healpix: Optional[int] = typer.Option(None, "--healpix", min=0, help="one HEALPix pixel of the survey's partition"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory: one spec-pred-<objid>.fits per object, as `img2spec predict` writes"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="bundle directory or models:/ URI (default: the bundle recorded in SURVEY/survey.json; its hash must match)"),
) -> None:
    """Decode the spectra of a survey selection into FITS files (the selection options combine: all must hold)."""
    import json

    from .predict.bundle import BundleError

    if where is None and not ids and healpix is None:
        typer.echo("img2spec decode: nothing selected: give --where, --ids and/or --healpix", err=True)
        raise typer.Exit(2)
    if not survey.is_dir():
        typer.echo(f"img2spec decode: {survey}: no such survey directory", err=True)
        raise typer.Exit(2)
    setup_logging()
    try:
        from .survey.export import decode_to_fits
        from .survey.read import open_survey

        opened = open_survey(survey, model=model)
        selection: object = [i.strip() for arg in ids for i in arg.split(",") if i.strip()] if ids else None
        if where is not None and selection is not None:  # both: the ids among the query's rows
            chosen = opened.select(where, healpix=healpix)
            missing = sorted(set(selection) - set(chosen["object_id"]))
            if missing:
                raise ValueError(f"{len(missing)} of the --ids not selected by --where: {missing[:5]}")
        report = decode_to_fits(opened, out, selection if selection is not None else where, healpix=healpix)
    except (BundleError, ValueError, RuntimeError, OSError) as exc:
        typer.echo(f"img2spec decode: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(report, indent=2))
    if report["n_written"] == 0:
        raise typer.Exit(1)


def _predict_argument_error(model: str, rev: Optional[str], out: Path, table: Optional[Path], plot: bool,
                            per_object: bool, catalogue: Optional[Path]) -> Optional[str]:
    """What is wrong with predict's options as given, checked without loading anything; None if fine.
    Missing inputs are not errors: they are counted skips (one bad input never stops a run)."""
    if not per_object and table is None and not plot:
        return "nothing to write: --no-per-object needs --table (or --plot)"
    if table is not None and table.suffix.lower() not in TABLE_SUFFIXES:
        return f"--table {table}: the name must end in {' or '.join(TABLE_SUFFIXES)}"
    if catalogue is not None and not catalogue.is_file():
        return f"--catalogue {catalogue}: no such file"
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a directory"
    if rev is None and not model.startswith(("models:/", "runs:/")) and not Path(model).is_dir():
        return f"--model {model}: bundle directory not found (give a bundle directory, --rev REV or a models:/ URI)"
    return None


def _load_predictor(model: str, rev: Optional[str], repo: Optional[str]):
    """`Predictor.load`, with MLflow/DVC failures (unknown alias, revision, unreachable remote) as one clear error."""
    from .predict.predictor import Predictor

    return _load_model(Predictor.load, model, rev, repo)


def _load_model(load, model: str, rev: Optional[str], repo: Optional[str]):
    """`load(model, rev=, repo=)` (`Predictor.load`, `BundleInfo.load`) with MLflow/DVC failures as one clear error."""
    from .config import ConfigError
    from .predict.bundle import BundleError

    try:
        return load(model, rev=rev, repo=repo)
    except (ConfigError, BundleError, OSError):
        raise
    except Exception as exc:
        raise RuntimeError(f"cannot load model {model!r}{f' at {rev}' if rev else ''}: {exc}") from exc


def main() -> None:  # pragma: no cover
    setup_logging()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

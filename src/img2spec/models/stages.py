"""The DVC stages train_vae, encode and train_cnn (called by the thin pipeline/ scripts).

Each training stage is one MLflow run (`img2spec.tracking.start_run`): the params sections
it depends on, the DVC hashes of its inputs, per-epoch metrics, the loss-curve figure and the
`.keras` files; train_cnn's validation mean deviations also go on the pipeline's parent run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Params
from ..io.atomic import atomic_path, write_csv, write_json
from ..io.processed import ProcessedData
from ..paths import Paths
from .. import tracking

log = logging.getLogger(__name__)

PCA_SUBDIR = "pca"


def _rel(paths: Paths, p: Path) -> str:
    try:
        return str(p.relative_to(paths.root))
    except ValueError:
        return str(p)


def _history_frame(history: dict[str, list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame(history)
    frame.insert(0, "epoch", np.arange(len(frame)))
    return frame


def _loss_figure(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _log_loss_figure(history: dict[str, list[float]], name: str, title: str) -> None:
    """Loss curves as an MLflow artefact (the DVC plot is the history CSV)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        _loss_figure(history, path, title)
        mlflow.log_artifact(str(path), artifact_path="figures")


TIMING_KEYS = ("train_seconds",)
"""Summary fields that vary from run to run: written to reports/<stage>.json, not metrics/, so that
metrics/ of two runs of one pipeline is byte-identical."""


def write_stage_results(paths: Paths, stage: str, summary: dict) -> None:
    """metrics/<stage>.json: `summary` without its TIMING_KEYS; reports/<stage>.json: those alone
    (flat, or one entry per model as in train_cnn's {"cnn": {...}, "pca_cnn": {...}})."""
    def split(d: dict) -> tuple[dict, dict]:
        return {k: v for k, v in d.items() if k not in TIMING_KEYS}, {k: v for k, v in d.items() if k in TIMING_KEYS}

    if all(isinstance(v, dict) for v in summary.values()):
        parts = {name: split(vals) for name, vals in summary.items()}
        metrics, timing = {n: p[0] for n, p in parts.items()}, {n: p[1] for n, p in parts.items()}
    else:
        metrics, timing = split(summary)
    write_json(paths.metrics / f"{stage}.json", metrics)
    write_json(paths.reports / f"{stage}.json", timing)


def _fresh_dir(path: Path) -> Path:
    """An empty output directory (DVC outs are whole directories: no stale files)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def train_vae_stage(params: Params, paths: Paths) -> dict:
    from .tracking_cb import MlflowMetrics
    from .train import train_vae

    data = ProcessedData.open(paths.processed)
    out = _fresh_dir(paths.vae_dir)
    with tracking.start_run("train_vae", params, inputs=[_rel(paths, paths.processed)], root=paths.root) as run:
        import mlflow

        result = train_vae(params.vae, data, callbacks=[MlflowMetrics()], out_dir=out)
        summary = {"best_val_loss": result.best_val_loss, "epochs_run": result.info["epochs_run"],
                   "train_seconds": round(result.seconds, 1), "n_train": result.info["n_train"],
                   "latent_dim": params.vae.latent_dim}
        write_stage_results(paths, "train_vae", summary)
        write_csv(paths.reports / "plots" / "vae_history.csv", _history_frame(result.history))
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        _log_loss_figure(result.history, "vae_history.png", "VAE")
        for name in ("encoder.keras", "decoder.keras", "vae.json"):
            mlflow.log_artifact(str(out / name), artifact_path="vae")
        summary["mlflow_run_id"] = run.info.run_id
    return summary


def encode_stage(params: Params, paths: Paths) -> dict:
    from .inference import encode_spectra, load_encoder
    from .latents import Latents, save_latents

    data = ProcessedData.open(paths.processed)
    encoder = load_encoder(paths.vae_dir)
    mu, logvar = encode_spectra(encoder, data.flux, data.ivar, z=data.catalog["z"].to_numpy(np.float64))
    bad = ~(np.isfinite(mu).all(axis=1) & np.isfinite(logvar).all(axis=1))
    if bad.any():
        raise ValueError(f"encode: {int(bad.sum())} objects gave non-finite latents "
                         f"(first objid {int(data.catalog['objid'].iloc[np.flatnonzero(bad)[0]])})")
    out = _fresh_dir(paths.latents)
    save_latents(Latents(mu, logvar), out, {"encoder": _rel(paths, paths.vae_dir / "encoder.keras")})
    log.info("encode: %d objects -> %d latents", len(mu), mu.shape[1])
    return {"n": int(len(mu)), "latent_dim": int(mu.shape[1])}


def _fit_pca_baseline(data, decoder, n_components: int, seed: int):
    """(PCA, coefficients of every object, its decoder) in the VAE decoder's frame: a rest-frame
    decoder gets a PCA of the de-redshifted spectra on the same rest grid (same comparison)."""
    from .inference import rest_decoder
    from .pca import fit_pca, to_rest_frame

    train = data.indices("train")
    rest = rest_decoder(decoder)
    if rest is None:
        pca = fit_pca(data.flux[train], data.ivar[train], n_components, seed=seed)
        return pca, pca.project(data.flux, data.ivar), pca.decoder()
    z = data.catalog["z"].to_numpy(np.float64)
    flux, ivar = to_rest_frame(data.flux, data.ivar, data.wave, z, rest.grid)
    pca = fit_pca(flux[train], ivar[train], n_components, seed=seed)
    return pca, pca.project(flux, ivar), pca.decoder(rest.grid, data.wave)


def train_cnn_stage(params: Params, paths: Paths) -> dict:
    """The CNN on VAE latents -> models/cnn/; the PCA baseline's CNN -> models/cnn/pca/."""
    from .inference import load_models
    from .latents import Latents, load_latents
    from .pca import PCA_FLOOR_LOGVAR
    from .tracking_cb import MlflowMetrics, member_prefix
    from .train import train_cnn_ensemble
    from .validation import validation_deviation

    data = ProcessedData.open(paths.processed)
    latents = load_latents(paths.latents)
    import keras

    decoder = keras.saving.load_model(paths.vae_dir / "decoder.keras", compile=False)
    out = _fresh_dir(paths.cnn_dir)
    inputs = [_rel(paths, p) for p in (paths.processed, paths.latents, paths.vae_dir)]
    summary: dict = {}
    with tracking.start_run("train_cnn", params, inputs=inputs, root=paths.root) as run:
        import mlflow

        result = train_cnn_ensemble(params.cnn, data, latents, decoder, out_dir=out, measure_params=params.measure,
                                    callbacks_for=lambda k: [MlflowMetrics(member_prefix(k))])
        val_dev = validation_deviation(result.model, decoder, data)
        summary["cnn"] = {"best_val_loss": result.best_val_loss, "val_mean_deviation": val_dev,
                          "epochs_run": result.info["epochs_run"], "train_seconds": round(result.seconds, 1)}
        write_csv(paths.reports / "plots" / "cnn_history.csv", _history_frame(result.history))
        _log_loss_figure(result.history, "cnn_history.png", f"CNN ({params.cnn.loss} loss)")
        mlflow.log_artifact(str(out / "cnn.keras"), artifact_path="cnn")
        if params.cnn.train_pca:
            # Baseline: PCA with as many components as VAE latents + the same CNN architecture.
            pca, coeffs, pca_decoder = _fit_pca_baseline(data, decoder, latents.mu.shape[1], params.cnn.seed)
            pca_dir = out / PCA_SUBDIR
            with atomic_path(pca_dir / "decoder.keras", suffix=".keras") as tmp:
                pca_decoder.save(tmp)
            pca_lat = Latents(coeffs, np.full_like(coeffs, PCA_FLOOR_LOGVAR))
            pres = train_cnn_ensemble(params.cnn, data, pca_lat, pca_decoder, out_dir=pca_dir, name="pca_cnn",
                                      measure_params=params.measure,
                                      callbacks_for=lambda k: [MlflowMetrics(member_prefix(k, "pca_"))])
            pca_dev = validation_deviation(pres.model, pca_decoder, data)
            summary["pca_cnn"] = {"best_val_loss": pres.best_val_loss, "val_mean_deviation": pca_dev,
                                  "epochs_run": pres.info["epochs_run"], "train_seconds": round(pres.seconds, 1)}
            load_models(pca_dir, pca_dir)  # fail here, not in evaluate, if the pair does not load
        flat = {f"{k}_{m}": float(v) for m, vals in summary.items() for k, v in vals.items()}
        headline = {k: v for k, v in flat.items() if k.startswith("val_mean_deviation_")}
        mlflow.log_metrics({k: v for k, v in flat.items() if k not in headline})
        tracking.log_metrics(headline)  # val_mean_deviation_cnn, ..._pca_cnn: also on the pipeline row
        write_stage_results(paths, "train_cnn", summary)
        summary["mlflow_run_id"] = run.info.run_id
    return summary

"""Does the VAE study's cheap objective rank latent sizes like what users get?

For each latent size: train the VAE (params.yaml otherwise), read its validation negative
ELBO (the VAE study's objective), encode, train a short CNN (`cnn_epochs`) through the
decoder and take its validation mean D_i (the end-to-end number). The two rankings and
their Spearman correlation say whether the ELBO is a fair proxy. Train/val only.

    python -m img2spec.tuning.latent_rank --sizes 4 8 12 16 --cnn-epochs 10 --out reports/latent_rank.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences (ties broken by order)."""
    ra = np.argsort(np.argsort(np.asarray(a, float)))
    rb = np.argsort(np.argsort(np.asarray(b, float)))
    if len(ra) < 2:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_latent_sizes(params, data, sizes: Sequence[int], cnn_epochs: int) -> dict[str, Any]:
    """{"rows": [{latent_dim, val_neg_elbo, val_mean_deviation, ...}], "spearman": rho, ...}."""
    from ..models.inference import encode_spectra
    from ..models.latents import Latents
    from ..models.train import train_cnn, train_vae, with_filled_pixels
    from ..models.validation import validation_deviation
    from .callbacks import NEG_ELBO_KEY, MlflowEpochLogger, ValNegElbo
    from .objective import _at_best_epoch

    class _History(MlflowEpochLogger):
        def on_epoch_end(self, epoch, logs=None):  # the logger's history, without MLflow
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))

    cnn_params = params.cnn.model_copy(update={"epochs": cnn_epochs, "patience": min(params.cnn.patience, cnn_epochs)})
    rows = []
    for size in sizes:
        vae_params = params.vae.model_copy(update={"latent_dim": int(size)})
        history = _History()
        vae = train_vae(vae_params, data, callbacks=[ValNegElbo(), history])
        warm = min(vae_params.kl_warmup_epochs, max(vae_params.epochs - 1, 0))
        elbo = _at_best_epoch(history.history, NEG_ELBO_KEY, warm)
        mu, logvar = encode_spectra(vae.model.encoder, data.flux, data.ivar, z=data.catalog["z"].to_numpy())
        decoder = with_filled_pixels(vae.model.decoder, vae.info["trained_pixels"])
        cnn = train_cnn(cnn_params, data, Latents(mu, logvar), decoder, measure_params=params.measure)
        d = validation_deviation(cnn.model, decoder, data)
        rows.append({"latent_dim": int(size), "val_neg_elbo": float(elbo), "val_mean_deviation": float(d),
                     "vae_seconds": round(vae.seconds, 1), "cnn_seconds": round(cnn.seconds, 1)})
        log.info("latent_dim %d: val -ELBO %.4f, end-to-end val D %.3f", size, elbo, d)
    elbo = [r["val_neg_elbo"] for r in rows]
    dev = [r["val_mean_deviation"] for r in rows]
    return {"rows": rows, "cnn_epochs": int(cnn_epochs),
            "best_by_elbo": rows[int(np.argmin(elbo))]["latent_dim"] if rows else None,
            "best_by_deviation": rows[int(np.argmin(dev))]["latent_dim"] if rows else None,
            "spearman": spearman(elbo, dev)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ..config import load_params
    from ..io.atomic import write_json
    from ..io.processed import ProcessedData
    from ..paths import Paths

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", required=True)
    ap.add_argument("--cnn-epochs", type=int, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    ap.add_argument("--out", default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    report = rank_latent_sizes(load_params(args.params), ProcessedData.open(Paths(Path(args.root)).processed),
                               args.sizes, args.cnn_epochs)
    if args.out:
        write_json(Path(args.out), report)
    print(report)
    return report


if __name__ == "__main__":  # pragma: no cover
    main()

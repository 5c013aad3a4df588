"""Where a representation loses the lines: the encoder, the decoder or the objective? (VAL split only.)

Scores reconstructions of the VAL spectra the way evaluate scores predictions (D against the
observation; EW(Halpha), Dn4000, Hdelta_A and the classes against the noiseless truth):
- `encoder`: the committed VAE, encoder mu decoded at the catalogue z (the ceiling as first defined);
- `refined`: those latents refined by `--steps` Adam steps on each spectrum's chi-square through the
  decoder (`models.refine.refine_latents`, what evaluate's `vae_ceiling` now scores);
- `pca_plain` / `pca_chi2`: rest-frame PCA with as many components as the VAE has latents, fitted on
  train, each val spectrum projected by plain least squares or by its ivar-weighted least squares.
The test split is never read.

    python bench/bench_ceiling.py --out reports/ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from img2spec.config import load_params
from img2spec.evaluate.measurements import measure_methods, score_measurements
from img2spec.io.processed import ProcessedData
from img2spec.metrics import deviation, summarise

QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a")
SCHEMES = ("sf_quiescent", "bpt", "agn")
SLOTS = ("vae_ceiling", "cnn", "cnn_given_z", "pca_cnn")
"""evaluate's method names the four reconstructions are scored under (the scoring knows only those)."""


def chi2_projection(components: np.ndarray, mean: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """(N, K) coefficients minimising sum ivar (mean + c @ components - flux)^2 per spectrum."""
    A = np.asarray(components, np.float64)
    out = np.empty((len(flux), len(A)))
    for i, (f, w) in enumerate(zip(np.asarray(flux, np.float64), np.asarray(ivar, np.float64))):
        out[i] = np.linalg.lstsq((A * w) @ A.T, (A * w) @ np.where(w > 0, f - mean, 0.0), rcond=None)[0]
    return out


def reconstructions(params, data: ProcessedData, vae_dir: Path, latents: Path, steps: int, lr: float) -> dict:
    """name -> (N_val, P) reconstruction on the observed grid."""
    import keras

    import img2spec.models.layers  # noqa: F401 - registers the custom layers for loading
    from img2spec.models.data import clean_flux
    from img2spec.models.inference import decode, decoder_input, rest_decoder
    from img2spec.models.pca import fit_pca, to_rest_frame
    from img2spec.models.refine import refine_latents
    from img2spec.models.restframe import to_observed

    decoder = keras.models.load_model(vae_dir / "decoder.keras", compile=False)
    grid = rest_decoder(decoder).grid
    tr, va = data.indices("train"), data.indices("val")
    z = data.catalog["z"].to_numpy(np.float64)
    flux, ivar = clean_flux(data.flux[np.r_[tr, va]], data.ivar[np.r_[tr, va]])
    f_tr, i_tr, f_va, i_va = flux[:len(tr)], ivar[:len(tr)], flux[len(tr):], ivar[len(tr):]
    mu = np.load(latents / "mu.npy")[va]
    out = {"encoder": decode(decoder, decoder_input(decoder, mu, z[va]))}
    refined = refine_latents(decoder, mu, f_va, i_va, z[va], steps=steps, learning_rate=lr)
    out["refined"] = decode(decoder, decoder_input(decoder, refined, z[va]))
    r_tr, ri_tr = to_rest_frame(f_tr, i_tr, data.wave, z[tr], grid)
    r_va, ri_va = to_rest_frame(f_va, i_va, data.wave, z[va], grid)
    pca = fit_pca(r_tr, ri_tr, mu.shape[1])
    ln_obs = np.log(data.wave)
    for name, coef in (("pca_plain", pca.project(r_va, ri_va)),
                       ("pca_chi2", chi2_projection(pca.components, pca.mean, r_va, ri_va))):
        out[name] = to_observed(grid, pca.mean + coef @ pca.components, ln_obs, z[va]).astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processed", default="data/processed")
    ap.add_argument("--vae", default="models/vae", help="the trained VAE (encoder and decoder)")
    ap.add_argument("--latents", default="data/latents", help="the encode stage's output (mu.npy)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/ceiling.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    ep = params.evaluate
    data = ProcessedData.open(args.processed)
    t0 = time.perf_counter()
    recons = reconstructions(params, data, Path(args.vae), Path(args.latents), ep.ceiling_refine_steps,
                             ep.ceiling_refine_learning_rate)
    va = data.indices("val")
    obs, ivar = np.asarray(data.flux[va], np.float32), np.asarray(data.ivar[va], np.float32)
    z = data.catalog["z"].to_numpy(np.float64)[va]
    slot = dict(zip(recons, SLOTS))
    tables = measure_methods(data.wave, z, data.frame, obs, ivar, {slot[k]: v for k, v in recons.items()},
                             np.asarray(data.truth_flux[va], np.float32), params.measure)
    scored = score_measurements(tables, params.measure)
    results = {}
    for name, recon in recons.items():
        s = slot[name]
        results[name] = {"mean_deviation": summarise(deviation(recon, obs, ivar)),
                         "measurements": {q: scored["measurements"][q][s] for q in QUANTITIES},
                         "classes": {c: scored["classes"][c][s]["balanced_accuracy"] for c in SCHEMES}}
        r, m = results[name], results[name]["measurements"]
        print(f"{name:>10}: D {r['mean_deviation']['mean']:.3f} | EW(Ha) {m['halpha_ew']['bias']:+.2f}/"
              f"{m['halpha_ew']['nmad']:.2f} | Dn4000 {m['dn4000']['bias']:+.3f}/{m['dn4000']['nmad']:.3f} | "
              f"HdA {m['hdelta_a']['nmad']:.2f} | SF {r['classes']['sf_quiescent']:.2f} BPT {r['classes']['bpt']:.2f} "
              f"AGN {r['classes']['agn']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "split": "val", "n": len(va), "refine_steps": ep.ceiling_refine_steps,
        "refine_learning_rate": ep.ceiling_refine_learning_rate, "seconds": round(time.perf_counter() - t0, 1),
        "command": "python bench/bench_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "methods": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

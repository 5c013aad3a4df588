"""The model card (README.md inside the bundle), written from the manifest."""

from __future__ import annotations

from typing import Any


METHOD_LABELS = {
    "cnn": "img2spec (CNN -> VAE decoder)",
    "knn_colour": "kNN in PS1 colour space",
    "mean_spectrum": "mean training spectrum x photometric norm",
    "pca_cnn": "PCA + same CNN",
    "vae_ceiling": "VAE reconstruction of the true spectrum (ceiling)",
    "noise_floor": "noiseless true spectrum (noise floor, mock only)",
}


def _fmt(x: Any, spec: str = ".3g") -> str:
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return "n/a"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = ["| method | mean D | sem | median | p16 | p84 | n |", "|---|---|---|---|---|---|---|"]
    for key, m in metrics.items():
        if not isinstance(m, dict) or "mean" not in m:
            continue
        rows.append(
            f"| {METHOD_LABELS.get(key, key)} | {_fmt(m.get('mean'))} | {_fmt(m.get('sem'), '.2g')} | "
            f"{_fmt(m.get('median'))} | {_fmt(m.get('p16'))} | {_fmt(m.get('p84'))} | {m.get('n', 'n/a')} |"
        )
    return "\n".join(rows) if len(rows) > 2 else "(no per-method summary in metrics.json)"


def _range_text(r: dict[str, float] | None, spec: str) -> str:
    if not r:
        return "unknown"
    return (
        f"{_fmt(r['min'], spec)} to {_fmt(r['max'], spec)} "
        f"(1st-99th percentile {_fmt(r.get('p1'), spec)} to {_fmt(r.get('p99'), spec)})"
    )


def _uncertainty_text(inference: dict[str, Any]) -> str:
    if inference.get("sigma_method", "sampled") == "linearised":
        text = ("The 1-sigma band propagates the predicted latent variance through the decoder to first "
                "order (exact Jacobian at the latent mean)")
    else:
        text = f"The 1-sigma band is the std of {inference['n_samples']} decoded latent samples"
    scale = float(inference.get("sigma_scale", 1.0))
    if scale != 1.0:
        levels = " and ".join(f"{k:g}" for k in inference.get("sigma_scale_levels") or (1.0,))
        text += (f", times {scale:.3f}: the factor whose coverage of validation pixels within {levels} sigma "
                 "(prediction and observation noise in quadrature) is closest to a Gaussian's")
    return text + "."


def _fusion_text(inference: dict[str, Any]) -> str:
    fusion = inference.get("fusion")
    if not fusion:
        return ""
    return (" The latent mean is then moved, within the CNN's latent uncertainty, to where the decoded "
            f"rest-frame spectrum measures what the bundled direct model (`direct.*`: the same kind of "
            f"image network trained on the measurements) predicts for {', '.join(fusion['quantities'])} "
            f"(weight {fusion['weight']:g}, {fusion['iterations']} Levenberg-Marquardt steps)."
            + (" The classes are decided on draws of the spectrum's latent posterior, each draw weighed by the "
               "direct model's probability of the class it measures as." if fusion.get("classes") else ""))


def model_card(m: dict[str, Any]) -> str:
    """Markdown model card: data, metric, limits of validity, usage."""
    inp, out, norm, val, data = m["input"], m["output"], m["normalisation"], m["validity"], m["data"]
    mags = "\n".join(f"  - {b}: {_range_text(r, '.2f')}" for b, r in (val.get("mag") or {}).items())
    h, w, c = inp["shape"]
    return f"""# {m['name']} {m['version']} — model card

Predicts an SDSS-like optical fibre spectrum ({out['wave_min_A']:.0f}-{out['wave_max_A']:.0f} A,
{out['n_pix']} pixels at {out['velocity_step_kms']:g} km/s, {out['frame']} frame) with a per-pixel
1-sigma uncertainty from a {h}x{w} pixel Pan-STARRS1 {''.join(inp['bands'])} cutout
({inp['pixel_scale_arcsec']} arcsec/pixel). A CNN predicts the latent distribution of a
variational autoencoder trained on spectra; the VAE decoder turns the latent mean into the
predicted spectrum.{_fusion_text(m['inference'])} {_uncertainty_text(m['inference'])}

- bundle hash: `{m['bundle_hash']}` (sha256 of bundle.json, which lists the sha256 of every payload file;
  also in `bundle.sha256` and in the MLflow model version tag `bundle_hash`)
- git commit: `{m['git_commit']}`{' (working tree had uncommitted changes)' if m.get('git_dirty') else ''}
- libraries: {', '.join(f'{k} {v}' for k, v in m['libraries'].items())}

## Training data
Source: `{data['source']}` ({'simulated survey: stellar population synthesis spectra and images of the same galaxies' if data['source'] == 'mock' else 'SDSS DR16 spectra + Pan-STARRS1 DR2 cutouts and photometry'}).
{data['n_objects']} objects; split {data['splits']}.

## Metric
Mean deviation in SDSS spectral errors, D_i = mean over good pixels of |pred - obs| * sqrt(ivar),
on the test split, beside the baselines computed in the same run:

{_metrics_table(m.get('metrics') or {})}

## Flux convention
Predictions are **normalised** flux: the spectrum divided by the PS1 {norm['band']}-band Kron flux
converted to f_lambda at {norm['wavelength_A']:g} A. {norm['to_sdss_units']}.
`img2spec predict --catalogue photometry.csv` (columns objid, rKronMag) applies this for you;
without magnitudes the output FITS say `FLUXNORM = 'NORMALISED'` and `BUNIT = ''` (dimensionless).

## Limits of validity (training split)
- redshift: {_range_text(val.get('z'), '.3f')}
- PS1 Kron AB magnitudes:
{mags or '  - unknown'}
- cutouts must be {h}x{w} pixels, {c} bands in order {', '.join(inp['bands'])}, linear counts with MAGZP
  (the Pan-STARRS cutout service format); other pixel scales or sizes are rejected.
- Outside these ranges (fainter galaxies, higher redshift, stars, QSOs) predictions are
  extrapolations: the uncertainty does not know it.

## Use
```bash
img2spec predict cutouts/ --model path/to/this/bundle --out predictions/ --plot
```
```python
from img2spec.predict import Predictor
p = Predictor.from_path("models/img2spec")
spectra = p.predict(stretched_images)  # (N, {h}, {w}, {c}) float32 after preprocess_cutout
```
"""

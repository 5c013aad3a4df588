"""The inference bundle `models/img2spec/`: what a user needs to turn cutouts into spectra.

Layout (all files flat, so `models.inference.load_models(bundle, bundle)` reads it):
- `cnn.keras` (+ `cnn.json`): images -> latent mean and log-variance
- `decoder.keras` (+ `vae.json`): latents -> normalised flux on `wave.npy`
- `cnn.onnx`, `decoder_body.onnx`, `decoder_body_jvp.onnx`, `decoder_body_vjp.onnx`, `decoder_tail.npz`,
  `onnx.json` (`publish.runtime: onnx`): the same networks exported to ONNX (`models.export`),
  which predict and survey run with onnxruntime, without TensorFlow (`predict.runtime`)
- `direct.keras`, `direct.json` (+ `direct.onnx`, and `cnn_direct.onnx`: the CNN and the direct
  heads as one graph that reads the images once): the direct model, whose predictions of EW(Halpha),
  Dn4000, Hdelta_A the spectra are fused with (`fusion:` params, `models.fusion`); absent when the
  run does not fuse
- `image_scaling.json`: the image stretch (train-split constants) for `preprocess_cutout`
- `wave.npy`: the wavelength grid (A) of the predicted spectra
- `params.yaml`: every parameter of the run that produced the models
- `metrics.json`: the evaluation it reached (`metrics/evaluate.json`)
- `bundle.json`: manifest (versions, sha256 of every file, input/output contract,
  normalisation convention, inference defaults such as the sigma calibration, limits of validity)
- `bundle.sha256`: the bundle hash, `sha256sum` format (`sha256sum -c bundle.sha256` checks it)
- `README.md`: the model card

The bundle hash is the sha256 of bundle.json's bytes. The manifest lists the sha256 of
every payload file, so this one hash covers the models, the constants *and* the
manifest's own settings (editing `inference.sigma_scale` changes it). It is recorded
outside bundle.json: in the sidecar, in the MLflow registry (model version tag
`bundle_hash`) and, for a DVC revision, through the directory md5 in dvc.lock; loaders
check the bundle against the record of the place it came from. An unchanged model built
at the same commit gives the same hash on every rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .. import BANDS, __version__
from ..config import Params
from ..io.processed import ProcessedData
from ..models.fusion import DIRECT_INFO_FILE, DIRECT_MODEL_FILE
from ..paths import Paths
from ..tracking import git_commit
from .card import model_card

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "img2spec-bundle/2"
LEGACY_FORMATS = ("img2spec-bundle/1",)
"""Bundles from before the manifest was hashed: loaded with a warning (no sidecar to check)."""
MANIFEST = "bundle.json"
SIDECAR = "bundle.sha256"
CARD = "README.md"
REQUIRED_FROM_VAE = ("decoder.keras",)
OPTIONAL_FROM_VAE = ("vae.json",)
REQUIRED_FROM_CNN = ("cnn.keras",)
OPTIONAL_FROM_CNN = ("cnn.json",)
DIRECT_MODEL, DIRECT_INFO = DIRECT_MODEL_FILE, DIRECT_INFO_FILE
"""The direct model's files a fusing bundle carries."""
VALIDITY_QUANTILES = (0.01, 0.99)
"""Training-catalogue quantiles quoted as the range of validity (besides min/max)."""
HASH_CHUNK = 1 << 20
PARAMS_NOT_RECORDED = ("tune",)
"""params.yaml sections that do not shape the models (kept out of the bundle, so tuning a
search space does not change the bundle hash; dvc.yaml lists the other sections)."""


class BundleError(ValueError):
    """A bundle is missing, incomplete or corrupt; the message names the file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def payload_hash(files: dict[str, dict[str, Any]]) -> str:
    """Hash of the payload: sha256 over sorted `name:sha256` lines."""
    text = "".join(f"{name}:{meta['sha256']}\n" for name, meta in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that define the bundle's numerics."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"img2spec": __version__}
    for pkg in ("tensorflow", "keras", "numpy", "astropy", "mlflow", "dvc", "onnxruntime", "tf2onnx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _copy(src_dir: Path, names: tuple[str, ...], dest: Path, *, required: bool) -> list[str]:
    copied = []
    for name in names:
        src = src_dir / name
        if not src.is_file():
            if required:
                raise BundleError(f"{src}: missing; run the stage that produces {src_dir} first")
            continue
        shutil.copy2(src, dest / name)
        copied.append(name)
    return copied


def _range(values: np.ndarray) -> dict[str, float] | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.quantile(values, VALIDITY_QUANTILES)
    return {
        "min": float(values.min()), "max": float(values.max()),
        f"p{int(VALIDITY_QUANTILES[0] * 100)}": float(lo), f"p{int(VALIDITY_QUANTILES[1] * 100)}": float(hi),
    }


def validity(data: ProcessedData) -> dict[str, Any]:
    """Magnitude and redshift ranges of the training split: where the model has seen data."""
    cat = data.catalog
    train = cat[cat["split"] == "train"] if "split" in cat else cat
    out: dict[str, Any] = {"n_train": int(len(train))}
    if "z" in train:
        out["z"] = _range(train["z"].to_numpy())
    out["mag"] = {b: _range(train[f"mag_{b}"].to_numpy()) for b in BANDS if f"mag_{b}" in train}
    if "galaxy_type" in train:
        out["galaxy_type_counts"] = {str(k): int(v) for k, v in train["galaxy_type"].value_counts().items()}
    return out


def normalisation(params: Params, data: ProcessedData) -> dict[str, Any]:
    """The flux convention of the predictions, with the band and wavelength of the PS1 norm."""
    try:  # what prepare recorded for these data (params may have changed since)
        band, wavelength = data.norm_band, data.norm_wavelength_A
    except (KeyError, ValueError) as exc:
        raise BundleError(str(exc)) from None
    return {
        "output": "normalised",
        "band": band,
        "wavelength_A": wavelength,
        "magnitude": f"PS1 {band} Kron AB magnitude",
        "to_sdss_units": "flux_1e-17 = flux_normalised * norm, sigma likewise; "
        "norm = 3631 Jy * 10**(-0.4 mag) * c / wavelength**2 in 1e-17 erg/s/cm^2/A",
    }


def build_bundle(params: Params, paths: Paths, dest: Path | None = None) -> dict[str, Any]:
    """Assemble the bundle from models/, data/processed and metrics/ into `dest` atomically.

    Returns the manifest plus its `bundle_hash` (which is not in bundle.json: it is the
    hash of that file). The directory is built beside `dest` and renamed onto it, so a
    failed build never leaves a half bundle under the final name.
    """
    dest = Path(dest or paths.bundle_dir)
    data = ProcessedData.open(paths.processed)
    metrics_file = paths.metrics / "evaluate.json"
    if not metrics_file.is_file():
        raise BundleError(f"{metrics_file}: missing; run the evaluate stage first")
    metrics = json.loads(metrics_file.read_text())
    scaling_file = paths.processed / "image_scaling.json"
    if not scaling_file.is_file():
        raise BundleError(f"{scaling_file}: missing; run the prepare stage first")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _copy(paths.vae_dir, REQUIRED_FROM_VAE, tmp, required=True)
        _copy(paths.vae_dir, OPTIONAL_FROM_VAE, tmp, required=False)
        _copy(paths.cnn_dir, REQUIRED_FROM_CNN, tmp, required=True)
        _copy(paths.cnn_dir, OPTIONAL_FROM_CNN, tmp, required=False)
        fused = _copy_direct(params, paths, metrics, tmp)
        if params.publish.runtime == "onnx":
            from ..models.export import export_onnx

            export_onnx(tmp)  # from the copies: the graphs are of exactly the bundled models
        shutil.copy2(scaling_file, tmp / "image_scaling.json")
        np.save(tmp / "wave.npy", np.asarray(data.wave, np.float64))
        shutil.copy2(metrics_file, tmp / "metrics.json")
        (tmp / "params.yaml").write_text(
            yaml.safe_dump(params.model_dump(mode="json", exclude=set(PARAMS_NOT_RECORDED)), sort_keys=False)
        )
        files = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir())
        }
        manifest = _manifest(params, paths, data, files, metrics, fused)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        manifest["bundle_hash"] = write_sidecar(tmp)
        (tmp / CARD).write_text(model_card(manifest))
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _copy_direct(params: Params, paths: Paths, metrics: dict[str, Any], dest: Path) -> bool:
    """Copy the direct model into the bundle when the run fuses (`fusion.enabled`, a trained direct
    model and a rest-frame decoder, as evaluate decided: `metrics` notes.fusion); True if copied."""
    if not (params.fusion.enabled and isinstance((metrics.get("notes") or {}).get("fusion"), dict)):
        return False
    from ..models.direct import direct_dir  # TensorFlow: publish only, never a predict or survey worker

    _copy(direct_dir(paths), (DIRECT_MODEL, DIRECT_INFO), dest, required=True)
    return True


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap `tmp` onto `dest` (rename the old one aside first: directories cannot be replaced atomically)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sigma_scale(metrics: dict[str, Any], method: str, mode: str = "cnn") -> float:
    """The evaluate stage's calibration factor for `method` (1.0 if not fitted or fitted for another);
    `mode` "cnn" (no redshift given) or "cnn_given_z" (decoded at the user's z)."""
    fit = (metrics.get("sigma_scale") or {}).get(mode) or {}
    if not fit:
        return 1.0
    if fit.get("sigma_method") != method:
        log.warning("metrics/evaluate.json calibrated the %s sigma, publish uses %s: sigma left unscaled",
                    fit.get("sigma_method"), method)
        return 1.0
    return float(fit["scale"])


def z_err_scales(metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluate stage's photo-z error factors, fitted on val ({} if not fitted): `z_err_scale` (with
    the catalogue photometry) and, for a hybrid CNN, `z_err_scale_images_only`."""
    fits = metrics.get("redshift_scale") or {}
    names = {"cnn": "z_err_scale", "cnn_images_only": "z_err_scale_images_only"}
    return {key: float(fits[name]["scale"]) for name, key in names.items() if (fits.get(name) or {}).get("scale")}


def class_priors(metrics: dict[str, Any]) -> dict[str, Any]:
    """{"class_priors": ...}: the evaluate stage's class priors of the posterior class decision,
    fitted on val (`models.class_draws`); {} if not fitted (an observed-frame decoder)."""
    priors = (metrics.get("class_priors") or {}).get("priors")
    return {"class_priors": priors} if priors else {}


def photometry_contract(cnn_dir: Path) -> dict[str, Any] | None:
    """The hybrid CNN's second input as cnn.json records it (None for an images-only CNN)."""
    meta_file = cnn_dir / "cnn.json"
    stats = (json.loads(meta_file.read_text()).get("training") or {}).get("photometry") if meta_file.is_file() else None
    if not stats:
        return None
    return {
        "bands": stats["bands"], "magnitude": "PS1 Kron AB magnitude per band (catalogue photometry)",
        "features": stats["features"], "train_mean": stats["mean"], "train_std": stats["std"],
        "standardisation": "folded into cnn.keras (train-split mean/std)",
        "missing": "an object without a finite magnitude in every band is predicted from its images alone "
                   "(the same network with its missing indicator set), with z_err_scale_images_only",
    }


def _manifest(
    params: Params, paths: Paths, data: ProcessedData, files: dict[str, dict[str, Any]], metrics: dict[str, Any],
    fused: bool = False,
) -> dict[str, Any]:
    images_shape = tuple(int(s) for s in data.images.shape[1:])
    wave = np.asarray(data.wave, np.float64)
    sha, dirty = git_commit(paths.root)
    cat = data.catalog
    split_counts = cat["split"].value_counts().to_dict() if "split" in cat else {}
    return {
        "format": BUNDLE_FORMAT,
        "name": params.publish.model_name,
        "version": __version__,
        "payload_hash": payload_hash(files),
        "git_commit": sha,
        "git_dirty": dirty,
        "libraries": library_versions(),
        "files": files,
        "input": {
            "shape": list(images_shape),
            "bands": list(params.data.bands),
            "pixel_scale_arcsec": params.data.pixel_scale_arcsec,
            "dtype": "float32",
            "raw": "PS1 cutout FITS, one HDU per band (G,R,I,Z,Y), linear counts with MAGZP",
            "preprocessing": "img2spec.prep.images.preprocess_cutout(cutout, image_scaling.json)",
            "photometry": photometry_contract(paths.cnn_dir),
        },
        "output": {
            "n_pix": int(wave.size),
            "wave_min_A": float(wave.min()),
            "wave_max_A": float(wave.max()),
            "frame": data.frame,
            "grid": "wave.npy",
            "velocity_step_kms": params.prepare.velocity_step_kms,
            "uncertainty": ("first-order propagation of the predicted latent variance through the decoder"
                            if params.publish.sigma_method == "linearised"
                            else "per-pixel std of decoder spectra over latent samples"),
        },
        "normalisation": normalisation(params, data),
        "inference": {
            "runtime": params.publish.runtime,
            "sigma_method": params.publish.sigma_method,
            "sigma_scale": sigma_scale(metrics, params.publish.sigma_method),
            "sigma_scale_given_z": sigma_scale(metrics, params.publish.sigma_method, "cnn_given_z"),
            "sigma_scale_levels": ((metrics.get("sigma_scale") or {}).get("cnn") or {}).get("levels", [1.0]),
            **z_err_scales(metrics),
            **class_priors(metrics),
            "fusion": ({"quantities": list(params.fusion.quantities), "weight": params.fusion.weight,
                        "iterations": params.fusion.iterations, "classes": params.fusion.classes}
                       if fused else None),
            "n_samples": params.publish.n_samples,
            "batch_size": params.publish.batch_size,
            "seed": params.publish.seed,
        },
        "data": {
            "source": params.data.source,
            "n_objects": int(len(cat)),
            "splits": {str(k): int(v) for k, v in split_counts.items()},
        },
        "validity": validity(data),
        "metrics": metrics.get("mean_deviation", metrics),
    }


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """Read bundle.json, plus its `bundle_hash` (sha256 of the bytes read; not a field of the file).

    BundleError naming the file if absent or not a bundle. `verify_bundle` checks the hash.
    """
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing; not an img2spec bundle (expected {MANIFEST})")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (BUNDLE_FORMAT, *LEGACY_FORMATS):
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{path}: format {got!r}, expected {BUNDLE_FORMAT!r}")
    # (format /1 stored the payload hash under this name; the hash of the manifest replaces it)
    manifest["bundle_hash"] = hashlib.sha256(raw).hexdigest()
    return manifest


def bundle_hash(bundle: str | Path) -> str:
    """The bundle hash: sha256 of bundle.json's bytes (covers the payload through its sha256 list)."""
    return sha256_file(Path(bundle) / MANIFEST)


def write_sidecar(bundle: str | Path) -> str:
    """Record the bundle hash in `bundle.sha256` (sha256sum format); returns it."""
    digest = bundle_hash(bundle)
    (Path(bundle) / SIDECAR).write_text(f"{digest}  {MANIFEST}\n")
    return digest


def recorded_hash(bundle: str | Path) -> str | None:
    """The hash in the bundle's sidecar, or None if there is none; BundleError if unreadable."""
    path = Path(bundle) / SIDECAR
    if not path.is_file():
        return None
    fields = path.read_text(errors="replace").split()
    if len(fields) != 2 or fields[1] != MANIFEST or len(fields[0]) != 64:
        raise BundleError(f"{path}: not a '<sha256>  {MANIFEST}' line")
    return fields[0].lower()


def verify_bundle(
    bundle: str | Path, manifest: dict[str, Any] | None = None, *,
    expected_hash: str | None = None, expected_from: str = "",
) -> str:
    """Check the bundle and return its hash.

    - bundle.json against the sidecar `bundle.sha256` (catches an edited manifest);
    - if `expected_hash` is given, against that record from where the bundle came from
      (`expected_from`, e.g. the MLflow model version tag), which an edit inside the
      bundle cannot forge;
    - every payload file against the sha256 in the manifest (catches partial downloads).
    BundleError names the file that fails.
    """
    bundle = Path(bundle)
    manifest = manifest or read_manifest(bundle)
    digest = bundle_hash(bundle)
    if manifest.get("bundle_hash", digest) != digest:
        raise BundleError(f"{bundle / MANIFEST}: changed since it was read (sha256 {digest[:16]}...)")
    recorded = recorded_hash(bundle)
    if recorded is None:
        if manifest.get("format") not in LEGACY_FORMATS:
            raise BundleError(f"{bundle / SIDECAR}: missing; cannot check {MANIFEST} (rebuild with `dvc repro publish`)")
        log.warning("%s: bundle format %s has no %s; its manifest is not checked (rebuild with `dvc repro publish`)",
                    bundle, manifest.get("format"), SIDECAR)
    elif recorded != digest:
        raise BundleError(
            f"{bundle / MANIFEST}: sha256 {digest[:16]}... differs from {recorded[:16]}... recorded in {SIDECAR}; "
            "the manifest was edited or is corrupt"
        )
    if expected_hash is not None and expected_hash.lower() != digest:
        raise BundleError(
            f"{bundle / MANIFEST}: bundle hash {digest[:16]}... differs from {expected_hash[:16]}... recorded in "
            f"{expected_from or 'the source'}; the bundle is not the one that was registered"
        )
    for name, meta in manifest["files"].items():
        path = bundle / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if sha256_file(path) != meta["sha256"]:
            raise BundleError(f"{path}: sha256 differs from {MANIFEST}; the bundle is corrupt or edited")
    return digest

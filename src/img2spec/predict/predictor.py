"""`Predictor`: a loaded bundle that turns images into spectra.

The prediction itself is `img2spec.models.inference.predict_spectra` and the image
scaling is `img2spec.prep.images.preprocess_cutout/preprocess_stack`: the same
functions the evaluate stage uses, so a bundle predicts exactly what was evaluated.

`Predictor.predict_batch` is the one per-batch inference function of `img2spec predict`
and `img2spec survey`: stretched images in, a `BatchResult` (flux, sigma and, for a CNN
with a redshift head, z and z_err) out. `Predictor.prepare_stack` turns a stack of raw
cutouts into those images with the prepare stage's checks (`check_cutout`'s, vectorised),
one reason per rejected cutout.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io.ps1_cutout import Cutout
from .bundle import BundleError
from .bundle_info import BundleInfo, ManifestView, locate_bundle
from .photometry import check_photometry, predict_split
from ..prep.normalise import flambda_from_ab_mag  # the bundle records the wavelength: flux_1e17 = flux_norm * norm

log = logging.getLogger(__name__)


PREPARE_CHUNK = 16
"""`Predictor.prepare_stack` works on this many cutouts at a time (1.3 MB of 64x64x5 float32: its
passes stay in the CPU caches instead of streaming whole batches through memory)."""
IMAGE_CHECK_CODES = (("band(s)", "missing_band"), ("band shapes", "wrong_shape"), ("a band has no finite", "no_finite_pixels"))
"""`check_cutout` reasons that are sentences, by prefix -> their stable skip code."""
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def check_code(reason: str) -> str:
    """Stable skip code of a `Predictor.check_cutout` reason (the prepare stage's codes pass through)."""
    if _CODE.match(reason):
        return reason
    for prefix, code in IMAGE_CHECK_CODES:
        if reason.startswith(prefix):
            return code
    return "rejected_by_image_checks"


class InputError(ValueError):
    """An image or cutout does not fit the bundle (shape, bands, non-finite pixels)."""


@dataclass
class BatchResult:
    """Predictions for one batch of images (row i <-> image i), as predict and survey write them."""

    flux: np.ndarray
    """(N, P) float32 normalised flux on `Predictor.wave`."""
    sigma: np.ndarray
    """(N, P) float32 1-sigma of the flux (calibrated with the bundle's sigma_scale)."""
    z: np.ndarray | None = None
    """(N,) float32 predicted redshift; None when the model predicts none."""
    z_err: np.ndarray | None = None
    """(N,) float32 1-sigma of `z`; None when the model predicts no redshift."""
    z_used: np.ndarray | None = None
    """(N,) float32 redshift `flux` is decoded at (rest-frame bundle: the user's z where given, else
    `z`); None for an observed-frame decoder, which takes no redshift."""
    z_given: np.ndarray | None = None
    """(N,) bool: True where `z_used` is the user's z; None for an observed-frame decoder."""
    rest_wave: np.ndarray | None = None
    """(R,) float64 rest-frame vacuum wavelength grid [Angstrom] of `rest_flux`; None for an observed-frame decoder."""
    rest_flux: np.ndarray | None = None
    """(N, R) float32 rest-frame prediction (same normalisation as `flux`); None for an observed-frame decoder."""
    rest_sigma: np.ndarray | None = None
    """(N, R) float32 1-sigma of `rest_flux`."""
    photometry_used: np.ndarray | None = None
    """(N,) bool: True where a hybrid bundle saw the object's catalogue photometry (False: images
    alone, `predict.photometry`); None for an images-only bundle."""
    latent_mu: np.ndarray | None = None
    """(N, L) float32 predicted latent mean: with `latent_std` (and z_used, z_given, z_err of a
    rest-frame bundle) what `Predictor.decode_batch` decodes the spectra from."""
    latent_std: np.ndarray | None = None
    """(N, L) float32 latent 1-sigma the sigma was propagated from."""
    rest_columns: np.ndarray | None = None
    """The rest pixels decoded by `predict_batch(measure_only=True)` (`rest_flux`/`rest_sigma` NaN
    elsewhere; `flux`/`sigma` (N, 0): no observed frame); None: the whole spectrum."""
    class_evidence: np.ndarray | None = None
    """(N, K) float32 the direct model's class probabilities the class draws are weighed with (a
    bundle fusing its classes, `models.fusion`); None otherwise."""

    def __len__(self) -> int:
        return len(self.flux)

    @property
    def has_rest(self) -> bool:
        """True when the bundle predicts a rest-frame spectrum (its lines are measured on it)."""
        return self.rest_flux is not None

    @classmethod
    def concat(cls, parts: Sequence["BatchResult"]) -> "BatchResult":
        """Batches in order -> one result (an optional field stays None unless every batch has it)."""
        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return None if not values or any(v is None for v in values) else np.concatenate(values)

        rest_wave = parts[0].rest_wave if parts else None
        return cls(flux=cat("flux"), sigma=cat("sigma"), z=cat("z"), z_err=cat("z_err"), z_used=cat("z_used"),
                   z_given=cat("z_given"), rest_wave=rest_wave, rest_flux=cat("rest_flux"),
                   rest_sigma=cat("rest_sigma"), photometry_used=cat("photometry_used"),
                   latent_mu=cat("latent_mu"), latent_std=cat("latent_std"),
                   rest_columns=parts[0].rest_columns if parts else None, class_evidence=cat("class_evidence"))


@dataclass
class PreparedCutouts:
    """`Predictor.prepare_stack`: network inputs of the usable cutouts, a reason for each other one."""

    images: np.ndarray
    """(M, H, W, C) float32 stretched images of the kept cutouts."""
    kept: np.ndarray
    """(M,) indices into the input list of the cutouts in `images`."""
    rejected: dict[int, tuple[str, str]]
    """input index -> (stable skip code, detail), as `img2spec predict` reports them."""


@dataclass
class Predictor(ManifestView):
    """A loaded inference bundle: `predict(images)` -> `PredictedSpectra`."""

    bundle_dir: Path
    manifest: dict[str, Any]
    cnn: Any
    decoder: Any
    scaling: dict[str, Any]
    wave: np.ndarray
    provenance: dict[str, str] = field(default_factory=dict)
    """Where the bundle came from: {'source': 'path'|'dvc'|'mlflow', 'uri': ..., ...}."""
    image_checks: Any = None
    """`prepare.images` of the training run: the same cutout quality cuts at inference."""
    measure_params: Any = None
    """`measure` params of the training run (`MeasureParams`): predict and survey measure lines,
    indices and classes with the windows evaluate used; None: the built-in defaults."""
    fusion: Any = None
    """The bundle's fusion with its direct model (`models.fusion.Fusion`), None: not fused."""
    runtime: str = "tensorflow"
    """What runs `cnn` and `decoder`: 'onnx' (the bundle's exported graphs) or 'tensorflow' (Keras)."""
    threads: tuple[int, int] = (0, 0)
    """(intra-op, inter-op) threads of that runtime in this process (0: its default, all cores)."""
    _rest_pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    # ----- loading -------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path, *, verify: bool = True, provenance: dict[str, str] | None = None,
                  runtime: str | None = None, threads: tuple[int, int] | None = None) -> "Predictor":
        """Load a local bundle directory (checks every file's sha256 unless verify=False).

        `runtime`: what runs the networks, 'onnx' or 'tensorflow' (None: the bundle's default, its
        exported graphs where it ships them; `predict.runtime.load_networks`). `threads`:
        (intra-op, inter-op) threads of that runtime in this process (None: its default).
        """
        from .runtime import load_fusion, load_networks

        info = BundleInfo.from_path(path, verify=verify, provenance=provenance)
        path = info.bundle_dir
        runtime = runtime or info.default_runtime
        cnn, decoder, used = load_networks(path, runtime, threads)
        scaling = json.loads((path / "image_scaling.json").read_text())
        wave = np.load(path / "wave.npy")
        measure = _measure_params(path)
        return cls(path, info.manifest, cnn, decoder, scaling, wave, info.provenance, _image_checks(path),
                   measure, load_fusion(path, info.manifest, runtime, used, measure), runtime, used)

    @classmethod
    def from_dvc(
        cls, rev: str | None = None, *, repo: str | None = None, path: str = "models/img2spec",
        cache_dir: str | Path | None = None,
    ) -> "Predictor":
        """Fetch `path` at git revision `rev` of a DVC repo (URL or local path) and load it."""
        from .loaders import fetch_dvc_bundle

        local, prov = fetch_dvc_bundle(rev=rev, repo=repo, path=path, cache_dir=cache_dir)
        return cls.from_path(local, provenance=prov)

    @classmethod
    def from_mlflow(cls, uri: str) -> "Predictor":
        """Load from the MLflow registry, e.g. `models:/img2spec@champion` or `models:/img2spec/3`."""
        from .loaders import fetch_mlflow_bundle

        local, prov = fetch_mlflow_bundle(uri)
        return cls.from_path(local, provenance=prov)

    @classmethod
    def load(cls, model: str | Path, *, rev: str | None = None, repo: str | None = None,
             runtime: str | None = None) -> "Predictor":
        """Dispatch: `models:/...` or `runs:/...` -> MLflow; `rev` given -> DVC; else a local path.
        `runtime` as in `from_path`."""
        path, provenance = locate_bundle(model, rev=rev, repo=repo)
        return cls.from_path(path, provenance=provenance, runtime=runtime)

    # ----- metadata ------------------------------------------------------------------
    @property
    def loglam(self) -> np.ndarray:
        return np.log10(np.asarray(self.wave, np.float64))

    def with_options(self, *, sigma_method: str | None = None, n_samples: int | None = None) -> "Predictor":
        """A copy whose defaults (and FITS header) use these inference options.

        The calibration factor belongs to the method it was fitted for: switching method
        drops it (sigma_scale 1.0, uncalibrated).
        """
        inference = dict(self.manifest["inference"])
        if sigma_method is not None and sigma_method != self.sigma_method:
            inference.update(sigma_method=sigma_method, sigma_scale=1.0, sigma_scale_given_z=1.0)
        if n_samples is not None:
            inference["n_samples"] = int(n_samples)
        return replace(self, manifest={**self.manifest, "inference": inference})

    def norm_from_mag(self, mag: float | np.ndarray) -> np.ndarray:
        """PS1 Kron magnitude in the bundle's norm band -> norm (1e-17 erg/s/cm^2/A)."""
        return flambda_from_ab_mag(mag, float(self.manifest["normalisation"]["wavelength_A"]))

    # ----- images --------------------------------------------------------------------
    def check_images(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 matching the bundle, all finite; InputError otherwise."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise InputError(f"images have shape {images.shape}; the bundle expects (N, {', '.join(map(str, self.input_shape))})")
        if not np.isfinite(images).all():
            bad = np.flatnonzero(~np.isfinite(images).reshape(len(images), -1).all(axis=1))
            raise InputError(f"images {bad[:10].tolist()} contain NaN or inf after preprocessing")
        return images

    def check_cutout(self, cutout: Cutout) -> str | None:
        """The prepare stage's quality cut on a raw cutout: a reason to reject it, or None."""
        from ..prep.images import to_nanomaggies

        bands = tuple(self.manifest["input"]["bands"])
        missing = [b for b in bands if b not in cutout.data]
        if missing:
            return f"band(s) {missing} missing"
        shapes = {b: np.shape(cutout.data[b]) for b in bands}
        if any(s != self.input_shape[:2] for s in shapes.values()):
            return f"band shapes {sorted(set(shapes.values()))}, the bundle expects {self.input_shape[:2]}"
        nmgy = to_nanomaggies(cutout.stack(bands), [cutout.magzp[b] for b in bands])
        return self.check_nanomaggies(nmgy, float(cutout.pixel_scale))

    def check_nanomaggies(self, nmgy: np.ndarray, pixel_scale: float) -> str | None:
        """The pixel checks of `check_cutout` on one (H, W, C) nanomaggy image of the bundle's bands."""
        return self.check_nanomaggies_stack(nmgy[None], np.array([pixel_scale]))[0]

    def check_nanomaggies_stack(self, nmgy: np.ndarray, pixel_scale: np.ndarray) -> list[str | None]:
        """`check_nanomaggies` of every image of an (N, H, W, C) stack, vectorised per pixel scale."""
        from ..prep.images import check_images

        reasons: list[str | None] = [None] * len(nmgy)
        empty_band = _empty_band(nmgy)
        for i in np.flatnonzero(empty_band):
            reasons[i] = "a band has no finite pixel"
        for scale in np.unique(pixel_scale[~empty_band]):
            rows = np.flatnonzero(~empty_band & (pixel_scale == scale))
            sub = nmgy if len(rows) == len(nmgy) else nmgy[rows]  # no copy of a clean batch
            for i, reason in zip(rows, check_images(sub, float(scale), self.image_checks)):
                reasons[i] = reason
        return reasons

    def preprocess_cutout(self, cutout: Cutout) -> np.ndarray:
        """A raw 5-band cutout -> (H, W, C) stretched image, exactly as the prepare stage does it."""
        from ..prep.images import preprocess_cutout

        image = np.asarray(preprocess_cutout(cutout, self.scaling), np.float32)
        if image.shape != self.input_shape:
            raise InputError(
                f"cutout {cutout.objid}: shape {image.shape} after preprocessing; the bundle expects {self.input_shape}"
            )
        if not np.isfinite(image).all():
            n_bad = int((~np.isfinite(image)).sum())
            raise InputError(f"cutout {cutout.objid}: {n_bad} NaN/inf pixels after preprocessing")
        return image

    def preprocess_stack(self, stack: np.ndarray, magzp: Sequence[float]) -> np.ndarray:
        """Raw counts (N, H, W, C) with per-band MAGZP -> stretched images (as the prepare stage)."""
        from ..prep.images import preprocess_stack

        return self.check_images(preprocess_stack(np.asarray(stack, np.float32), magzp, self.scaling))

    # ----- prediction ----------------------------------------------------------------
    def predict(
        self, images: np.ndarray, *, n_samples: int | None = None, batch_size: int | None = None,
        seed: int | None = None, sigma_method: str | None = None, z: np.ndarray | None = None,
        photometry: np.ndarray | None = None, rest_columns: np.ndarray | None = None,
    ):
        """Stretched images (N, H, W, C) -> `PredictedSpectra` (normalised flux and sigma on `wave`).

        Unset options take the bundle's values (`publish` params of the training run). `photometry`:
        (N, bands) catalogue magnitudes in `photometry_bands` order for a hybrid bundle (ignored by an
        images-only one); objects without a finite magnitude in every band are predicted from images
        alone (`predict.photometry`). z_err is calibrated with the bundle's factor for each path.
        `rest_columns`: a rest-frame bundle decodes only these rest pixels (`predict_spectra`).
        """
        import functools

        from ..models.inference import predict_spectra

        images = self.check_images(images)
        call = functools.partial(predict_spectra, self.cnn, self.decoder, rest_columns=rest_columns,
                                 refine=self.fusion, **self._decode_options(n_samples, batch_size, seed, sigma_method))
        # z: user redshifts (NaN: unknown); only a rest-frame decoder uses them
        if self.photometry_bands is None:
            return call(images, z=z, z_err_scale=self.z_err_scale)
        mags, used = check_photometry(photometry, len(images), self.photometry_bands, quiet=True)
        return predict_split(call, images, mags, used, z, self.z_err_scale, self.z_err_scale_images_only)

    def _decode_options(self, n_samples: int | None, batch_size: int | None, seed: int | None,
                        sigma_method: str | None) -> dict[str, Any]:
        """Decoding options of `predict` and `decode_batch` (unset: the bundle's)."""
        return dict(
            n_samples=self.n_samples if n_samples is None else int(n_samples),
            batch_size=self.batch_size if batch_size is None else int(batch_size),
            seed=self.seed if seed is None else int(seed),
            sigma_method=self.sigma_method if sigma_method is None else sigma_method,
            # the factor was fitted for the bundle's method only
            sigma_scale=self.sigma_scale if sigma_method in (None, self.sigma_method) else 1.0,
            sigma_scale_given_z=self.sigma_scale_given_z if sigma_method in (None, self.sigma_method) else 1.0,
        )

    def decode_batch(self, latent_mu: np.ndarray, latent_std: np.ndarray, *, z_used: np.ndarray | None = None,
                     z_given: np.ndarray | None = None, z_err: np.ndarray | None = None,
                     batch_size: int | None = None, seed: int | None = None, with_sigma: bool = True) -> BatchResult:
        """Spectra of stored latents (`BatchResult.latent_mu`, `latent_std`, z_used, z_given, z_err)
        with this predictor's options: `models.inference.decode_latents`, the decode `predict_batch`
        runs, so the rows `predict_batch` decoded in one call, decoded again in one call with the
        same `batch_size` and `seed`, give the same bits. `with_sigma=False`: flux only (sigma NaN)."""
        from ..models.inference import decode_latents

        pred = decode_latents(self.decoder, latent_mu, latent_std, z_used=z_used, z_given=z_given, z_err=z_err,
                              with_sigma=with_sigma, **self._decode_options(None, batch_size, seed, None))
        if not with_sigma:  # one BatchResult layout: sigma is an array, NaN when not computed
            pred = replace(pred, sigma=np.full_like(pred.flux, np.nan),
                           rest_sigma=None if pred.rest_flux is None else np.full_like(pred.rest_flux, np.nan))
        return _batch_result(pred, None)

    def predict_batch(self, images: np.ndarray, *, batch_size: int | None = None, seed: int | None = None,
                      z: np.ndarray | None = None, photometry: np.ndarray | None = None,
                      object_ids: Sequence[Any] | None = None, measure_only: bool = False) -> BatchResult:
        """The per-batch inference shared by `img2spec predict` and `img2spec survey`.

        Stretched images (N, H, W, C) -> `BatchResult` with the predictor's inference
        options (`with_options`); z / z_err are filled when the CNN predicts redshift.
        `z`: the user's redshifts (NaN where unknown), at which a rest-frame decoder decodes;
        such a bundle also fills z_used / z_given and the rest-frame spectrum (rest_*).
        `photometry`: as in `predict`; `photometry_used` says which objects had it (fallbacks are
        logged with their `object_ids`).
        `measure_only`: a rest-frame bundle with the linearised sigma decodes only the rest pixels its
        measurements read (`measured_rest_pixels`), no observed frame (`BatchResult.rest_columns`):
        the measurements, not the spectra (the survey's compact store decodes those on read).
        """
        columns = self.measured_rest_pixels() if measure_only else None
        pred = self.predict(images, batch_size=batch_size, seed=seed, z=z, photometry=photometry,
                            rest_columns=columns)
        used = None if self.photometry_bands is None else \
            check_photometry(photometry, len(pred.flux), self.photometry_bands, object_ids)[1]
        return _batch_result(pred, used)

    def class_draws(self, result: BatchResult):
        """`models.class_draws.ClassDraws` of a predicted batch: its latent posterior drawn, each draw
        measured with the batch's rest-frame sigma and classified, weighed with the batch's
        `class_evidence` (a bundle fusing its classes); None for an observed-frame bundle."""
        if not result.has_rest or result.latent_mu is None or result.latent_std is None:
            return None
        from ..config.measure import MeasureParams
        from ..models.class_draws import draw_classes, weigh_draws

        draws = draw_classes(self.decoder, result.latent_mu, result.latent_std, result.z_used,
                             self.measure_params or MeasureParams(), sigma=result.rest_sigma)
        return None if draws is None else weigh_draws(draws, result.class_evidence)

    def measured_rest_pixels(self) -> np.ndarray | None:
        """The rest-frame pixels this bundle's measurements read (`measure.table.rest_pixels` with its
        `measure` params); None for an observed-frame decoder, whose windows move with z."""
        from ..models.inference import rest_decoder

        rest = rest_decoder(self.decoder)
        if rest is None:
            return None
        if self._rest_pixels is None:
            from ..config.measure import MeasureParams
            from ..measure.table import rest_pixels

            self._rest_pixels = rest_pixels(rest.grid.wave, self.measure_params or MeasureParams())
        return self._rest_pixels

    def prepare_stack(
        self, stack: np.ndarray, magzp: np.ndarray, bands: Sequence[str], pixel_scale: np.ndarray,
        object_ids: Sequence[Any],
    ) -> PreparedCutouts:
        """Raw cutouts (N, H, W, n_bands) in `bands` order -> stretched images of those that pass.

        The checks and the arithmetic of `check_cutout` + `preprocess_cutout`, vectorised:
        per `PREPARE_CHUNK` objects, counts -> nanomaggies (bands reordered to the bundle's
        in the same pass), the prepare stage's pixel checks (no finite pixel in a band, NaN
        or saturated centre, off-centre), then the stretch in place, while the chunk is in
        the CPU caches; an object with NaN/inf after the stretch is rejected too. Missing
        bands or another image size reject every object, with the reason `check_cutout`
        gives. `stack` may be any strided view (e.g. the shard's (N, bands, H, W) moved to
        bands last); `magzp` is (N, n_bands), `pixel_scale` (N,) arcsec.
        """
        want = tuple(self.manifest["input"]["bands"])
        n = len(stack)
        h, w, c = self.input_shape
        missing = [b for b in want if b not in bands]
        reason = None
        if missing:
            reason = f"band(s) {missing} missing"
        elif tuple(stack.shape[1:3]) != (h, w):
            reason = f"band shapes {[tuple(stack.shape[1:3])]}, the bundle expects {(h, w)}"
        if reason is not None:
            rejected = {i: (check_code(reason), f"rejected by image checks: {reason}") for i in range(n)}
            return PreparedCutouts(np.zeros((0, h, w, c), np.float32), np.zeros(0, np.int64), rejected)
        order = [list(bands).index(b) for b in want]
        reorder = order != list(range(len(bands)))  # else no fancy-index copy of the chunk
        magzp = np.asarray(magzp, np.float64)[:, order]
        pixel_scale = np.asarray(pixel_scale, np.float64)
        images = np.empty((n, h, w, c), np.float32)
        reasons: list[str | None] = []
        for s in range(0, n, PREPARE_CHUNK):
            e = min(n, s + PREPARE_CHUNK)
            chunk = stack[s:e][..., order] if reorder else stack[s:e]
            self._prepare_chunk(chunk, magzp[s:e], pixel_scale[s:e], images[s:e], reasons)
        return self._kept(images, reasons, object_ids)

    def _prepare_chunk(self, stack: np.ndarray, magzp: np.ndarray, pixel_scale: np.ndarray, out: np.ndarray,
                       reasons: list[str | None]) -> None:
        """Nanomaggies of `stack` into `out`, their check reasons appended to `reasons`, then `out` stretched."""
        from ..prep.images import stretch_inplace, to_nanomaggies

        to_nanomaggies(stack, magzp, out=out)
        reasons.extend(self.check_nanomaggies_stack(out, pixel_scale))
        stretch_inplace(out, self.scaling)

    @staticmethod
    def _kept(images: np.ndarray, reasons: list[str | None], object_ids: Sequence[Any]) -> PreparedCutouts:
        """The images that passed the checks and are finite after the stretch; a reason for each other one."""
        rejected = {i: (check_code(r), f"rejected by image checks: {r}") for i, r in enumerate(reasons) if r is not None}
        flat = images.reshape(len(images), -1)
        bad = ~np.isfinite(flat.sum(axis=1))  # a finite sum: every pixel finite (else count them below)
        for i in np.flatnonzero(bad):
            n_bad = int((~np.isfinite(flat[i])).sum())
            if i not in rejected and n_bad:
                rejected[int(i)] = ("preprocessing_failed",
                                    f"cutout {object_ids[i]}: {n_bad} NaN/inf pixels after preprocessing")
        kept = np.asarray([i for i in range(len(images)) if i not in rejected], np.int64)
        images = images if len(kept) == len(images) else images[kept]
        return PreparedCutouts(images, kept, dict(sorted(rejected.items())))

    def predict_counts(self, stack: np.ndarray, magzp: Sequence[float], **kwargs):
        """Raw linear-count cutouts (N, H, W, C) and their MAGZP -> `PredictedSpectra`."""
        return self.predict(self.preprocess_stack(stack, magzp), **kwargs)

    def header(self) -> dict[str, Any]:
        """FITS header cards naming the model of a prediction (8-character keywords)."""
        cards: dict[str, Any] = {
            "HIERARCH PREDICTED": (True, "a prediction, not an observation"),
            "MODEL": (self.name, "img2spec model name"),
            "MODELVER": (self.version, "img2spec version of the bundle"),
            "MODELHSH": (self.bundle_hash[:16], "bundle hash: sha256 of bundle.json (16 hex)"),
            "MODELSRC": (self.provenance.get("source", "path"), "bundle loaded from: path | dvc | mlflow"),
            "SIGMETH": (self.sigma_method, "uncertainty: linearised | sampled"),
            "SIGSCALE": (round(self.sigma_scale, 6), "calibration factor applied to sigma (val fit)"),
            "NSAMPLE": (self.n_samples, "latent samples (SIGMETH = sampled)"),
            "FRAME": (self.frame, "wavelength frame of the prediction"),
            "FUSED": (",".join(self.fusion.quantities) if self.fusion is not None else "none",
                      "pulled toward the direct model's predictions"),
            "FUSECLS": (bool(self.fusion is not None and self.fusion.classes),
                        "class draws weighed by direct classes"),
        }
        if "registry_version" in self.provenance:
            cards["MLFLOWV"] = (str(self.provenance["registry_version"]), "MLflow registered model version")
        if "rev" in self.provenance:
            cards["DVCREV"] = (str(self.provenance["rev"])[:60], "git revision of the DVC bundle")
        return cards


def _batch_result(pred, used: np.ndarray | None) -> BatchResult:
    """A `models.inference.PredictedSpectra` as the `BatchResult` predict and survey write."""
    def field_(name: str, dtype) -> np.ndarray | None:  # fields a decoder without them leaves None
        value = getattr(pred, name, None)
        return None if value is None else np.asarray(value, dtype)

    return BatchResult(
        flux=np.asarray(pred.flux, np.float32), sigma=np.asarray(pred.sigma, np.float32),
        z=field_("z", np.float32), z_err=field_("z_err", np.float32),
        z_used=field_("z_used", np.float32), z_given=field_("z_given", bool),
        rest_wave=field_("rest_wave", np.float64), rest_flux=field_("rest_flux", np.float32),
        rest_sigma=field_("rest_sigma", np.float32), photometry_used=used,
        latent_mu=field_("latent_mu", np.float32), latent_std=field_("latent_std", np.float32),
        rest_columns=field_("rest_columns", np.int64), class_evidence=field_("class_evidence", np.float32),
    )


def _empty_band(nmgy: np.ndarray) -> np.ndarray:
    """(N,) True where an (N, H, W, C) image has a band without one finite pixel.

    A finite sum over an image means every pixel is finite: one cheap pass decides for the
    (usual) clean images, and only the others are looked at band by band.
    """
    out = np.zeros(len(nmgy), bool)
    suspect = np.flatnonzero(~np.isfinite(nmgy.reshape(len(nmgy), -1).sum(axis=1)))
    if len(suspect):
        out[suspect] = ~np.isfinite(nmgy[suspect]).any(axis=(1, 2)).all(axis=-1)
    return out


def _image_checks(bundle: Path):
    """`prepare.images` from the bundle's params.yaml (defaults, with a warning, if unreadable)."""
    import yaml
    from pydantic import ValidationError

    from ..config.prepare import ImageCheckParams

    try:
        raw = yaml.safe_load((bundle / "params.yaml").read_text()) or {}
        return ImageCheckParams.model_validate((raw.get("prepare") or {}).get("images") or {})
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        log.warning("%s: cannot read prepare.images (%s); using default image checks", bundle / "params.yaml", exc)
        return ImageCheckParams()


def _measure_params(bundle: Path):
    """`measure` from the bundle's params.yaml; the defaults, with a warning, for a bundle that
    records none (made before publish recorded them) or an unreadable one."""
    import yaml
    from pydantic import ValidationError

    from ..config.measure import MeasureParams

    path = bundle / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        section = raw.get("measure")
        if section is None:
            log.warning("%s: no measure params recorded (an older bundle); measuring with the default windows", path)
            return MeasureParams()
        return MeasureParams.model_validate(section)
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        log.warning("%s: cannot read measure params (%s); measuring with the default windows", path, exc)
        return MeasureParams()

"""Training entry points (no file I/O unless `out_dir` is given; callbacks injectable).

`train_vae(vae_params, data)` and `train_cnn(cnn_params, data, latents, decoder)` build
their models and callbacks afresh on every call (the Optuna objectives call them once
per trial) after `keras.utils.clear_session()` and seeding, and return a `TrainResult`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..logs import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from ..config.measure import MeasureParams  # noqa: E402
from ..config.models import CNNParams, VAEParams  # noqa: E402
from ..io.atomic import atomic_path, write_json  # noqa: E402
from .cnn import PHOTOMETRY_BANDS, PHOTOMETRY_FEATURES, build_cnn, photometry_features, photometry_stats  # noqa: E402
from .data import catalogue_magnitudes, clean_flux, image_dataset, spectra_dataset  # noqa: E402
from .latents import Latents, as_latents  # noqa: E402
from .layers import FillPixels, fill_indices  # noqa: E402
from .optimizer import compile_adam  # noqa: E402
from .trainer import CNNTrainer  # noqa: E402
from .vae import (KLWarmup, SpectrumVAE, build_decoder, build_encoder, build_rest_decoder,  # noqa: E402
                  build_rest_encoder, is_redshift_conditioned)

log = logging.getLogger(__name__)

MIN_TARGET_STD = 1e-6
"""Floor of a latent's train-split std (a dead latent must not divide by zero)."""


MIN_TRAIN_COVERAGE = 0.01
"""A pixel unmasked in fewer train spectra than this fraction is interpolated in the saved
decoder (the likelihood never constrained it)."""


def with_filled_pixels(decoder: keras.Model, trained: np.ndarray) -> keras.Model:
    """The decoder with untrained pixels interpolated (`FillPixels`); unchanged if none."""
    trained = np.asarray(trained, bool)
    if trained.all():
        return decoder
    z = keras.Input(decoder.input_shape[1:], name="latent")
    out = FillPixels(*fill_indices(trained), name="fill_untrained")(decoder(z))
    return keras.Model(z, out, name="decoder")


@dataclass
class TrainResult:
    model: Any
    """VAE: the `SpectrumVAE` (`.encoder`, `.decoder`); CNN: the saved-form CNN."""
    history: dict[str, list[float]]
    best_val_loss: float
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def reset_keras(seed: int) -> None:
    """Fresh graph state and every RNG seeded; deterministic TF ops (3-sig-fig reruns)."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(int(seed))
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception as exc:  # pragma: no cover - older TF
        log.debug("op determinism unavailable: %s", exc)


def _split_indices(data, split: str) -> np.ndarray:
    idx = data.indices(split)
    if len(idx) == 0:
        raise ValueError(f"{data.root}: the {split} split is empty; cannot train")
    return idx


def _best(history: dict[str, list[float]], key: str = "val_loss", start: int = 0) -> float:
    values = [v for v in history.get(key, [])[start:] if math.isfinite(v)]
    if not values:
        values = [v for v in history.get(key, []) if math.isfinite(v)]
    return float(min(values)) if values else float("nan")


def _plateau(p: VAEParams | CNNParams) -> keras.callbacks.Callback:
    """Halve (lr_factor) the learning rate when val loss stalls for lr_patience epochs:
    the chi-square losses are noisy at a fixed rate and settle much lower after a cut."""
    return keras.callbacks.ReduceLROnPlateau("val_loss", factor=p.lr_factor, patience=p.lr_patience)


def _history(h: keras.callbacks.History) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in h.history.items()}


# ----------------------------------------------------------------------------- VAE
def train_vae(vae_params: VAEParams, data, *, callbacks: Sequence[keras.callbacks.Callback] = (),
              out_dir: str | Path | None = None, verbose: int = 0) -> TrainResult:
    """Train the spectrum VAE on the train split (early stopping on the val split)."""
    p = vae_params
    reset_keras(p.seed)
    start = time.perf_counter()
    tr, va = _split_indices(data, "train"), _split_indices(data, "val")
    z_tr = z_va = None
    if p.frame == "rest" and data.frame == "rest":  # the decoder would redshift rest spectra a second time
        raise ValueError(f"{data.root}: vae.frame: rest decodes onto the observed grid, but these data are on a "
                         "rest-frame grid (prepare.frame: rest); use vae.frame: observed with them")
    if p.frame == "rest":
        tr, va, z_tr, z_va = _with_redshift(data, tr, va)
    flux_tr, ivar_tr = clean_flux(data.flux[tr], data.ivar[tr])
    flux_va, ivar_va = clean_flux(data.flux[va], data.ivar[va])
    trained_pixels = (ivar_tr > 0).mean(axis=0) >= MIN_TRAIN_COVERAGE
    if p.line_weight != 1.0:  # the encoder reads ivar as a mask only: weights change the loss alone
        z_all = data.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)
        ivar_tr = ivar_tr * line_weights(data.wave, z_all[tr], p.line_weight, p.line_halfwidth_kms, data.frame)
        ivar_va = ivar_va * line_weights(data.wave, z_all[va], p.line_weight, p.line_halfwidth_kms, data.frame)
    n_pix = flux_tr.shape[1]
    encoder = build_encoder(n_pix, p.latent_dim, p.encoder_units)
    if p.frame == "rest":
        encoder = build_rest_encoder(data.wave, p.latent_dim, p.encoder_units, float(z_tr.min()), float(z_tr.max()),
                                     p.rest_oversample)
        decoder = build_rest_decoder(data.wave, p.latent_dim, p.decoder_units, float(z_tr.min()), float(z_tr.max()),
                                     p.rest_oversample, skip=p.decoder_skip)
    else:
        decoder = build_decoder(n_pix, p.latent_dim, p.decoder_units, skip=p.decoder_skip)
    vae = SpectrumVAE(encoder, decoder, kl_weight=p.kl_weight, seed=p.seed)
    compile_adam(vae, p.learning_rate)
    # The val loss rises while the KL weight ramps up: compare epochs only after warm-up.
    warm = min(p.kl_warmup_epochs, max(p.epochs - 1, 0))
    stop = keras.callbacks.EarlyStopping("val_loss", patience=p.patience, restore_best_weights=True,
                                         start_from_epoch=warm)
    hist = vae.fit(
        spectra_dataset(flux_tr, ivar_tr, batch_size=p.batch_size, training=True, seed=p.seed, z=z_tr),
        validation_data=spectra_dataset(flux_va, ivar_va, batch_size=p.batch_size, training=False, z=z_va),
        epochs=p.epochs, verbose=verbose,
        callbacks=[KLWarmup(p.kl_warmup_epochs), keras.callbacks.TerminateOnNaN(), _plateau(p), stop, *callbacks],
    )
    history = _history(hist)
    seconds = time.perf_counter() - start
    result = TrainResult(vae, history, _best(history, start=warm), seconds,
                         {"epochs_run": len(history.get("loss", [])), "n_train": len(tr), "n_val": len(va),
                          "n_pix": n_pix, "latent_dim": p.latent_dim,
                          "trained_pixels": trained_pixels})
    log.info("VAE: %d epochs in %.0f s, best val loss %.4f", result.info["epochs_run"], seconds, result.best_val_loss)
    if out_dir is not None:
        save_vae(result, p, data, out_dir)
    return result


def line_weights(wave: np.ndarray, z: np.ndarray, weight: float, halfwidth_kms: float,
                 frame: str = "observed") -> np.ndarray:
    """(N, P) likelihood weights: `weight` within +-halfwidth_kms of every emission line of
    `LINE_REST_VACUUM_A` at each object's z (z = 0 on a rest-frame grid; no finite z: 1), else 1."""
    from ..config.constants import C_KMS, LINE_REST_VACUUM_A

    lines = np.array(sorted(LINE_REST_VACUUM_A.values()), np.float64)
    z = np.zeros(len(z)) if frame == "rest" else np.asarray(z, np.float64)
    ln_wave = np.log(np.asarray(wave, np.float64))
    near = np.zeros((len(z), ln_wave.size), bool)
    for ln_line in np.log(lines):  # one line at a time: (N, P) memory, not (N, P, lines)
        near |= np.abs(ln_wave[None, :] - (ln_line + np.log1p(z))[:, None]) <= halfwidth_kms / C_KMS
    return np.where(near, np.float32(weight), np.float32(1.0)).astype(np.float32)


def _with_redshift(data, tr: np.ndarray, va: np.ndarray):
    """Train/val rows with a finite redshift and their z (a rest-frame decoder needs z to
    decode; rows without one are left out of VAE training and counted in the log)."""
    if data.frame != "observed":
        raise ValueError(f"vae.frame: rest needs observed-frame spectra, but {data.root} holds {data.frame}-frame "
                         "spectra (prepare.frame); use vae.frame: observed")
    z = data.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)
    keep_tr, keep_va = tr[np.isfinite(z[tr])], va[np.isfinite(z[va])]
    dropped = len(tr) + len(va) - len(keep_tr) - len(keep_va)
    if dropped:
        log.warning("vae.frame rest: %d train/val spectra without a finite z left out of VAE training", dropped)
    if len(keep_tr) == 0 or len(keep_va) == 0:
        raise ValueError(f"{data.root}: no train or val spectrum has a finite z; vae.frame: rest cannot train")
    return keep_tr, keep_va, z[keep_tr].astype(np.float32), z[keep_va].astype(np.float32)


def save_vae(result: TrainResult, p: VAEParams, data, out_dir: str | Path) -> None:
    """encoder.keras, decoder.keras, wave.npy and vae.json into `out_dir` (atomic per file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    decoder = with_filled_pixels(result.model.decoder, result.info["trained_pixels"])
    for name, model in (("encoder", result.model.encoder), ("decoder", decoder)):
        with atomic_path(out / f"{name}.keras", suffix=".keras") as tmp:
            model.save(tmp)
    with atomic_path(out / "wave.npy", suffix=".npy") as tmp:
        np.save(tmp, np.asarray(data.wave, np.float64))
    write_json(out / "vae.json", {
        "latent_dim": p.latent_dim, "n_pix": int(result.info["n_pix"]), "wave_file": "wave.npy",
        "frame": data.frame, "decoder_frame": p.frame, "decoder_input": (
            "concat(latents, z)" if p.frame == "rest" else "latents"), "params": p.model_dump(mode="json"),
        "n_interpolated_pixels": int((~np.asarray(result.info["trained_pixels"], bool)).sum()),
        "training": {"best_val_loss": result.best_val_loss, "seconds": round(result.seconds, 1),
                     **{k: v for k, v in result.info.items() if k != "trained_pixels"}, "history": result.history},
        "loss": "0.5 * chi2 / P + kl_weight * KL / P (ivar-weighted, masked pixels weight 0)",
    })


# ----------------------------------------------------------------------------- CNN
REDSHIFT_COLUMN = "z"
"""Catalogue column of the spectroscopic redshift (the redshift head's training target)."""


def redshift_targets(data, train: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """(N, 2) [z, has_z] targets in catalogue order and the train-split z mean/std.

    Objects without a finite z get has_z = 0 (their redshift loss is zero), never a guess.
    """
    if REDSHIFT_COLUMN not in data.catalog:
        raise KeyError(f"{data.root}: catalog.parquet has no {REDSHIFT_COLUMN!r} column; "
                       "set cnn.redshift_weight: 0 to train without the redshift head")
    z = data.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)
    ok = np.isfinite(z)
    if not ok[train].any():
        raise ValueError(f"{data.root}: no train object has a finite redshift")
    z_mean = float(z[train][ok[train]].mean())
    z_std = float(max(z[train][ok[train]].std(), MIN_TARGET_STD))
    target = np.column_stack([np.where(ok, z, z_mean), ok]).astype(np.float32)
    return target, {"z_mean": z_mean, "z_std": z_std, "n_train_with_z": int(ok[train].sum())}


def photometry_inputs(data, train: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, F + 1) photometry input of every catalogue row (`cnn.photometry_features` of the `mag_<band>`
    columns) and its train-split statistics (folded into the hybrid CNN, recorded in cnn.json)."""
    feats = photometry_features(catalogue_magnitudes(data.catalog))
    mean, std = photometry_stats(feats[train])
    missing = feats[:, -1] > 0.5
    return feats, {"bands": list(PHOTOMETRY_BANDS), "features": list(PHOTOMETRY_FEATURES), "mean": mean.tolist(),
                   "std": std.tolist(), "n_train_without_photometry": int(missing[train].sum())}


def _measurement_terms(p: CNNParams, data, decoder, tr: np.ndarray, va: np.ndarray, mp: MeasureParams,
                       conditioned: bool, targets: dict) -> tuple[tuple[Any, Any], dict]:
    """((measurement term, class term), their info) for `p`, each None when its weight is 0; their
    targets are added to `targets`."""
    if p.measure_weight <= 0:  # a class weight without it: CNNTrainer refuses
        return (None, None), {}
    if p.loss != "spectrum" or not conditioned:
        raise ValueError("cnn.measure_weight > 0 measures the decoded rest-frame spectrum: it needs "
                         "cnn.loss: spectrum and a rest-frame decoder (vae.frame: rest)")
    from .direct import target_arrays
    from .measure_loss import measure_term

    measured = target_arrays(data, tr, va, mp)
    term, measure_targets, info = measure_term(decoder, data, tr, va, mp, p.measure_huber_delta,
                                               p.measure_quantities, p.measure_ew_softening, measured=measured,
                                               balance=p.measure_balance)
    targets.update(measure_targets)
    if p.measure_class_weight <= 0:
        return (term, None), info
    from .class_loss import class_term

    classes, class_targets, info["classes"] = class_term(term, measured[0], tr, mp.classes,
                                                         p.measure_class_temperature, p.measure_class_decisions)
    targets.update(class_targets)
    return (term, classes), info


def target_stats(train_mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the train split's latent means: the standardisation folded into the CNN."""
    return train_mu.mean(axis=0), np.maximum(train_mu.std(axis=0), MIN_TARGET_STD)


def train_cnn(cnn_params: CNNParams, data, latents: Latents | Any, decoder: keras.Model | None = None, *,
              callbacks: Sequence[keras.callbacks.Callback] = (), out_dir: str | Path | None = None,
              verbose: int = 0, name: str = "cnn", measure_params: MeasureParams | None = None) -> TrainResult:
    """Train the image CNN on `latents` (VAE posteriors or any (N, L) targets, catalogue
    row order) from the train split, early stopping on the val split.

    `decoder` (latents -> normalised flux) is needed for `cnn_params.loss = spectrum`.
    The returned model outputs concat(mean, logvar) in latent units. With `cnn_params.photometry`
    it also takes the catalogue photometry (`photometry_inputs`), withheld for a random
    `photometry_missing_fraction` of each training batch so it also predicts from images alone.
    `measure_params` (default: `MeasureParams()`, params.yaml's values) defines the measurements of
    the `cnn_params.measure_weight` term (`measure_loss`); unused at weight 0.
    """
    p = cnn_params
    lat = as_latents(latents)
    if len(lat.mu) != len(data):
        raise ValueError(f"latents have {len(lat.mu)} rows but {data.root} has {len(data)} objects")
    reset_keras(p.seed)
    start = time.perf_counter()
    tr, va = _split_indices(data, "train"), _split_indices(data, "val")
    L = lat.mu.shape[1]
    mean, std = target_stats(lat.mu[tr])
    images = data.images
    conditioned = decoder is not None and is_redshift_conditioned(decoder, L)
    if conditioned and p.redshift_weight <= 0:
        raise ValueError("a rest-frame decoder (vae.frame: rest) decodes at the predicted z: "
                         "set cnn.redshift_weight > 0 so the CNN predicts it")
    z_target, z_stats = redshift_targets(data, tr) if p.redshift_weight > 0 else (None, {})
    phot, phot_stats = photometry_inputs(data, tr) if p.photometry else (None, {})
    cnn = build_cnn(tuple(images.shape[1:]), L, p, mean, std, z_stats.get("z_mean"), z_stats.get("z_std"),
                    phot_stats.get("mean"), phot_stats.get("std"))
    targets = {"mu": lat.mu, "var": np.exp(lat.logvar)}
    terms, measure_info = _measurement_terms(p, data, decoder, tr, va, measure_params or MeasureParams(),
                                             conditioned, targets)
    trainer = CNNTrainer(cnn, L, p.loss, decoder if p.loss == "spectrum" else None,
                         redshift_weight=p.redshift_weight, measure_loss=terms[0], measure_weight=p.measure_weight,
                         class_loss=terms[1], class_weight=p.measure_class_weight,
                         hypothesis_relax=p.hypothesis_relax, hypothesis_winner=p.hypothesis_winner)
    compile_adam(trainer, p.learning_rate)
    if p.loss == "spectrum":
        targets.update(flux=data.flux, ivar=data.ivar)
        if p.line_weight != 1.0:  # the line windows weigh more in the chi-square (see vae.line_weight)
            z_cat = data.catalog[REDSHIFT_COLUMN].to_numpy(np.float64)
            targets["ivar"] = np.asarray(data.ivar, np.float32) * line_weights(
                data.wave, z_cat, p.line_weight, p.line_halfwidth_kms, data.frame)
    if z_target is not None:
        targets["z"] = z_target
    train_ds = image_dataset(images, tr, targets, batch_size=p.batch_size, training=True, seed=p.seed,
                             shift_pixels=p.shift_pixels, photometry=phot,
                             withhold_fraction=p.photometry_missing_fraction)
    # val: the photometry as the catalogue has it (the use the model is published for)
    val_ds = image_dataset(images, va, targets, batch_size=p.batch_size, training=False, photometry=phot)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=p.patience, restore_best_weights=True)
    hist = trainer.fit(train_ds, validation_data=val_ds, epochs=p.epochs,
                       steps_per_epoch=math.ceil(len(tr) / p.batch_size), verbose=verbose,
                       callbacks=[keras.callbacks.TerminateOnNaN(), _plateau(p), stop, *callbacks])
    history = _history(hist)
    seconds = time.perf_counter() - start
    result = TrainResult(cnn, history, _best(history), seconds,
                         {"epochs_run": len(history.get("loss", [])), "n_train": len(tr), "n_val": len(va),
                          "seed": p.seed, "latent_dim": L, "loss": p.loss, "input_shape": list(images.shape[1:]),
                          "redshift_head": z_target is not None, **z_stats,
                          **({"photometry": phot_stats} if phot_stats else {}),
                          **({"measure_targets": measure_info} if measure_info else {})})
    log.info("%s: %d epochs in %.0f s, best val loss %.4f", name, result.info["epochs_run"], seconds,
             result.best_val_loss)
    if out_dir is not None:
        save_cnn(result, p, out_dir, extra={"target_mean": mean, "target_std": std})
    return result


def member_params(p: CNNParams, k: int) -> CNNParams:
    """Ensemble member k's params: one network (`ensemble: 1`) seeded `seed + k`."""
    return p.model_copy(update={"seed": p.seed + k, "ensemble": 1})


def ensemble_result(results: Sequence[TrainResult], model: Any) -> TrainResult:
    """One TrainResult for an ensemble `model` of the members' `results`: member 0's history and info,
    the mean best val loss, the summed time and epochs, and every member's in info["ensemble"]."""
    first = results[0]
    if len(results) == 1:
        return first
    members = {"members": len(results), "seeds": [r.info.get("seed") for r in results],
               "best_val_loss": [r.best_val_loss for r in results],
               "epochs_run": [r.info["epochs_run"] for r in results], "seconds": [round(r.seconds, 1) for r in results]}
    info = {**first.info, "epochs_run": int(sum(members["epochs_run"])), "ensemble": members}
    return TrainResult(model, first.history, float(np.mean(members["best_val_loss"])),
                       float(sum(r.seconds for r in results)), info)


def train_cnn_ensemble(cnn_params: CNNParams, data, latents: Latents | Any, decoder: keras.Model | None = None, *,
                       callbacks_for: Callable[[int], Sequence[keras.callbacks.Callback]] = lambda k: (),
                       out_dir: str | Path | None = None, name: str = "cnn",
                       measure_params: MeasureParams | None = None) -> TrainResult:
    """`cnn_params.ensemble` CNNs (`train_cnn`, seeds seed, seed + 1, ...) published as one network
    (`ensemble.cnn_ensemble`); `callbacks_for(k)` gives member k's callbacks. One member: `train_cnn`."""
    from .ensemble import cnn_ensemble

    p = cnn_params
    results = []
    for k in range(p.ensemble):
        member = f"{name} member {k}" if p.ensemble > 1 else name
        results.append(train_cnn(member_params(p, k), data, latents, decoder, callbacks=callbacks_for(k),
                                 name=member, measure_params=measure_params))
    model = cnn_ensemble([r.model for r in results], results[0].info["redshift_head"], name=name)
    result = ensemble_result(results, model)
    if out_dir is not None:
        mean, std = target_stats(as_latents(latents).mu[_split_indices(data, "train")])
        save_cnn(result, p, out_dir, extra={"target_mean": mean, "target_std": std})
    return result


def save_cnn(result: TrainResult, p: CNNParams, out_dir: str | Path, extra: dict | None = None) -> None:
    """cnn.keras and cnn.json into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "cnn.keras", suffix=".keras") as tmp:
        result.model.save(tmp)
    write_json(out / "cnn.json", {
        "latent_dim": result.info["latent_dim"], "input_shape": result.info["input_shape"],
        "output": "concat(latent mean, latent log-variance) in latent units (standardisation folded in)",
        "params": p.model_dump(mode="json"),
        "training": {"best_val_loss": result.best_val_loss, "seconds": round(result.seconds, 1),
                     **result.info, "history": result.history},
        **(extra or {}),
    })

"""The "direct" baseline: the image CNN trained to predict the measurements themselves.

What an astronomer measures on a predicted spectrum (EW(Halpha), Dn4000, Hdelta_A, the BPT
log ratios and the star-forming / BPT / AGN classes) is here predicted straight from the
images by the same network (`cnn.build_cnn`: same inputs, `cnn:` params, split, seed and
augmentation as the spectrum CNN), with regression heads (Gaussian NLL on train-standardised
targets) and one softmax head per class scheme on its "dense" layer. It bounds what the
images know about each quantity, without a spectrum in between.

Targets are `measure.measure_spectra` of the OBSERVED train and val spectra (flux, ivar) at
the catalogue redshift with `params.measure` (real data has no noiseless truth, so the truth
never trains anything); test rows are never read. NaN measurements and unclassified objects
are masked out of the loss. Classes are weighted by inverse train frequency, so the heads aim
at the balanced accuracy the evaluate stage reports.

Saved to `models/direct/`: `direct.keras` (outputs standardised quantity means and
log-variances and class probabilities) and `direct.json` (names, standardisation, labels,
class weights, history). With `cnn.train_direct: false` the stage writes only a `direct.json`
that says so, and evaluate notes the missing method.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..logs import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
from keras import ops  # noqa: E402

from ..config import Params  # noqa: E402
from ..config.fusion import FusionParams  # noqa: E402
from ..config.measure import MeasureParams  # noqa: E402
from ..config.models import CNNParams  # noqa: E402
from ..io.atomic import atomic_path, write_json  # noqa: E402
from ..io.processed import ProcessedData  # noqa: E402
from ..measure import CLASS_COLUMNS, UNCLASSIFIED, measure_spectra  # noqa: E402
from ..paths import Paths  # noqa: E402
from .cnn import build_cnn, photometry_features, uses_photometry  # noqa: E402
from .data import catalogue_magnitudes, image_dataset  # noqa: E402
from .ensemble import GaussianMixture, member_outputs  # noqa: E402
from .fusion import DIRECT_INFO_FILE, DIRECT_MODEL_FILE, DirectHeads, Fusion, direct_quantities  # noqa: E402
from .layers import Columns  # noqa: E402
from .losses import LOGVAR_CLIP  # noqa: E402
from .optimizer import compile_adam  # noqa: E402
from .train import (MIN_TARGET_STD, TrainResult, ensemble_result, member_params, photometry_inputs,  # noqa: E402
                    reset_keras)

log = logging.getLogger(__name__)

DIRECT_SUBDIR = "direct"
"""models/<this>: the direct baseline's output directory."""
MODEL_FILE, INFO_FILE = DIRECT_MODEL_FILE, DIRECT_INFO_FILE
QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a", "log_oiii_hbeta", "log_nii_halpha")
"""Regression targets: `measure_spectra` columns (the scored quantities' columns)."""
SCHEMES = CLASS_COLUMNS
"""Class heads: `measure_spectra` class column -> its labels (UNCLASSIFIED is never predicted)."""
FEATURE_LAYER = "dense"
"""The CNN layer whose output feeds the heads (the spectrum CNN's latent heads read it too)."""
MEASURE_CHUNK = 2048
"""Spectra measured per call (memory stays one chunk deep on large surveys)."""
MEAN_OUT, LOGVAR_OUT = "quantity_mean", "quantity_logvar"


def direct_dir(paths: Paths) -> Path:
    """models/direct under the project root."""
    return paths.models / DIRECT_SUBDIR


def n_classes(labels: dict[int, str]) -> int:
    """Classes a head predicts: the labels' codes 0..K-1 (UNCLASSIFIED excluded)."""
    return sum(code != UNCLASSIFIED for code in labels)


# ----------------------------------------------------------------------------- targets
def measure_targets(data: ProcessedData, rows: np.ndarray, mp: MeasureParams) -> dict[str, np.ndarray]:
    """QUANTITIES and SCHEMES columns of `measure_spectra` on the observed spectra of `rows`
    (catalogue redshift, errors from ivar), in `rows` order."""
    rows = np.asarray(rows, np.int64)
    z = data.catalog["z"].to_numpy(np.float64)
    cols = {c: [] for c in (*QUANTITIES, *SCHEMES)}
    for start in range(0, len(rows), MEASURE_CHUNK):
        chunk = rows[start:start + MEASURE_CHUNK]
        order = np.argsort(chunk, kind="stable")  # sorted rows: sequential memmap reads
        undo = np.empty_like(order)
        undo[order] = np.arange(len(order))
        r = chunk[order]
        flux, ivar = np.asarray(data.flux[r], np.float64), np.asarray(data.ivar[r], np.float64)
        table = measure_spectra(flux, data.wave, z[r], mp, ivar=ivar, frame=data.frame)
        for c in cols:
            cols[c].append(np.asarray(table[c])[undo])
    return {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in cols.items()}


def target_arrays(data: ProcessedData, train: np.ndarray, val: np.ndarray,
                  mp: MeasureParams) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Catalogue-row-indexed training targets and their train-split statistics.

    Only `train` and `val` rows are measured; every other row stays masked (NaN -> ok = 0,
    class UNCLASSIFIED). Returns ({"quantities": (N, Q) standardised, 0 where masked,
    "quantity_ok": (N, Q) 0/1, <scheme>: (N,) class code or -1}, scaling) where scaling has
    the train mean/std/count per quantity and per-scheme train class counts and weights.
    """
    rows = np.concatenate([train, val]).astype(np.int64)
    measured = measure_targets(data, rows, mp)
    n, ntr = len(data), len(train)
    raw = np.full((n, len(QUANTITIES)), np.nan)
    raw[rows] = np.column_stack([measured[q] for q in QUANTITIES])
    ok = np.isfinite(raw)
    scaled, mean, std, count = standardise(raw, ok, train)
    for q, c in zip(QUANTITIES, count):
        if not c:
            log.warning("direct: no train object has a finite %s; its head is untrained", q)
    targets = {"quantities": scaled, "quantity_ok": ok.astype(np.float32)}
    scaling: dict[str, Any] = {"quantities": list(QUANTITIES), "mean": mean, "std": std, "n_train": count,
                               "n_val": [int(ok[val, k].sum()) for k in range(len(QUANTITIES))], "classes": {}}
    for col, labels in SCHEMES.items():
        codes = np.full(n, UNCLASSIFIED, np.int64)
        codes[rows] = measured[col]
        k = n_classes(labels)
        counts = np.bincount(codes[train][codes[train] != UNCLASSIFIED], minlength=k)[:k]
        targets[col] = codes.astype(np.float32)
        scaling["classes"][col] = {"labels": {str(c): labels[c] for c in range(k)},
                                   "n_train": counts.tolist(), "weights": class_weights(counts).tolist(),
                                   "n_val": int(np.sum(codes[val] != UNCLASSIFIED)), "n_train_total": ntr}
    return targets, scaling


def standardise(raw: np.ndarray, ok: np.ndarray, train: np.ndarray
                ) -> tuple[np.ndarray, list[float], list[float], list[int]]:
    """((N, Q) float32 (raw - mean) / std, 0 where not `ok`; per-column mean, std and count over the
    `ok` train rows). A column with one train value has std 1, with none mean 0; std >= MIN_TARGET_STD."""
    mean, std, count = [], [], []
    for k in range(raw.shape[1]):
        v = raw[train, k][ok[train, k] > 0]
        mean.append(float(v.mean()) if v.size else 0.0)
        std.append(float(max(v.std(), MIN_TARGET_STD)) if v.size > 1 else 1.0)
        count.append(int(v.size))
    scaled = np.where(ok > 0, (raw - np.array(mean)) / np.array(std), 0.0)
    return scaled.astype(np.float32), mean, std, count


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights n / (K n_c) over the K classes present (0 for an absent class):
    the weighted loss treats every present class alike, as balanced accuracy does."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        return np.zeros_like(counts)
    return np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)


# ----------------------------------------------------------------------------- network
def build_direct(cnn: keras.Model, params: CNNParams) -> keras.Model:
    """The direct heads on `cnn`'s FEATURE_LAYER, with exactly `cnn`'s inputs (same structure).

    Outputs a dict: MEAN_OUT, LOGVAR_OUT (N, Q) in standardised units, and per scheme
    (N, K) class probabilities."""
    # The dropout the CNN puts after its dense layer, then the heads.
    x = keras.layers.Dropout(params.dropout, name="direct_dropout")(cnn.get_layer(FEATURE_LAYER).output)
    Q = len(QUANTITIES)
    out = {MEAN_OUT: keras.layers.Dense(Q, name=MEAN_OUT)(x),
           LOGVAR_OUT: keras.layers.Dense(Q, name=LOGVAR_OUT, kernel_initializer="zeros")(x)}
    for col, labels in SCHEMES.items():
        out[col] = keras.layers.Dense(n_classes(labels), activation="softmax", name=col)(x)
    return keras.Model(cnn.input, out, name="direct")


def masked_nll(mean, logvar, target, ok):
    """Per-quantity Gaussian NLL averaged over the objects with a target, summed over quantities
    (a quantity without any target in the batch adds 0). Masked targets are replaced before
    use: a NaN under the mask would otherwise reach the gradient (0 * NaN) even through `where`."""
    logvar = ops.clip(logvar, -LOGVAR_CLIP, LOGVAR_CLIP)
    good = (ok > 0) & ops.isfinite(target)
    target = ops.where(good, target, mean)
    nll = 0.5 * (logvar + ops.square(target - mean) * ops.exp(-logvar))
    nll = ops.where(good, nll, ops.zeros_like(nll))
    n = ops.sum(ops.cast(good, nll.dtype), axis=0)
    return ops.sum(ops.sum(nll, axis=0) / ops.maximum(n, 1.0))


def masked_cross_entropy(probs, codes, weights):
    """Class-weighted cross-entropy over objects with a class (code >= 0), weight-normalised;
    0 when no object of the batch has one."""
    codes = ops.reshape(codes, (-1,))
    has = codes >= 0
    idx = ops.cast(ops.where(has, codes, ops.zeros_like(codes)), "int32")
    onehot = ops.one_hot(idx, ops.shape(probs)[-1], dtype=probs.dtype)
    logp = ops.log(ops.clip(ops.sum(probs * onehot, axis=-1), 1e-7, 1.0))
    w = ops.where(has, ops.take(ops.convert_to_tensor(weights, probs.dtype), idx), ops.zeros_like(logp))
    return -ops.sum(w * logp) / ops.maximum(ops.sum(w), 1e-12)


class DirectTrainer(keras.Model):
    """Training-time wrapper: masked regression NLL plus the class heads' cross-entropies."""

    def __init__(self, model: keras.Model, class_weights_by_scheme: dict[str, Sequence[float]], **kwargs):
        super().__init__(**kwargs)
        self.direct = model
        self.weights_by_scheme = {k: np.asarray(v, np.float32) for k, v in class_weights_by_scheme.items()}
        self.nll_tracker = keras.metrics.Mean(name="quantity_nll")
        self.ce_trackers = {col: keras.metrics.Mean(name=f"{col}_ce") for col in SCHEMES}

    def call(self, inputs, training=False):
        return self.direct(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        nll = masked_nll(y_pred[MEAN_OUT], y_pred[LOGVAR_OUT], y["quantities"], y["quantity_ok"])
        self.nll_tracker.update_state(nll)
        total = nll
        for col in SCHEMES:
            ce = masked_cross_entropy(y_pred[col], y[col], self.weights_by_scheme[col])
            self.ce_trackers[col].update_state(ce)
            total = total + ce
        return total

    @property
    def metrics(self):
        return [*super().metrics, self.nll_tracker, *self.ce_trackers.values()]


# ----------------------------------------------------------------------------- training
def _dataset(data: ProcessedData, rows: np.ndarray, targets: dict[str, np.ndarray], *, batch_size: int,
             training: bool, photometry: np.ndarray | None, seed: int = 0, shift_pixels: float = 0.0,
             withhold_fraction: float = 0.0):
    """The CNN's own input pipeline (same inputs, augmentation, photometry withholding and seeds
    as train_cnn)."""
    return image_dataset(data.images, rows, targets, batch_size=batch_size, training=training, seed=seed,
                         shift_pixels=shift_pixels, photometry=photometry, withhold_fraction=withhold_fraction)


def train_direct(cnn_params: CNNParams, measure_params: MeasureParams, data: ProcessedData, *,
                 callbacks_for: Callable[[int], Sequence[keras.callbacks.Callback]] = lambda k: (),
                 out_dir: str | Path | None = None, verbose: int = 0) -> TrainResult:
    """Train the direct model on the train split (early stopping on val); save it to `out_dir`.
    `cnn_params.ensemble` members (seeds seed, seed + 1, ...; member k's callbacks `callbacks_for(k)`)
    are published as one model (`direct_ensemble`)."""
    p = cnn_params
    tr, va = data.indices("train"), data.indices("val")
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"{data.root}: the train or val split is empty; cannot train the direct model")
    start = time.perf_counter()
    targets, scaling = target_arrays(data, tr, va, measure_params)
    results = [_train_member(member_params(p, k), data, tr, va, targets, scaling, callbacks_for(k), verbose)
               for k in range(p.ensemble)]
    result = ensemble_result(results, direct_ensemble([r.model for r in results]))
    result.seconds = time.perf_counter() - start  # the targets' measurement included, as before
    if out_dir is not None:
        save_direct(result, p, measure_params, out_dir)
    return result


def _train_member(p: CNNParams, data: ProcessedData, tr: np.ndarray, va: np.ndarray, targets: dict,
                  scaling: dict, callbacks: Sequence[keras.callbacks.Callback], verbose: int) -> TrainResult:
    """One direct network, seeded `p.seed`."""
    start = time.perf_counter()
    reset_keras(p.seed)
    images = data.images
    phot, phot_stats = photometry_inputs(data, tr) if p.photometry else (None, {})
    # latent_dim 1 and unit standardisation: the latent heads are not part of the direct model.
    cnn = build_cnn(tuple(images.shape[1:]), 1, p, np.zeros(1), np.ones(1),
                    photometry_mean=phot_stats.get("mean"), photometry_std=phot_stats.get("std"))
    model = build_direct(cnn, p)
    trainer = DirectTrainer(model, {c: s["weights"] for c, s in scaling["classes"].items()})
    compile_adam(trainer, p.learning_rate)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=p.patience, restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau("val_loss", factor=p.lr_factor, patience=p.lr_patience)
    hist = trainer.fit(_dataset(data, tr, targets, batch_size=p.batch_size, training=True, photometry=phot,
                                seed=p.seed, shift_pixels=p.shift_pixels,
                                withhold_fraction=p.photometry_missing_fraction),
                       validation_data=_dataset(data, va, targets, batch_size=p.batch_size, training=False,
                                                photometry=phot),
                       epochs=p.epochs,
                       steps_per_epoch=math.ceil(len(tr) / p.batch_size), verbose=verbose,
                       callbacks=[keras.callbacks.TerminateOnNaN(), plateau, stop, *callbacks])
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    finite = [v for v in history.get("val_loss", []) if math.isfinite(v)]
    result = TrainResult(model, history, float(min(finite)) if finite else float("nan"),
                         time.perf_counter() - start,
                         {"epochs_run": len(history.get("loss", [])), "n_train": len(tr), "n_val": len(va),
                          "seed": p.seed, "input_shape": list(images.shape[1:]), "scaling": scaling,
                          **({"photometry": phot_stats} if phot_stats else {})})
    log.info("direct (seed %d): %d epochs in %.0f s, best val loss %.4f", p.seed, result.info["epochs_run"],
             result.seconds, result.best_val_loss)
    return result


def direct_ensemble(members: Sequence[keras.Model], name: str = "direct") -> keras.Model:
    """The direct models `members` as one of the same outputs (one member: itself): the quantities'
    mixture (`ensemble.GaussianMixture`), the class probabilities averaged."""
    if len(members) == 1:
        return members[0]
    inputs, outs = member_outputs(members, name)
    Q = len(QUANTITIES)
    pairs = [keras.layers.Concatenate(name=f"quantities_member{k}")([o[MEAN_OUT], o[LOGVAR_OUT]])
             for k, o in enumerate(outs)]
    mixed = GaussianMixture(range(Q), range(Q, 2 * Q), name="quantity_mixture")(pairs)
    out = {MEAN_OUT: Columns(0, Q, name=MEAN_OUT)(mixed), LOGVAR_OUT: Columns(Q, 2 * Q, name=LOGVAR_OUT)(mixed)}
    for col in SCHEMES:
        out[col] = keras.layers.Average(name=col)([o[col] for o in outs])
    return keras.Model(inputs, out, name=name)


def save_direct(result: TrainResult, p: CNNParams, mp: MeasureParams, out_dir: str | Path) -> None:
    """direct.keras and direct.json into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MODEL_FILE, suffix=".keras") as tmp:
        result.model.save(tmp)
    info = {k: v for k, v in result.info.items() if k != "scaling"}
    write_json(out / INFO_FILE, {
        "trained": True, **result.info["scaling"],
        "outputs": {MEAN_OUT: "standardised: (value - mean) / std", LOGVAR_OUT: "log-variance, standardised units",
                    **{c: "class probabilities, index = class code" for c in SCHEMES}},
        "targets": "measure_spectra of the observed train/val spectra (catalogue z, ivar errors)",
        "params": {"cnn": p.model_dump(mode="json"), "measure": mp.model_dump(mode="json")},
        "training": {"best_val_loss": result.best_val_loss, "seconds": round(result.seconds, 1), **info,
                     "history": result.history},
    })


# ----------------------------------------------------------------------------- inference
def load_direct(path: str | Path) -> tuple[keras.Model, dict]:
    """(model, direct.json) of a trained models/direct; FileNotFoundError if it holds none."""
    import json

    path = Path(path)
    if not (path / MODEL_FILE).exists():
        raise FileNotFoundError(f"{path / MODEL_FILE}: no direct model (cnn.train_direct: false, or not trained)")
    model = keras.saving.load_model(path / MODEL_FILE, compile=False)
    return model, json.loads((path / INFO_FILE).read_text())


def predict_direct(model: keras.Model, info: dict, data: ProcessedData, rows: np.ndarray, *,
                   batch_size: int = 256) -> dict[str, np.ndarray]:
    """Quantities (measurement units) with `<q>_sigma`, class codes (argmax) and
    `<scheme>_prob` (N, K) for catalogue `rows`, in `rows` order. A head that had no training
    target (e.g. no train object on the BPT diagram) predicts NaN / UNCLASSIFIED."""
    rows = np.asarray(rows, np.int64)
    # A hybrid model gets the catalogue photometry as it is (missing rows flagged), as in validation.
    phot = photometry_features(catalogue_magnitudes(data.catalog)) if uses_photometry(model) else None
    out = model.predict(_dataset(data, rows, {}, batch_size=batch_size, training=False, photometry=phot),
                        verbose=0)
    heads = DirectHeads.of(None, info)
    value, sigma = direct_quantities(np.concatenate([out[MEAN_OUT], out[LOGVAR_OUT]], axis=1), heads.mean,
                                     heads.scale, heads.trained)
    table: dict[str, np.ndarray] = {}
    for k, q in enumerate(heads.quantities):
        table[q], table[f"{q}_sigma"] = value[:, k], sigma[:, k]
    for col in info["classes"]:
        probs = np.asarray(out[col], np.float64)
        trained = sum(info["classes"][col]["n_train"]) > 0
        table[col] = (np.argmax(probs, axis=1) if trained else np.full(len(rows), UNCLASSIFIED)).astype(np.int8)
        table[f"{col}_prob"] = probs
    return table


def fusion_heads(model: keras.Model) -> keras.Model:
    """The direct model as one output: the same inputs -> (N, 2Q + K) concat(standardised means,
    log-variances, each class head's probabilities in SCHEMES order), what `fusion.DirectHeads`
    runs and the bundle exports."""
    out = keras.layers.Concatenate(name="quantities")([model.get_layer(name).output
                                                       for name in (MEAN_OUT, LOGVAR_OUT, *SCHEMES)])
    return keras.Model(model.inputs, out, name="direct_heads")


def load_direct_heads(path: str | Path) -> DirectHeads:
    """`fusion.DirectHeads` of a trained models/direct (or a bundle holding its files)."""
    model, info = load_direct(path)
    return DirectHeads.of(fusion_heads(model), info)


def load_fusion(path: str | Path, fp: FusionParams, mp: MeasureParams) -> Fusion | None:
    """The `fusion:` of the CNN with the direct model in `path` (Keras), or None when fusion is
    off or there is no trained direct model (logged)."""
    if not fp.enabled:
        return None
    try:
        heads = load_direct_heads(path)
    except FileNotFoundError as exc:
        log.warning("fusion: off (%s)", exc)
        return None
    return Fusion(heads, tuple(fp.quantities), fp.weight, fp.iterations, mp, classes=fp.classes)


# ----------------------------------------------------------------------------- stage
def train_direct_stage(params: Params, paths: Paths) -> dict:
    """DVC stage train_direct: models/direct and metrics/train_direct.json (skipped when
    cnn.train_direct is false: a direct.json saying so, no model)."""
    from .. import tracking
    from .tracking_cb import MlflowMetrics, member_prefix

    out = direct_dir(paths)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if not params.cnn.train_direct:
        note = {"trained": False, "reason": "cnn.train_direct: false"}
        write_json(out / INFO_FILE, note)
        write_json(paths.metrics / "train_direct.json", note)
        log.info("train_direct: skipped (cnn.train_direct: false)")
        return note
    data = ProcessedData.open(paths.processed)
    rel = str(paths.processed.relative_to(paths.root)) if paths.processed.is_relative_to(paths.root) else str(
        paths.processed)
    with tracking.start_run("train_direct", params, inputs=[rel], root=paths.root) as run:
        import mlflow

        result = train_direct(params.cnn, params.measure, data, out_dir=out,
                              callbacks_for=lambda k: [MlflowMetrics(member_prefix(k))])
        summary = {"trained": True, "best_val_loss": result.best_val_loss, "epochs_run": result.info["epochs_run"],
                   "train_seconds": round(result.seconds, 1), "n_train": result.info["n_train"],
                   "n_train_targets": dict(zip(QUANTITIES, result.info["scaling"]["n_train"]))}
        from .stages import write_stage_results

        write_stage_results(paths, "train_direct", summary)
        mlflow.log_metrics({"best_val_loss": result.best_val_loss, "epochs_run": result.info["epochs_run"]})
        mlflow.log_artifact(str(out / MODEL_FILE), artifact_path="direct")
        summary["mlflow_run_id"] = run.info.run_id
    return summary

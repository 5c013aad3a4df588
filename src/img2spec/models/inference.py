"""Images -> spectra: the one prediction path shared by `evaluate` and `img2spec predict`.

`predict_spectra` runs the CNN in batches (`training=False`), decodes the predicted latent
mean into the point prediction `flux`, and propagates the predicted latent variance into a
per-pixel `sigma` by one of the `SIGMA_METHODS`:

- ``linearised`` (default): first-order (delta-method) propagation through the decoder,
  sigma_p^2 = sum_l (dF_p/dz_l)^2 var_l, with the L Jacobian columns from exact
  forward-mode derivatives at the latent mean. Deterministic; it costs L decoder-head rows
  per object instead of `n_samples`, which is what lets batch inference pass 1,000
  galaxies/s on 2 CPU cores.
- ``sampled``: the per-pixel std of `n_samples` latent draws through the decoder (it keeps
  the decoder's non-linearity). The latent noise is drawn per object in catalogue order
  from one seeded generator, so the result does not depend on `batch_size`.
- ``none``: no sigma (NaN), only the point prediction.
"""

from __future__ import annotations

import functools
import json
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Literal, NamedTuple, get_args

import numpy as np

from .contract import (LOGVAR_CLIP, PHOTOMETRY_INPUT, has_redshift_head, photometry_features, split_output,
                       uses_photometry)
from .onnx_runtime import ExportedGraph
from .restframe import RestGrid, marginalise_redshift
from .split import SplitDecoder


class Refinement(NamedTuple):
    """What a `LatentRefinement` returns."""

    mu: np.ndarray
    """(N, L) refined latent means."""
    class_evidence: np.ndarray | None = None
    """(N, K) class probabilities from another model, in `class_draws.evidence_slices` layout, that
    the spectrum's posterior draws are weighed with (None: none)."""


LatentRefinement = Callable[..., Refinement]
"""(decoder, mu, std, z_used, images, photometry, batch_size) -> `Refinement`."""


def _keras():
    """Keras (and TensorFlow under it), imported on first use: a prediction from a bundle's
    exported graphs (`onnx_runtime.ExportedGraph`) runs through this module without it."""
    from ..logs import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from . import cnn, ensemble, layers  # noqa: F401  (register the custom layers for loading)

    return keras


SigmaMethod = Literal["linearised", "sampled", "none"]
SIGMA_METHODS: tuple[str, ...] = get_args(SigmaMethod)


@dataclass
class PredictedSpectra:
    flux: np.ndarray
    """(N, P) decoder(latent mean): normalised flux on the processed wave grid."""
    sigma: np.ndarray
    """(N, P) per-pixel 1-sigma of the prediction (see `SIGMA_METHODS`; NaN for 'none')."""
    latent_mu: np.ndarray
    latent_logvar: np.ndarray | None
    """(N, L) the CNN's latent log-variance (None from `decode_latents`, which starts at `latent_std`)."""
    z: np.ndarray | None = None
    """(N,) predicted redshift (mean of the CNN's redshift head); None for a CNN without one."""
    z_err: np.ndarray | None = None
    """(N,) predicted 1-sigma of z (sqrt(exp(z logvar)) x the calibration factor); None without a redshift head."""
    z_used: np.ndarray | None = None
    """(N,) the redshift `flux` is placed at: the user's z where given, else the predicted z (rest-frame
    decoders only; None for an observed-frame decoder)."""
    z_given: np.ndarray | None = None
    """(N,) bool: True where the user's z was used (decoded exactly at it); False where `flux` and `sigma`
    are the rest-frame prediction averaged over the predicted z's uncertainty (rest-frame decoders only)."""
    rest_wave: np.ndarray | None = None
    """(R,) rest-frame wavelength grid (Angstrom, vacuum) of a rest-frame decoder; None otherwise."""
    rest_flux: np.ndarray | None = None
    """(N, R) the rest-frame prediction (same normalisation as `flux`); None for an observed-frame decoder."""
    rest_sigma: np.ndarray | None = None
    """(N, R) its 1-sigma from the latent uncertainty alone (no redshift in it)."""
    latent_std: np.ndarray | None = None
    """(N, L) float32 latent 1-sigma the sigma was propagated from (`latent_std`): with `latent_mu`
    (and a rest-frame decoder's z_used, z_given, z_err) all `decode_latents` needs."""
    rest_columns: np.ndarray | None = None
    """The rest pixels decoded when only those were asked for (`predict_spectra(rest_columns=...)`:
    `rest_flux`/`rest_sigma` NaN elsewhere, `flux`/`sigma` (N, 0)); None: every pixel."""
    class_evidence: np.ndarray | None = None
    """(N, K) the refinement's class probabilities (`Refinement.class_evidence`); None: no refinement gave any."""


class LoadedModels(NamedTuple):
    cnn: Any
    decoder: Any
    vae_meta: dict
    cnn_meta: dict


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):  # an exported graph's output
        return x
    return np.asarray(_keras().ops.convert_to_numpy(x))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_models(vae_dir: str | Path, cnn_dir: str | Path) -> LoadedModels:
    """Load `cnn.keras` from `cnn_dir` and `decoder.keras` from `vae_dir` (+ their json)."""
    vae_dir, cnn_dir = Path(vae_dir), Path(cnn_dir)
    for path in (cnn_dir / "cnn.keras", vae_dir / "decoder.keras"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run the training stages (or pull the model)")
    keras = _keras()
    cnn = keras.saving.load_model(cnn_dir / "cnn.keras", compile=False)
    decoder = keras.saving.load_model(vae_dir / "decoder.keras", compile=False)
    return LoadedModels(cnn, decoder, _read_json(vae_dir / "vae.json"), _read_json(cnn_dir / "cnn.json"))


def load_encoder(vae_dir: str | Path):
    path = Path(vae_dir) / "encoder.keras"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the train_vae stage")
    return _keras().saving.load_model(path, compile=False)


_COMPILED: dict[tuple[int, str], Any] = {}


def _compiled(model, kind: str, build) -> Any:
    """A `tf.function` made by `build(model_ref)` once per (model, kind), dropped with the model.

    Graph execution of the forward passes is 1.5-2.5x faster than eager calls on a CPU
    for the batch sizes of inference. The function holds only a weak reference to the
    model, so caching it does not keep models alive.
    """
    key = (id(model), kind)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = build(weakref.ref(model))
        _COMPILED[key] = fn
        weakref.finalize(model, _COMPILED.pop, key, None)
    return fn


def _call(ref, x):
    return ref()(x, training=False)


def _batch_signature(model) -> list | None:
    """[TensorSpec(None, ...)] of a single-input model, [{input name: TensorSpec}] of a multi-input one
    (called with a dict): one graph for every batch size (None: unknown)."""
    import tensorflow as tf

    shape = model.input_shape
    if isinstance(shape, list) and len(shape) == len(model.inputs) > 1:
        if not all(isinstance(s, tuple) and all(isinstance(d, int) for d in s[1:]) for s in shape):
            return None
        return [{t.name: tf.TensorSpec((None, *s[1:]), tf.float32) for t, s in zip(model.inputs, shape)}]
    if not (isinstance(shape, tuple) and all(isinstance(d, int) for d in shape[1:])):
        return None
    return [tf.TensorSpec((None, *shape[1:]), tf.float32)]


def _forward(model):
    """model(x, training=False) as a compiled function, traced once for any batch size.

    Without a signature TensorFlow traces the first batch size, then again for the next one
    (e.g. a shard's last, partial batch): a second ~0.5-1 s of CPU in every survey worker.
    An exported graph (`onnx_runtime.ExportedGraph`) is its own forward function.
    """
    if isinstance(model, ExportedGraph):
        return model
    import tensorflow as tf

    # A partial per model, not a shared lambda: TensorFlow's retracing detector keys on the
    # function's code object and would otherwise warn once a few models were traced.
    def build(ref):
        signature = _batch_signature(ref())
        fn = functools.partial(_call, ref)
        if signature is None:
            return tf.function(fn, reduce_retracing=True)
        return tf.function(fn, input_signature=signature)

    return _compiled(model, "forward", build)


def network_outputs(net, images: np.ndarray, *, photometry: np.ndarray | None = None,
                    batch_size: int = 256) -> np.ndarray:
    """An image network (the CNN, the direct model's heads) in batches -> its raw (N, K) output.

    `photometry`: (N, 5) catalogue magnitudes in `cnn.PHOTOMETRY_BANDS` order for a hybrid network
    (`cnn.uses_photometry`); a row with a non-finite magnitude, or None for all rows, takes the
    images-only path (the missing indicator, never a magnitude of 0). An images-only network ignores it.
    """
    phot = None
    if uses_photometry(net):
        phot = photometry_features(photometry, n=len(images))
        if len(phot) != len(images):
            raise ValueError(f"photometry: {len(phot)} rows for {len(images)} images")
    outs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        if phot is not None:
            batch = {t.name: (phot[start:start + batch_size] if t.name == PHOTOMETRY_INPUT else batch)
                     for t in net.inputs}
        outs.append(_to_numpy(_forward(net)(batch)))
    return np.concatenate(outs) if outs else np.zeros((0, int(net.output_shape[-1])), np.float32)


def predict_outputs(cnn, images: np.ndarray, *, photometry: np.ndarray | None = None,
                    batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """CNN in batches -> (latent mean, latent logvar, z, z_err); z and z_err are (N,) arrays
    for a CNN with a redshift head, None otherwise. `photometry` as in `network_outputs`."""
    return cnn_outputs(cnn, network_outputs(cnn, images, photometry=photometry, batch_size=batch_size))


def cnn_outputs(cnn, raw: np.ndarray) -> tuple[np.ndarray, ...]:
    """`predict_outputs` of the CNN's raw (N, K) output."""
    redshift = has_redshift_head(cnn)
    parts = split_output(raw, redshift)
    if not redshift:
        return parts[0], parts[1], None, None
    mu, logvar, z, z_logvar = parts
    z_err = np.exp(0.5 * np.clip(z_logvar, -LOGVAR_CLIP, LOGVAR_CLIP)).astype(np.float32)
    return mu, logvar, np.asarray(z, np.float32), z_err


def predict_latents(cnn, images: np.ndarray, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """CNN in batches -> (latent mean, latent logvar), each (N, L)."""
    mu, logvar, _, _ = predict_outputs(cnn, images, batch_size=batch_size)
    return mu, logvar


def decode(decoder, latents: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Decoder in batches: (N, L) latents -> (N, P) normalised flux."""
    outs = [_to_numpy(_forward(decoder)(np.asarray(latents[s:s + batch_size], np.float32)))
            for s in range(0, len(latents), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, int(decoder.output_shape[-1])), np.float32)


LINEAR_SPLIT_RTOL = 1e-4
"""The layer chain found by `_linear_split` must reproduce the decoder to this tolerance."""


def _chain(layer) -> list:
    """Layers of a (possibly nested) model in call order, InputLayers dropped."""
    import keras
    if isinstance(layer, keras.Model):
        return [leaf for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)
                for leaf in _chain(sub)]
    return [layer]


def _is_linear(layer) -> bool:
    """A bias-free linear map of the tangent: a Dense without activation, or a `linear_map` layer."""
    if getattr(layer, "linear_map", False):
        return True
    import keras

    return isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.linear


def _apply(layers: list, x):
    import keras

    for layer in layers:
        x = layer(x, training=False) if isinstance(layer, keras.Model) else layer(x)
    return x


def _tail_tangent(tail: list, t):
    """Push a tangent through the linear tail: Dense -> t @ kernel (the bias drops out)."""
    import tensorflow as tf

    import keras

    for layer in tail:
        t = tf.matmul(t, layer.kernel) if isinstance(layer, keras.layers.Dense) else layer(t)
    return t


def _linear_split(decoder) -> tuple[list, list] | None:
    """(body, linear tail) of the decoder, or None when it is not a verified layer chain.

    Our decoder is Dense(gelu)... -> Dense(linear) -> FillPixels: the wide output layer
    and the pixel filling are linear, so their Jacobian-vector products are the layers'
    kernels applied to the body's tangents. The split is checked numerically (a
    non-sequential graph falls back to differentiating the whole decoder); `split_decoder`
    does this once per decoder.
    """
    layers = _chain(decoder)
    k = len(layers)
    while k > 0 and _is_linear(layers[k - 1]):
        k -= 1
    split = (layers[:k], layers[k:]) if k < len(layers) else None
    if split is not None:
        probe = np.random.default_rng(0).standard_normal((4, int(decoder.input_shape[-1]))).astype(np.float32)
        ref = _to_numpy(decoder(probe, training=False))
        got = _to_numpy(_apply(layers, probe))
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=LINEAR_SPLIT_RTOL,
                                                     atol=LINEAR_SPLIT_RTOL * float(np.abs(ref).max())):
            split = None
    return split


ELEMENTWISE_ACTIVATIONS = ("linear", "relu", "gelu", "tanh", "sigmoid", "elu", "selu", "softplus", "silu", "swish")
"""Keras activations applied value by value: a Dense layer with one of these has the Jacobian
diag(act'(a)) kernel^T, which `_dense_chain_jvp` applies without differentiating the layer."""


def _dense_part(body: list) -> list | None:
    """The Dense layers of a body made of leading `layers.Columns` selections and then Dense layers
    with elementwise activations (None for any other body)."""
    import keras

    from .layers import Columns

    k = 0
    while k < len(body) and isinstance(body[k], Columns):
        k += 1
    dense = body[k:]
    ok = bool(dense) and all(isinstance(layer, keras.layers.Dense) and getattr(
        layer.activation, "__name__", "") in ELEMENTWISE_ACTIVATIONS for layer in dense)
    return dense if ok else None


def _dense_chain_jvp(body: list, dense: list, x, std):
    """(B, D, H) body tangents of a body whose `_dense_part` is `dense`, one per direction d (tangent
    std_d e_d): the tangent goes through each kernel, then is scaled by the activation's derivative
    at that layer's input (one forward-mode derivative per object, not per direction)."""
    import tensorflow as tf

    h, basis = _selected(body, dense, x, std)
    t = None
    for layer in dense:
        t = std[:, :, None] * tf.matmul(basis, layer.kernel)[None] if t is None else tf.matmul(t, layer.kernel)
        h, slope = _activation_and_slope(layer, h)
        t = t * slope[:, None, :]
    return t


def _selected(body: list, dense: list, x, std):
    """(the body's leading Columns selections applied to `x`, to the (D, W) identity basis of the
    D = std.shape[1] directions): where the Dense chain starts, and which input columns are directions."""
    import tensorflow as tf

    basis = tf.eye(tf.shape(std)[1], tf.shape(x)[1])  # (D, W): direction d is input column d
    h = x
    for layer in body[:len(body) - len(dense)]:
        h, basis = layer(h), layer(basis)
    return h, basis


def _activation_and_slope(layer, h):
    """(act(a), act'(a)) of the Dense `layer` at its input `h`, a = h @ kernel + bias. The activation
    is elementwise, so the gradient of sum(act(a)) is its slope: one reverse pass of the activation's
    own ops (forward-mode accumulation would materialise zero tangents around every op)."""
    import tensorflow as tf

    a = tf.matmul(h, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = layer.activation(a)
    return out, tape.gradient(out, a, output_gradients=tf.ones_like(out))


def _dense_chain_vjp(body: list, dense: list, x, std, cot):
    """(B, Q, D) `sum_h cot[b, q, h] d body_h / d x_d std_d` of a body whose `_dense_part` is `dense`:
    reverse mode, the Q covectors pulled back through each activation slope and kernel, so a
    few covectors (the fusion's measurements) cost a few rows per object, not one per direction."""
    import tensorflow as tf

    b, q = tf.shape(cot)[0], tf.shape(cot)[1]
    h, basis = _selected(body, dense, x, std)
    slopes = []
    for layer in dense:
        h, slope = _activation_and_slope(layer, h)
        slopes.append(slope)
    c = tf.reshape(cot, (b * q, -1))
    for k in reversed(range(len(dense))):
        c = tf.reshape(tf.reshape(c, (b, q, -1)) * slopes[k][:, None, :], (b * q, -1))
        kernel = dense[k].kernel if k else tf.matmul(basis, dense[k].kernel)  # the first: onto the directions
        c = tf.matmul(c, kernel, transpose_b=True)
    return tf.reshape(c, (b, q, -1)) * std[:, None, :]


def _tape_vjp(forward, x, std, cot):
    """`_dense_chain_vjp` of any differentiable network: reverse mode over the inputs repeated once
    per covector."""
    import tensorflow as tf

    b, q, d = tf.shape(cot)[0], tf.shape(cot)[1], tf.shape(std)[1]
    rows = tf.repeat(x, q, axis=0)
    with tf.GradientTape() as tape:
        tape.watch(rows)
        out = forward(rows)
    grad = tape.gradient(out, rows, output_gradients=tf.reshape(cot, (b * q, -1)))
    return tf.reshape(grad, (b, q, -1))[:, :, :d] * std[:, None, :]


def _vectorized_jvp(forward, x, std):
    """(B, D, H) Jacobian-vector products of `forward` at x along std_d e_d, any differentiable
    network: forward mode vectorised over the directions (the primal is computed once)."""
    import tensorflow as tf

    eye = tf.eye(tf.shape(std)[1], tf.shape(x)[1])
    tangents = eye[:, None, :] * tf.transpose(std)[:, :, None]  # (D, B, W)

    def one(tangent):
        with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
            out = forward(x)
        return acc.jvp(out)

    return tf.transpose(tf.vectorized_map(one, tangents), [1, 0, 2])


def _body_functions(ref, split: tuple[list, list] | None) -> tuple[Any, Any, Any]:
    """Compiled body forward `x -> hidden`, body Jacobian-vector products `(x, std) -> (B, D, H)` and
    vector-Jacobian products `(x, std, cot) -> (B, Q, D)` of the decoder behind `ref` (one trace for
    every batch size): the layers before its linear tail, or the whole decoder (`split` None)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, int(ref().input_shape[-1])), tf.float32, name="latents")
    std_spec = tf.TensorSpec((None, None), tf.float32, name="std")
    cot_spec = tf.TensorSpec((None, None, None), tf.float32, name="cotangents")
    body = None if split is None else split[0]
    dense = None if not body else _dense_part(body)

    def forward(x):
        return ref()(x, training=False) if body is None else _apply(body, x)

    def jvp(x, std):
        if dense is not None:
            return _dense_chain_jvp(body, dense, x, std)
        if body is not None and not body:  # no body: the tangents themselves
            return tf.eye(tf.shape(std)[1], tf.shape(x)[1])[None] * std[:, :, None]
        return _vectorized_jvp(forward, x, std)

    def vjp(x, std, cot):
        if dense is not None:
            return _dense_chain_vjp(body, dense, x, std, cot)
        if body is not None and not body:  # no body: the covectors themselves, on the directions
            return cot[:, :, :tf.shape(std)[1]] * std[:, None, :]
        return _tape_vjp(forward, x, std, cot)

    return (tf.function(forward, input_signature=[spec]), tf.function(jvp, input_signature=[spec, std_spec]),
            tf.function(vjp, input_signature=[spec, std_spec, cot_spec]))


def _folded_tail(split: tuple[list, list] | None, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(kernel, bias) of the linear tail as one matrix: the tail's tangent map of the identity, and
    the tail of a zero body output; (None, None) without a tail."""
    if split is None:
        return None, None
    body, tail = split
    hidden = width if not body else int(_to_numpy(_apply(body, np.zeros((1, width), np.float32))).shape[-1])
    kernel = _to_numpy(_tail_tangent(tail, np.eye(hidden, dtype=np.float32))).astype(np.float32)
    bias = _to_numpy(_apply(tail, np.zeros((1, hidden), np.float32)))[0].astype(np.float32)
    return kernel, bias


def body_graphs(decoder) -> tuple[tuple[list, list] | None, Any, Any, Any]:
    """(linear split, compiled body forward, body JVP, body VJP) of a Keras decoder, built once per
    decoder: what `split_decoder` runs and `models.export` converts to ONNX."""
    def build(ref):
        split = _linear_split(ref())
        return (split, *_body_functions(ref, split))

    return _compiled(decoder, "body", build)


def split_decoder(decoder) -> SplitDecoder:
    """The decoder as body + folded linear tail (`split.SplitDecoder`), built once per decoder; an
    exported decoder (or rest-frame half) carries its own, from the bundle's graphs."""
    if isinstance(decoder, ExportedGraph):
        return decoder.split

    def build(ref):
        split, forward, jvp, vjp = body_graphs(ref())
        kernel, bias = _folded_tail(split, int(ref().input_shape[-1]))
        return SplitDecoder(lambda x: _to_numpy(forward(x)), lambda x, t: _to_numpy(jvp(x, t)), kernel, bias,
                            int(ref().output_shape[-1]), body_vjp=lambda x, t, c: _to_numpy(vjp(x, t, c)))

    return _compiled(decoder, "split", build)


def hold_blas_threads(decoder) -> ContextManager:
    """`decoder`'s tail BLAS thread count set from this thread while the context is open
    (`split.shared_blas_limit`): hold it around decodes that run on other threads. OpenBLAS may
    ignore a count set from a thread other than the one that set it first, so the count the tail
    asks for is set here, and the threads' own requests only join it."""
    rest = rest_decoder(decoder)
    return split_decoder(rest.model if rest is not None else decoder).blas_limit()


def linearised_sigma(decoder, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Delta-method sigma: sqrt(sum_l (dF/dz_l * std_l)^2) at z = mu; (B, W) inputs, (B, D) std -> (B, P).

    Jacobian-vector products are exact (forward mode, no finite step), one per direction l
    (the first D = std.shape[1] inputs). Only the decoder's non-linear body is differentiated;
    its tangents then go through the folded linear tail (`split_decoder`), so the wide output
    layer runs D rows per object, against `n_samples` rows for the sampled sigma.
    """
    return split_decoder(decoder).sigma(mu, std)


def is_conditioned(decoder, latent_dim: int) -> bool:
    """True for a rest-frame decoder: its input is concat(latents, z)."""
    return int(decoder.input_shape[-1]) == int(latent_dim) + 1


def decoder_input(decoder, mu: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """What `decoder` takes for latents `mu`: `mu` itself, or concat(mu, z) for a rest-frame decoder."""
    mu = np.asarray(mu, np.float32)
    if not is_conditioned(decoder, mu.shape[-1]):
        return mu
    if z is None:
        raise ValueError("this decoder is redshift-conditioned (vae.frame: rest): decoding needs z")
    return np.concatenate([mu, np.asarray(z, np.float32).reshape(-1, 1)], axis=-1)


@dataclass(frozen=True)
class RestDecoder:
    """The rest-frame half of a redshift-conditioned decoder: concat(latents, z) -> rest flux."""

    model: Any
    grid: RestGrid
    obs_ln_wave: np.ndarray


def rest_decoder(decoder) -> RestDecoder | None:
    """The layers of a rest-frame decoder before its `RedshiftToObserved`, as a model of their own
    (cached per decoder), with the rest grid; None for an observed-frame decoder. An exported
    rest-frame decoder ships that half as its own graph."""
    if isinstance(decoder, ExportedGraph):
        return None if decoder.rest is None else RestDecoder(decoder.rest, decoder.rest_grid, decoder.obs_ln_wave)
    from .layers import RedshiftToObserved

    chain = _chain(decoder)
    shift = [i for i, layer in enumerate(chain) if isinstance(layer, RedshiftToObserved)]
    if not shift:
        return None

    def build(ref):
        import keras

        layer = chain[shift[0]]
        x = inp = keras.Input((int(ref().input_shape[-1]),), name="latent_and_z")
        for body_layer in chain[:shift[0]]:
            x = body_layer(x)
        grid = RestGrid(layer.rest_ln_start, layer.rest_ln_step, layer.n_rest)
        return RestDecoder(keras.Model(inp, x, name="rest_decoder"), grid, np.asarray(layer.obs_ln_wave, np.float64))

    return _compiled(decoder, "rest_decoder", build)


def _latent_sigma(model, mu: np.ndarray, std: np.ndarray, method: str, n_samples: int,
                  rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """Per-pixel 1-sigma of `model`'s output from the std (B, D) of its first D inputs (see `SIGMA_METHODS`)."""
    split = split_decoder(model)
    if method == "linearised":
        return split.sigma(mu, std)
    if method == "sampled" and n_samples >= 2:
        b, d = std.shape
        eps = np.zeros((b, n_samples, mu.shape[1]), np.float32)
        eps[..., :d] = rng.standard_normal((b, n_samples, d)).astype(np.float32) * std[:, None, :]
        draws = (mu[:, None, :] + eps).reshape(b * n_samples, mu.shape[1])
        flux = np.concatenate([split.flux(draws[s:s + max(batch_size, 1024)])
                               for s in range(0, len(draws), max(batch_size, 1024))])
        return flux.reshape(b, n_samples, split.width).std(axis=1, ddof=1)
    return np.full((len(mu), split.width), np.nan, np.float32)


def _decode_redshift(z_pred: np.ndarray | None, z: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(z to decode at, given mask): the user's z where given and finite, else the predicted z."""
    if z_pred is None:
        raise ValueError("a rest-frame decoder needs a CNN with a redshift head (cnn.redshift_weight > 0)")
    z_use, given = z_pred.astype(np.float32).copy(), np.zeros(n, bool)
    if z is not None:
        z_in = np.asarray(z, np.float64).reshape(-1)
        if z_in.size != n:
            raise ValueError(f"z: {z_in.size} redshifts for {n} images")
        given = np.isfinite(z_in)
        z_use[given] = z_in[given].astype(np.float32)
    return z_use, given


def latent_std(logvar: np.ndarray) -> np.ndarray:
    """(N, L) float32 latent 1-sigma from the CNN's log-variance: what the spectrum's sigma propagates."""
    return np.exp(0.5 * np.clip(logvar, -LOGVAR_CLIP, LOGVAR_CLIP)).astype(np.float32)


def _check_options(n_samples: int, batch_size: int, sigma_method: str, **scales: float) -> None:
    if n_samples < 0 or batch_size < 1:
        raise ValueError(f"n_samples must be >= 0 and batch_size >= 1 (got {n_samples}, {batch_size})")
    if sigma_method not in SIGMA_METHODS:
        raise ValueError(f"sigma_method must be one of {SIGMA_METHODS}, got {sigma_method!r}")
    for name, value in scales.items():
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")


def predict_spectra(cnn, decoder, images: np.ndarray, *, n_samples: int = 32, batch_size: int = 256,
                    seed: int = 0, sigma_method: SigmaMethod = "linearised",
                    sigma_scale: float = 1.0, z: np.ndarray | None = None, z_err_scale: float = 1.0,
                    photometry: np.ndarray | None = None,
                    sigma_scale_given_z: float | None = None,
                    rest_columns: np.ndarray | None = None, refine: LatentRefinement | None = None) -> PredictedSpectra:
    """Stretched images (N, H, W, C) -> `PredictedSpectra` (see module doc).

    `n_samples` and `seed` only matter for `sigma_method="sampled"` (fewer than 2 samples:
    no sigma, as for 'none'). `sigma_scale` multiplies the sigma: the calibration factor
    the evaluate stage fits on the validation split (`metrics.fit_sigma_scale`).
    `z_err_scale` multiplies the redshift head's z_err (its calibration factor, fitted on val).
    `sigma_scale_given_z` (default: `sigma_scale`) is the factor of a rest-frame decoder's rows
    decoded at a given z and of `rest_sigma`, whose sigma holds no redshift term.
    `photometry`: the catalogue inputs of a hybrid CNN (None: images only).

    A rest-frame decoder (input concat(latents, z)) decodes a rest-frame spectrum (returned as
    `rest_flux`, `rest_sigma` on `rest_wave`). Where the user's redshift `z` is given and finite,
    it is placed at that z exactly; elsewhere the observed-frame `flux` and `sigma` are the rest
    spectrum averaged over the predicted N(z, z_err) (`restframe.marginalise_redshift`): the
    expected spectrum given what the images say about z, not a sharp guess at one z.

    `rest_columns`: decode a rest-frame decoder's prediction on these rest pixels only (see
    `decode_latents`).
    `refine`: moves a rest-frame decoder's latent means before decoding (`fusion.Fusion`), called
    as `refine(decoder, mu, std, z_used, images, photometry, batch_size)` -> `Refinement`;
    `latent_mu` is then the refined mean, what a survey stores and decodes again, and
    `class_evidence` the refinement's. A refinement with a `joint` network (the CNN and its own
    image network as one graph) has the images run once through both, its part passed as
    `image_outputs`.

    The images go through the CNN here; everything after it is `decode_latents`, which a
    survey's reader calls again on the stored latents to get the same spectra.
    """
    if not (hasattr(images, "shape") and hasattr(images, "__getitem__")):
        images = np.asarray(images)  # sliceable arrays (memmaps, row views) stay lazy
    if len(images.shape) != 4:
        raise ValueError(f"images: expected (N, H, W, C), got shape {images.shape}")
    _check_options(n_samples, batch_size, sigma_method, sigma_scale=sigma_scale, z_err_scale=z_err_scale)
    joint, refine_raw = getattr(refine, "joint", None), None
    if joint is None:
        mu_pred, logvar, z_pred, z_err = predict_outputs(cnn, images, batch_size=batch_size, photometry=photometry)
    else:
        raw = network_outputs(joint, images, photometry=photometry, batch_size=batch_size)
        width = int(cnn.output_shape[-1])
        mu_pred, logvar, z_pred, z_err = cnn_outputs(cnn, raw[:, :width])
        refine_raw = raw[:, width:]
    if z_err is not None and z_err_scale != 1.0:
        z_err = (z_err * np.float32(z_err_scale)).astype(np.float32)
    std = latent_std(logvar)
    z_use = given = evidence = None
    if is_conditioned(decoder, mu_pred.shape[1]):
        z_use, given = _decode_redshift(z_pred, z, len(mu_pred))
        if refine is not None:
            kwargs = {} if refine_raw is None else {"image_outputs": refine_raw}
            mu_pred, evidence = refine(decoder, mu_pred, std, z_use, images, photometry, batch_size, **kwargs)
    out = decode_latents(decoder, mu_pred, std, z_used=z_use, z_given=given, z_err=z_err, n_samples=n_samples,
                         batch_size=batch_size, seed=seed, sigma_method=sigma_method, sigma_scale=sigma_scale,
                         sigma_scale_given_z=sigma_scale_given_z, rest_columns=rest_columns)
    return replace(out, latent_logvar=logvar, z=z_pred, z_err=z_err, class_evidence=evidence)


def decode_latents(decoder, mu: np.ndarray, std: np.ndarray, *, z_used: np.ndarray | None = None,
                   z_given: np.ndarray | None = None, z_err: np.ndarray | None = None, n_samples: int = 32,
                   batch_size: int = 256, seed: int = 0, sigma_method: SigmaMethod = "linearised",
                   sigma_scale: float = 1.0, sigma_scale_given_z: float | None = None,
                   with_sigma: bool = True, rest_columns: np.ndarray | None = None) -> PredictedSpectra:
    """Latent mean and 1-sigma (N, L) -> `PredictedSpectra`: the decoding half of `predict_spectra`.

    The one per-batch decode of `predict_spectra` (hence of `img2spec predict` and `survey`) and
    of a survey read back from its latents (`survey.read`): the same inputs in the same batches
    give the same bits. A rest-frame decoder needs `z_used` (the z each row is decoded at),
    `z_given` (True: exactly at it, else averaged over N(z_used, z_err)) and the calibrated `z_err`.
    Options as in `predict_spectra`; the latent noise of `sampled` comes from `seed` afresh per call.
    `with_sigma=False` skips the uncertainty (sigma and rest_sigma None): no Jacobian or latent draws.
    `rest_columns`: a rest-frame decoder with the 'linearised' (or no) sigma decodes its rest-frame
    prediction on these rest pixels only (`rest_flux`/`rest_sigma` NaN elsewhere): what a
    measurement on them needs, without the observed frame (`flux`/`sigma` come back (N, 0)) or its
    redshift marginalisation; ignored otherwise (every pixel is decoded).
    """
    mu, std = np.asarray(mu, np.float32), np.asarray(std, np.float32)
    given_scale = sigma_scale if sigma_scale_given_z is None else float(sigma_scale_given_z)
    _check_options(n_samples, batch_size, sigma_method, sigma_scale=sigma_scale, sigma_scale_given_z=given_scale)
    method = sigma_method if with_sigma else "none"
    rng = np.random.default_rng(seed)
    rest = rest_decoder(decoder) if is_conditioned(decoder, mu.shape[1]) else None
    if rest is None:
        flux, sigma = _observed_frame(decoder, mu, std, method, n_samples, rng, batch_size)
        extra: dict[str, Any] = {}
    else:
        if z_used is None or z_given is None:
            raise ValueError("this decoder is redshift-conditioned (vae.frame: rest): decoding needs z_used and z_given")
        z_use = np.asarray(z_used, np.float32).reshape(-1)
        given = np.asarray(z_given, bool).reshape(-1)
        if len(z_use) != len(mu) or len(given) != len(mu):
            raise ValueError(f"z_used / z_given: {len(z_use)} / {len(given)} values for {len(mu)} latents")
        if rest_columns is not None and method in ("linearised", "none"):
            flux, sigma, extra = _rest_columns(rest, mu, std, z_use, given, rest_columns, method, batch_size)
        else:
            flux, sigma, extra = _rest_frame(rest, mu, std, z_use, given, z_err, method, n_samples, rng, batch_size)
    row_scale = np.full(len(sigma), sigma_scale, np.float32)
    if extra:
        row_scale[extra["z_given"]] = given_scale
        extra["rest_sigma"] *= np.float32(given_scale)
    sigma *= row_scale[:, None]
    if not with_sigma:
        sigma = None
        if extra:
            extra["rest_sigma"] = None
    return PredictedSpectra(flux, sigma, mu, None, latent_std=std, **extra)


def _observed_frame(decoder, mu: np.ndarray, std: np.ndarray, method: str, n_samples: int,
                    rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux and sigma of an observed-frame decoder, batch by batch."""
    split = split_decoder(decoder)
    n = len(mu)
    flux = np.empty((n, split.width), np.float32)
    sigma = np.full((n, split.width), np.nan, np.float32)
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        flux[sl] = split.flux(mu[sl])
        if method != "none":  # 'none': no Jacobian or draws at all
            sigma[sl] = _latent_sigma(decoder, mu[sl], std[sl], method, n_samples, rng, batch_size)
    return flux, sigma


def _rest_frame(rest: RestDecoder, mu: np.ndarray, std: np.ndarray, z_use: np.ndarray, given: np.ndarray, z_err,
                method: str, n_samples: int, rng: np.random.Generator, batch_size: int):
    """Rest-frame prediction, then the observed frame at the given z or over the predicted z's spread."""
    n = len(mu)
    split = split_decoder(rest.model)
    width = np.where(given, 0.0, z_err if z_err is not None else 0.0).astype(np.float64)
    cond = np.concatenate([mu, z_use[:, None]], axis=1).astype(np.float32)  # z enters by marginalisation
    n_rest, n_pix = rest.grid.n, len(rest.obs_ln_wave)
    rest_flux = np.empty((n, n_rest), np.float32)
    rest_sigma = np.full((n, n_rest), np.nan, np.float32)
    flux = np.empty((n, n_pix), np.float32)
    sigma = np.empty((n, n_pix), np.float32)
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        rest_flux[sl] = split.flux(cond[sl])
        if method != "none":  # 'none': no Jacobian or draws at all
            rest_sigma[sl] = _latent_sigma(rest.model, cond[sl], std[sl], method, n_samples, rng, batch_size)
        var = None if method == "none" else np.nan_to_num(rest_sigma[sl].astype(np.float64) ** 2)
        flux[sl], sig = marginalise_redshift(rest.grid, rest_flux[sl], var, rest.obs_ln_wave, z_use[sl], width[sl])
        sigma[sl] = np.nan if sig is None else sig
    if method == "sampled" and n_samples < 2:
        sigma[:] = np.nan
    return flux, sigma, {"z_used": z_use, "z_given": given, "rest_wave": rest.grid.wave,
                         "rest_flux": rest_flux, "rest_sigma": rest_sigma}


def _rest_columns(rest: RestDecoder, mu: np.ndarray, std: np.ndarray, z_use: np.ndarray, given: np.ndarray,
                  columns: np.ndarray, method: str, batch_size: int):
    """`_rest_frame`'s rest-frame arrays on the rest pixels `columns` only (NaN elsewhere), no observed frame."""
    split = split_decoder(rest.model)
    columns = np.asarray(columns, np.int64)
    cond = np.concatenate([mu, z_use[:, None]], axis=1).astype(np.float32)
    n = len(mu)
    rest_flux = np.full((n, rest.grid.n), np.nan, np.float32)
    rest_sigma = np.full((n, rest.grid.n), np.nan, np.float32)
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        rest_flux[sl, columns] = split.flux(cond[sl], columns)
        if method == "linearised":
            rest_sigma[sl, columns] = split.sigma(cond[sl], std[sl], columns)
    empty = np.zeros((n, 0), np.float32)
    return empty, empty.copy(), {"z_used": z_use, "z_given": given, "rest_wave": rest.grid.wave,
                                 "rest_flux": rest_flux, "rest_sigma": rest_sigma, "rest_columns": columns}


def encode_spectra(encoder, flux: np.ndarray, ivar: np.ndarray, *, z: np.ndarray | None = None,
                   batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Encoder in batches: cleaned (flux, ivar) -> (mu, logvar). A rest-frame VAE's encoder also
    takes each spectrum's z (`z`); rows without a finite z get the prior (mu 0, logvar 0): nothing is known."""
    from .data import clean_flux
    from .vae import encoder_needs_z

    needs_z = encoder_needs_z(encoder)
    if needs_z and z is None:
        raise ValueError("this encoder reads spectra in the rest frame (vae.frame: rest): encoding needs z")
    z_all = None if not needs_z else np.asarray(z, np.float64).reshape(-1)
    mus, lvs = [], []
    for s in range(0, len(flux), batch_size):
        f, iv = clean_flux(flux[s:s + batch_size], ivar[s:s + batch_size])
        if needs_z:
            zb = z_all[s:s + batch_size]
            m, lv = encoder([f, iv, np.nan_to_num(zb).astype(np.float32)[:, None]], training=False)
            m, lv = _to_numpy(m), _to_numpy(lv)
            m[~np.isfinite(zb)] = 0.0
            lv[~np.isfinite(zb)] = 0.0
        else:
            m, lv = encoder([f, iv], training=False)
        mus.append(_to_numpy(m))
        lvs.append(_to_numpy(lv))
    return np.concatenate(mus), np.concatenate(lvs)

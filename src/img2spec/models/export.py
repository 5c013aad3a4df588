"""Export a bundle's Keras networks to ONNX graphs (`onnx_runtime` runs them without TensorFlow).

Graphs, each the frozen TensorFlow graph that `models.inference` itself runs, converted
by tf2onnx, and one array file:
- `cnn.onnx`: images [+ catalogue photometry of a hybrid CNN] -> the CNN's raw output
  (latent mean, log-variance [, z mean, z log-variance]);
- `decoder_body.onnx`: latents (concat(latents, z) for a rest-frame decoder) -> the output of the
  decoder's non-linear body (`inference.split_decoder`); a rest-frame decoder is exported as its
  rest-frame half (`inference.rest_decoder`), since prediction redshifts the rest spectrum in
  numpy (`restframe.marginalise_redshift`);
- `decoder_body_jvp.onnx`: the body's forward-mode Jacobian-vector products (the linearised sigma);
- `decoder_body_vjp.onnx`: its reverse-mode vector-Jacobian products (the fusion's few measurement
  gradients through the body: a few rows per object instead of one per latent direction);
- `decoder_tail.npz`: the decoder's linear tail folded into one kernel and bias (`split.SplitDecoder`);
- `direct.onnx` (a bundle with the direct model, `fusion:`): images [+ photometry] -> the direct
  model's heads (`direct.fusion_heads`): the measurements `models.fusion` pulls the latents toward
  and the class probabilities it weighs the class draws with;
- `cnn_direct.onnx` (with `direct.onnx`): the two graphs side by side with one output, the CNN's
  then the heads' (`onnx_runtime.JOINT_FILE`), which prediction runs the images through once.
The exported decoder is run once on a probe batch against Keras (flux, sigma and the fusion's
vector-Jacobian products) before the
export is accepted, and so is the CNN.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from . import inference
from .contract import PHOTOMETRY_INPUT, has_redshift_head
from .onnx_runtime import (DIRECT_FILE, EXPORT_FORMAT, EXPORT_META, JOINT_FILE, load_exported, load_exported_direct,
                           load_exported_joint)

log = logging.getLogger(__name__)

EXPORT_OPSET = 17
"""ONNX opset of the exported graphs (onnxruntime runs opsets up to 23)."""
CNN_FILE, DECODER_FILE, JVP_FILE, VJP_FILE, TAIL_FILE = (
    "cnn.onnx", "decoder_body.onnx", "decoder_body_jvp.onnx", "decoder_body_vjp.onnx", "decoder_tail.npz")
EXPORT_FILES = (CNN_FILE, DECODER_FILE, JVP_FILE, VJP_FILE, TAIL_FILE, EXPORT_META)
"""Files `export_onnx` adds to a bundle (and `DIRECT_FILE`, `JOINT_FILE` for a bundle with the direct model)."""
JOINT_PREFIX = "direct/"
"""Prefix of the direct graph's names (all but its inputs) in the joint graph."""
PROBE_ROWS = 4
"""Objects in the probe batch that checks each exported graph against Keras."""
PROBE_COVECTORS, PROBE_COLUMNS = 2, 40
"""Covectors and (about) pixels of the probe's vector-Jacobian products: fewer covectors than
latent directions, as the fusion's measurements, so the reverse-mode graph is the one checked."""
EXPORT_RTOL = 1e-4
"""An exported graph must reproduce Keras on the probe to this fraction of the output's largest value."""


class ExportError(RuntimeError):
    """An exported graph does not reproduce its Keras model (or cannot be converted)."""


def _const(ctx, node, value: float):
    """A scalar constant of `node`'s input dtype."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    return ctx.make_const(utils.make_name(f"{node.name}_c"), np.array(value, dtype)).output[0]


def _erfc(ctx, node, name, args) -> None:
    """Erfc(x) = 1 - Erf(x) (TensorFlow's exact GELU)."""
    from tf2onnx import utils

    node.type = "Erf"
    sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(node.name))
    ctx.replace_inputs(sub, [_const(ctx, node, 1.0), node.output[0]])
    ctx.copy_shape(node.output[0], sub.output[0])


def _tanh_grad(ctx, node, name, args) -> None:
    """TanhGrad(y, dy) = dy (1 - y^2)."""
    y, dy = node.input
    square = ctx.make_node("Mul", [y, y])
    slope = ctx.make_node("Sub", [_const(ctx, node, 1.0), square.output[0]])
    node.type = "Mul"
    ctx.replace_inputs(node, [dy, slope.output[0]])


def _sigmoid_grad(ctx, node, name, args) -> None:
    """SigmoidGrad(y, dy) = dy y (1 - y)."""
    y, dy = node.input
    rest = ctx.make_node("Sub", [_const(ctx, node, 1.0), y])
    slope = ctx.make_node("Mul", [y, rest.output[0]])
    node.type = "Mul"
    ctx.replace_inputs(node, [dy, slope.output[0]])


def _relu_grad(ctx, node, name, args) -> None:
    """ReluGrad(dy, x) = dy where x > 0, else 0."""
    dy, x = node.input
    zero = _const(ctx, node, 0.0)
    positive = ctx.make_node("Greater", [x, zero])
    node.type = "Where"
    ctx.replace_inputs(node, [positive.output[0], dy, zero])


GRADIENT_OPS = {"Erfc": (_erfc, []), "TanhGrad": (_tanh_grad, []), "SigmoidGrad": (_sigmoid_grad, []),
                "ReluGrad": (_relu_grad, [])}
"""tf2onnx handlers of the TensorFlow ops that forward-mode derivatives of the decoder's activations
(gelu, tanh, sigmoid, relu) put in the sigma graph and that tf2onnx has no converter for."""


def _to_onnx(fn, path: Path) -> tuple[list[str], str]:
    """Freeze the tf.function `fn` (its input signature) and write it as ONNX to `path` atomically;
    returns (graph input names in argument order, output name)."""
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Freezing folds the models' constants (e.g. Normalization's mean) into the graph: tf2onnx
    # would otherwise make the captured tensors graph inputs.
    with _quiet_converters():
        frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    with _quiet_converters():
        model, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=inputs,
                                                  output_names=outputs, opset=EXPORT_OPSET,
                                                  custom_op_handlers=GRADIENT_OPS)
    _canonical_names(model)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(model.SerializeToString())
    return inputs, outputs[0]


@contextlib.contextmanager
def _quiet_converters():
    """tf2onnx logs every optimiser pass at INFO and TensorFlow warns that the freezing API is
    TF1-style: noise in the publish stage's log, silenced while converting."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _structural_order(graph) -> None:
    """Sort the graph's nodes topologically, ties broken by what each node computes (its op,
    attributes and, recursively, its inputs; an initializer by its values), not by its name.

    tf2onnx orders independent nodes by the names TensorFlow gave them, which change between two
    traces of the same function in one process; this order does not.
    """
    import hashlib

    from onnx import numpy_helper

    digest: dict[str, str] = {"": ""}
    for t in graph.initializer:
        values = numpy_helper.to_array(t)
        digest[t.name] = hashlib.sha256(f"{values.dtype}{values.shape}".encode() + values.tobytes()).hexdigest()
    for v in graph.input:
        digest.setdefault(v.name, f"input:{v.name}")
    producer = {out: node for node in graph.node for out in node.output}
    node_digest: dict[int, str] = {}

    def of_node(node) -> str:
        key = id(node)
        if key not in node_digest:
            h = hashlib.sha256(f"{node.domain}:{node.op_type}".encode())
            for attr in sorted(node.attribute, key=lambda a: a.name):
                h.update(attr.SerializeToString())
            for name in node.input:
                h.update(of_value(name).encode())
            node_digest[key] = h.hexdigest()
        return node_digest[key]

    def of_value(name: str) -> str:
        if name not in digest:
            node = producer[name]
            digest[name] = f"{of_node(node)}:{list(node.output).index(name)}"
        return digest[name]

    pending = {id(n): sum(1 for x in n.input if x in producer) for n in graph.node}
    users: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            users.setdefault(x, []).append(n)
    ready = sorted((n for n in graph.node if pending[id(n)] == 0), key=of_node)
    ordered = []
    while ready:
        node = ready.pop(0)
        ordered.append(node)
        for out in node.output:
            for user in users.get(out, []):
                pending[id(user)] -= 1
                if pending[id(user)] == 0:
                    ready.append(user)
        ready.sort(key=of_node)
    if len(ordered) != len(graph.node):
        raise ExportError("the exported graph has a cycle")
    copies = [type(n)() for n in ordered]
    for copy, n in zip(copies, ordered):
        copy.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _canonical_names(model) -> None:
    """Name every node, intermediate value and initializer by its first use in the graph's node order.

    tf2onnx numbers the names it makes from a process-wide counter, so the same network
    exported twice would give different bytes (and bundle hashes); renamed, and with the
    initializers in that order, a rebuild of an unchanged model is byte-identical.
    """
    graph = model.graph
    _structural_order(graph)
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"v{len(names)}")

    for i, node in enumerate(graph.node):
        node.name = f"node{i}"
        node.input[:] = [rename(x) for x in node.input]
        node.output[:] = [rename(x) for x in node.output]
    order = {new: k for k, new in enumerate(names.values())}
    for items in (graph.initializer, graph.value_info):
        for item in items:
            item.name = rename(item.name)
        ranked = sorted(items, key=lambda t: order.get(t.name, len(order)))
        copies = [type(t)() for t in ranked]
        for copy, t in zip(copies, ranked):
            copy.CopyFrom(t)
        del items[:]
        items.extend(copies)
    dims: dict[str, str] = {}  # symbolic dimensions (the batch size) are counter-named too
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = dims.setdefault(dim.dim_param, f"d{len(dims)}")


def _network_meta(net, file: str, names: list[str]) -> dict[str, Any]:
    """What `onnx_runtime` needs to run an exported image network (the CNN, the direct heads)."""
    widths = {t.name: tuple(int(d) for d in t.shape[1:]) for t in net.inputs}
    return {"file": file, "inputs": dict(zip(widths, names)), "input_widths": widths,
            "output_width": int(net.output_shape[-1])}


def _cnn_function(cnn):
    """cnn(inputs, training=False) with one positional, named argument per model input."""
    import tensorflow as tf

    names = [t.name for t in cnn.inputs]
    specs = [tf.TensorSpec((None, *t.shape[1:]), tf.float32, name=t.name) for t in cnn.inputs]

    @tf.function(input_signature=specs)
    def forward(*xs):
        batch = dict(zip(names, xs)) if len(xs) > 1 else xs[0]
        return cnn(batch, training=False)

    return forward


def _write_tail(split, path: Path) -> bool:
    """The folded tail's kernel and bias as `path` (npz, atomically); False when the decoder has none."""
    if split.kernel is None:
        return False
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, kernel=split.kernel, bias=split.bias)
    return True


def _check(name: str, got: np.ndarray, ref: np.ndarray) -> float:
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if not np.isfinite(diff) or diff > EXPORT_RTOL * max(scale, 1.0):
        raise ExportError(f"exported {name} differs from Keras by {diff:.3g} (largest value {scale:.3g})")
    return diff


def export_onnx(bundle: str | Path) -> dict[str, Any]:
    """Export `cnn.keras` and `decoder.keras` of the bundle directory to `EXPORT_FILES` in it;
    returns the metadata written to `EXPORT_META` (with the probe's max |ONNX - Keras| per graph)."""
    bundle = Path(bundle)
    cnn, decoder = inference.load_models(bundle, bundle)[:2]
    redshift = has_redshift_head(cnn)
    widths = {t.name: tuple(int(d) for d in t.shape[1:]) for t in cnn.inputs}
    names, _ = _to_onnx(_cnn_function(cnn), bundle / CNN_FILE)
    heads = _direct_heads(bundle)
    direct_names = None if heads is None else _to_onnx(_cnn_function(heads), bundle / DIRECT_FILE)[0]
    latent_dim = (int(cnn.output_shape[-1]) - (2 if redshift else 0)) // 2
    rest = inference.rest_decoder(decoder) if inference.is_conditioned(decoder, latent_dim) else None
    model = decoder if rest is None else rest.model
    _, forward, jvp, vjp = inference.body_graphs(model)
    (dec_input,), _ = _to_onnx(forward, bundle / DECODER_FILE)
    _to_onnx(jvp, bundle / JVP_FILE)
    _to_onnx(vjp, bundle / VJP_FILE)
    tail = _write_tail(inference.split_decoder(model), bundle / TAIL_FILE)
    if not tail:
        (bundle / TAIL_FILE).unlink(missing_ok=True)
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT, "opset": EXPORT_OPSET,
        "cnn": {**_network_meta(cnn, CNN_FILE, names), "redshift_head": redshift},
        "decoder": {"file": DECODER_FILE, "jvp_file": JVP_FILE, "vjp_file": VJP_FILE,
                    "tail_file": TAIL_FILE if tail else None, "input": dec_input, "input_width": int(model.input_shape[-1]),
                    "output_width": int(model.output_shape[-1]), "frame": "observed" if rest is None else "rest"},
    }
    if rest is not None:
        meta["decoder"]["rest_grid"] = {"ln_start": rest.grid.ln_start, "ln_step": rest.grid.ln_step,
                                        "n": rest.grid.n}
        meta["decoder"]["obs_ln_wave"] = [float(v) for v in rest.obs_ln_wave]
    if heads is not None:
        meta["direct"] = _network_meta(heads, DIRECT_FILE, direct_names)
        meta["joint"] = _write_joint(bundle, meta["cnn"], meta["direct"])
    _write_meta(bundle, meta)
    meta["max_abs_diff"] = _probe(bundle, cnn, model, widths, heads)
    _write_meta(bundle, meta)
    log.info("exported the networks to ONNX (max |ONNX - Keras| on the probe: %s)", meta["max_abs_diff"])
    return meta


def _write_joint(bundle: Path, cnn: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    """Write `JOINT_FILE`: the exported CNN and direct graphs in one graph with one output,
    Concat(CNN's, heads') on axis 1; returns its `_network_meta`-like entry. The direct graph reads
    the CNN's graph input of the same kind (images or catalogue photometry: `network_outputs` feeds
    the images to every input but the photometry). The nodes are the two graphs' own, so each
    output is bit for bit what its graph gives alone."""
    import onnx
    from onnx import compose

    first = onnx.load(bundle / cnn["file"])
    second = compose.add_prefix(onnx.load(bundle / direct["file"]), JOINT_PREFIX, rename_inputs=False)
    kind = {name == PHOTOMETRY_INPUT: graph for name, graph in cnn["inputs"].items()}
    shared = {graph: kind[name == PHOTOMETRY_INPUT] for name, graph in direct["inputs"].items()
              if (name == PHOTOMETRY_INPUT) in kind}
    for node in second.graph.node:
        node.input[:] = [shared.get(i, i) for i in node.input]
    inputs = [*first.graph.input, *(i for i in second.graph.input if i.name not in shared)]
    (out_a,), (out_b,) = [o.name for o in first.graph.output], [o.name for o in second.graph.output]
    width = cnn["output_width"] + direct["output_width"]
    output = onnx.helper.make_tensor_value_info("outputs", onnx.TensorProto.FLOAT, ["batch", width])
    concat = onnx.helper.make_node("Concat", [out_a, out_b], ["outputs"], axis=1)
    graph = onnx.helper.make_graph([*first.graph.node, *second.graph.node, concat], "cnn_direct", inputs, [output],
                                   [*first.graph.initializer, *second.graph.initializer])
    model = onnx.helper.make_model(graph, opset_imports=first.opset_import, ir_version=first.ir_version)
    onnx.checker.check_model(model)
    with atomic_path(bundle / JOINT_FILE) as tmp:
        Path(tmp).write_bytes(model.SerializeToString())
    extra = {name: graph for name, graph in direct["inputs"].items() if graph not in shared}
    widths = {**cnn["input_widths"], **{name: direct["input_widths"][name] for name in extra}}
    return {"file": JOINT_FILE, "inputs": {**cnn["inputs"], **extra}, "input_widths": widths, "output_width": width}


def _write_meta(bundle: Path, meta: dict[str, Any]) -> None:
    with atomic_path(bundle / EXPORT_META) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")


def _direct_heads(bundle: Path):
    """The bundle's direct heads (`direct.fusion_heads`) as a Keras model (None: the bundle has no direct model)."""
    from .direct import MODEL_FILE, fusion_heads, load_direct

    if not (bundle / MODEL_FILE).is_file():
        return None
    return fusion_heads(load_direct(bundle)[0])


def _probe(bundle: Path, cnn, model, widths: dict[str, tuple[int, ...]], heads=None) -> dict[str, float]:
    """Max |ONNX - Keras| of each graph on a seeded probe batch; ExportError past `EXPORT_RTOL`."""
    rng = np.random.default_rng(0)
    batch = {name: rng.standard_normal((PROBE_ROWS, *w)).astype(np.float32) for name, w in widths.items()}
    try:
        exported_cnn, exported_dec = load_exported(bundle)
    except Exception as exc:  # onnxruntime's own error types: a graph it cannot run
        raise ExportError(f"an exported graph does not load in onnxruntime: {exc}") from None
    net = exported_dec if exported_dec.rest is None else exported_dec.rest
    feed = batch if len(batch) > 1 else next(iter(batch.values()))
    keras_cnn = inference._to_numpy(cnn(feed, training=False))
    out = {"cnn": _check("cnn", exported_cnn(feed), keras_cnn)}
    if heads is not None:
        keras_heads = inference._to_numpy(heads(feed, training=False))
        out["direct"] = _check("direct", load_exported_direct(bundle)(feed), keras_heads)
        out["joint"] = _check("joint", load_exported_joint(bundle)(feed), np.concatenate([keras_cnn, keras_heads], 1))
    x = rng.standard_normal((PROBE_ROWS, int(model.input_shape[-1]))).astype(np.float32)
    out["decoder"] = _check("decoder", net(x), inference.decode(model, x))
    std = np.abs(rng.standard_normal(x.shape)).astype(np.float32)
    # the sigma against the whole Keras decoder's own forward-mode derivatives, not the split's
    jacobian = _keras_jacobian(model, x, std)
    out["sigma"] = _check("sigma", inference.linearised_sigma(net, x, std), np.sqrt(np.sum(jacobian ** 2, axis=1)))
    # the reverse-mode products the fusion takes (a few covectors on some pixels) against the same
    columns = np.arange(0, jacobian.shape[2], max(jacobian.shape[2] // PROBE_COLUMNS, 1))
    weights = rng.standard_normal((len(x), PROBE_COVECTORS, len(columns))).astype(np.float32)
    out["jacobian_dot"] = _check("jacobian_dot", net.split.jacobian_dot(x, std, columns, weights),
                                 np.einsum("bqc,bdc->bqd", weights, jacobian[:, :, columns]))
    return out


def _keras_jacobian(model, x: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(B, D, P) derivatives of the whole Keras `model` at `x` along std_d e_d (forward mode through every layer)."""
    import tensorflow as tf

    jvp = inference._vectorized_jvp(lambda v: model(v, training=False), tf.constant(x), tf.constant(std))
    return inference._to_numpy(jvp)

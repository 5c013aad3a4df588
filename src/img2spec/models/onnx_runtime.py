"""A bundle's networks as exported ONNX graphs, run by onnxruntime: inference without TensorFlow.

`models.export` writes the graphs at publish time (`EXPORT_META` describes them);
`load_exported` opens them here as `ExportedGraph`s, which carry what
`models.inference` reads from a Keras model (`inputs`, `input_shape`, `output_shape`) and
run a batch when called. `inference.predict_spectra` and `decode_latents` take them in
place of the Keras models: one per-batch pipeline, two runtimes under it. A decoder is
exported split as `inference.split_decoder` splits it (`split.SplitDecoder`): its non-linear
body and the body's Jacobian-vector products as graphs, its folded linear tail as arrays, so
both runtimes run the same tail and the same forward-mode derivatives.

This module imports only numpy at import time (onnxruntime when a bundle is opened).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from ..config.publish import RuntimeParam
from .restframe import RestGrid
from .split import SplitDecoder

EXPORT_META = "onnx.json"
"""The bundle file describing its exported graphs (names, shapes, rest grid, build check)."""
EXPORT_FORMAT = "img2spec-onnx/2"
DIRECT_FILE = "direct.onnx"
"""The direct model's heads (`direct.fusion_heads`, `models.fusion`), in a bundle that fuses."""
JOINT_FILE = "cnn_direct.onnx"
"""The CNN and the direct heads as one graph (output: the CNN's, then the heads'), in a bundle that
fuses: both read the same images, and onnxruntime's common-subexpression pass runs their identical
first nodes (the input transpose and pooling) once."""
RUNTIMES: tuple[str, ...] = get_args(RuntimeParam)
"""Runtimes a bundle's networks run on: its exported graphs (onnxruntime) or its Keras models."""


@dataclass(frozen=True)
class InputName:
    """The `.name` of a model input, as `contract.uses_photometry` reads Keras inputs."""

    name: str


def runner_options(intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
    """onnxruntime options with these thread pools (0: onnxruntime's default, all cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = int(inter_op_threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle pool threads sleep instead of spinning: the numpy tail (`split`) runs right after a graph
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _open(path: Path, opts: Any) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the bundle lists it in {EXPORT_META}")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class ExportedGraph:
    """One network as an onnxruntime graph runner: `graph(batch)` -> (N, output width) float32.

    `batch` is an array (single-input network) or a dict {model input name: array}, as
    `inference.predict_outputs` passes them. A decoder is a `split` (`split.SplitDecoder`, its
    call is the split's flux); a rest-frame decoder has `rest` (the rest-frame half, itself an
    `ExportedGraph`) with `rest_grid` and `obs_ln_wave`, and no call of its own.
    """

    def __init__(self, runner: Any, graph_inputs: dict[str, str], input_widths: dict[str, tuple[int, ...]],
                 output_width: int, *, split: SplitDecoder | None = None, redshift_head: bool | None = None,
                 rest: "ExportedGraph | None" = None, rest_grid: RestGrid | None = None,
                 obs_ln_wave: np.ndarray | None = None) -> None:
        self._runner = runner
        self._graph_inputs = dict(graph_inputs)  # model input name -> graph input name
        self.split = split
        self.inputs = [InputName(name) for name in self._graph_inputs]
        shapes = [(None, *input_widths[name]) for name in self._graph_inputs]
        self.input_shape = shapes[0] if len(shapes) == 1 else shapes
        self.output_shape = (None, int(output_width))
        self.redshift_head = redshift_head
        self.rest, self.rest_grid, self.obs_ln_wave = rest, rest_grid, obs_ln_wave

    def __call__(self, batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        if self.split is not None:
            return self.split.flux(batch)
        if self._runner is None:
            raise RuntimeError("this network is not exported whole (a rest-frame decoder exports its "
                               "rest-frame half): load the bundle with runtime='tensorflow'")
        return run_graph(self._runner, self._graph_inputs, batch)


def run_graph(runner: Any, graph_inputs: dict[str, str], batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """The first output of `runner` on `batch` (an array, or a dict by model input name)."""
    if isinstance(batch, dict):
        feeds = {graph: np.ascontiguousarray(batch[name], np.float32) for name, graph in graph_inputs.items()}
    else:
        (graph,) = graph_inputs.values()
        feeds = {graph: np.ascontiguousarray(batch, np.float32)}
    return runner.run(None, feeds)[0]


def _split_decoder(bundle: Path, d: dict[str, Any], opts: Any, threads: int) -> SplitDecoder:
    """The exported decoder's body, body-JVP and (when exported) body-VJP graphs with its folded tail
    (`split.SplitDecoder`)."""
    body = _open(bundle / d["file"], opts)
    kernel = bias = None
    if d.get("tail_file"):
        path = bundle / d["tail_file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the bundle lists it in {EXPORT_META}")
        with np.load(path) as tail:
            kernel = np.ascontiguousarray(tail["kernel"], np.float32)
            bias = np.ascontiguousarray(tail["bias"], np.float32)

    def forward(x: np.ndarray) -> np.ndarray:
        return run_graph(body, {"latents": d["input"]}, x)

    vjp = _graph_call(_open(bundle / d["vjp_file"], opts)) if d.get("vjp_file") else None
    return SplitDecoder(forward, _graph_call(_open(bundle / d["jvp_file"], opts)), kernel, bias,
                        int(d["output_width"]), blas_threads=int(threads), body_vjp=vjp)


def _graph_call(runner: Any) -> Any:
    """The graph `runner` as a function of its inputs in order (float32, contiguous): its first output."""
    names = [i.name for i in runner.get_inputs()]

    def call(*arrays: np.ndarray) -> np.ndarray:
        return runner.run(None, {n: np.ascontiguousarray(a, np.float32) for n, a in zip(names, arrays)})[0]
    return call


def read_export_meta(bundle: str | Path) -> dict[str, Any] | None:
    """The bundle's `EXPORT_META`, or None when it ships no exported graphs."""
    path = Path(bundle) / EXPORT_META
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    return meta


def _image_network(bundle: Path, c: dict[str, Any], opts: Any, **kwargs: Any) -> ExportedGraph:
    return ExportedGraph(_open(bundle / c["file"], opts), c["inputs"],
                         {k: tuple(v) for k, v in c["input_widths"].items()}, c["output_width"], **kwargs)


def _listed_image_network(bundle: str | Path, key: str, intra_op_threads: int,
                          inter_op_threads: int) -> ExportedGraph | None:
    """The image network `EXPORT_META` lists under `key`, None when it lists none."""
    bundle = Path(bundle)
    meta = read_export_meta(bundle)
    if meta is None or key not in meta:
        return None
    return _image_network(bundle, meta[key], runner_options(intra_op_threads, inter_op_threads))


def load_exported_direct(bundle: str | Path, *, intra_op_threads: int = 0,
                         inter_op_threads: int = 0) -> ExportedGraph | None:
    """The bundle's exported direct heads (`DIRECT_FILE`), None when it exports none."""
    return _listed_image_network(bundle, "direct", intra_op_threads, inter_op_threads)


def load_exported_joint(bundle: str | Path, *, intra_op_threads: int = 0,
                        inter_op_threads: int = 0) -> ExportedGraph | None:
    """The bundle's CNN and direct heads as one graph (`JOINT_FILE`), None when it exports none."""
    return _listed_image_network(bundle, "joint", intra_op_threads, inter_op_threads)


def load_exported(bundle: str | Path, *, intra_op_threads: int = 0,
                  inter_op_threads: int = 0) -> tuple[ExportedGraph, ExportedGraph]:
    """(cnn, decoder) of a bundle's exported graphs; FileNotFoundError if it has none."""
    bundle = Path(bundle)
    meta = read_export_meta(bundle)
    if meta is None:
        raise FileNotFoundError(f"{bundle / EXPORT_META}: missing; the bundle has no exported graphs "
                                "(rebuild it with publish.runtime: onnx, or load it with runtime='tensorflow')")
    opts = runner_options(intra_op_threads, inter_op_threads)
    cnn = _image_network(bundle, meta["cnn"], opts, redshift_head=bool(meta["cnn"]["redshift_head"]))
    d = meta["decoder"]
    net = ExportedGraph(None, {"latents": d["input"]}, {"latents": (d["input_width"],)}, d["output_width"],
                        split=_split_decoder(bundle, d, opts, intra_op_threads))
    if d["frame"] != "rest":
        return cnn, net
    grid = RestGrid(**d["rest_grid"])
    decoder = ExportedGraph(None, {"latents": d["input"]}, {"latents": (d["input_width"],)},
                            len(d["obs_ln_wave"]), rest=net, rest_grid=grid,
                            obs_ln_wave=np.asarray(d["obs_ln_wave"], np.float64))
    return cnn, decoder

"""A bundle's networks as exported ONNX graphs, run by onnxruntime: inference without TensorFlow.

`models.export` writes the graphs at publish time (`EXPORT_META` describes them);
`load_exported` opens them here as `ExportedGraph`s, which carry what
`models.inference` reads from a Keras model (`inputs`, `input_shape`, `output_shape`) and
run a batch when called. `inference.predict_spectra` and `decode_latents` take them in
place of the Keras models: one per-batch pipeline, two runtimes under it. The linearised
sigma is the exported graph of `inference.linearised_sigma` itself (`ExportedGraph.sigma`),
so both runtimes compute the same Jacobian-vector products.

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

EXPORT_META = "onnx.json"
"""The bundle file describing its exported graphs (names, shapes, rest grid, build check)."""
EXPORT_FORMAT = "img2spec-onnx/1"
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
    return opts


def _open(path: Path, opts: Any) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the bundle lists it in {EXPORT_META}")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class ExportedGraph:
    """One network as an onnxruntime graph runner: `graph(batch)` -> (N, output width) float32.

    `batch` is an array (single-input network) or a dict {model input name: array}, as
    `inference.predict_outputs` passes them. A decoder also has `sigma(z, tangents)` (the
    linearised sigma graph) and, for a rest-frame decoder, `rest` (the rest-frame half,
    itself an `ExportedGraph`) with `rest_grid` and `obs_ln_wave`.
    """

    def __init__(self, runner: Any, graph_inputs: dict[str, str], input_widths: dict[str, tuple[int, ...]],
                 output_width: int, *, sigma_runner: Any = None, redshift_head: bool | None = None,
                 rest: "ExportedGraph | None" = None, rest_grid: RestGrid | None = None,
                 obs_ln_wave: np.ndarray | None = None) -> None:
        self._runner = runner
        self._graph_inputs = dict(graph_inputs)  # model input name -> graph input name
        self._sigma = sigma_runner
        self.inputs = [InputName(name) for name in self._graph_inputs]
        shapes = [(None, *input_widths[name]) for name in self._graph_inputs]
        self.input_shape = shapes[0] if len(shapes) == 1 else shapes
        self.output_shape = (None, int(output_width))
        self.redshift_head = redshift_head
        self.rest, self.rest_grid, self.obs_ln_wave = rest, rest_grid, obs_ln_wave

    def __call__(self, batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        if self._runner is None:
            raise RuntimeError("this network is not exported whole (a rest-frame decoder exports its "
                               "rest-frame half): load the bundle with runtime='tensorflow'")
        if isinstance(batch, dict):
            feeds = {graph: np.ascontiguousarray(batch[name], np.float32) for name, graph in self._graph_inputs.items()}
        else:
            (graph,) = self._graph_inputs.values()
            feeds = {graph: np.ascontiguousarray(batch, np.float32)}
        return self._runner.run(None, feeds)[0]

    def sigma(self, z: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """The linearised sigma graph: rows (object, latent direction) -> (N, output width)."""
        if self._sigma is None:
            raise RuntimeError("this network has no exported sigma graph")
        names = [i.name for i in self._sigma.get_inputs()]
        return self._sigma.run(None, {names[0]: np.ascontiguousarray(z, np.float32),
                                      names[1]: np.ascontiguousarray(tangents, np.float32)})[0]


def read_export_meta(bundle: str | Path) -> dict[str, Any] | None:
    """The bundle's `EXPORT_META`, or None when it ships no exported graphs."""
    path = Path(bundle) / EXPORT_META
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    return meta


def load_exported(bundle: str | Path, *, intra_op_threads: int = 0,
                  inter_op_threads: int = 0) -> tuple[ExportedGraph, ExportedGraph]:
    """(cnn, decoder) of a bundle's exported graphs; FileNotFoundError if it has none."""
    bundle = Path(bundle)
    meta = read_export_meta(bundle)
    if meta is None:
        raise FileNotFoundError(f"{bundle / EXPORT_META}: missing; the bundle has no exported graphs "
                                "(rebuild it with publish.runtime: onnx, or load it with runtime='tensorflow')")
    opts = runner_options(intra_op_threads, inter_op_threads)
    c = meta["cnn"]
    cnn = ExportedGraph(_open(bundle / c["file"], opts), c["inputs"],
                        {k: tuple(v) for k, v in c["input_widths"].items()}, c["output_width"],
                        redshift_head=bool(c["redshift_head"]))
    d = meta["decoder"]
    net = ExportedGraph(_open(bundle / d["file"], opts), {"latents": d["input"]},
                        {"latents": (d["input_width"],)}, d["output_width"],
                        sigma_runner=_open(bundle / d["sigma_file"], opts))
    if d["frame"] != "rest":
        return cnn, net
    grid = RestGrid(**d["rest_grid"])
    decoder = ExportedGraph(None, {"latents": d["input"]}, {"latents": (d["input_width"],)},
                            len(d["obs_ln_wave"]), rest=net, rest_grid=grid,
                            obs_ln_wave=np.asarray(d["obs_ln_wave"], np.float64))
    return cnn, decoder
